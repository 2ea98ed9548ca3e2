-- client.sql: the peers this node calls (the consumer side)

CREATE TABLE interop.peer (
    member_id interop.member_id PRIMARY KEY,
    base_url  text NOT NULL,
    added_by  regrole NOT NULL DEFAULT current_user::regrole,
    added_at  timestamptz NOT NULL DEFAULT now(),
    more_urls text[] NOT NULL DEFAULT '{}'  -- tried in order after base_url: the peer's other nodes
);
COMMENT ON TABLE interop.peer IS 'other nodes this node calls: member id and base URL (https://host:port[/prefix]), and the base URLs of its other nodes';
SELECT pg_catalog.pg_extension_config_dump('interop.peer', '');
-- the backends keep the rows they read: a change tells them to read again
CREATE TRIGGER peer_invalidate AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE
    ON interop.peer FOR EACH STATEMENT EXECUTE FUNCTION interop.invalidate_cache();

-- interop.normalize_base_url: the canonical form of a peer base URL, or an error
CREATE FUNCTION interop.normalize_base_url(url text) RETURNS text
LANGUAGE plpgsql IMMUTABLE STRICT SET search_path = pg_catalog, interop AS $$
DECLARE
    m text[];
    port int;
BEGIN
    -- https://host[:port][/prefix]: host is a DNS name, an IPv4 address or [IPv6]
    m := regexp_match(url, '^https://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?)(:([0-9]{1,5}))?(/[A-Za-z0-9._~/-]*)?$');
    IF m IS NULL THEN
        RAISE EXCEPTION 'invalid peer base URL "%"', url
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = CASE
                      WHEN url !~* '^https://' THEN 'A base URL starts with https://; interop talks to peers over TLS only.'
                      WHEN url ~ '[?#@]' THEN 'A base URL has no user name, query or fragment.'
                      ELSE 'A base URL is https://host:port with an optional path prefix.' END,
                  HINT = 'Example: https://tax.example.gov.mn:8443/interop';
    END IF;
    IF m[5] ~ '(^|/)\.\.?(/|$)' THEN
        RAISE EXCEPTION 'invalid peer base URL "%"', url
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'The path prefix has a "." or ".." segment.';
    END IF;
    port := coalesce(m[4]::int, 443);
    IF port NOT BETWEEN 1 AND 65535 THEN
        RAISE EXCEPTION 'invalid peer base URL "%"', url
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('Port %s is outside 1 to 65535.', port);
    END IF;
    RETURN 'https://' || lower(m[1]) || ':' || port || rtrim(coalesce(m[5], ''), '/');
END
$$;

CREATE FUNCTION interop.peer_check() RETURNS trigger
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
CREATE TRIGGER peer_check BEFORE INSERT OR UPDATE ON interop.peer
    FOR EACH ROW EXECUTE FUNCTION interop.peer_check();
CREATE TRIGGER peer_history AFTER INSERT OR UPDATE OR DELETE ON interop.peer
    FOR EACH ROW EXECUTE FUNCTION interop.admin_history_record();

CREATE FUNCTION interop.add_peer(member_id interop.member_id, base_url text) RETURNS void
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
COMMENT ON FUNCTION interop.add_peer(interop.member_id, text) IS
    'records (or moves) a peer: its member id and base URL, https://host:port[/prefix]';

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

CREATE FUNCTION interop.remove_peer(member_id interop.member_id) RETURNS void
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
COMMENT ON FUNCTION interop.remove_peer(interop.member_id) IS 'forgets a peer';

REVOKE ALL ON FUNCTION interop.add_peer(interop.member_id, text), interop.add_peer(interop.member_id, text[]),
    interop.remove_peer(interop.member_id) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION interop.add_peer(interop.member_id, text), interop.add_peer(interop.member_id, text[]),
    interop.remove_peer(interop.member_id) TO interop_admin;
GRANT SELECT, INSERT, UPDATE, DELETE ON interop.peer TO interop_admin;
GRANT SELECT ON interop.peer TO interop_user, interop_auditor, interop_worker;

-- interop.query: call a peer's service; one jsonb object per row
CREATE FUNCTION interop.query(provider interop.member_id, service text, params jsonb DEFAULT '{}',
                              purpose text DEFAULT NULL) RETURNS SETOF jsonb
    AS 'MODULE_PATHNAME', 'interop_query' LANGUAGE C VOLATILE
    SECURITY DEFINER SET search_path = pg_catalog, interop;
COMMENT ON FUNCTION interop.query(interop.member_id, text, jsonb, text) IS
    'calls a service of a peer over HTTPS, verifies the signed answer, returns one jsonb object per row';

-- interop.catalog: the services a peer grants this node (its signed catalog, verified)
CREATE FUNCTION interop.catalog(provider interop.member_id) RETURNS jsonb
    AS 'MODULE_PATHNAME', 'interop_catalog' LANGUAGE C VOLATILE STRICT
    SECURITY DEFINER SET search_path = pg_catalog, interop;
COMMENT ON FUNCTION interop.catalog(interop.member_id) IS
    'the services a peer grants this node, from its signed catalog: names, columns, filters, purposes';

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
CREATE FUNCTION interop.import_service(provider interop.member_id, service text,
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
COMMENT ON FUNCTION interop.import_service(interop.member_id, text, name) IS
    'creates local_schema.service(filters..., purpose) RETURNS TABLE(...) from the peer''s signed catalog';

REVOKE ALL ON FUNCTION interop.query(interop.member_id, text, jsonb, text),
                       interop.catalog(interop.member_id),
                       interop.import_service(interop.member_id, text, name) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION interop.query(interop.member_id, text, jsonb, text),
                          interop.catalog(interop.member_id),
                          interop.import_service(interop.member_id, text, name) TO interop_user;
