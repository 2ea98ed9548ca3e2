-- subscribe.sql: change capture on the provider, subscriptions on the consumer
-- (docs/protocol.md, POST /v1/changes).  See src/changes.c and
-- docs/architecture.md, "Subscriptions".
--
-- Provider.  A service published with track_changes => true has three
-- statement triggers on its table that write the primary key of every
-- inserted, updated or deleted row to interop.change_log, with the id of
-- the writing transaction (tx).  The rows themselves are not copied: the
-- gateway answers a change request with the rows as they are when it
-- answers (or a delete when the key is gone), so the order in which
-- concurrent transactions committed does not matter.  A cursor names a
-- range of transaction ids; a range is served only once every transaction
-- in it has ended (below the snapshot's xmin), so nothing can commit into a
-- range that was served.
--
-- Consumer.  interop.subscribe() records a subscription; the sync worker
-- pulls it: first the initial copy, in pages by primary key, then the
-- changes, each batch applied with its cursor in one transaction.

CREATE TABLE interop.change_log (
    id      bigint GENERATED ALWAYS AS IDENTITY,
    source  oid NOT NULL,                                   -- the published table
    tx      xid8 NOT NULL DEFAULT pg_catalog.pg_current_xact_id(),
    key     jsonb NOT NULL,                                 -- the primary key, as an object
    at      timestamptz NOT NULL DEFAULT pg_catalog.now()
);
COMMENT ON TABLE interop.change_log IS 'keys changed in tables published with track_changes, by transaction; served by POST /v1/changes';
CREATE INDEX change_log_range ON interop.change_log (source, tx, id);
CREATE INDEX change_log_at ON interop.change_log (at);
REVOKE ALL ON interop.change_log FROM PUBLIC;
GRANT SELECT ON interop.change_log TO interop_admin, interop_auditor, interop_worker;

-- below which transaction id the change log of a table was pruned
CREATE TABLE interop.change_pruned (
    source  oid PRIMARY KEY,
    below   xid8 NOT NULL,
    at      timestamptz NOT NULL DEFAULT pg_catalog.now()
);
COMMENT ON TABLE interop.change_pruned IS 'per tracked table: cursors older than "below" are expired (410 cursor_expired)';
REVOKE ALL ON interop.change_pruned FROM PUBLIC;
GRANT SELECT ON interop.change_pruned TO interop_admin, interop_auditor;
GRANT SELECT, INSERT ON interop.change_pruned TO interop_worker;   -- a restored provider starts its change log

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
CREATE FUNCTION interop.capture_changes() RETURNS trigger
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
REVOKE ALL ON FUNCTION interop.capture_changes() FROM PUBLIC;

CREATE FUNCTION interop.refuse_truncate() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, interop AS $$
BEGIN
    RAISE EXCEPTION 'cannot truncate "%": it is published with track_changes', TG_RELID::regclass
        USING ERRCODE = 'object_in_use',
              DETAIL = 'TRUNCATE does not say which rows it removed, so subscribers could not follow it.',
              HINT = 'Use DELETE, or publish the service with track_changes => false first.';
END
$$;
REVOKE ALL ON FUNCTION interop.refuse_truncate() FROM PUBLIC;

-- the primary key of a table, in index order (NULL when it has none)
CREATE FUNCTION interop.primary_key_of(rel regclass) RETURNS text[]
LANGUAGE sql STABLE SET search_path = pg_catalog, interop AS $$
    SELECT array_agg(a.attname::text ORDER BY k.ord)
    FROM pg_index i
    CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
    JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
    WHERE i.indrelid = rel AND i.indisprimary
$$;
REVOKE ALL ON FUNCTION interop.primary_key_of(regclass) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION interop.primary_key_of(regclass) TO interop_admin, interop_user;

-- after every change to interop.service: the capture triggers of the
-- tables involved exist exactly while a service tracks them
CREATE FUNCTION interop.service_capture() RETURNS trigger
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
REVOKE ALL ON FUNCTION interop.service_capture() FROM PUBLIC;
CREATE TRIGGER service_capture AFTER INSERT OR UPDATE OR DELETE ON interop.service
    FOR EACH ROW EXECUTE FUNCTION interop.service_capture();

-- retention: the sync worker calls this every seal_interval
CREATE FUNCTION interop.prune_changes(older_than interval) RETURNS bigint
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
COMMENT ON FUNCTION interop.prune_changes(interval) IS
    'deletes change log entries older than the interval; subscribers behind them start a new copy';
REVOKE ALL ON FUNCTION interop.prune_changes(interval) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION interop.prune_changes(interval) TO interop_admin, interop_worker;

-- ---- the consumer ----

CREATE TABLE interop.subscription (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    provider         interop.member_id NOT NULL,
    service          text NOT NULL,
    target           regclass NOT NULL UNIQUE,
    purpose          text,
    every            interval NOT NULL DEFAULT '1 min' CHECK (every >= '10 ms'),
    owner            name NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT pg_catalog.now(),
    phase            text NOT NULL DEFAULT 'copy' CHECK (phase IN ('copy', 'sync')),
    cursor           jsonb,                 -- the provider's, opaque; NULL: start a copy
    rows_copied      bigint NOT NULL DEFAULT 0,
    changes_applied  bigint NOT NULL DEFAULT 0,
    batches          bigint NOT NULL DEFAULT 0,
    copy_started_at  timestamptz,
    copy_finished_at timestamptz,
    synced_at        timestamptz,           -- what the provider committed before this is applied
    last_pull_at     timestamptz,
    failures         int NOT NULL DEFAULT 0,
    last_error       text,
    next_pull        timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
    UNIQUE (provider, service)
);
COMMENT ON TABLE interop.subscription IS 'local tables kept equal to a remote service that tracks changes';
SELECT pg_catalog.pg_extension_config_dump('interop.subscription', '');
SELECT pg_catalog.pg_extension_config_dump('interop.subscription_id_seq', '');
REVOKE ALL ON interop.subscription FROM PUBLIC;
GRANT SELECT ON interop.subscription TO interop_admin, interop_auditor;
GRANT SELECT, UPDATE ON interop.subscription TO interop_worker;

CREATE FUNCTION interop.subscribe(provider interop.member_id, service text, target regclass,
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
COMMENT ON FUNCTION interop.subscribe(interop.member_id, text, regclass, text, interval) IS
    'keeps a local table equal to a remote service that tracks changes: an initial copy, then the changes every interval';

CREATE FUNCTION interop.unsubscribe(provider interop.member_id, service text) RETURNS bool
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
COMMENT ON FUNCTION interop.unsubscribe(interop.member_id, text) IS
    'stops a subscription; the local table keeps its rows';

-- one batch into the target; SECURITY INVOKER: the sync worker calls it as
-- the subscription's owner
CREATE FUNCTION interop.apply_changes(target regclass, batch jsonb, reset bool, copy bool DEFAULT false)
RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, interop AS $$
DECLARE
    key text[] := ARRAY(SELECT jsonb_array_elements_text(batch->'key'));
    tkey text[] := interop.primary_key_of(target);
    cols text[];
    rest text[];
    keydefs text;
    ins text;
    rows jsonb;
    n bigint := 0;
    m bigint;
BEGIN
    IF tkey IS DISTINCT FROM key THEN
        RAISE EXCEPTION 'the primary key of "%" is not the provider''s', target
            USING ERRCODE = 'invalid_table_definition',
                  DETAIL = format('The provider''s key is (%s); the target''s is (%s).',
                                  array_to_string(key, ', '), coalesce(array_to_string(tkey, ', '), 'none'));
    END IF;
    IF reset THEN
        EXECUTE format('DELETE FROM %s', target);
    END IF;
    -- rows are read with jsonb_to_recordset and the target's column types
    rows := batch->'deletes';
    IF jsonb_array_length(rows) > 0 THEN
        SELECT string_agg(format('%I %s', a.attname, format_type(a.atttypid, a.atttypmod)), ', ')
          INTO keydefs
          FROM unnest(key) c JOIN pg_attribute a ON a.attrelid = target AND a.attname = c;
        EXECUTE format('DELETE FROM %s AS t USING jsonb_to_recordset($1) AS d(%s) WHERE (%s) = (%s)',
                       target, keydefs,
                       (SELECT string_agg(format('t.%I', c), ', ') FROM unnest(key) c),
                       (SELECT string_agg(format('d.%I', c), ', ') FROM unnest(key) c))
            USING rows;
        GET DIAGNOSTICS m = ROW_COUNT;
        n := n + m;
    END IF;
    rows := batch->'upserts';
    IF jsonb_array_length(rows) > 0 THEN
        SELECT array_agg(a.attname::text ORDER BY a.attnum),
               string_agg(format('%I %s', a.attname, format_type(a.atttypid, a.atttypmod)), ', ' ORDER BY a.attnum)
          INTO cols, keydefs
          FROM pg_attribute a
         WHERE a.attrelid = target AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''
           AND a.attname::text IN (SELECT c->>'name' FROM jsonb_array_elements(batch->'columns') c);
        rest := ARRAY(SELECT c FROM unnest(cols) c WHERE c <> ALL (key));
        ins := format('INSERT INTO %s AS t (%s) OVERRIDING SYSTEM VALUE SELECT %s FROM jsonb_to_recordset($1) AS d(%s)',
                      target,
                      (SELECT string_agg(format('%I', c), ', ') FROM unnest(cols) c),
                      (SELECT string_agg(format('d.%I', c), ', ') FROM unnest(cols) c),
                      keydefs);
        -- a copy page holds keys after every key copied so far, in order:
        -- a plain INSERT, unless somebody wrote such a key into the target
        IF copy THEN
            BEGIN
                EXECUTE ins USING rows;
                GET DIAGNOSTICS m = ROW_COUNT;
                RETURN n + m;
            EXCEPTION WHEN unique_violation THEN
                NULL;           -- rolled back; upserted below
            END;
        END IF;
        EXECUTE ins || format(' ON CONFLICT (%s) DO %s',
                       (SELECT string_agg(format('%I', c), ', ') FROM unnest(key) c),
                       CASE WHEN cardinality(rest) = 0 THEN 'NOTHING'
                            ELSE format('UPDATE SET (%s) = ROW(%s)',
                                        (SELECT string_agg(format('%I', c), ', ') FROM unnest(rest) c),
                                        (SELECT string_agg(format('excluded.%I', c), ', ') FROM unnest(rest) c)) END)
            USING rows;
        GET DIAGNOSTICS m = ROW_COUNT;
        n := n + m;
    END IF;
    RETURN n;
END
$$;
REVOKE ALL ON FUNCTION interop.apply_changes(regclass, jsonb, bool, bool) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION interop.apply_changes(regclass, jsonb, bool, bool) TO interop_admin, interop_user;

REVOKE ALL ON FUNCTION interop.subscribe(interop.member_id, text, regclass, text, interval),
                       interop.unsubscribe(interop.member_id, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION interop.subscribe(interop.member_id, text, regclass, text, interval),
                          interop.unsubscribe(interop.member_id, text) TO interop_admin, interop_user;

CREATE VIEW interop.stat_subscription AS
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
COMMENT ON VIEW interop.stat_subscription IS
    'progress of each subscription: phase, rows copied, changes applied, lag, last error';
GRANT SELECT ON interop.stat_subscription TO interop_admin, interop_user, interop_auditor, pg_monitor;
