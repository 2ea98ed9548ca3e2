-- seal.sql: seals over the logs, their verification, append-only and pruning (docs/architecture.md, "Seals")
--
-- A seal covers the records of one log with ids in (after_id, upto_id]:
-- it keeps each record's (id, SHA-256) in "leaves", and its JWS, signed by
-- the node key, holds the Merkle root over them and the hash of the seal
-- before it (one chain per node).  The sync worker seals every
-- interop.seal_interval; interop.seal_log() seals now; interop.verify_log()
-- recomputes everything.  See src/seal.c.

-- every public key the node has signed with, so old seals verify after a key change
CREATE TABLE interop.node_key (
    public_key  text PRIMARY KEY,       -- PEM
    member_id   interop.member_id NOT NULL,
    alg         text NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE interop.node_key IS 'every public key this node has had; seals name theirs by key id (SHA-256 of the key)';
SELECT pg_catalog.pg_extension_config_dump('interop.node_key', '');

CREATE FUNCTION interop.record_node_key() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, interop AS $$
BEGIN
    IF interop.restoring() THEN
        RETURN NULL;            -- interop.node_key comes from the dump, every key in it
    END IF;
    INSERT INTO interop.node_key (public_key, member_id, alg)
    VALUES (NEW.public_key, NEW.member_id, NEW.alg) ON CONFLICT (public_key) DO NOTHING;
    RETURN NULL;
END $$;
CREATE TRIGGER node_key_history AFTER INSERT OR UPDATE OF public_key ON interop.node
    FOR EACH ROW EXECUTE FUNCTION interop.record_node_key();

CREATE TABLE interop.log_seal (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    log          text NOT NULL CHECK (log IN ('message_log', 'consent_log')),
    kind         text NOT NULL CHECK (kind IN ('seal', 'prune')),
    after_id     bigint NOT NULL,       -- covers records with after_id < id <= upto_id
    upto_id      bigint NOT NULL,
    record_count bigint NOT NULL,       -- records sealed (seal) or removed (prune)
    leaves       bytea,                 -- per record: id (8 bytes, big-endian) and its SHA-256
    root         text,                  -- base64url Merkle root over the leaves
    prev         text,                  -- base64url SHA-256 of the previous seal's JWS
    last_at      timestamptz,           -- the latest record time covered
    sealed_at    timestamptz NOT NULL,
    jws          text NOT NULL          -- the signed payload: all of the above but the leaves
);
COMMENT ON TABLE interop.log_seal IS 'signed seals over message_log and consent_log, chained; prune entries record removals';
ALTER TABLE interop.log_seal ALTER COLUMN leaves SET STORAGE EXTERNAL;
SELECT pg_catalog.pg_extension_config_dump('interop.log_seal', '');
SELECT pg_catalog.pg_extension_config_dump('interop.log_seal_id_seq', '');

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

-- the logs are append-only for every role, superusers included (unless
-- they disable triggers, which the seals then show)
CREATE FUNCTION interop.log_append_only() RETURNS trigger
    AS 'MODULE_PATHNAME', 'interop_log_append_only' LANGUAGE C;
CREATE TRIGGER message_log_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON interop.message_log
    FOR EACH STATEMENT EXECUTE FUNCTION interop.log_append_only();
CREATE TRIGGER consent_log_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON interop.consent_log
    FOR EACH STATEMENT EXECUTE FUNCTION interop.log_append_only();
CREATE TRIGGER message_header_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON interop.message_header
    FOR EACH STATEMENT EXECUTE FUNCTION interop.log_append_only();
CREATE TRIGGER log_seal_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON interop.log_seal
    FOR EACH STATEMENT EXECUTE FUNCTION interop.log_append_only();
CREATE TRIGGER seal_timestamp_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON interop.seal_timestamp
    FOR EACH STATEMENT EXECUTE FUNCTION interop.log_append_only();

CREATE FUNCTION interop.seal_log() RETURNS bigint
    AS 'MODULE_PATHNAME', 'interop_seal_log' LANGUAGE C VOLATILE
    SECURITY DEFINER SET search_path = pg_catalog, interop;
COMMENT ON FUNCTION interop.seal_log() IS
    'seals the records of message_log and consent_log not sealed yet; returns how many';

-- a definer: the admin checks the logs without reading their records
CREATE FUNCTION interop.verify_log() RETURNS TABLE (log text, record_id bigint, problem text)
    AS 'MODULE_PATHNAME', 'interop_verify_log' LANGUAGE C VOLATILE
    SECURITY DEFINER SET search_path = pg_catalog, interop;
COMMENT ON FUNCTION interop.verify_log() IS
    'recomputes every seal: one row per problem (changed, deleted or inserted record, broken seal or chain); no rows: all verifies';

CREATE FUNCTION interop.prune_log(before timestamptz) RETURNS bigint
    AS 'MODULE_PATHNAME', 'interop_prune_log' LANGUAGE C VOLATILE
    SECURITY DEFINER SET search_path = pg_catalog, interop;
COMMENT ON FUNCTION interop.prune_log(timestamptz) IS
    'seals, then removes the records of whole seals older than before, with a signed prune entry; returns how many';

-- a definer: an auditor exports the evidence of an exchange without reading the seals' leaves
CREATE FUNCTION interop.evidence(message_id bigint) RETURNS jsonb
    AS 'MODULE_PATHNAME', 'interop_evidence' LANGUAGE C STABLE STRICT
    SECURITY DEFINER SET search_path = pg_catalog, interop;
COMMENT ON FUNCTION interop.evidence(bigint) IS
    'one self-contained JSON document for an exchange: request, answer, the record''s bytes, its seal with the Merkle path, the chain of seals to a timestamp token and to the witnesses'' cosignatures';

REVOKE ALL ON interop.node_key, interop.log_seal FROM PUBLIC;
GRANT SELECT ON interop.node_key, interop.log_seal TO interop_admin, interop_auditor, interop_worker;
GRANT INSERT ON interop.log_seal TO interop_worker;
REVOKE ALL ON interop.seal_timestamp, interop.tsa_status FROM PUBLIC;
GRANT SELECT ON interop.seal_timestamp, interop.tsa_status TO interop_admin, interop_auditor, interop_worker;
GRANT INSERT ON interop.seal_timestamp TO interop_worker;
GRANT UPDATE ON interop.tsa_status TO interop_worker;
REVOKE ALL ON FUNCTION interop.record_node_key() FROM PUBLIC;
REVOKE ALL ON FUNCTION interop.seal_log() FROM PUBLIC;
REVOKE ALL ON FUNCTION interop.verify_log() FROM PUBLIC;
REVOKE ALL ON FUNCTION interop.prune_log(timestamptz) FROM PUBLIC;
REVOKE ALL ON FUNCTION interop.evidence(bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION interop.evidence(bigint) TO interop_admin, interop_auditor;
GRANT EXECUTE ON FUNCTION interop.seal_log() TO interop_admin;   -- auditors verify; they do not seal
GRANT EXECUTE ON FUNCTION interop.verify_log() TO interop_admin, interop_auditor;
GRANT EXECUTE ON FUNCTION interop.prune_log(timestamptz) TO interop_admin;
