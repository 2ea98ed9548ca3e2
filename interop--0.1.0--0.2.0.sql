-- interop 0.1.0 -> 0.2.0, written by hand: every schema change since the
-- 0.1.0 release, in the order the changes were made.  test/t/013_upgrade.pl
-- checks that an updated extension has exactly the objects of a fresh one.
\echo Use "ALTER EXTENSION interop UPDATE TO '0.2.0'" to load this file. \quit

-- Change capture never runs a cast of the table owner's types as the
-- extension owner (it read keys with jsonb_build_object in a definer).
-- the type a domain (or a domain over a domain) is based on
CREATE FUNCTION interop.base_type(t oid) RETURNS oid
LANGUAGE sql STABLE STRICT SET search_path = pg_catalog, interop AS $$
    WITH RECURSIVE d(t, base) AS (
        SELECT oid, typbasetype FROM pg_type WHERE oid = base_type.t
        UNION ALL
        SELECT p.oid, p.typbasetype FROM pg_type p JOIN d ON p.oid = d.base
    )
    SELECT d.t FROM d WHERE d.base = 0
$$;
REVOKE ALL ON FUNCTION interop.base_type(oid) FROM PUBLIC;

-- KeyJson: the SQL that makes one key column a JSON object member, without
-- running code that a non-superuser defined.  A built-in type (or a domain
-- over one) goes through jsonb's own conversion, which for built-in types
-- looks up no cast.  Any other type (an enum, a composite, a type of an
-- extension) is taken as the text of its output function: format('%s')
-- calls the output function directly, never a cast, and output functions
-- are built in or written in C by a superuser.  capture_changes() pins the
-- settings that output functions read, so the text is the same whatever
-- the writing session set.
CREATE FUNCTION interop.key_json(rel oid, col text) RETURNS text
LANGUAGE sql STABLE STRICT SET search_path = pg_catalog, interop AS $$
    SELECT CASE WHEN interop.base_type(a.atttypid) < 16384    -- FirstNormalObjectId: built in
                THEN format('%L, %I', col, col)
                ELSE format('%L, pg_catalog.format(''%%s'', %I)', col, col) END
    FROM pg_attribute a
    WHERE a.attrelid = key_json.rel AND a.attname = key_json.col AND a.attnum > 0 AND NOT a.attisdropped
$$;
REVOKE ALL ON FUNCTION interop.key_json(oid, text) FROM PUBLIC;

-- the capture trigger: TG_ARGV holds the primary key's column names.  It is
-- a definer (writers of the table need no privilege on the change log), so
-- it reads the key columns only through interop.key_json().
CREATE OR REPLACE FUNCTION interop.capture_changes() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, interop SET DateStyle = 'ISO, YMD' SET IntervalStyle = 'postgres'
SET TimeZone = 'UTC' SET extra_float_digits = 3 SET bytea_output = 'hex' AS $$
DECLARE
    k text := (SELECT string_agg(interop.key_json(TG_RELID, c), ', ' ORDER BY o)
               FROM unnest(TG_ARGV) WITH ORDINALITY AS u(c, o));
BEGIN
    IF k IS NULL OR cardinality(TG_ARGV) <> (SELECT count(*) FROM unnest(TG_ARGV) c
                                             WHERE interop.key_json(TG_RELID, c) IS NOT NULL) THEN
        RAISE EXCEPTION 'the capture trigger of "%" names a column the table does not have', TG_RELID::regclass
            USING ERRCODE = 'undefined_column',
                  HINT = 'Publish the service again: interop.publish() sets up the capture triggers anew.';
    END IF;
    IF TG_OP = 'INSERT' THEN
        EXECUTE format('INSERT INTO interop.change_log (source, key) '
                       'SELECT $1, jsonb_build_object(%s) FROM interop_new', k) USING TG_RELID;
    ELSIF TG_OP = 'DELETE' THEN
        EXECUTE format('INSERT INTO interop.change_log (source, key) '
                       'SELECT $1, jsonb_build_object(%s) FROM interop_old', k) USING TG_RELID;
    ELSE
        EXECUTE format('INSERT INTO interop.change_log (source, key) SELECT $1, c.k FROM '
                       '(SELECT jsonb_build_object(%1$s) FROM interop_old UNION '
                       ' SELECT jsonb_build_object(%1$s) FROM interop_new) AS c(k)', k) USING TG_RELID;
    END IF;
    RETURN NULL;
END
$$;

-- The workers run their transactions as interop_worker, a role with only
-- what they need on interop's tables (src/worker.c, docs/security.md).
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'interop_worker') THEN
        CREATE ROLE interop_worker NOLOGIN;
    END IF;
END
$$;
COMMENT ON ROLE interop_worker IS 'interop: the role the background workers run their transactions as; grant it to nobody';
GRANT USAGE ON SCHEMA interop TO interop_worker;
GRANT SELECT ON interop.node TO interop_worker;
GRANT SELECT ON interop.trust_anchor TO interop_worker;
GRANT SELECT, INSERT, UPDATE ON interop.crl TO interop_worker;
GRANT SELECT ON interop.service, interop.access_grant TO interop_worker;
GRANT SELECT ON interop.peer TO interop_worker;
GRANT SELECT, INSERT ON interop.message_log TO interop_worker;
GRANT SELECT ON interop.message_log_id_seq TO interop_worker;
-- a record up to a page's size stays in its page instead of going to TOAST
ALTER TABLE interop.message_log SET (toast_tuple_target = 8160);
GRANT SELECT ON interop.consent, interop.consent_log, interop.consent_log_id_seq TO interop_worker;
GRANT SELECT ON interop.node_key, interop.log_seal TO interop_worker;
GRANT INSERT ON interop.log_seal TO interop_worker;
GRANT SELECT, UPDATE ON interop.async_request TO interop_worker;
GRANT SELECT, INSERT, UPDATE ON interop.peer_catalog TO interop_worker;
GRANT SELECT, INSERT, UPDATE ON interop.crl_source TO interop_worker;
GRANT SELECT ON interop.change_log TO interop_worker;
GRANT SELECT, INSERT ON interop.change_pruned TO interop_worker;
GRANT EXECUTE ON FUNCTION interop.prune_changes(interval) TO interop_worker;
GRANT SELECT, UPDATE ON interop.subscription TO interop_worker;

-- import_service() builds its statements from whole values only (it cut a
-- peer's column name with split_part), and takes only built-in types by name.
-- interop.catalog_type: the local type for a type name in a peer's catalog.
-- A peer's catalog is hostile input: only a built-in type is taken as named
-- (the name is checked for shape before it is parsed); anything else, a
-- type of the provider's own or one this node happens to have under the
-- same name (a domain with a CHECK of somebody's), arrives as text.
CREATE FUNCTION interop.catalog_type(name text) RETURNS regtype
LANGUAGE plpgsql STABLE SET search_path = pg_catalog AS $$
DECLARE
    t regtype;
BEGIN
    IF name IS NULL OR length(name) > 128 OR name !~ '^("char"|[a-z][a-z0-9_ ]*)(\[\])*$' THEN
        RETURN 'text';
    END IF;
    t := to_regtype(name);
    IF t IS NULL OR t::oid >= 16384 THEN        -- FirstNormalObjectId: not built in
        RETURN 'text';
    END IF;
    RETURN t;
END
$$;
REVOKE ALL ON FUNCTION interop.catalog_type(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION interop.catalog_type(text) TO interop_user;

-- interop.import_service: a typed local function for a remote service.  The
-- statement is built from whole values only: identifiers through %I, types
-- through interop.catalog_type(), literals through %L; the function made is
-- found by its argument types, and named by its regprocedure.
CREATE OR REPLACE FUNCTION interop.import_service(provider interop.member_id, service text,
                                       local_schema name DEFAULT NULL) RETURNS regprocedure
LANGUAGE plpgsql SET search_path = pg_catalog, interop AS $$
DECLARE
    svc jsonb;
    col jsonb;
    f text;
    typ regtype;
    args text[] := '{}';
    argtypes oid[] := '{}';
    pairs text[] := '{}';
    outcols text[] := '{}';
    target name := coalesce(local_schema, current_schema());
    fn oid;
BEGIN
    PERFORM interop.refuse_on_standby('interop.import_service()');
    IF target IS NULL OR to_regnamespace(quote_ident(target)) IS NULL THEN
        RAISE EXCEPTION 'no schema "%" to create the function in', coalesce(target, '')
            USING ERRCODE = 'invalid_schema_name', HINT = 'Pass local_schema, the name of an existing schema.';
    END IF;
    SELECT s INTO svc FROM jsonb_array_elements(interop.catalog(provider)) s WHERE s->>'name' = service;
    IF svc IS NULL THEN
        RAISE EXCEPTION 'peer % has no service "%" for this node', provider, service
            USING ERRCODE = 'undefined_object',
                  HINT = format('See SELECT jsonb_pretty(interop.catalog(%L)); the provider grants access with interop.grant_access().', provider);
    END IF;
    -- interop.catalog() checked the shape: names of services and columns, filters among the columns
    FOR col IN SELECT * FROM jsonb_array_elements(svc->'columns') LOOP
        outcols := outcols || format('%I %s', col->>'name', interop.catalog_type(col->>'type'));
    END LOOP;
    FOR f IN SELECT jsonb_array_elements_text(svc->'filters') LOOP
        SELECT interop.catalog_type(c->>'type') INTO typ
        FROM jsonb_array_elements(svc->'columns') c WHERE c->>'name' = f;
        args := args || format('%I %s DEFAULT NULL', f, typ);
        argtypes := argtypes || typ::oid;
        pairs := pairs || format('%L, %I', f, f);
    END LOOP;
    args := args || 'purpose text DEFAULT NULL'::text;
    argtypes := argtypes || 'text'::regtype::oid;
    EXECUTE format($f$
        CREATE OR REPLACE FUNCTION %I.%I(%s) RETURNS TABLE (%s)
        LANGUAGE sql VOLATILE AS $body$
            SELECT r.* FROM interop.query(%L::interop.member_id, %L,
                pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(%s)), purpose) AS q,
                pg_catalog.jsonb_to_record(q) AS r(%s)
        $body$ $f$,
        target, service, array_to_string(args, ', '), array_to_string(outcols, ', '),
        provider, service, array_to_string(pairs, ', '), array_to_string(outcols, ', '));
    SELECT p.oid INTO STRICT fn FROM pg_proc p
    WHERE p.pronamespace = to_regnamespace(quote_ident(target)) AND p.proname = service
      AND ARRAY(SELECT unnest(p.proargtypes::oid[])) = argtypes;
    EXECUTE format('COMMENT ON FUNCTION %s IS %L', fn::regprocedure,
                   format('service %s of %s (imported by interop.import_service)', service, provider));
    RETURN fn::regprocedure;
END
$$;

-- A restore keeps rows as dumped: the triggers of the configuration tables ask
-- interop.restoring() (a superuser's COPY) and then keep owner, author and
-- times and write no history.
CREATE OR REPLACE FUNCTION interop.restoring() RETURNS bool
    AS 'MODULE_PATHNAME', 'interop_restoring' LANGUAGE C VOLATILE;
CREATE OR REPLACE FUNCTION interop.service_check() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, interop AS $$
DECLARE
    kind "char";
    col text;
BEGIN
    IF interop.restoring() THEN
        RETURN NEW;             -- as dumped: the owner is the publisher's, not the restorer's
    END IF;
    NEW.owner := current_user::regrole;
    NEW.published_at := now();
    SELECT relkind INTO kind FROM pg_class WHERE oid = NEW.source;
    IF kind NOT IN ('r', 'v', 'm', 'p', 'f') THEN
        RAISE EXCEPTION 'cannot publish "%"', NEW.source
            USING ERRCODE = 'wrong_object_type',
                  DETAIL = 'A service publishes a table, view, materialized view or foreign table.';
    END IF;
    IF NOT has_table_privilege(current_user, NEW.source, 'SELECT') THEN
        RAISE EXCEPTION 'role "%" cannot read "%"', current_user, NEW.source
            USING ERRCODE = 'insufficient_privilege',
                  DETAIL = 'A published query runs with the privileges of the role that publishes it.',
                  HINT = 'Publish as a role that has SELECT on the source.';
    END IF;
    IF cardinality(NEW.filter_columns) <> cardinality(ARRAY(SELECT DISTINCT unnest(NEW.filter_columns))) THEN
        RAISE EXCEPTION 'filter columns of service "%" repeat a column', NEW.name
            USING ERRCODE = 'duplicate_column';
    END IF;
    FOREACH col IN ARRAY NEW.filter_columns ||
            CASE WHEN NEW.subject_column IS NULL THEN '{}'::text[] ELSE ARRAY[NEW.subject_column] END LOOP
        IF col IS NULL OR NOT EXISTS (SELECT FROM pg_attribute
                                      WHERE attrelid = NEW.source AND attname = col
                                        AND attnum > 0 AND NOT attisdropped) THEN
            RAISE EXCEPTION 'column "%" does not exist in "%"', col, NEW.source
                USING ERRCODE = 'undefined_column',
                      HINT = 'Filter and subject columns are column names of the source, as written in its definition.';
        END IF;
    END LOOP;
    IF NEW.subject_column IS NOT NULL AND NOT NEW.subject_column = ANY (NEW.filter_columns) THEN
        RAISE EXCEPTION 'subject column "%" must also be a filter column', NEW.subject_column
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'A request names its subject by filtering on the subject column.',
                  HINT = format('Add %L to filter_columns.', NEW.subject_column);
    END IF;
    IF NEW.track_changes THEN
        IF kind <> 'r' THEN
            RAISE EXCEPTION 'cannot track changes of "%"', NEW.source
                USING ERRCODE = 'wrong_object_type',
                      DETAIL = 'track_changes captures changes with triggers on a table; views have none.',
                      HINT = 'Publish the table itself with track_changes => true.';
        END IF;
        IF interop.primary_key_of(NEW.source) IS NULL THEN
            RAISE EXCEPTION 'table "%" has no primary key', NEW.source
                USING ERRCODE = 'invalid_table_definition',
                      DETAIL = 'Subscribers apply changes by primary key.',
                      HINT = 'Add a primary key, or publish with track_changes => false.';
        END IF;
        IF NOT pg_has_role(current_user, (SELECT relowner FROM pg_class WHERE oid = NEW.source), 'USAGE') THEN
            RAISE EXCEPTION 'only the owner of "%" can publish it with track_changes', NEW.source
                USING ERRCODE = 'insufficient_privilege',
                      DETAIL = 'track_changes adds triggers to the table.';
        END IF;
        IF NEW.requires_consent THEN
            RAISE EXCEPTION 'a service that requires consent cannot track changes'
                USING ERRCODE = 'invalid_parameter_value',
                      DETAIL = 'A subscription copies every row; consent is given per subject and per request.';
        END IF;
    END IF;
    RETURN NEW;
END
$$;
CREATE OR REPLACE FUNCTION interop.access_grant_check() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, interop AS $$
BEGIN
    IF interop.restoring() THEN
        RETURN NEW;
    END IF;
    NEW.granted_by := current_user::regrole;
    NEW.granted_at := now();
    NEW.purposes := ARRAY(SELECT DISTINCT p FROM unnest(NEW.purposes) p ORDER BY p);
    IF NEW.purposes = '{}' THEN
        NEW.purposes := NULL;
    END IF;
    RETURN NEW;
END
$$;
CREATE OR REPLACE FUNCTION interop.admin_history_record() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, interop AS $$
BEGIN
    IF interop.restoring() THEN
        RETURN NULL;            -- the dump holds the history of these rows
    END IF;
    INSERT INTO interop.admin_history (role, session_role, object, action, old_value, new_value)
    VALUES (interop.calling_role(), session_user, TG_TABLE_NAME, TG_OP,
            CASE WHEN TG_OP <> 'INSERT' THEN to_jsonb(OLD) END,
            CASE WHEN TG_OP <> 'DELETE' THEN to_jsonb(NEW) END);
    RETURN NULL;
END
$$;
CREATE OR REPLACE FUNCTION interop.peer_check() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, interop AS $$
BEGIN
    IF interop.restoring() THEN
        RETURN NEW;
    END IF;
    NEW.base_url := interop.normalize_base_url(NEW.base_url);
    IF array_ndims(NEW.more_urls) > 1 OR array_position(NEW.more_urls, NULL) IS NOT NULL THEN
        RAISE EXCEPTION 'invalid base URLs of peer "%"', NEW.member_id
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'The list of base URLs is one-dimensional and has no NULL.';
    END IF;
    NEW.more_urls := ARRAY(SELECT interop.normalize_base_url(u) FROM unnest(NEW.more_urls) WITH ORDINALITY x(u, o) ORDER BY o);
    IF NEW.base_url = ANY (NEW.more_urls)
       OR cardinality(NEW.more_urls) <> (SELECT count(DISTINCT u) FROM unnest(NEW.more_urls) u) THEN
        RAISE EXCEPTION 'invalid base URLs of peer "%"', NEW.member_id
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'A base URL is listed twice (after normalization).';
    END IF;
    NEW.added_by := current_user::regrole;
    NEW.added_at := now();
    RETURN NEW;
END
$$;
CREATE OR REPLACE FUNCTION interop.record_node_key() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, interop AS $$
BEGIN
    IF interop.restoring() THEN
        RETURN NULL;            -- interop.node_key comes from the dump, every key in it
    END IF;
    INSERT INTO interop.node_key (public_key, member_id, alg)
    VALUES (NEW.public_key, NEW.member_id, NEW.alg) ON CONFLICT (public_key) DO NOTHING;
    RETURN NULL;
END $$;
CREATE OR REPLACE FUNCTION interop.service_capture() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, interop AS $$
DECLARE
    rel regclass;
    pk text[];
    args text;
BEGIN
    -- a restore brings the capture triggers back with the table itself
    IF interop.restoring() THEN
        RETURN NULL;
    END IF;
    FOREACH rel IN ARRAY ARRAY[CASE WHEN TG_OP <> 'INSERT' THEN OLD.source END,
                               CASE WHEN TG_OP <> 'DELETE' THEN NEW.source END] LOOP
        CONTINUE WHEN rel IS NULL OR to_regclass(rel::text) IS NULL;
        IF EXISTS (SELECT FROM interop.service s WHERE s.source = rel AND s.track_changes) THEN
            pk := interop.primary_key_of(rel);
            args := (SELECT string_agg(quote_literal(c), ', ') FROM unnest(pk) c);
            IF NOT EXISTS (SELECT FROM pg_trigger WHERE tgrelid = rel AND tgname = 'interop_capture_insert') THEN
                EXECUTE format('CREATE TRIGGER interop_capture_insert AFTER INSERT ON %s REFERENCING NEW TABLE AS interop_new '
                               'FOR EACH STATEMENT EXECUTE FUNCTION interop.capture_changes(%s)', rel, args);
                EXECUTE format('CREATE TRIGGER interop_capture_update AFTER UPDATE ON %s REFERENCING OLD TABLE AS interop_old '
                               'NEW TABLE AS interop_new FOR EACH STATEMENT EXECUTE FUNCTION interop.capture_changes(%s)', rel, args);
                EXECUTE format('CREATE TRIGGER interop_capture_delete AFTER DELETE ON %s REFERENCING OLD TABLE AS interop_old '
                               'FOR EACH STATEMENT EXECUTE FUNCTION interop.capture_changes(%s)', rel, args);
                EXECUTE format('CREATE TRIGGER interop_capture_truncate BEFORE TRUNCATE ON %s '
                               'FOR EACH STATEMENT EXECUTE FUNCTION interop.refuse_truncate()', rel);
                -- changes before now were not captured: older cursors are expired
                INSERT INTO interop.change_pruned AS p (source, below)
                VALUES (rel, (pg_current_xact_id()::text::numeric + 1)::text::xid8)
                ON CONFLICT (source) DO UPDATE SET below = greatest(p.below, excluded.below), at = now();
            ELSE
                -- the triggers came back with the table (a restore): where the log starts is unknown
                INSERT INTO interop.change_pruned (source, below)
                VALUES (rel, (pg_current_xact_id()::text::numeric + 1)::text::xid8)
                ON CONFLICT (source) DO NOTHING;
            END IF;
        ELSIF EXISTS (SELECT FROM pg_trigger WHERE tgrelid = rel AND tgname = 'interop_capture_insert') THEN
            EXECUTE format('DROP TRIGGER interop_capture_insert ON %s', rel);
            EXECUTE format('DROP TRIGGER interop_capture_update ON %s', rel);
            EXECUTE format('DROP TRIGGER interop_capture_delete ON %s', rel);
            EXECUTE format('DROP TRIGGER interop_capture_truncate ON %s', rel);
            DELETE FROM interop.change_log WHERE source = rel;
            DELETE FROM interop.change_pruned WHERE source = rel;
        END IF;
    END LOOP;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION interop.restoring() IS
    'whether the current statement is a superuser''s COPY into a table of interop: a restore';

-- Auditors verify; they do not seal (an auditor's open transaction held the seal lock).
REVOKE EXECUTE ON FUNCTION interop.seal_log() FROM interop_auditor;

-- Revocation: CRLs of any CA that chains to an anchor (interop.ca_certificate
-- keeps the intermediates seen), add_crl() takes that CA's chain.
-- intermediate CAs: seen in the chains the workers verified, or passed to
-- add_crl(); a CRL signed by one of them is accepted once it chains to an anchor
CREATE TABLE interop.ca_certificate (
    fingerprint text PRIMARY KEY,          -- hex SHA-256 of the DER certificate
    subject     text NOT NULL,
    certificate text NOT NULL,             -- PEM
    seen_at     timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE interop.ca_certificate IS 'intermediate CAs seen in verified chains: the issuers of CRLs this node may install';
SELECT pg_catalog.pg_extension_config_dump('interop.ca_certificate', '');
REVOKE ALL ON interop.ca_certificate FROM PUBLIC;
GRANT SELECT ON interop.ca_certificate TO interop_admin, interop_auditor;
GRANT SELECT, INSERT ON interop.ca_certificate TO interop_worker;

DROP FUNCTION interop.add_crl(text);
CREATE FUNCTION interop.add_crl(pem text, ca_chain text DEFAULT NULL) RETURNS bool
    AS 'MODULE_PATHNAME', 'interop_add_crl' LANGUAGE C VOLATILE
    SECURITY DEFINER SET search_path = pg_catalog, interop;
COMMENT ON FUNCTION interop.add_crl(text, text) IS
    'installs a revocation list signed by a trust anchor or a CA that chains to one (ca_chain: that CA, leaf first); returns false when a newer one is installed';
REVOKE ALL ON FUNCTION interop.add_crl(text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION interop.add_crl(text, text) TO interop_admin;

-- Requests 0.1.0 queued and not yet answered were signed with typ "JOSE",
-- which a 0.2.0 provider refuses: sign them again, as 0.2.0 requests, with
-- the same jti (so a provider that answered none of their attempts runs
-- them once; one that answered an attempt whose answer never arrived says
-- 409 replayed, and its log holds that answer).
UPDATE interop.async_request SET request = NULL WHERE state = 'pending';

-- Citizens' consents and access history belong to the citizen portal's role,
-- not to every interop_user; the stat views work for their readers.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'interop_citizen_portal') THEN
        CREATE ROLE interop_citizen_portal NOLOGIN;
    END IF;
END
$$;
COMMENT ON ROLE interop_citizen_portal IS 'interop: the application that acts for citizens: records and withdraws their consents, shows their data-access report';
GRANT USAGE ON SCHEMA interop TO interop_citizen_portal;
REVOKE EXECUTE ON FUNCTION interop.grant_consent(text, interop.member_id, text, text, timestamptz, text),
                           interop.revoke_consent(bigint),
                           interop.consent_valid(text, interop.member_id, text, text),
                           interop.subject_access_report(text) FROM interop_user;
REVOKE SELECT ON interop.consent FROM interop_user;
GRANT EXECUTE ON FUNCTION interop.grant_consent(text, interop.member_id, text, text, timestamptz, text),
                          interop.revoke_consent(bigint),
                          interop.consent_valid(text, interop.member_id, text, text),
                          interop.subject_access_report(text) TO interop_citizen_portal;
GRANT SELECT ON interop.consent TO interop_citizen_portal;
GRANT EXECUTE ON FUNCTION interop.stat_counters(text) TO interop_admin, interop_auditor;

-- pg_monitor reads the counters and every subscription's progress
GRANT USAGE ON SCHEMA interop TO pg_monitor;
GRANT SELECT ON interop.stat_gateway, interop.stat_peer TO pg_monitor;
GRANT EXECUTE ON FUNCTION interop.stat_counters(text) TO pg_monitor;
CREATE OR REPLACE VIEW interop.stat_subscription AS
SELECT s.id, s.provider, s.service, s.target, s.owner, s.phase,
       s.rows_copied, s.changes_applied, s.batches,
       pg_catalog.clock_timestamp() - s.synced_at AS lag,
       s.synced_at, s.last_pull_at, s.copy_started_at, s.copy_finished_at,
       s.failures, s.last_error, s.next_pull
FROM interop.subscription s
WHERE s.owner = current_user
   OR pg_catalog.pg_has_role(current_user, 'interop_admin', 'MEMBER')
   OR pg_catalog.pg_has_role(current_user, 'interop_auditor', 'MEMBER')
   OR pg_catalog.pg_has_role(current_user, 'pg_monitor', 'MEMBER');
GRANT SELECT ON interop.stat_subscription TO pg_monitor;

-- A hot standby: the functions that write refuse there with one clear error
-- interop.refuse_on_standby: an ERROR on a hot standby, for the functions that write
CREATE FUNCTION interop.refuse_on_standby(what text) RETURNS void
    AS 'MODULE_PATHNAME', 'interop_refuse_on_standby' LANGUAGE C STABLE;
COMMENT ON FUNCTION interop.refuse_on_standby(text) IS
    'raises "... cannot run on a standby" while the server is in recovery: the first statement of each function of interop that writes';

CREATE OR REPLACE FUNCTION interop.query_async(provider interop.member_id, service text, params jsonb DEFAULT '{}',
                                    purpose text DEFAULT NULL) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, interop AS $$
DECLARE
    new_id bigint;
BEGIN
    PERFORM interop.refuse_on_standby('interop.query_async()');
    IF provider IS NULL OR service IS NULL THEN
        RAISE EXCEPTION 'provider and service must not be null' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF params IS NULL OR jsonb_typeof(params) <> 'object' THEN
        RAISE EXCEPTION 'params must be a JSON object' USING ERRCODE = 'invalid_parameter_value',
            HINT = 'Example: ''{"id": "38001010000"}''';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM interop.peer p WHERE p.member_id = query_async.provider) THEN
        RAISE EXCEPTION 'peer "%" is not known', provider USING ERRCODE = 'undefined_object',
            HINT = format('Add it with SELECT interop.add_peer(%L, ''https://host:port'');', provider);
    END IF;
    INSERT INTO interop.async_request (requested_by, provider, service, params, purpose)
    VALUES (interop.calling_role(), provider, service, params, purpose)
    RETURNING id INTO new_id;
    PERFORM interop.wake_sync_worker();
    RETURN new_id;
END $$;

CREATE OR REPLACE FUNCTION interop.add_peer(member_id interop.member_id, base_url text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, interop AS $$
BEGIN
    PERFORM interop.refuse_on_standby('interop.add_peer()');
    IF member_id IS NULL OR base_url IS NULL THEN
        RAISE EXCEPTION 'member_id and base_url must not be null' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    INSERT INTO interop.peer AS p (member_id, base_url) VALUES (add_peer.member_id, add_peer.base_url)
    ON CONFLICT ON CONSTRAINT peer_pkey DO UPDATE SET base_url = excluded.base_url, more_urls = excluded.more_urls;
    PERFORM interop.wake_sync_worker();     -- fetch its catalog after commit
END
$$;

CREATE OR REPLACE FUNCTION interop.remove_peer(member_id interop.member_id) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, interop AS $$
BEGIN
    PERFORM interop.refuse_on_standby('interop.remove_peer()');
    DELETE FROM interop.peer p WHERE p.member_id = remove_peer.member_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'peer "%" is not known', member_id
            USING ERRCODE = 'undefined_object',
                  HINT = 'See SELECT member_id, base_url FROM interop.peer.';
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION interop.grant_consent(subject text, consumer interop.member_id, service text, purpose text,
                                      valid_until timestamptz DEFAULT NULL, evidence text DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, interop AS $$
DECLARE
    new_id bigint;
BEGIN
    PERFORM interop.refuse_on_standby('interop.grant_consent()');
    IF subject IS NULL OR consumer IS NULL OR service IS NULL OR purpose IS NULL THEN
        RAISE EXCEPTION 'subject, consumer, service and purpose must not be null'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF subject = '' OR purpose = '' THEN
        RAISE EXCEPTION 'subject and purpose must not be empty'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF NOT EXISTS (SELECT FROM interop.service s WHERE s.name = grant_consent.service) THEN
        RAISE EXCEPTION 'service "%" does not exist', service
            USING ERRCODE = 'undefined_object',
                  HINT = 'A consent is recorded by the provider, for one of its published services.';
    END IF;
    IF valid_until IS NOT NULL AND valid_until <= clock_timestamp() THEN
        RAISE EXCEPTION 'valid_until % is not in the future', valid_until
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Pass NULL for a consent without an end.';
    END IF;
    INSERT INTO interop.consent AS c (subject, consumer, service, purpose, valid_until, evidence, granted_by)
    VALUES (grant_consent.subject, grant_consent.consumer, grant_consent.service, grant_consent.purpose,
            grant_consent.valid_until, grant_consent.evidence, interop.calling_role())
    RETURNING c.id INTO new_id;
    INSERT INTO interop.consent_log (consent_id, event, subject, consumer, service, purpose, valid_until, evidence, role)
    VALUES (new_id, 'granted', grant_consent.subject, grant_consent.consumer, grant_consent.service,
            grant_consent.purpose, grant_consent.valid_until, grant_consent.evidence, interop.calling_role());
    RETURN new_id;
END
$$;

CREATE OR REPLACE FUNCTION interop.revoke_consent(id bigint) RETURNS bool
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, interop AS $$
DECLARE
    c interop.consent;
BEGIN
    PERFORM interop.refuse_on_standby('interop.revoke_consent()');
    UPDATE interop.consent AS k SET revoked_at = clock_timestamp(), revoked_by = interop.calling_role()
    WHERE k.id = revoke_consent.id AND k.revoked_at IS NULL
    RETURNING k.* INTO c;
    IF NOT FOUND THEN
        IF EXISTS (SELECT FROM interop.consent k WHERE k.id = revoke_consent.id) THEN
            RAISE NOTICE 'consent % is already revoked, skipping', id;
            RETURN false;
        END IF;
        RAISE EXCEPTION 'consent % does not exist', id
            USING ERRCODE = 'undefined_object';
    END IF;
    INSERT INTO interop.consent_log (consent_id, event, subject, consumer, service, purpose, valid_until, evidence, role)
    VALUES (c.id, 'revoked', c.subject, c.consumer, c.service, c.purpose, c.valid_until, c.evidence,
            interop.calling_role());
    RETURN true;
END
$$;

CREATE OR REPLACE FUNCTION interop.publish(service text, source regclass, filter_columns text[] DEFAULT '{}',
                                subject_column text DEFAULT NULL, requires_consent bool DEFAULT false,
                                max_rows int DEFAULT 1000, track_changes bool DEFAULT false,
                                description text DEFAULT NULL) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, interop AS $$
BEGIN
    PERFORM interop.refuse_on_standby('interop.publish()');
    IF service IS NULL OR service !~ '^[a-z][a-z0-9_-]{0,62}$' THEN
        RAISE EXCEPTION 'invalid service name "%"', service
            USING ERRCODE = 'invalid_name',
                  DETAIL = 'A service name is 1 to 63 lower-case letters, digits, "_" or "-", starting with a letter.',
                  HINT = 'Example: person_address.';
    END IF;
    IF source IS NULL OR max_rows IS NULL OR requires_consent IS NULL THEN
        RAISE EXCEPTION 'source, max_rows and requires_consent must not be null'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF max_rows NOT BETWEEN 1 AND 1000000 THEN
        RAISE EXCEPTION 'max_rows must be between 1 and 1000000, not %', max_rows
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF requires_consent AND subject_column IS NULL THEN
        RAISE EXCEPTION 'a service that requires consent needs a subject column'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Name the column that identifies the citizen in subject_column.';
    END IF;
    INSERT INTO interop.service AS s (name, source, filter_columns, subject_column, requires_consent,
                                      max_rows, track_changes, description)
    VALUES (publish.service, publish.source, coalesce(publish.filter_columns, '{}'), publish.subject_column,
            publish.requires_consent, publish.max_rows, coalesce(publish.track_changes, false),
            publish.description)
    ON CONFLICT (name) DO UPDATE
        SET source = excluded.source, filter_columns = excluded.filter_columns,
            subject_column = excluded.subject_column, requires_consent = excluded.requires_consent,
            max_rows = excluded.max_rows, track_changes = excluded.track_changes,
            description = excluded.description;
END
$$;

CREATE OR REPLACE FUNCTION interop.unpublish(service text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, interop AS $$
BEGIN
    PERFORM interop.refuse_on_standby('interop.unpublish()');
    DELETE FROM interop.service s WHERE s.name = unpublish.service;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'service "%" does not exist', service
            USING ERRCODE = 'undefined_object',
                  HINT = 'See SELECT name FROM interop.service.';
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION interop.grant_access(service text, consumer interop.member_id, purposes text[] DEFAULT NULL,
                                     legal_basis text DEFAULT NULL) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, interop AS $$
BEGIN
    PERFORM interop.refuse_on_standby('interop.grant_access()');
    IF NOT EXISTS (SELECT FROM interop.service s WHERE s.name = grant_access.service) THEN
        RAISE EXCEPTION 'service "%" does not exist', service
            USING ERRCODE = 'undefined_object',
                  HINT = 'Publish it first with interop.publish().';
    END IF;
    IF consumer IS NULL THEN
        RAISE EXCEPTION 'consumer must not be null' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF array_position(purposes, NULL) IS NOT NULL OR '' = ANY (purposes) THEN
        RAISE EXCEPTION 'purposes must not contain null or empty strings'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Pass NULL to allow any purpose.';
    END IF;
    INSERT INTO interop.access_grant AS g (service, consumer, purposes, legal_basis)
    VALUES (grant_access.service, grant_access.consumer, grant_access.purposes, grant_access.legal_basis)
    ON CONFLICT ON CONSTRAINT access_grant_pkey DO UPDATE
        SET purposes = excluded.purposes, legal_basis = excluded.legal_basis;
END
$$;

CREATE OR REPLACE FUNCTION interop.revoke_access(service text, consumer interop.member_id) RETURNS bool
LANGUAGE plpgsql SET search_path = pg_catalog, interop AS $$
BEGIN
    PERFORM interop.refuse_on_standby('interop.revoke_access()');
    DELETE FROM interop.access_grant g
    WHERE g.service = revoke_access.service AND g.consumer = revoke_access.consumer;
    IF NOT FOUND THEN
        RAISE NOTICE 'consumer "%" has no access to service "%", skipping', consumer, service;
        RETURN false;
    END IF;
    RETURN true;
END
$$;

CREATE OR REPLACE FUNCTION interop.prune_changes(older_than interval) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, interop AS $$
DECLARE
    n bigint;
BEGIN
    PERFORM interop.refuse_on_standby('interop.prune_changes()');
    WITH gone AS (
        DELETE FROM interop.change_log WHERE at < now() - older_than RETURNING source, tx
    ), horizon AS (
        SELECT source, max(tx) AS tx, count(*) AS n FROM gone GROUP BY source
    ), marked AS (
        INSERT INTO interop.change_pruned AS p (source, below)
        SELECT source, (tx::text::numeric + 1)::text::xid8 FROM horizon
        ON CONFLICT (source) DO UPDATE SET below = greatest(p.below, excluded.below), at = now()
        RETURNING 1
    )
    SELECT coalesce(sum(h.n), 0) INTO n FROM horizon h, (SELECT count(*) FROM marked) m;
    RETURN n;
END
$$;

CREATE OR REPLACE FUNCTION interop.subscribe(provider interop.member_id, service text, target regclass,
                                  purpose text DEFAULT NULL, every interval DEFAULT '1 min') RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, interop AS $$
DECLARE
    who name := interop.calling_role();
    priv text;
    new_id bigint;
BEGIN
    PERFORM interop.refuse_on_standby('interop.subscribe()');
    IF provider IS NULL OR service IS NULL OR target IS NULL OR every IS NULL THEN
        RAISE EXCEPTION 'provider, service, target and every must not be null'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF NOT EXISTS (SELECT FROM interop.peer p WHERE p.member_id = subscribe.provider) THEN
        RAISE EXCEPTION 'peer "%" is not known', provider USING ERRCODE = 'undefined_object',
            HINT = format('Add it with SELECT interop.add_peer(%L, ''https://host:port'');', provider);
    END IF;
    IF every < interval '10 ms' THEN
        RAISE EXCEPTION 'every must be at least 10 ms, not %', every USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF (SELECT relkind FROM pg_class WHERE oid = target) NOT IN ('r', 'p') THEN
        RAISE EXCEPTION 'cannot subscribe into "%"', target USING ERRCODE = 'wrong_object_type',
            DETAIL = 'The target of a subscription is a table.';
    END IF;
    IF interop.primary_key_of(target) IS NULL THEN
        RAISE EXCEPTION 'table "%" has no primary key', target USING ERRCODE = 'invalid_table_definition',
            DETAIL = 'Changes are applied by primary key; it must be the provider''s.',
            HINT = 'Add the same primary key as the remote table''s.';
    END IF;
    FOREACH priv IN ARRAY ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE'] LOOP
        IF NOT has_table_privilege(who, target, priv) THEN
            RAISE EXCEPTION 'role "%" cannot % "%"', who, priv, target USING ERRCODE = 'insufficient_privilege',
                DETAIL = 'The sync worker applies the changes with the privileges of the role that subscribes.';
        END IF;
    END LOOP;
    IF EXISTS (SELECT FROM interop.subscription s WHERE s.target = subscribe.target
                                                     OR (s.provider = subscribe.provider AND s.service = subscribe.service)) THEN
        RAISE EXCEPTION 'a subscription to service "%" of "%" or into "%" exists already', service, provider, target
            USING ERRCODE = 'duplicate_object',
                  HINT = 'See interop.stat_subscription; interop.unsubscribe() removes one.';
    END IF;
    INSERT INTO interop.subscription (provider, service, target, purpose, every, owner)
    VALUES (provider, service, target, purpose, every, who)
    RETURNING id INTO new_id;
    PERFORM interop.wake_sync_worker();
    RETURN new_id;
END
$$;

CREATE OR REPLACE FUNCTION interop.unsubscribe(provider interop.member_id, service text) RETURNS bool
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, interop AS $$
BEGIN
    PERFORM interop.refuse_on_standby('interop.unsubscribe()');
    DELETE FROM interop.subscription s
    WHERE s.provider = unsubscribe.provider AND s.service = unsubscribe.service
      AND (s.owner = interop.calling_role() OR pg_has_role(interop.calling_role(), 'interop_admin', 'MEMBER'));
    IF NOT FOUND THEN
        RAISE NOTICE 'there is no subscription to service "%" of "%", skipping', service, provider;
        RETURN false;
    END IF;
    RETURN true;
END
$$;

-- Several base URLs per peer: the nodes of a provider that can be its primary
ALTER TABLE interop.peer ADD COLUMN more_urls text[] NOT NULL DEFAULT '{}';
COMMENT ON TABLE interop.peer IS 'other nodes this node calls: member id and base URL (https://host:port[/prefix]), and the base URLs of its other nodes';
CREATE FUNCTION interop.add_peer(member_id interop.member_id, base_urls text[]) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, interop AS $$
BEGIN
    PERFORM interop.refuse_on_standby('interop.add_peer()');
    IF member_id IS NULL OR base_urls IS NULL THEN
        RAISE EXCEPTION 'member_id and base_urls must not be null' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF cardinality(base_urls) = 0 THEN
        RAISE EXCEPTION 'peer "%" needs at least one base URL', member_id USING ERRCODE = 'invalid_parameter_value',
            HINT = format('Example: SELECT interop.add_peer(%L, ARRAY[''https://a.example:8443'', ''https://b.example:8443'']);', member_id);
    END IF;
    INSERT INTO interop.peer AS p (member_id, base_url, more_urls)
    VALUES (add_peer.member_id, base_urls[array_lower(base_urls, 1)],
            coalesce(base_urls[array_lower(base_urls, 1) + 1:], '{}'))
    ON CONFLICT ON CONSTRAINT peer_pkey DO UPDATE SET base_url = excluded.base_url, more_urls = excluded.more_urls;
    PERFORM interop.wake_sync_worker();     -- fetch its catalog after commit
END
$$;

COMMENT ON FUNCTION interop.add_peer(interop.member_id, text[]) IS
    'records (or moves) a peer with several base URLs, its nodes that can be primary, tried in order when one cannot be reached';
REVOKE ALL ON FUNCTION interop.add_peer(interop.member_id, text[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION interop.add_peer(interop.member_id, text[]) TO interop_admin;

-- Key rotation without an outage: a pending key, activated by its certificate
ALTER TABLE interop.node ADD COLUMN pending_alg text CHECK (pending_alg IN ('ES256', 'EdDSA', 'PS256', 'RS256')),
    ADD COLUMN pending_public_key text, ADD COLUMN pending_at timestamptz;
CREATE FUNCTION interop.rotate_key(alg text DEFAULT NULL) RETURNS text
    AS 'MODULE_PATHNAME', 'interop_rotate_key' LANGUAGE C VOLATILE
    SECURITY DEFINER SET search_path = pg_catalog, interop;
COMMENT ON FUNCTION interop.rotate_key(text) IS
    'a new node key, pending until install_certificate() of its certificate; returns its certificate request. The current key signs until then';
REVOKE ALL ON FUNCTION interop.rotate_key(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION interop.rotate_key(text) TO interop_admin;

-- OCSP next to CRLs
-- OCSP: the certificates seen (in verified chains and the node's own) that
-- name a responder, and the responder's last checked answer about each
CREATE TABLE interop.ocsp_response (
    fingerprint text PRIMARY KEY,           -- hex SHA-256 of the DER certificate
    subject     text NOT NULL,
    certificate text NOT NULL,              -- PEM
    issuer      text NOT NULL,              -- PEM of the issuing CA
    responder   text NOT NULL,              -- the http:// URL the certificate names
    response    bytea,                      -- the last answer that checked (DER), the one stapled
    status      text CHECK (status IN ('good', 'revoked', 'unknown')),
    revoked_at  timestamptz,
    this_update timestamptz,
    next_update timestamptz,
    fetched_at  timestamptz,                -- the last answer that checked
    checked_at  timestamptz,                -- the last attempt
    failures    int NOT NULL DEFAULT 0,     -- attempts failed in a row
    last_error  text,
    next_fetch  timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE interop.ocsp_response IS 'OCSP answers about the certificates seen, fetched by the sync worker before they stop counting (interop.ocsp_max_age)';
CREATE TRIGGER ocsp_response_invalidate AFTER INSERT OR UPDATE OF response OR DELETE OR TRUNCATE
    ON interop.ocsp_response FOR EACH STATEMENT EXECUTE FUNCTION interop.invalidate_cache();
REVOKE ALL ON interop.ocsp_response FROM PUBLIC;
GRANT SELECT, DELETE ON interop.ocsp_response TO interop_admin;
GRANT SELECT ON interop.ocsp_response TO interop_auditor;
GRANT SELECT, INSERT, UPDATE ON interop.ocsp_response TO interop_worker;

-- Timestamps on seals from an RFC 3161 TSA (interop.tsa_url)
-- RFC 3161 timestamps over the seals (src/tsa.c): a token over the SHA-256
-- of a seal's JWS vouches for that seal and, through the chain, for every
-- seal before it
CREATE TABLE interop.seal_timestamp (
    seal_id     bigint PRIMARY KEY,     -- the seal of interop.log_seal it is over
    token       bytea NOT NULL,         -- the TimeStampToken (CMS ContentInfo, DER): openssl ts -verify -token_in
    gen_time    timestamptz NOT NULL,   -- the time the TSA put in it
    tsa         text,                   -- the subject of the certificate that signed it
    tsa_url     text NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE interop.seal_timestamp IS 'timestamp tokens from the TSA (interop.tsa_url), each over the SHA-256 of a seal''s JWS';
SELECT pg_catalog.pg_extension_config_dump('interop.seal_timestamp', '');

-- how the requests to the TSA fare (one row)
CREATE TABLE interop.tsa_status (
    one             boolean PRIMARY KEY DEFAULT true CHECK (one),
    enabled_at      timestamptz,        -- since when interop.tsa_url is set, as the sync worker saw it
    failures        integer NOT NULL DEFAULT 0,     -- in a row, since the last token
    failed_total    bigint NOT NULL DEFAULT 0,
    last_error      text,
    last_failure_at timestamptz,
    last_success_at timestamptz,
    next_attempt    timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE interop.tsa_status IS 'the requests of the sync worker to the TSA: failures, the last error, when it asks again';
INSERT INTO interop.tsa_status DEFAULT VALUES;

CREATE TRIGGER seal_timestamp_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON interop.seal_timestamp
    FOR EACH STATEMENT EXECUTE FUNCTION interop.log_append_only();
REVOKE ALL ON interop.seal_timestamp, interop.tsa_status FROM PUBLIC;
GRANT SELECT ON interop.seal_timestamp, interop.tsa_status TO interop_admin, interop_auditor, interop_worker;
GRANT INSERT ON interop.seal_timestamp TO interop_worker;
GRANT UPDATE ON interop.tsa_status TO interop_worker;

-- Evidence of one exchange that leaves the database
CREATE FUNCTION interop.evidence(message_id bigint) RETURNS jsonb
    AS 'MODULE_PATHNAME', 'interop_evidence' LANGUAGE C STABLE STRICT
    SECURITY DEFINER SET search_path = pg_catalog, interop;
COMMENT ON FUNCTION interop.evidence(bigint) IS
    'one self-contained JSON document for an exchange: request, answer, the record''s bytes, its seal with the Merkle path, the chain of seals to a timestamp token and to the witnesses'' cosignatures';
REVOKE ALL ON FUNCTION interop.evidence(bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION interop.evidence(bigint) TO interop_admin, interop_auditor;

-- what prune_log() removes from interop.message_log, with the bytes each
-- record's seal hashed: interop.evidence() is still given from here
CREATE TABLE interop.log_archive (
    record_id   bigint PRIMARY KEY,     -- its id in interop.message_log
    seal_id     bigint NOT NULL,        -- the seal that covers it
    at          timestamptz NOT NULL,
    direction   text NOT NULL,
    peer        text,
    service     text,
    jti         uuid,
    status      int NOT NULL,
    request     text,
    response    text,
    bytes       bytea NOT NULL,         -- the record as its seal hashed it
    archived_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE interop.log_archive IS 'message_log records removed by prune_log(), with the bytes their seals hashed; interop.evidence() reads them';
ALTER TABLE interop.log_archive ALTER COLUMN bytes SET STORAGE EXTERNAL;
SELECT pg_catalog.pg_extension_config_dump('interop.log_archive', '');
REVOKE ALL ON interop.log_archive FROM PUBLIC;
GRANT SELECT ON interop.log_archive TO interop_admin, interop_auditor;

-- Witnesses: peers that cosign this node's newest seal (src/witness.c)
-- that removing or rewriting the newest seals is seen by another node.

-- the peers this node sends its newest seal to
CREATE TABLE interop.witness (
    member      interop.member_id PRIMARY KEY,
    added_at    timestamptz NOT NULL DEFAULT now(),
    added_by    regrole NOT NULL DEFAULT current_user::regrole
);
COMMENT ON TABLE interop.witness IS 'the peers that cosign this node''s newest seal (interop.add_witness)';
SELECT pg_catalog.pg_extension_config_dump('interop.witness', '');

-- how the requests to each witness fare; written by the sync worker
CREATE TABLE interop.witness_status (
    member          interop.member_id PRIMARY KEY REFERENCES interop.witness ON DELETE CASCADE,
    witnessed_seal  bigint,             -- the newest seal the witness has cosigned, as it said
    failures        integer NOT NULL DEFAULT 0,     -- in a row
    failed_total    bigint NOT NULL DEFAULT 0,
    last_error      text,
    last_attempt_at timestamptz,
    last_success_at timestamptz,
    next_attempt    timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE interop.witness_status IS 'the requests of the sync worker to each witness: the seal it cosigned last, failures, the last error';

-- the cosignatures this node received: each witness's signed word that it
-- saw this node's chain of seals up to seal_id, whose JWS hashes to head
CREATE TABLE interop.cosignature (
    id          bigserial PRIMARY KEY,
    witness     interop.member_id NOT NULL,
    seal_id     bigint NOT NULL,
    head        text NOT NULL,          -- base64url SHA-256 of that seal's JWS
    cosigned_at timestamptz NOT NULL,   -- as the witness says
    jws         text NOT NULL,          -- the cosignature, signed by the witness
    received_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (witness, seal_id)
);
COMMENT ON TABLE interop.cosignature IS 'cosignatures of this node''s newest seals by its witnesses; interop.verify_log() compares the seals with them';
SELECT pg_catalog.pg_extension_config_dump('interop.cosignature', '');
SELECT pg_catalog.pg_extension_config_dump('interop.cosignature_id_seq', '');

-- the heads this node cosigned as a witness of other nodes
CREATE TABLE interop.witnessed_head (
    id          bigserial PRIMARY KEY,
    node        interop.member_id NOT NULL,
    seal_id     bigint NOT NULL,
    head        text NOT NULL,          -- base64url SHA-256 of the seal's JWS
    seal        text NOT NULL,          -- the node's seal, as it sent it
    cosignature text NOT NULL,          -- this node's answer
    cosigned_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (node, seal_id)
);
COMMENT ON TABLE interop.witnessed_head IS 'the newest seals of other nodes this node cosigned as their witness';
SELECT pg_catalog.pg_extension_config_dump('interop.witnessed_head', '');
SELECT pg_catalog.pg_extension_config_dump('interop.witnessed_head_id_seq', '');

-- a node whose new seals do not extend the head this node cosigned: its
-- newest seals were removed or rewritten, and its signed request says so
CREATE TABLE interop.witness_alarm (
    id              bigserial PRIMARY KEY,
    node            interop.member_id NOT NULL,
    seen_at         timestamptz NOT NULL DEFAULT now(),
    witnessed_seal  bigint NOT NULL,    -- the head this node had cosigned
    witnessed_head  text NOT NULL,
    offered_seal    bigint NOT NULL,    -- the head the node offered instead
    offered_head    text NOT NULL,
    problem         text NOT NULL,
    request         text NOT NULL,      -- the node's signed request: its own word
    UNIQUE (node, offered_head)
);
COMMENT ON TABLE interop.witness_alarm IS 'nodes whose new seals do not extend the head this node cosigned as their witness';
SELECT pg_catalog.pg_extension_config_dump('interop.witness_alarm', '');
SELECT pg_catalog.pg_extension_config_dump('interop.witness_alarm_id_seq', '');

CREATE TRIGGER cosignature_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON interop.cosignature
    FOR EACH STATEMENT EXECUTE FUNCTION interop.log_append_only();
CREATE TRIGGER witnessed_head_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON interop.witnessed_head
    FOR EACH STATEMENT EXECUTE FUNCTION interop.log_append_only();
CREATE TRIGGER witness_alarm_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON interop.witness_alarm
    FOR EACH STATEMENT EXECUTE FUNCTION interop.log_append_only();
CREATE TRIGGER witness_history AFTER INSERT OR UPDATE OR DELETE ON interop.witness
    FOR EACH ROW EXECUTE FUNCTION interop.admin_history_record();

CREATE FUNCTION interop.add_witness(member interop.member_id) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, interop AS $$
BEGIN
    PERFORM interop.refuse_on_standby('interop.add_witness()');
    IF member IS NULL THEN
        RAISE EXCEPTION 'member must not be null' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF member = (SELECT n.member_id FROM interop.node n) THEN
        RAISE EXCEPTION 'a node cannot be its own witness'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'A witness is another node of the federation that keeps a copy of this node''s newest seal.';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM interop.peer p WHERE p.member_id = add_witness.member) THEN
        RAISE EXCEPTION 'peer "%" is not known', member
            USING ERRCODE = 'undefined_object',
                  DETAIL = 'A witness is reached at its gateway, which interop.peer names.',
                  HINT = format('Add it first: SELECT interop.add_peer(%L, ''https://host:port'');', member);
    END IF;
    INSERT INTO interop.witness AS w (member) VALUES (add_witness.member) ON CONFLICT DO NOTHING;
    IF FOUND THEN
        INSERT INTO interop.witness_status (member) VALUES (add_witness.member);
    END IF;
    PERFORM interop.wake_sync_worker();     -- send it the newest seal after commit
END
$$;
COMMENT ON FUNCTION interop.add_witness(interop.member_id) IS
    'makes a peer a witness: the sync worker sends it each newest seal to cosign';

CREATE FUNCTION interop.remove_witness(member interop.member_id) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, interop AS $$
BEGIN
    PERFORM interop.refuse_on_standby('interop.remove_witness()');
    DELETE FROM interop.witness w WHERE w.member = remove_witness.member;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'witness "%" is not known', member
            USING ERRCODE = 'undefined_object',
                  HINT = 'See SELECT member FROM interop.witness.';
    END IF;
END
$$;
COMMENT ON FUNCTION interop.remove_witness(interop.member_id) IS
    'stops sending seals to a witness; its cosignatures stay';

REVOKE ALL ON FUNCTION interop.add_witness(interop.member_id), interop.remove_witness(interop.member_id) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION interop.add_witness(interop.member_id), interop.remove_witness(interop.member_id) TO interop_admin;
REVOKE ALL ON interop.witness, interop.witness_status, interop.cosignature, interop.witnessed_head,
    interop.witness_alarm FROM PUBLIC;
GRANT SELECT, INSERT, DELETE ON interop.witness TO interop_admin;
GRANT SELECT ON interop.witness, interop.witness_status, interop.cosignature, interop.witnessed_head,
    interop.witness_alarm TO interop_admin, interop_auditor, interop_worker;
GRANT INSERT ON interop.witness_status TO interop_admin, interop_worker;
GRANT UPDATE ON interop.witness_status TO interop_worker;
GRANT INSERT ON interop.cosignature, interop.witnessed_head, interop.witness_alarm TO interop_worker;
GRANT USAGE ON SEQUENCE interop.cosignature_id_seq, interop.witnessed_head_id_seq, interop.witness_alarm_id_seq
    TO interop_worker;

-- the sync worker's look for due requests reads them in order from the index
DROP INDEX interop.async_request_due;
CREATE INDEX async_request_due ON interop.async_request (next_attempt, id) WHERE state = 'pending';
-- the signed request and the answer are stored without compression (rows
-- written before keep theirs)
ALTER TABLE interop.async_request ALTER COLUMN request SET STORAGE EXTERNAL,
                                  ALTER COLUMN response SET STORAGE EXTERNAL;

-- each distinct protected header of a logged JWS, kept once: records from
-- now on refer to it by its digest; the records before keep theirs
CREATE TABLE interop.message_header (
    id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    digest  text NOT NULL,          -- base64url SHA-256 of header
    header  text NOT NULL           -- the protected header, base64url, as in the JWS
);
-- not unique: two writers of a new header at once each insert it, and
-- neither waits for the other's transaction
CREATE INDEX message_header_digest ON interop.message_header (digest);
COMMENT ON TABLE interop.message_header IS 'the protected headers (signer chains) of the logged messages, each once, by SHA-256';
CREATE FUNCTION interop.message_jws(stored text) RETURNS text
    AS 'MODULE_PATHNAME', 'interop_message_jws' LANGUAGE C STABLE STRICT;
COMMENT ON FUNCTION interop.message_jws(text) IS
    'a message_log (or log_archive) request or response as the JWS that was sent, its protected header put back';
SELECT pg_catalog.pg_extension_config_dump('interop.message_header', '');
SELECT pg_catalog.pg_extension_config_dump('interop.message_header_id_seq', '');
REVOKE ALL ON interop.message_header FROM PUBLIC;
REVOKE ALL ON FUNCTION interop.message_jws(text) FROM PUBLIC;
GRANT SELECT ON interop.message_header TO interop_auditor;
GRANT SELECT, INSERT ON interop.message_header TO interop_worker;
GRANT EXECUTE ON FUNCTION interop.message_jws(text) TO interop_auditor, interop_worker;
CREATE TRIGGER message_header_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON interop.message_header
    FOR EACH STATEMENT EXECUTE FUNCTION interop.log_append_only();

-- the backends keep the rows of interop.peer they read: a change tells them
-- to read again
CREATE TRIGGER peer_invalidate AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE
    ON interop.peer FOR EACH STATEMENT EXECUTE FUNCTION interop.invalidate_cache();
