-- The SQL API contract of interop: names, signatures, return types,
-- privileges and security settings that applications rely on.
BEGIN;
SELECT plan(165);

SELECT has_schema('interop');
SELECT has_type('interop', 'member_id', 'type member_id');
SELECT has_type('interop', 'jws', 'type jws');
SELECT has_role('interop_admin');
SELECT has_role('interop_user');
SELECT has_role('interop_auditor');
SELECT has_role('interop_citizen_portal');
SELECT has_role('interop_worker');
SELECT is((SELECT rolsuper OR rolcanlogin OR rolbypassrls OR rolcreaterole OR rolcreatedb FROM pg_roles WHERE rolname = 'interop_worker'),
          false, 'interop_worker: no superuser, login, bypassrls, createrole or createdb');
SELECT is((SELECT count(*)::int FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.roleid WHERE r.rolname = 'interop_worker'),
          0, 'interop_worker is granted to nobody');
SELECT is((SELECT count(*)::int FROM information_schema.role_table_grants
           WHERE grantee = 'interop_worker' AND privilege_type IN ('DELETE', 'TRUNCATE', 'REFERENCES', 'TRIGGER')),
          0, 'interop_worker deletes nothing and adds no triggers');
SELECT is((SELECT count(*)::int FROM information_schema.role_table_grants
           WHERE grantee = 'interop_worker' AND table_name IN ('message_log', 'consent_log', 'log_seal') AND privilege_type = 'UPDATE'),
          0, 'interop_worker does not update the logs');

SELECT function_returns('interop', 'init_node', ARRAY['interop.member_id', 'text', 'boolean'], 'text');
SELECT function_returns('interop', 'certificate_request', ARRAY[]::text[], 'text');
SELECT function_returns('interop', 'install_certificate', ARRAY['text'], 'void');
SELECT function_returns('interop', 'add_trust_anchor', ARRAY['text'], 'integer');
SELECT function_returns('interop', 'add_crl', ARRAY['text', 'text'], 'boolean');
SELECT function_returns('interop', 'sign', ARRAY['jsonb'], 'interop.jws');
SELECT function_returns('interop', 'verify', ARRAY['interop.jws'], 'jsonb');
SELECT function_returns('interop', 'verify', ARRAY['interop.jws', 'text'], 'jsonb');
SELECT function_returns('interop', 'jws_header', ARRAY['interop.jws'], 'jsonb');
SELECT function_returns('interop', 'jws_payload', ARRAY['interop.jws'], 'jsonb');
SELECT function_returns('interop', 'instance', ARRAY['interop.member_id'], 'text');
SELECT function_returns('interop', 'member_class', ARRAY['interop.member_id'], 'text');
SELECT function_returns('interop', 'member_code', ARRAY['interop.member_id'], 'text');
SELECT function_returns('interop', 'subsystem', ARRAY['interop.member_id'], 'text');

-- defaults callers rely on
SELECT is((SELECT pg_get_function_arguments('interop.init_node(interop.member_id,text,boolean)'::regprocedure)),
          'member_id interop.member_id, alg text DEFAULT ''ES256''::text, overwrite boolean DEFAULT false',
          'init_node defaults to ES256 and never overwrites by default');

-- security definer functions with a pinned search_path
SELECT is_definer('interop', 'init_node', ARRAY['interop.member_id', 'text', 'boolean']);
SELECT is_definer('interop', 'sign', ARRAY['jsonb']);
SELECT is_definer('interop', 'verify', ARRAY['interop.jws']);
SELECT isnt_definer('interop', 'verify', ARRAY['interop.jws', 'text']);
SELECT is((SELECT count(*)::int FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
           WHERE n.nspname = 'interop' AND p.prosecdef
             AND NOT coalesce(p.proconfig @> ARRAY['search_path=pg_catalog, interop'], false)),
          0, 'every SECURITY DEFINER function pins search_path');

-- privileges: least privilege per role
SELECT function_privs_are('interop', 'init_node', ARRAY['interop.member_id', 'text', 'boolean'], 'interop_user', ARRAY[]::text[]);
SELECT function_privs_are('interop', 'init_node', ARRAY['interop.member_id', 'text', 'boolean'], 'interop_admin', ARRAY['EXECUTE']);
SELECT function_privs_are('interop', 'add_trust_anchor', ARRAY['text'], 'interop_user', ARRAY[]::text[]);
SELECT function_privs_are('interop', 'sign', ARRAY['jsonb'], 'interop_user', ARRAY['EXECUTE']);
SELECT function_privs_are('interop', 'sign', ARRAY['jsonb'], 'interop_auditor', ARRAY[]::text[]);
SELECT function_privs_are('interop', 'sign', ARRAY['jsonb'], 'public', ARRAY[]::text[]);
SELECT table_privs_are('interop', 'node', 'interop_auditor', ARRAY['SELECT']);
SELECT table_privs_are('interop', 'node', 'interop_user', ARRAY[]::text[]);
SELECT table_privs_are('interop', 'trust_anchor', 'interop_admin', ARRAY['SELECT', 'DELETE']);
SELECT table_privs_are('interop', 'trust_anchor', 'public', ARRAY[]::text[]);
-- timestamp tokens: read by admins and auditors, written by the sync worker alone
SELECT table_privs_are('interop', 'seal_timestamp', 'interop_admin', ARRAY['SELECT']);
SELECT table_privs_are('interop', 'seal_timestamp', 'interop_worker', ARRAY['SELECT', 'INSERT']);
SELECT table_privs_are('interop', 'tsa_status', 'interop_worker', ARRAY['SELECT', 'UPDATE']);
SELECT table_privs_are('interop', 'tsa_status', 'public', ARRAY[]::text[]);
SELECT table_privs_are('interop', 'log_archive', 'interop_admin', ARRAY['SELECT']);
-- witnesses: chosen by admins; cosignatures, witnessed heads and alarms written by the workers alone
SELECT function_privs_are('interop', 'add_witness', ARRAY['interop.member_id'], 'interop_admin', ARRAY['EXECUTE']);
SELECT function_privs_are('interop', 'add_witness', ARRAY['interop.member_id'], 'interop_user', ARRAY[]::text[]);
SELECT isnt_definer('interop', 'add_witness', ARRAY['interop.member_id']);
SELECT table_privs_are('interop', 'cosignature', 'interop_admin', ARRAY['SELECT']);
SELECT table_privs_are('interop', 'cosignature', 'interop_worker', ARRAY['SELECT', 'INSERT']);
SELECT table_privs_are('interop', 'witnessed_head', 'interop_auditor', ARRAY['SELECT']);
SELECT table_privs_are('interop', 'witness_alarm', 'interop_worker', ARRAY['SELECT', 'INSERT']);
SELECT table_privs_are('interop', 'witness_alarm', 'public', ARRAY[]::text[]);

-- configuration tables survive pg_dump
SELECT set_eq($$SELECT unnest(extconfig)::regclass::text FROM pg_extension WHERE extname = 'interop'$$,
              ARRAY['interop.node', 'interop.trust_anchor', 'interop.crl', 'interop.ca_certificate', 'interop.service',
                    'interop.access_grant', 'interop.admin_history', 'interop.admin_history_id_seq', 'interop.peer',
                    'interop.message_log', 'interop.message_log_id_seq', 'interop.consent', 'interop.consent_id_seq',
                    'interop.consent_log', 'interop.consent_log_id_seq', 'interop.node_key',
                    'interop.log_seal', 'interop.log_seal_id_seq', 'interop.seal_timestamp', 'interop.log_archive', 'interop.async_request',
                    'interop.async_request_id_seq', 'interop.subscription', 'interop.subscription_id_seq',
                    'interop.witness', 'interop.cosignature', 'interop.cosignature_id_seq', 'interop.witnessed_head',
                    'interop.witnessed_head_id_seq', 'interop.witness_alarm', 'interop.witness_alarm_id_seq',
                    'interop.message_header', 'interop.message_header_id_seq'],
              'configuration, services, grants, their history, the logs, consents and seals are dumped by pg_dump');

-- seals: who may seal, verify and prune; the logs are append-only
SELECT is_definer('interop', 'seal_log', ARRAY[]::text[]);
SELECT is_definer('interop', 'prune_log', ARRAY['timestamp with time zone']);
SELECT is_definer('interop', 'verify_log', ARRAY[]::text[]);
SELECT function_privs_are('interop', 'seal_log', ARRAY[]::text[], 'interop_user', ARRAY[]::text[]);
SELECT function_privs_are('interop', 'seal_log', ARRAY[]::text[], 'interop_auditor', ARRAY[]::text[]);
SELECT function_privs_are('interop', 'verify_log', ARRAY[]::text[], 'interop_auditor', ARRAY['EXECUTE']);
SELECT function_privs_are('interop', 'verify_log', ARRAY[]::text[], 'public', ARRAY[]::text[]);
SELECT function_privs_are('interop', 'prune_log', ARRAY['timestamp with time zone'], 'interop_admin', ARRAY['EXECUTE']);
SELECT function_privs_are('interop', 'prune_log', ARRAY['timestamp with time zone'], 'interop_auditor', ARRAY[]::text[]);
SELECT table_privs_are('interop', 'log_seal', 'interop_auditor', ARRAY['SELECT']);
SELECT table_privs_are('interop', 'log_seal', 'interop_user', ARRAY[]::text[]);
-- asynchronous queries
SELECT is_definer('interop', 'query_async', ARRAY['interop.member_id', 'text', 'jsonb', 'text']);
SELECT function_privs_are('interop', 'query_async', ARRAY['interop.member_id', 'text', 'jsonb', 'text'], 'interop_user', ARRAY['EXECUTE']);
SELECT function_privs_are('interop', 'query_async', ARRAY['interop.member_id', 'text', 'jsonb', 'text'], 'public', ARRAY[]::text[]);
SELECT function_privs_are('interop', 'result', ARRAY['bigint'], 'interop_user', ARRAY['EXECUTE']);
SELECT function_privs_are('interop', 'result_rows', ARRAY['text'], 'interop_user', ARRAY[]::text[]);
SELECT table_privs_are('interop', 'async_request', 'interop_user', ARRAY[]::text[]);
SELECT table_privs_are('interop', 'stat_gateway', 'interop_auditor', ARRAY['SELECT']);
SELECT table_privs_are('interop', 'stat_peer', 'interop_user', ARRAY[]::text[]);
-- subscriptions
SELECT is_definer('interop', 'subscribe', ARRAY['interop.member_id', 'text', 'regclass', 'text', 'interval']);
SELECT function_privs_are('interop', 'subscribe', ARRAY['interop.member_id', 'text', 'regclass', 'text', 'interval'], 'interop_user', ARRAY['EXECUTE']);
SELECT function_privs_are('interop', 'subscribe', ARRAY['interop.member_id', 'text', 'regclass', 'text', 'interval'], 'public', ARRAY[]::text[]);
SELECT isnt_definer('interop', 'apply_changes', ARRAY['regclass', 'jsonb', 'boolean', 'boolean']);
SELECT function_privs_are('interop', 'capture_changes', ARRAY[]::text[], 'public', ARRAY[]::text[]);
SELECT function_privs_are('interop', 'capture_changes', ARRAY[]::text[], 'interop_admin', ARRAY[]::text[]);
SELECT function_privs_are('interop', 'prune_changes', ARRAY['interval'], 'interop_user', ARRAY[]::text[]);
SELECT table_privs_are('interop', 'subscription', 'interop_user', ARRAY[]::text[]);
SELECT table_privs_are('interop', 'change_log', 'interop_user', ARRAY[]::text[]);
SELECT table_privs_are('interop', 'stat_subscription', 'interop_user', ARRAY['SELECT']);
SELECT has_trigger('interop', 'service', 'service_capture', 'interop.service keeps the capture triggers in step');
SELECT has_trigger('interop', 'message_log', 'message_log_append_only', 'interop.message_log has its append-only trigger');
SELECT has_trigger('interop', 'consent_log', 'consent_log_append_only', 'interop.consent_log has its append-only trigger');
SELECT has_trigger('interop', 'log_seal', 'log_seal_append_only', 'interop.log_seal has its append-only trigger');

-- opclasses for indexes and hash joins
SELECT ok(EXISTS (SELECT FROM pg_opclass c JOIN pg_am a ON a.oid = c.opcmethod
                  WHERE c.opcname = 'member_id_ops' AND a.amname = 'btree' AND c.opcdefault), 'default btree opclass');
SELECT ok(EXISTS (SELECT FROM pg_opclass c JOIN pg_am a ON a.oid = c.opcmethod
                  WHERE c.opcname = 'member_id_hash_ops' AND a.amname = 'hash' AND c.opcdefault), 'default hash opclass');

-- the key file GUC is reserved to superusers
SELECT is((SELECT context FROM pg_settings WHERE name = 'interop.key_file'), 'sighup', 'interop.key_file is set in the server configuration');

-- the consumer's functions: interop_user may call them; the log is read-only for everyone
SELECT function_returns('interop', 'query', ARRAY['interop.member_id', 'text', 'jsonb', 'text'], 'setof jsonb');
SELECT is_definer('interop', 'query', ARRAY['interop.member_id', 'text', 'jsonb', 'text'], 'query() is SECURITY DEFINER: it signs with the node key');
SELECT function_privs_are('interop', 'query', ARRAY['interop.member_id', 'text', 'jsonb', 'text'], 'interop_user', ARRAY['EXECUTE']);
SELECT function_privs_are('interop', 'query', ARRAY['interop.member_id', 'text', 'jsonb', 'text'], 'public', ARRAY[]::text[]);
SELECT function_privs_are('interop', 'import_service', ARRAY['interop.member_id', 'text', 'name'], 'interop_user', ARRAY['EXECUTE']);
SELECT table_privs_are('interop', 'message_log', 'interop_auditor', ARRAY['SELECT']);
SELECT table_privs_are('interop', 'message_log', 'interop_user', ARRAY[]::text[]);
SELECT table_privs_are('interop', 'message_log', 'interop_admin', ARRAY[]::text[]);
-- the protected headers the log refers to: read like the log, written by the workers
SELECT table_privs_are('interop', 'message_header', 'interop_auditor', ARRAY['SELECT']);
SELECT table_privs_are('interop', 'message_header', 'interop_worker', ARRAY['SELECT', 'INSERT']);
SELECT table_privs_are('interop', 'message_header', 'interop_admin', ARRAY[]::text[]);
SELECT table_privs_are('interop', 'message_header', 'public', ARRAY[]::text[]);
SELECT has_trigger('interop', 'message_header', 'message_header_append_only', 'interop.message_header has its append-only trigger');
SELECT function_returns('interop', 'message_jws', ARRAY['text'], 'text');
SELECT isnt_definer('interop', 'message_jws', ARRAY['text']);
SELECT function_privs_are('interop', 'message_jws', ARRAY['text'], 'interop_auditor', ARRAY['EXECUTE']);
SELECT function_privs_are('interop', 'message_jws', ARRAY['text'], 'interop_user', ARRAY[]::text[]);
SELECT function_privs_are('interop', 'message_jws', ARRAY['text'], 'public', ARRAY[]::text[]);

-- consent: recorded by the citizen portal through SECURITY DEFINER functions only
SELECT is_definer('interop', 'grant_consent', ARRAY['text', 'interop.member_id', 'text', 'text', 'timestamp with time zone', 'text'], 'grant_consent() is SECURITY DEFINER');
SELECT function_privs_are('interop', 'grant_consent', ARRAY['text', 'interop.member_id', 'text', 'text', 'timestamp with time zone', 'text'], 'interop_citizen_portal', ARRAY['EXECUTE']);
SELECT function_privs_are('interop', 'grant_consent', ARRAY['text', 'interop.member_id', 'text', 'text', 'timestamp with time zone', 'text'], 'interop_user', ARRAY[]::text[]);
SELECT function_privs_are('interop', 'revoke_consent', ARRAY['bigint'], 'interop_citizen_portal', ARRAY['EXECUTE']);
SELECT function_privs_are('interop', 'revoke_consent', ARRAY['bigint'], 'interop_user', ARRAY[]::text[]);
SELECT function_privs_are('interop', 'subject_access_report', ARRAY['text'], 'interop_citizen_portal', ARRAY['EXECUTE']);
SELECT function_privs_are('interop', 'subject_access_report', ARRAY['text'], 'interop_auditor', ARRAY['EXECUTE']);
SELECT function_privs_are('interop', 'subject_access_report', ARRAY['text'], 'interop_user', ARRAY[]::text[]);
SELECT table_privs_are('interop', 'consent', 'interop_user', ARRAY[]::text[]);
SELECT table_privs_are('interop', 'consent', 'interop_citizen_portal', ARRAY['SELECT']);
SELECT table_privs_are('interop', 'consent_log', 'interop_user', ARRAY[]::text[]);
SELECT table_privs_are('interop', 'consent_log', 'interop_auditor', ARRAY['SELECT']);

-- publishing: SECURITY INVOKER on purpose (the publisher's privileges), admin only
SELECT function_returns('interop', 'publish', ARRAY['text', 'regclass', 'text[]', 'text', 'boolean', 'integer', 'boolean', 'text'], 'void');
SELECT function_returns('interop', 'unpublish', ARRAY['text'], 'void');
SELECT function_returns('interop', 'grant_access', ARRAY['text', 'interop.member_id', 'text[]', 'text'], 'void');
SELECT function_returns('interop', 'revoke_access', ARRAY['text', 'interop.member_id'], 'boolean');
SELECT isnt_definer('interop', 'publish', ARRAY['text', 'regclass', 'text[]', 'text', 'boolean', 'integer', 'boolean', 'text']);
SELECT is_definer('interop', 'admin_history_record', ARRAY[]::text[]);
SELECT function_privs_are('interop', 'publish', ARRAY['text', 'regclass', 'text[]', 'text', 'boolean', 'integer', 'boolean', 'text'], 'interop_admin', ARRAY['EXECUTE']);
SELECT function_privs_are('interop', 'grant_access', ARRAY['text', 'interop.member_id', 'text[]', 'text'], 'interop_user', ARRAY[]::text[]);
SELECT function_privs_are('interop', 'calling_role', ARRAY[]::text[], 'public', ARRAY[]::text[]);
SELECT table_privs_are('interop', 'admin_history', 'interop_admin', ARRAY['SELECT']);
SELECT table_privs_are('interop', 'admin_history', 'interop_auditor', ARRAY['SELECT']);
SELECT table_privs_are('interop', 'access_grant', 'interop_user', ARRAY[]::text[]);

SELECT function_returns('interop', 'dry_run', ARRAY['text', 'interop.member_id', 'jsonb', 'text'], 'jsonb');
SELECT isnt_definer('interop', 'dry_run', ARRAY['text', 'interop.member_id', 'jsonb', 'text']);
SELECT function_privs_are('interop', 'dry_run', ARRAY['text', 'interop.member_id', 'jsonb', 'text'], 'interop_user', ARRAY[]::text[]);

SELECT function_privs_are('interop', 'add_peer', ARRAY['interop.member_id', 'text'], 'interop_admin', ARRAY['EXECUTE']);
SELECT function_privs_are('interop', 'add_peer', ARRAY['interop.member_id', 'text'], 'interop_user', ARRAY[]::text[]);
SELECT function_returns('interop', 'add_peer', ARRAY['interop.member_id', 'text[]'], 'void');
SELECT function_privs_are('interop', 'add_peer', ARRAY['interop.member_id', 'text[]'], 'interop_admin', ARRAY['EXECUTE']);
SELECT function_privs_are('interop', 'add_peer', ARRAY['interop.member_id', 'text[]'], 'interop_user', ARRAY[]::text[]);
SELECT has_column('interop', 'peer', 'more_urls', 'a peer has more base URLs');
SELECT col_type_is('interop', 'peer', 'more_urls', 'text[]', 'more_urls is text[]');

-- key rotation and standbys
SELECT function_returns('interop', 'rotate_key', ARRAY['text'], 'text');
SELECT is_definer('interop', 'rotate_key', ARRAY['text']);
SELECT function_privs_are('interop', 'rotate_key', ARRAY['text'], 'interop_admin', ARRAY['EXECUTE']);
SELECT function_privs_are('interop', 'rotate_key', ARRAY['text'], 'interop_user', ARRAY[]::text[]);
SELECT has_column('interop', 'node', 'pending_public_key', 'interop.node records a pending key');
SELECT function_returns('interop', 'refuse_on_standby', ARRAY['text'], 'void');
SELECT lives_ok($$SELECT interop.refuse_on_standby('x')$$, 'refuse_on_standby() does nothing on a primary');
SELECT is((SELECT count(*)::int FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
           WHERE n.nspname = 'interop' AND p.prolang = (SELECT oid FROM pg_language WHERE lanname = 'plpgsql')
             AND p.proname IN ('query_async', 'add_peer', 'remove_peer', 'import_service', 'grant_consent', 'revoke_consent',
                               'publish', 'unpublish', 'grant_access', 'revoke_access', 'prune_changes', 'subscribe', 'unsubscribe')
             AND p.prosrc !~ 'PERFORM interop\.refuse_on_standby\('),
          0, 'every PL/pgSQL function of interop that writes refuses on a standby first');
SELECT table_privs_are('interop', 'peer', 'interop_user', ARRAY['SELECT']);

-- every documented view is readable by the roles the documentation names
CREATE ROLE pgtap_admin IN ROLE interop_admin;
CREATE ROLE pgtap_auditor IN ROLE interop_auditor;
CREATE ROLE pgtap_user IN ROLE interop_user;
CREATE ROLE pgtap_monitor IN ROLE pg_monitor;
SET ROLE pgtap_admin;
SELECT lives_ok('SELECT * FROM interop.stat_gateway', 'interop_admin reads stat_gateway');
SELECT lives_ok('SELECT * FROM interop.stat_peer', 'interop_admin reads stat_peer');
SELECT lives_ok('SELECT * FROM interop.stat_subscription', 'interop_admin reads stat_subscription');
SET ROLE pgtap_auditor;
SELECT lives_ok('SELECT * FROM interop.stat_gateway', 'interop_auditor reads stat_gateway');
SELECT lives_ok('SELECT * FROM interop.stat_peer', 'interop_auditor reads stat_peer');
SELECT lives_ok('SELECT * FROM interop.stat_subscription', 'interop_auditor reads stat_subscription');
SET ROLE pgtap_monitor;
SELECT lives_ok('SELECT * FROM interop.stat_gateway', 'pg_monitor reads stat_gateway');
SELECT lives_ok('SELECT * FROM interop.stat_peer', 'pg_monitor reads stat_peer');
SELECT lives_ok('SELECT * FROM interop.stat_subscription', 'pg_monitor reads stat_subscription');
SELECT throws_ok('SELECT * FROM interop.message_log', '42501', NULL, 'pg_monitor reads no log');
SET ROLE pgtap_user;
SELECT lives_ok('SELECT * FROM interop.stat_subscription', 'interop_user reads stat_subscription (its own)');
SELECT throws_ok('SELECT * FROM interop.stat_gateway', '42501', NULL, 'interop_user does not read stat_gateway');
RESET ROLE;

SELECT * FROM finish();
ROLLBACK;
