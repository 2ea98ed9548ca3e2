-- async.sql: durable asynchronous queries (docs/architecture.md)
--
-- interop.query_async() inserts a row in the caller's transaction (nothing
-- is sent if it rolls back) and wakes the sync worker at commit.  The worker
-- signs the request once, stores it, and sends those same bytes at every
-- attempt, so a retry after a lost answer or a crash is the same jti with
-- the same bytes, which the provider answers from its log without running
-- the query again (docs/protocol.md).  Retries back off up to interop.max_attempts.
-- The answer is verified before it is stored.  See src/async.c.

CREATE TABLE interop.async_request (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    created_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    requested_by  name NOT NULL,
    provider      interop.member_id NOT NULL,
    service       text NOT NULL,
    params        jsonb NOT NULL DEFAULT '{}',
    purpose       text,
    jti           uuid NOT NULL UNIQUE DEFAULT gen_random_uuid(),
    request       text,                 -- the signed request, fixed at the first attempt
    state         text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'done', 'failed')),
    attempts      int NOT NULL DEFAULT 0,
    next_attempt  timestamptz NOT NULL DEFAULT clock_timestamp(),
    http_status   int,
    error_code    text,                 -- wire error code, or SQLSTATE
    last_error    text,
    response      text,                 -- the verified answer JWS
    row_count     int,
    completed_at  timestamptz
);
COMMENT ON TABLE interop.async_request IS 'asynchronous queries: pending, done (with the verified answer) or failed';
-- the signed request and the answer are JWS, base64: compressing them gains
-- little and was a sixth of the sync worker's time storing an outcome
ALTER TABLE interop.async_request ALTER COLUMN request SET STORAGE EXTERNAL,
                                  ALTER COLUMN response SET STORAGE EXTERNAL;
-- the sync worker's look for due requests: ORDER BY next_attempt, id LIMIT
-- free slots, read from the index in order instead of sorting every pending one
CREATE INDEX async_request_due ON interop.async_request (next_attempt, id) WHERE state = 'pending';
SELECT pg_catalog.pg_extension_config_dump('interop.async_request', '');
SELECT pg_catalog.pg_extension_config_dump('interop.async_request_id_seq', '');
REVOKE ALL ON interop.async_request FROM PUBLIC;
GRANT SELECT ON interop.async_request TO interop_admin, interop_auditor;
GRANT SELECT, UPDATE ON interop.async_request TO interop_worker;

CREATE FUNCTION interop.wake_sync_worker() RETURNS void
    AS 'MODULE_PATHNAME', 'interop_wake_sync_worker' LANGUAGE C VOLATILE;
REVOKE ALL ON FUNCTION interop.wake_sync_worker() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION interop.wake_sync_worker() TO interop_admin, interop_user;

CREATE FUNCTION interop.query_async(provider interop.member_id, service text, params jsonb DEFAULT '{}',
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
COMMENT ON FUNCTION interop.query_async(interop.member_id, text, jsonb, text) IS
    'queues a query to a peer, sent by the sync worker after commit with retries; returns its id';

-- the request as the caller may see it: their own, or any for an admin
CREATE FUNCTION interop.async_request_of(id bigint) RETURNS interop.async_request
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, interop AS $$
DECLARE
    r interop.async_request;
BEGIN
    SELECT * INTO r FROM interop.async_request a WHERE a.id = async_request_of.id;
    IF NOT FOUND OR (r.requested_by <> interop.calling_role()
                     AND NOT pg_has_role(interop.calling_role(), 'interop_admin', 'MEMBER')) THEN
        RAISE EXCEPTION 'asynchronous request % does not exist', id USING ERRCODE = 'undefined_object',
            HINT = 'A request is visible to the role that queued it, and to interop_admin.';
    END IF;
    RETURN r;
END $$;
REVOKE ALL ON FUNCTION interop.async_request_of(bigint) FROM PUBLIC;

CREATE FUNCTION interop.wait(id bigint, timeout interval DEFAULT '30 s') RETURNS text
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, interop AS $$
DECLARE
    deadline timestamptz := clock_timestamp() + timeout;
    s text;
BEGIN
    LOOP
        s := (interop.async_request_of(id)).state;
        IF s <> 'pending' OR clock_timestamp() >= deadline THEN
            RETURN s;
        END IF;
        PERFORM pg_sleep(0.005);
    END LOOP;
END $$;
COMMENT ON FUNCTION interop.wait(bigint, interval) IS
    'waits until an asynchronous request is done or failed, at most timeout; returns its state';

CREATE FUNCTION interop.result_rows(response text) RETURNS SETOF jsonb
    AS 'MODULE_PATHNAME', 'interop_result_rows' LANGUAGE C STRICT;
REVOKE ALL ON FUNCTION interop.result_rows(text) FROM PUBLIC;

CREATE FUNCTION interop.result(id bigint) RETURNS SETOF jsonb
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, interop AS $$
DECLARE
    r interop.async_request := interop.async_request_of(id);
BEGIN
    IF r.state = 'pending' THEN
        RAISE EXCEPTION 'asynchronous request % is not done yet', id USING ERRCODE = 'object_not_in_prerequisite_state',
            DETAIL = format('%s attempts so far%s', r.attempts, coalesce('; last: ' || r.last_error, '')),
            HINT = 'Wait for it with SELECT interop.wait(id), or LISTEN interop_async.';
    ELSIF r.state = 'failed' THEN
        RAISE EXCEPTION 'asynchronous request % failed: %', id, r.last_error
            USING ERRCODE = CASE WHEN r.error_code ~ '^[0-9A-Z]{5}$' THEN r.error_code ELSE 'IX500' END,
                  DETAIL = format('after %s attempts; HTTP %s', r.attempts, coalesce(r.http_status::text, 'none'));
    END IF;
    RETURN QUERY SELECT * FROM interop.result_rows(r.response);
END $$;
COMMENT ON FUNCTION interop.result(bigint) IS
    'the rows of a done asynchronous request (verified when they arrived); an ERROR if pending or failed';

REVOKE ALL ON FUNCTION interop.query_async(interop.member_id, text, jsonb, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION interop.wait(bigint, interval) FROM PUBLIC;
REVOKE ALL ON FUNCTION interop.result(bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION interop.query_async(interop.member_id, text, jsonb, text) TO interop_admin, interop_user;
GRANT EXECUTE ON FUNCTION interop.wait(bigint, interval) TO interop_admin, interop_user;
GRANT EXECUTE ON FUNCTION interop.result(bigint) TO interop_admin, interop_user;

-- peer catalogs, refreshed by the sync worker every interop.sync_interval
CREATE TABLE interop.peer_catalog (
    peer        interop.member_id PRIMARY KEY REFERENCES interop.peer (member_id) ON DELETE CASCADE,
    services    jsonb,                  -- the services the peer grants this node (verified)
    etag        text,                   -- sent back as If-None-Match: an unchanged catalog is a 304
    fetched_at  timestamptz,            -- when services last changed here
    checked_at  timestamptz,            -- the last attempt
    failures    int NOT NULL DEFAULT 0, -- attempts failed in a row
    last_error  text,
    next_check  timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE interop.peer_catalog IS 'each peer''s signed catalog as last fetched and verified by the sync worker';
REVOKE ALL ON interop.peer_catalog FROM PUBLIC;
GRANT SELECT ON interop.peer_catalog TO interop_admin, interop_user, interop_auditor;
GRANT SELECT, INSERT, UPDATE ON interop.peer_catalog TO interop_worker;

-- where the sync worker fetches CRLs: the distribution points named by the
-- trust anchors and the node's certificate chain (http:// only: a CRL is signed)
CREATE TABLE interop.crl_source (
    url         text PRIMARY KEY,
    fetched_at  timestamptz,            -- the last successful fetch
    checked_at  timestamptz,
    failures    int NOT NULL DEFAULT 0,
    last_error  text,
    next_fetch  timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE interop.crl_source IS 'CRL distribution points the sync worker fetches every interop.sync_interval';
REVOKE ALL ON interop.crl_source FROM PUBLIC;
GRANT SELECT ON interop.crl_source TO interop_admin, interop_auditor;
GRANT SELECT, INSERT, UPDATE ON interop.crl_source TO interop_worker;
