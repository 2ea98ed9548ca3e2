-- msglog.sql: the message log, one row per exchange per side (docs/architecture.md)
--
-- The gateway writes a row for every request it answers, refused ones
-- included, in the transaction that produced the answer: the answer is sent
-- only after that transaction commits, so nothing is answered unlogged.
-- interop.query() writes the consumer's row.  Nobody holds UPDATE or DELETE
-- on it; rows are written by the extension's own SECURITY DEFINER code.

CREATE TABLE interop.message_log (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at            timestamptz NOT NULL DEFAULT clock_timestamp(),
    direction     text NOT NULL CHECK (direction IN ('in', 'out')),
    peer          interop.member_id,    -- the other node; NULL when the request could not be verified
    service       text,
    purpose       text,
    legal_basis   text,                 -- from the access grant (provider side)
    subject       text,                 -- the value of the service's subject column, when filtered on
    jti           uuid,                 -- the request's id, once its signature is verified
    request_hash  text,                 -- base64url SHA-256 of the request bytes (the "req" claim)
    request       text,                 -- the request JWS (detached, without payload, when interop.log_bodies = off)
    response      text,                 -- the response JWS (likewise); NULL when there was none
    response_hash text,                 -- base64url SHA-256 of the response bytes
    status        int NOT NULL,         -- HTTP status; 0 when no answer arrived
    error_code    text,                 -- wire error code, or the consumer's SQLSTATE
    error_message text,
    row_count     int,
    duration_ms   double precision NOT NULL,
    client        text,                 -- the TCP address of the caller (provider side)
    consent_id    bigint,               -- the consent the answer relied on (provider side)
    replay_of     bigint                -- a repeated jti: the id of its first record
);
COMMENT ON TABLE interop.message_log IS 'every exchange, served (in) and made (out), refused and failed ones included';

-- one first record per (consumer, jti): replay detection and idempotent
-- retry.  A 5xx answer is not a first record: a retry runs the request.
CREATE UNIQUE INDEX message_log_first_jti ON interop.message_log (peer, jti)
    WHERE direction = 'in' AND replay_of IS NULL AND status < 500;
CREATE INDEX message_log_at ON interop.message_log (at);
-- a JWS is base64: compression gains little and costs CPU on every exchange;
-- and a record up to a page's size stays in its page instead of going to
-- TOAST in pieces (two inserts more into the TOAST table and its index)
ALTER TABLE interop.message_log ALTER COLUMN request SET STORAGE EXTERNAL,
                                ALTER COLUMN response SET STORAGE EXTERNAL;
ALTER TABLE interop.message_log SET (toast_tuple_target = 8160);

-- each distinct protected header of a logged JWS (it carries the signer's
-- chain and is the same in every message of a signer), kept once: a record's
-- request and response hold "~" and the header's digest in its place, and
-- interop.message_jws() gives the JWS back as it was sent
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

SELECT pg_catalog.pg_extension_config_dump('interop.message_log', '');
SELECT pg_catalog.pg_extension_config_dump('interop.message_header', '');
SELECT pg_catalog.pg_extension_config_dump('interop.message_header_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('interop.message_log_id_seq', '');

REVOKE ALL ON interop.message_log, interop.message_header FROM PUBLIC;
REVOKE ALL ON FUNCTION interop.message_jws(text) FROM PUBLIC;
GRANT SELECT ON interop.message_header TO interop_auditor;
GRANT SELECT, INSERT ON interop.message_header TO interop_worker;
GRANT EXECUTE ON FUNCTION interop.message_jws(text) TO interop_auditor, interop_worker;
GRANT SELECT ON interop.message_log TO interop_auditor;
GRANT SELECT, INSERT ON interop.message_log TO interop_worker;
GRANT SELECT ON interop.message_log_id_seq TO interop_worker;   -- the sealer reads where it ends
