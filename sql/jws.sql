-- interop.jws: compact JWS checked for shape on input; inspection functions

CREATE FUNCTION b64url(text) RETURNS text LANGUAGE sql IMMUTABLE AS
$$ SELECT translate(replace(rtrim(encode(convert_to($1, 'UTF8'), 'base64'), '='), E'\n', ''), '+/', '-_') $$;

-- a well-formed JWS (signature not checked by the type)
SELECT (b64url('{"alg":"ES256","typ":"JOSE"}') || '.' || b64url('{"name":"Bat","n":1}') || '.c2ln')::interop.jws;
SELECT interop.jws_header((b64url('{"alg":"ES256","typ":"JOSE"}') || '.' || b64url('{"name":"Bat","n":1}') || '.c2ln')::interop.jws);
SELECT interop.jws_payload((b64url('{"alg":"ES256"}') || '.' || b64url('{"name":"Батбаяр","n":1}') || '.c2ln')::interop.jws);
-- an unsigned JWS is still a JWS; verify() will refuse it
SELECT interop.jws_header((b64url('{"alg":"none"}') || '.' || b64url('{}') || '.')::interop.jws);

-- malformed input: each says what is wrong
SELECT ''::interop.jws;
SELECT 'abc'::interop.jws;
SELECT 'abc.def'::interop.jws;
SELECT 'a.b.c.d'::interop.jws;
SELECT ('.' || b64url('{}') || '.c2ln')::interop.jws;
SELECT (b64url('{"alg":"ES256"}') || '..c2ln')::interop.jws;
SELECT (b64url('{"alg":"ES256"}') || '.' || b64url('{}') || '.c2ln=')::interop.jws;
SELECT (b64url('{"alg":"ES256"}') || '.e30+.c2ln')::interop.jws;
SELECT (b64url('{"alg":"ES256"}') || '.' || b64url('{}') || E'.c2\x01n')::interop.jws;
SELECT (b64url('{"alg":"ES256"}') || '.' || b64url('{}') || '.c2lnA')::interop.jws;   -- truncated part
SELECT (b64url('not json') || '.' || b64url('{}') || '.c2ln')::interop.jws;
SELECT (b64url('[1,2]') || '.' || b64url('{}') || '.c2ln')::interop.jws;
SELECT (b64url('{"typ":"JOSE"}') || '.' || b64url('{}') || '.c2ln')::interop.jws;
SELECT (b64url('{"alg":1}') || '.' || b64url('{}') || '.c2ln')::interop.jws;
SELECT (b64url('{"alg":"ES256","alg":"none"}') || '.' || b64url('{}') || '.c2ln')::interop.jws;
SELECT (b64url('{"alg":"ES256","pad":"' || repeat('x', 70000) || '"}') || '.' || b64url('{}') || '.c2ln')::interop.jws;

-- the payload must be JSON, UTF-8, without NUL
SELECT interop.jws_payload((b64url('{"alg":"ES256"}') || '.' || b64url('not json') || '.c2ln')::interop.jws);
SELECT interop.jws_payload((b64url('{"alg":"ES256"}') || '.' || translate(replace(rtrim(encode('\x7b2261223a2200227d'::bytea, 'base64'), '='), E'\n', ''), '+/', '-_') || '.c2ln')::interop.jws);
SELECT interop.jws_payload((b64url('{"alg":"ES256"}') || '.' || translate(replace(rtrim(encode('\x7b2261223a22ff227d'::bytea, 'base64'), '='), E'\n', ''), '+/', '-_') || '.c2ln')::interop.jws);

DROP FUNCTION b64url(text);
