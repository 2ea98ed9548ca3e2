-- async.sql: the SQL surface of asynchronous queries on one node (delivery
-- itself crosses the network: test/t/005_async.pl)
SELECT interop.query_async(NULL, 'person');
SELECT interop.query_async('MN/GOV/1000001/population', 'person', '[1]');
SELECT interop.query_async('MN/GOV/9000009/nobody', 'person');
SELECT interop.result(424242);
SELECT interop.wait(424242);

-- queued in a transaction that rolls back: nothing stays
SELECT interop.add_peer('MN/GOV/1000001/population', 'https://127.0.0.1:1');
BEGIN;
SELECT interop.query_async('MN/GOV/1000001/population', 'person', '{"id": "P1"}', 'audit') > 0 AS queued;
SELECT state, attempts, request IS NULL AS unsigned_yet FROM interop.async_request;
ROLLBACK;
SELECT count(*) FROM interop.async_request;

-- a request is visible to the role that queued it (and to interop_admin)
CREATE ROLE regress_async_a IN ROLE interop_user;
CREATE ROLE regress_async_b IN ROLE interop_user;
SET ROLE regress_async_a;
SELECT interop.query_async('MN/GOV/1000001/population', 'person', '{"id": "P1"}', 'audit') AS id \gset
SELECT interop.wait(:id, '0 s');
SELECT * FROM interop.result(:id);
SET ROLE regress_async_b;
SELECT interop.wait(:id, '0 s');
SELECT count(*) FROM interop.async_request;
RESET ROLE;

-- counters are for the admin and auditor; catalogs are readable by users too
SET ROLE regress_async_a;
SELECT * FROM interop.stat_gateway;
SELECT * FROM interop.peer_catalog;
RESET ROLE;
SELECT interop.remove_peer('MN/GOV/1000001/population');
DROP ROLE regress_async_a, regress_async_b;
