-- client.sql: the peers this node calls (the consumer side)

CREATE TABLE interop.peer (
    member_id interop.member_id PRIMARY KEY,
    base_url  text NOT NULL,
    added_by  regrole NOT NULL DEFAULT current_user::regrole,
    added_at  timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE interop.peer IS 'other nodes this node calls: member id and base URL (https://host:port[/prefix])';
SELECT pg_catalog.pg_extension_config_dump('interop.peer', '');

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
    NEW.base_url := interop.normalize_base_url(NEW.base_url);
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
    IF member_id IS NULL OR base_url IS NULL THEN
        RAISE EXCEPTION 'member_id and base_url must not be null' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    INSERT INTO interop.peer AS p (member_id, base_url) VALUES (add_peer.member_id, add_peer.base_url)
    ON CONFLICT ON CONSTRAINT peer_pkey DO UPDATE SET base_url = excluded.base_url;
END
$$;
COMMENT ON FUNCTION interop.add_peer(interop.member_id, text) IS
    'records (or moves) a peer: its member id and base URL, https://host:port[/prefix]';

CREATE FUNCTION interop.remove_peer(member_id interop.member_id) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, interop AS $$
BEGIN
    DELETE FROM interop.peer p WHERE p.member_id = remove_peer.member_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'peer "%" is not known', member_id
            USING ERRCODE = 'undefined_object',
                  HINT = 'See SELECT member_id, base_url FROM interop.peer.';
    END IF;
END
$$;
COMMENT ON FUNCTION interop.remove_peer(interop.member_id) IS 'forgets a peer';

REVOKE ALL ON FUNCTION interop.add_peer(interop.member_id, text), interop.remove_peer(interop.member_id) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION interop.add_peer(interop.member_id, text), interop.remove_peer(interop.member_id) TO interop_admin;
GRANT SELECT, INSERT, UPDATE, DELETE ON interop.peer TO interop_admin;
GRANT SELECT ON interop.peer TO interop_user, interop_auditor;
