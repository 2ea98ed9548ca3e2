-- peers: the nodes this node calls
\set SHOW_CONTEXT never

CREATE ROLE regress_peer_admin LOGIN IN ROLE interop_admin;
CREATE ROLE regress_peer_user LOGIN IN ROLE interop_user;
SET ROLE regress_peer_admin;

SELECT interop.add_peer('MN/GOV/2000001/tax', 'https://Tax.Example.gov.mn:8443/interop/');
SELECT interop.add_peer('mn/gov/3000001/portal', 'https://127.0.0.1');
SELECT interop.add_peer('MN/GOV/4000001/land', 'https://[::1]:9443');
SELECT member_id, base_url, added_by FROM interop.peer ORDER BY member_id;
-- adding again moves the peer
SELECT interop.add_peer('MN/GOV/2000001/tax', 'https://10.1.2.3:8443');
SELECT base_url FROM interop.peer WHERE member_id::text = 'MN/GOV/2000001/tax';

-- bad URLs
SELECT interop.add_peer('MN/GOV/5/x', 'http://tax.example.gov.mn');
SELECT interop.add_peer('MN/GOV/5/x', 'https://user:pw@tax.example.gov.mn');
SELECT interop.add_peer('MN/GOV/5/x', 'https://tax.example.gov.mn/?q=1');
SELECT interop.add_peer('MN/GOV/5/x', 'https://tax.example.gov.mn:99999');
SELECT interop.add_peer('MN/GOV/5/x', 'https://tax.example.gov.mn:0');
SELECT interop.add_peer('MN/GOV/5/x', 'https://');
SELECT interop.add_peer('MN/GOV/5/x', 'https://host name');
SELECT interop.add_peer('MN/GOV/5/x', E'https://host\n.evil');
SELECT interop.add_peer('MN/GOV/5/x', 'https://host/../../etc');
SELECT interop.add_peer('MN/GOV/5/x', NULL);
SELECT interop.add_peer('MN GOV', 'https://host');

-- a peer with several nodes: base URLs tried in order, normalized, each once
SELECT interop.add_peer('MN/GOV/4000002/forest', ARRAY['https://A.forest.example:8443/', 'https://b.forest.example:8443']);
SELECT base_url, more_urls FROM interop.peer WHERE member_id::text = 'MN/GOV/4000002/forest';
SELECT interop.add_peer('MN/GOV/4000002/forest', 'https://c.forest.example');
SELECT base_url, more_urls FROM interop.peer WHERE member_id::text = 'MN/GOV/4000002/forest';
SELECT interop.add_peer('MN/GOV/4000002/forest', ARRAY['https://a.forest.example', 'https://A.forest.example:443']);
SELECT interop.add_peer('MN/GOV/4000002/forest', ARRAY['https://a.forest.example', 'http://b.forest.example']);
SELECT interop.add_peer('MN/GOV/4000002/forest', ARRAY['https://a.forest.example', NULL]);
SELECT interop.add_peer('MN/GOV/4000002/forest', '{}'::text[]);
SELECT interop.add_peer('MN/GOV/4000002/forest', NULL::text[]);
UPDATE interop.peer SET more_urls = '{{https://x.example,https://y.example}}' WHERE member_id::text = 'MN/GOV/4000002/forest';
SELECT base_url, more_urls FROM interop.peer WHERE member_id::text = 'MN/GOV/4000002/forest';
SELECT interop.remove_peer('MN/GOV/4000002/forest');

-- removal
SELECT interop.remove_peer('MN/GOV/4000001/land');
SELECT interop.remove_peer('MN/GOV/4000001/land');
SELECT count(*) FROM interop.peer;
RESET ROLE;

-- users see peers; they do not change them
SET ROLE regress_peer_user;
SELECT member_id FROM interop.peer ORDER BY 1;
SELECT interop.add_peer('MN/GOV/6/x', 'https://host');
DELETE FROM interop.peer;
RESET ROLE;

-- every change is in the admin history
SELECT role, action, old_value->>'base_url' AS old_url, new_value->>'base_url' AS new_url
FROM interop.admin_history WHERE object = 'peer' ORDER BY id;

DELETE FROM interop.peer;
DROP ROLE regress_peer_admin, regress_peer_user;

-- a session keeps the rows of interop.peer it read, and forgets them when
-- the table changes: also when it is a new table, after DROP and CREATE
-- EXTENSION in the same session (a known peer fails further on, for want
-- of an identity in this database)
CREATE DATABASE regress_peers_again;
\c regress_peers_again
\set SHOW_CONTEXT never
CREATE EXTENSION interop;
SELECT interop.add_peer('MN/GOV/7000001/x', 'https://127.0.0.1:9');
SELECT * FROM interop.query('MN/GOV/7000001/x', 'svc');
DROP EXTENSION interop;
CREATE EXTENSION interop;
SELECT * FROM interop.query('MN/GOV/7000001/x', 'svc');
SELECT interop.add_peer('MN/GOV/7000001/x', 'https://127.0.0.1:9');
SELECT * FROM interop.query('MN/GOV/7000001/x', 'svc');
SELECT interop.remove_peer('MN/GOV/7000001/x');
SELECT * FROM interop.query('MN/GOV/7000001/x', 'svc');
\c contrib_regression
DROP DATABASE regress_peers_again;
