-- the consumer's SQL surface on a single node: argument errors, an unknown
-- peer, the record a failed call leaves behind, and who may read the log.
-- (Calls that cross the network are in test/t/002_exchange.pl.)
SET search_path = public, interop;

-- arguments
SELECT * FROM interop.query(NULL, 'person');
SELECT * FROM interop.query('MN/GOV/1/x', NULL);
SELECT * FROM interop.query('MN/GOV/1/x', 'person', '[1, 2]');
SELECT * FROM interop.query('not a member id', 'person');

-- an unknown peer is an error, and the failed call is logged all the same:
-- its record is written in a transaction of its own, so the rollback of
-- the caller's transaction does not remove it
BEGIN;
SELECT * FROM interop.query('MN/GOV/9999999/nobody', 'person', '{"id":"P1"}', 'audit');
ROLLBACK;
SELECT direction, peer, service, purpose, status, error_code, error_message, request IS NULL AS no_request
FROM interop.message_log WHERE peer = 'MN/GOV/9999999/nobody';
SELECT interop.catalog('MN/GOV/9999999/nobody');
SELECT interop.import_service('MN/GOV/9999999/nobody', 'person');

-- the log: read by the auditor, written by nobody
CREATE ROLE regress_exchange_audit IN ROLE interop_auditor;
CREATE ROLE regress_exchange_user IN ROLE interop_user;
CREATE ROLE regress_exchange_admin IN ROLE interop_admin;
SET ROLE regress_exchange_audit;
SELECT count(*) > 0 AS auditor_reads FROM interop.message_log;
DELETE FROM interop.message_log;
RESET ROLE;
SET ROLE regress_exchange_user;
SELECT count(*) FROM interop.message_log;
RESET ROLE;
SET ROLE regress_exchange_admin;
UPDATE interop.message_log SET status = 200;
INSERT INTO interop.message_log (direction, status, duration_ms) VALUES ('in', 200, 1);
RESET ROLE;
DROP ROLE regress_exchange_audit, regress_exchange_user, regress_exchange_admin;

-- settings: where each is set
SELECT name, unit, context FROM pg_settings WHERE name LIKE 'interop.%' ORDER BY name;
-- (the range's wording differs between PostgreSQL versions)
\set VERBOSITY sqlstate
SET interop.request_timeout = '50ms';
\set VERBOSITY default
SET interop.port = 9999;
RESET interop.request_timeout;
