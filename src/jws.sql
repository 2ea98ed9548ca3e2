-- jws.sql: the interop.jws type, inspection, sign() and verify()

CREATE TYPE interop.jws;
CREATE FUNCTION interop.jws_in(cstring) RETURNS interop.jws
    AS 'MODULE_PATHNAME', 'jws_in' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION interop.jws_out(interop.jws) RETURNS cstring
    AS 'MODULE_PATHNAME', 'jws_out' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION interop.jws_recv(internal) RETURNS interop.jws
    AS 'MODULE_PATHNAME', 'jws_recv' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION interop.jws_send(interop.jws) RETURNS bytea
    AS 'MODULE_PATHNAME', 'jws_send' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE TYPE interop.jws (
    INPUT = interop.jws_in,
    OUTPUT = interop.jws_out,
    RECEIVE = interop.jws_recv,
    SEND = interop.jws_send,
    INTERNALLENGTH = VARIABLE,
    STORAGE = extended,
    CATEGORY = 'S'
);
COMMENT ON TYPE interop.jws IS 'a JSON Web Signature in compact serialization (RFC 7515), checked for shape on input';

CREATE FUNCTION interop.jws_header(interop.jws) RETURNS jsonb
    AS 'MODULE_PATHNAME', 'jws_header' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION interop.jws_header(interop.jws) IS
    'the protected header of a JWS, for inspection: not verified';
CREATE FUNCTION interop.jws_payload(interop.jws) RETURNS jsonb
    AS 'MODULE_PATHNAME', 'jws_payload' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION interop.jws_payload(interop.jws) IS
    'the payload of a JWS, for inspection: not verified (use interop.verify)';

CREATE FUNCTION interop.sign(payload jsonb) RETURNS interop.jws
    AS 'MODULE_PATHNAME', 'interop_sign' LANGUAGE C VOLATILE STRICT
    SECURITY DEFINER SET search_path = pg_catalog, interop;
COMMENT ON FUNCTION interop.sign(jsonb) IS
    'signs a payload with the node key; the header carries the node certificate chain (x5c)';

CREATE FUNCTION interop.verify(jws interop.jws) RETURNS jsonb
    AS 'MODULE_PATHNAME', 'interop_verify' LANGUAGE C STABLE STRICT
    SECURITY DEFINER SET search_path = pg_catalog, interop;
COMMENT ON FUNCTION interop.verify(interop.jws) IS
    'verifies a JWS against the trust anchors (chain, dates, revocation, signature) and returns its payload';

CREATE FUNCTION interop.verify(jws interop.jws, public_key_pem text) RETURNS jsonb
    AS 'MODULE_PATHNAME', 'interop_verify_with_key' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION interop.verify(interop.jws, text) IS
    'verifies a JWS with the given public key (PEM) and returns its payload';

REVOKE ALL ON FUNCTION interop.sign(jsonb) FROM PUBLIC;
REVOKE ALL ON FUNCTION interop.verify(interop.jws) FROM PUBLIC;
REVOKE ALL ON FUNCTION interop.verify(interop.jws, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION interop.sign(jsonb) TO interop_user;
GRANT EXECUTE ON FUNCTION interop.verify(interop.jws) TO interop_user;
GRANT EXECUTE ON FUNCTION interop.verify(interop.jws, text) TO interop_user;
