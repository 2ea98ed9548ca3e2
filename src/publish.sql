-- publish.sql: services, access grants and their admin history.
--
-- A published query runs with the privileges of the role that published it.
-- publish() and grant_access() are therefore SECURITY INVOKER: current_user
-- is the publisher.  The rules hold for direct DML too, because they live in
-- triggers: the owner of a service (and the author of a grant) is always
-- forced to current_user, so nobody can make a service run with another
-- role's privileges; columns are checked against the source; every change is
-- written to interop.admin_history by a SECURITY DEFINER trigger, and that
-- table is writable by nobody else.

CREATE TABLE interop.service (
    name             text PRIMARY KEY
                     CHECK (name ~ '^[a-z][a-z0-9_-]{0,62}$'),
    source           regclass NOT NULL,
    filter_columns   text[] NOT NULL DEFAULT '{}',
    subject_column   text,
    requires_consent bool NOT NULL DEFAULT false,
    max_rows         int NOT NULL DEFAULT 1000 CHECK (max_rows BETWEEN 1 AND 1000000),
    track_changes    bool NOT NULL DEFAULT false,
    description      text,
    owner            regrole NOT NULL DEFAULT current_user::regrole,
    published_at     timestamptz NOT NULL DEFAULT now(),
    CHECK (NOT requires_consent OR subject_column IS NOT NULL)
);
COMMENT ON TABLE interop.service IS 'published services: a view or table, its filters, subject column, consent rule and row limit';

CREATE TABLE interop.access_grant (
    service     text NOT NULL REFERENCES interop.service ON UPDATE CASCADE ON DELETE CASCADE,
    consumer    interop.member_id NOT NULL,
    purposes    text[] CHECK (purposes IS NULL OR (cardinality(purposes) > 0 AND array_position(purposes, NULL) IS NULL)),
    legal_basis text,
    granted_by  regrole NOT NULL DEFAULT current_user::regrole,
    granted_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (service, consumer)
);
COMMENT ON TABLE interop.access_grant IS 'which consumer may call which service, for which purposes (NULL: any), on which legal basis';

CREATE TABLE interop.admin_history (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT clock_timestamp(),
    role        name NOT NULL,          -- the role in effect in the session (after SET ROLE)
    session_role name NOT NULL,         -- session_user: who logged in
    object      text NOT NULL,          -- 'service' or 'access_grant'
    action      text NOT NULL,          -- INSERT, UPDATE, DELETE
    old_value   jsonb,
    new_value   jsonb
);
COMMENT ON TABLE interop.admin_history IS 'every change to services and access grants: who, when, old and new value (append-only)';
CREATE INDEX ON interop.admin_history (object, at);

SELECT pg_catalog.pg_extension_config_dump('interop.service', '');
SELECT pg_catalog.pg_extension_config_dump('interop.access_grant', '');
SELECT pg_catalog.pg_extension_config_dump('interop.admin_history', '');
SELECT pg_catalog.pg_extension_config_dump('interop.admin_history_id_seq', '');

-- check a service row against its source; the owner is whoever writes it
CREATE FUNCTION interop.service_check() RETURNS trigger
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

CREATE FUNCTION interop.access_grant_check() RETURNS trigger
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

-- the role in effect in the calling session, even inside SECURITY DEFINER
CREATE FUNCTION interop.calling_role() RETURNS name
    AS 'MODULE_PATHNAME', 'interop_calling_role' LANGUAGE C STABLE STRICT;
REVOKE ALL ON FUNCTION interop.calling_role() FROM PUBLIC;

-- the history writer: the only way rows enter interop.admin_history
CREATE FUNCTION interop.admin_history_record() RETURNS trigger
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
REVOKE ALL ON FUNCTION interop.admin_history_record() FROM PUBLIC;

CREATE TRIGGER service_check BEFORE INSERT OR UPDATE ON interop.service
    FOR EACH ROW EXECUTE FUNCTION interop.service_check();
CREATE TRIGGER service_history AFTER INSERT OR UPDATE OR DELETE ON interop.service
    FOR EACH ROW EXECUTE FUNCTION interop.admin_history_record();
CREATE TRIGGER access_grant_check BEFORE INSERT OR UPDATE ON interop.access_grant
    FOR EACH ROW EXECUTE FUNCTION interop.access_grant_check();
CREATE TRIGGER access_grant_history AFTER INSERT OR UPDATE OR DELETE ON interop.access_grant
    FOR EACH ROW EXECUTE FUNCTION interop.admin_history_record();

CREATE FUNCTION interop.publish(service text, source regclass, filter_columns text[] DEFAULT '{}',
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
COMMENT ON FUNCTION interop.publish(text, regclass, text[], text, bool, int, bool, text) IS
    'publishes (or republishes) a table or view as a service; it answers with the privileges of the calling role';

CREATE FUNCTION interop.unpublish(service text) RETURNS void
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
COMMENT ON FUNCTION interop.unpublish(text) IS 'withdraws a service and its access grants (the admin history keeps them)';

CREATE FUNCTION interop.grant_access(service text, consumer interop.member_id, purposes text[] DEFAULT NULL,
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
COMMENT ON FUNCTION interop.grant_access(text, interop.member_id, text[], text) IS
    'lets a consumer call a service, for the given purposes (NULL: any) and legal basis; access is denied by default';

CREATE FUNCTION interop.revoke_access(service text, consumer interop.member_id) RETURNS bool
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
COMMENT ON FUNCTION interop.revoke_access(text, interop.member_id) IS
    'removes a consumer''s access grant; returns false when there was none';

REVOKE ALL ON FUNCTION interop.publish(text, regclass, text[], text, bool, int, bool, text),
                       interop.unpublish(text),
                       interop.grant_access(text, interop.member_id, text[], text),
                       interop.revoke_access(text, interop.member_id) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION interop.publish(text, regclass, text[], text, bool, int, bool, text),
                          interop.unpublish(text),
                          interop.grant_access(text, interop.member_id, text[], text),
                          interop.revoke_access(text, interop.member_id) TO interop_admin;
GRANT SELECT, INSERT, UPDATE, DELETE ON interop.service, interop.access_grant TO interop_admin;
GRANT SELECT ON interop.service, interop.access_grant, interop.admin_history TO interop_auditor;
GRANT SELECT ON interop.admin_history TO interop_admin;
GRANT SELECT ON interop.service, interop.access_grant TO interop_worker;

CREATE FUNCTION interop.dry_run(service text, consumer interop.member_id, params jsonb DEFAULT '{}',
                                purpose text DEFAULT NULL) RETURNS jsonb
    AS 'MODULE_PATHNAME', 'interop_dry_run' LANGUAGE C VOLATILE
    SET search_path = pg_catalog, interop;   -- SECURITY INVOKER: it checks that the caller is the publisher
COMMENT ON FUNCTION interop.dry_run(text, interop.member_id, jsonb, text) IS
    'what the gateway would answer this consumer (columns, rows, truncated), or the refusal; for the service''s publisher';
REVOKE ALL ON FUNCTION interop.dry_run(text, interop.member_id, jsonb, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION interop.dry_run(text, interop.member_id, jsonb, text) TO interop_admin;

-- A published source cannot be dropped from under its service: regclass
-- records no dependency, so an sql_drop event trigger refuses the drop.
-- It runs for every DROP by any role, hence SECURITY DEFINER: the dropping
-- role need not be able to read interop.service.
CREATE FUNCTION interop.refuse_drop_of_published_source() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, interop AS $$
DECLARE
    svc record;
BEGIN
    -- while the extension itself is being dropped there is nothing to protect
    IF to_regclass('interop.service') IS NULL THEN
        RETURN;
    END IF;
    SELECT s.name, d.object_identity INTO svc
    FROM pg_event_trigger_dropped_objects() d
    JOIN interop.service s ON s.source::oid = d.objid
    WHERE d.classid = 'pg_class'::regclass AND d.objsubid = 0
    LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'cannot drop "%": it is published as service "%"', svc.object_identity, svc.name
            USING ERRCODE = 'dependent_objects_still_exist',
                  HINT = format('Run SELECT interop.unpublish(%L) first.', svc.name);
    END IF;
END
$$;
REVOKE ALL ON FUNCTION interop.refuse_drop_of_published_source() FROM PUBLIC;
CREATE EVENT TRIGGER interop_published_source_drop ON sql_drop
    EXECUTE FUNCTION interop.refuse_drop_of_published_source();
