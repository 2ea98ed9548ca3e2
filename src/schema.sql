-- schema.sql: roles, schema privileges and the cache invalidation trigger.
-- CREATE EXTENSION creates schema interop (interop.control names it).

-- Roles are cluster-wide: create them once, keep them across DROP EXTENSION.
DO $$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['interop_admin', 'interop_user', 'interop_auditor'] LOOP
        IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = r) THEN
            EXECUTE pg_catalog.format('CREATE ROLE %I NOLOGIN', r);
        END IF;
    END LOOP;
END
$$;
COMMENT ON ROLE interop_admin IS 'interop: manages the node identity, trust, peers and publishing';
COMMENT ON ROLE interop_user IS 'interop: signs, verifies, queries peers and records consent';
COMMENT ON ROLE interop_auditor IS 'interop: reads the logs';

REVOKE ALL ON SCHEMA interop FROM PUBLIC;
GRANT USAGE ON SCHEMA interop TO interop_admin, interop_user, interop_auditor;

-- Statement trigger on configuration tables: tells every backend at commit
-- to drop what it cached from the table (see src/interop.c).
CREATE FUNCTION interop.invalidate_cache() RETURNS trigger
    AS 'MODULE_PATHNAME', 'interop_invalidate_cache' LANGUAGE C;
REVOKE ALL ON FUNCTION interop.invalidate_cache() FROM PUBLIC;
