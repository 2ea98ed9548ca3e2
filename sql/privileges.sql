-- roles and least privilege; the node key is out of reach of SQL

CREATE ROLE regress_nobody LOGIN;
CREATE ROLE regress_app LOGIN IN ROLE interop_user;
CREATE ROLE regress_dba LOGIN IN ROLE interop_admin;
CREATE ROLE regress_audit LOGIN IN ROLE interop_auditor;
SELECT interop.init_node('MN/GOV/1234567/population', overwrite => true) IS NOT NULL AS node;

-- an ordinary role reaches nothing
SET ROLE regress_nobody;
SELECT interop.sign('{}');
SELECT * FROM interop.node;
RESET ROLE;

-- interop_user signs and verifies, and nothing else
SET ROLE regress_app;
SELECT length(interop.sign('{"ok":true}')::text) > 100 AS signs;
SELECT interop.init_node('MN/GOV/1/evil', overwrite => true);
SELECT interop.add_trust_anchor('x');
SELECT interop.add_crl('x');
SELECT interop.install_certificate('x');
SELECT interop.certificate_request();
SELECT * FROM interop.node;
DELETE FROM interop.trust_anchor;
RESET ROLE;

-- interop_admin manages identity and trust but does not sign
SET ROLE regress_dba;
SELECT member_id FROM interop.node;
SELECT interop.certificate_request() LIKE '-----BEGIN CERTIFICATE REQUEST-----%' AS csr;
SELECT interop.sign('{}');
UPDATE interop.node SET member_id = 'MN/GOV/1/evil';
RESET ROLE;

-- interop_auditor reads, writes nothing
SET ROLE regress_audit;
SELECT member_id, alg FROM interop.node;
SELECT count(*) FROM interop.trust_anchor;
DELETE FROM interop.trust_anchor;
SELECT interop.sign('{}');
RESET ROLE;

-- the key file: not through the GUC, not through file functions
SET ROLE regress_app;
SET interop.key_file = '/etc/passwd';
-- (the wording of these refusals differs between PostgreSQL versions: the
-- SQLSTATE, insufficient_privilege, is what they share)
\set VERBOSITY sqlstate
SHOW interop.key_file;
\set VERBOSITY default
SELECT pg_read_file('interop/node.key');
SELECT pg_read_binary_file('interop/node.key');
SELECT pg_ls_dir('interop');
\set VERBOSITY sqlstate
COPY (SELECT 1) TO '/tmp/x';
CREATE TEMP TABLE k (line text);
COPY k FROM 'interop/node.key';
\set VERBOSITY default
DROP TABLE k;
RESET ROLE;

-- no function of the extension takes a file name
SELECT p.proname, pg_get_function_arguments(p.oid)
FROM pg_proc p JOIN pg_depend d ON d.objid = p.oid AND d.classid = 'pg_proc'::regclass
JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'interop'
WHERE pg_get_function_arguments(p.oid) ~* '(file|path|dir)';

-- SECURITY DEFINER functions pin their search_path
SELECT p.proname, (SELECT c FROM unnest(p.proconfig) c WHERE c LIKE 'search_path=%') AS search_path
FROM pg_proc p JOIN pg_depend d ON d.objid = p.oid AND d.classid = 'pg_proc'::regclass
JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'interop'
WHERE p.prosecdef ORDER BY 1;

DROP ROLE regress_nobody, regress_app, regress_dba, regress_audit;
