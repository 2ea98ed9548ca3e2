-- schema.sql: roles, schema privileges and the cache invalidation trigger.
-- CREATE EXTENSION creates schema interop (interop.control names it).

-- Roles are cluster-wide: create them once, keep them across DROP EXTENSION.
DO $$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['interop_admin', 'interop_user', 'interop_auditor', 'interop_worker',
                             'interop_citizen_portal'] LOOP
        IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = r) THEN
            EXECUTE pg_catalog.format('CREATE ROLE %I NOLOGIN', r);
        END IF;
    END LOOP;
END
$$;
COMMENT ON ROLE interop_admin IS 'interop: manages the node identity, trust, peers and publishing';
COMMENT ON ROLE interop_user IS 'interop: signs, verifies, queries peers and records consent';
COMMENT ON ROLE interop_auditor IS 'interop: reads the logs';
COMMENT ON ROLE interop_citizen_portal IS 'interop: the application that acts for citizens: records and withdraws their consents, shows their data-access report';
COMMENT ON ROLE interop_worker IS 'interop: the role the background workers run their transactions as; grant it to nobody';

REVOKE ALL ON SCHEMA interop FROM PUBLIC;
GRANT USAGE ON SCHEMA interop TO interop_admin, interop_user, interop_auditor, interop_worker, interop_citizen_portal;
-- interop_worker gets, beside each table, exactly what the workers do with it

-- Statement trigger on configuration tables: tells every backend at commit
-- to drop what it cached from the table (see src/interop.c).
CREATE FUNCTION interop.invalidate_cache() RETURNS trigger
    AS 'MODULE_PATHNAME', 'interop_invalidate_cache' LANGUAGE C;
REVOKE ALL ON FUNCTION interop.invalidate_cache() FROM PUBLIC;

-- Restoring a dump: the triggers of the configuration tables keep a row as
-- it was dumped (owner, author, times) and write no history (the dump has
-- it) when a superuser's COPY writes it, as pg_restore and psql do.
-- interop.refuse_on_standby: an ERROR on a hot standby, for the functions that write
CREATE FUNCTION interop.refuse_on_standby(what text) RETURNS void
    AS 'MODULE_PATHNAME', 'interop_refuse_on_standby' LANGUAGE C STABLE;
COMMENT ON FUNCTION interop.refuse_on_standby(text) IS
    'raises "... cannot run on a standby" while the server is in recovery: the first statement of each function of interop that writes';
CREATE FUNCTION interop.restoring() RETURNS bool
    AS 'MODULE_PATHNAME', 'interop_restoring' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION interop.restoring() IS
    'whether the current statement is a superuser''s COPY into a table of interop: a restore';
