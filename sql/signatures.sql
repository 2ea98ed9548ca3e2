-- signatures against the federation's PKI: trust anchors, certificates,
-- CRLs, and every way a JWS can be wrong.  A test CA is made at run time
-- (test/certs/testca); outside signers are made with the openssl command
-- line (test/certs/jws), as another agency's software would.

CREATE EXTENSION IF NOT EXISTS pgcrypto;
CREATE FUNCTION b64url(bytea) RETURNS text LANGUAGE sql IMMUTABLE AS
$$ SELECT translate(replace(rtrim(encode($1, 'base64'), '='), E'\n', ''), '+/', '-_') $$;
CREATE FUNCTION part(interop.jws, int) RETURNS text LANGUAGE sql IMMUTABLE AS
$$ SELECT split_part($1::text, '.', $2) $$;

\setenv CA results/ca
\! rm -rf "$CA" && mkdir -p "$CA" && test/certs/testca root "$CA" root && test/certs/testca sub "$CA" issuing root && test/certs/testca root "$CA" rogue
\set root `cat results/ca/root/ca.crt`
\set issuing `cat results/ca/issuing/ca.crt`
\set rogue `cat results/ca/rogue/ca.crt`

-- the node asks for a certificate
SELECT interop.init_node('EE/GOV/70000001/registry', overwrite => true) IS NOT NULL AS node;
SELECT interop.certificate_request() \g (format=unaligned tuples_only=on) results/ca/node.csr
\! test/certs/testca sign "$CA" issuing "$CA/node.csr" "$CA/node.crt"
\set chain `test/certs/testca chain results/ca issuing results/ca/node.crt`

-- without a trust anchor nothing is trusted
SELECT interop.install_certificate(:'chain');

-- trust anchors: CA certificates only; duplicates skipped
SELECT interop.add_trust_anchor('not a certificate');
SELECT interop.add_trust_anchor('-----BEGIN CERTIFICATE-----
MIIBroken
-----END CERTIFICATE-----');
\set nodecert `cat results/ca/node.crt`
SELECT interop.add_trust_anchor(:'nodecert');
SELECT interop.add_trust_anchor(:'root');
SELECT interop.add_trust_anchor(:'root');
SELECT subject FROM interop.trust_anchor;

-- install_certificate checks key, member id, chain and dates
SELECT interop.install_certificate('garbage');
\! test/certs/testca leaf "$CA" issuing 'EE/GOV/70000001/registry' ES256 "$CA/otherkey"
\set otherkey `test/certs/testca chain results/ca issuing results/ca/otherkey.crt`
SELECT interop.install_certificate(:'otherkey');
\! test/certs/testca signas "$CA" issuing "$CA/node.csr" "$CA/wrongcn.crt" 'EE/GOV/99999999/registry'
\set wrongcn `test/certs/testca chain results/ca issuing results/ca/wrongcn.crt`
SELECT interop.install_certificate(:'wrongcn');
\! test/certs/testca sign "$CA" issuing "$CA/node.csr" "$CA/expired.crt" 20200101000000Z 20210101000000Z
\set expired `test/certs/testca chain results/ca issuing results/ca/expired.crt`
SELECT interop.install_certificate(:'expired');
\! test/certs/testca sign "$CA" issuing "$CA/node.csr" "$CA/future.crt" 20900101000000Z 20910101000000Z
\set future `test/certs/testca chain results/ca issuing results/ca/future.crt`
SELECT interop.install_certificate(:'future');
\set nodeonly `cat results/ca/node.crt`
SELECT interop.install_certificate(:'nodeonly');
SELECT interop.install_certificate(:'chain');
SELECT member_id, certificate_not_after > now() AS valid FROM interop.node;

-- sign() carries the chain; verify() checks it and returns the payload
SELECT interop.sign('{"citizen":"38001010000","purpose":"tax"}') AS jws \gset
SELECT jsonb_array_length(h->'x5c') AS x5c_certs, h->>'alg' AS alg, h->>'typ' AS typ,
       length(h->>'x5t#S256') AS x5t_len
FROM interop.jws_header(:'jws') AS h;
SELECT interop.verify(:'jws');
-- the same signer again comes from the chain cache
SELECT interop.verify(interop.sign(jsonb_build_object('n', i))) FROM generate_series(1, 3) i;

-- the wire format is usable from outside: openssl checks our signature
\setenv JWS :jws
\! test/certs/jws verify "$JWS" "$CA/root/ca.crt"

-- tampering: payload, header, signature
SELECT interop.verify((part(:'jws', 1) || '.' || b64url('{"citizen":"38001010000","purpose":"marketing"}') || '.' || part(:'jws', 3))::interop.jws);
SELECT interop.verify((b64url(convert_to(replace(convert_from(decode(translate(part(:'jws', 1), '-_', '+/') || repeat('=', (4 - length(part(:'jws', 1)) % 4) % 4), 'base64'), 'UTF8'), '"typ":"JOSE"', '"typ":"JWT"'), 'UTF8')) || '.' || part(:'jws', 2) || '.' || part(:'jws', 3))::interop.jws);
SELECT interop.verify((part(:'jws', 1) || '.' || part(:'jws', 2) || '.' || b64url(decode(repeat('00', 64), 'hex')))::interop.jws);
SELECT interop.verify((part(:'jws', 1) || '.' || part(:'jws', 2) || '.' || left(part(:'jws', 3), 40))::interop.jws);
SELECT interop.verify((part(:'jws', 1) || '.' || part(:'jws', 2) || '.')::interop.jws);

-- wrong key
\! test/certs/testca leaf "$CA" issuing 'EE/GOV/70000002/other' ES256 "$CA/other"
\set otherpub `openssl x509 -in results/ca/other.crt -pubkey -noout`
SELECT interop.verify(:'jws', :'otherpub');
SELECT interop.verify(:'jws', 'not a key');
\set privkey `cat results/ca/other.key`
SELECT interop.verify(:'jws', :'privkey');

-- algorithms: none, HMAC (with the public key as the secret), mismatches
SELECT interop.verify((b64url('{"alg":"none"}') || '.' || part(:'jws', 2) || '.')::interop.jws);
SELECT public_key AS nodepub FROM interop.node \gset
SELECT interop.verify((h || '.' || p || '.' || b64url(hmac(h || '.' || p, :'nodepub', 'sha256')))::interop.jws, :'nodepub')
FROM (SELECT b64url('{"alg":"HS256","typ":"JWT"}') AS h, part(:'jws', 2) AS p) AS t;
SELECT interop.verify((b64url('{"alg":"ES512"}') || '.' || part(:'jws', 2) || '.' || part(:'jws', 3))::interop.jws, :'nodepub');
SELECT interop.verify((b64url(convert_to(replace(convert_from(decode(translate(part(:'jws', 1), '-_', '+/') || repeat('=', (4 - length(part(:'jws', 1)) % 4) % 4), 'base64'), 'UTF8'), '"alg":"ES256"', '"alg":"RS256"'), 'UTF8')) || '.' || part(:'jws', 2) || '.' || part(:'jws', 3))::interop.jws);
SELECT interop.verify((b64url(convert_to(replace(convert_from(decode(translate(part(:'jws', 1), '-_', '+/') || repeat('=', (4 - length(part(:'jws', 1)) % 4) % 4), 'base64'), 'UTF8'), '"alg":"ES256"', '"alg":"EdDSA"'), 'UTF8')) || '.' || part(:'jws', 2) || '.' || part(:'jws', 3))::interop.jws);
SELECT interop.verify((b64url('{"alg":"ES256","crit":["exp"]}') || '.' || part(:'jws', 2) || '.' || part(:'jws', 3))::interop.jws, :'nodepub');

-- x5c problems
SELECT interop.verify((b64url('{"alg":"ES256","x5c":"abc"}') || '.' || part(:'jws', 2) || '.' || part(:'jws', 3))::interop.jws);
SELECT interop.verify((b64url('{"alg":"ES256","x5c":[1]}') || '.' || part(:'jws', 2) || '.' || part(:'jws', 3))::interop.jws);
SELECT interop.verify((b64url('{"alg":"ES256","x5c":["!!!"]}') || '.' || part(:'jws', 2) || '.' || part(:'jws', 3))::interop.jws);
SELECT interop.verify((b64url('{"alg":"ES256","x5c":["AAAA"]}') || '.' || part(:'jws', 2) || '.' || part(:'jws', 3))::interop.jws);

-- outside signers, every algorithm, made with the openssl command line
\! for a in ES256 EdDSA RS256 PS256; do test/certs/testca leaf "$CA" issuing "EE/COM/1000000$a/app" $a "$CA/$a" && test/certs/testca chain "$CA" issuing "$CA/$a.crt" > "$CA/$a.chain" && test/certs/jws sign $a "$CA/$a.key" "$CA/$a.chain" '{"from":"'$a'"}' > "$CA/$a.jws"; done
\set es256 `cat results/ca/ES256.jws`
\set eddsa `cat results/ca/EdDSA.jws`
\set rs256 `cat results/ca/RS256.jws`
\set ps256 `cat results/ca/PS256.jws`
SELECT interop.verify(:'es256'), interop.verify(:'eddsa'), interop.verify(:'rs256'), interop.verify(:'ps256');

-- a signer from an untrusted CA
\! test/certs/testca leaf "$CA" rogue 'EE/GOV/70000001/registry' ES256 "$CA/rogue-leaf" && test/certs/jws sign ES256 "$CA/rogue-leaf.key" "$CA/rogue-leaf.crt" '{"i am":"the registry"}' > "$CA/rogue.jws"
\set roguejws `cat results/ca/rogue.jws`
SELECT interop.verify(:'roguejws');

-- a signer whose certificate expired, or is not yet valid
\! openssl req -new -key "$CA/ES256.key" -subj '/CN=EE\/COM\/1000000ES256\/app' -out "$CA/old.csr" 2>/dev/null && test/certs/testca sign "$CA" issuing "$CA/old.csr" "$CA/old.crt" 20200101000000Z 20210101000000Z && test/certs/testca chain "$CA" issuing "$CA/old.crt" > "$CA/old.chain" && test/certs/jws sign ES256 "$CA/ES256.key" "$CA/old.chain" '{"old":true}' > "$CA/old.jws"
\! test/certs/testca sign "$CA" issuing "$CA/old.csr" "$CA/new.crt" 20900101000000Z 20910101000000Z && test/certs/testca chain "$CA" issuing "$CA/new.crt" > "$CA/new.chain" && test/certs/jws sign ES256 "$CA/ES256.key" "$CA/new.chain" '{"new":true}' > "$CA/new.jws"
\set oldjws `cat results/ca/old.jws`
\set newjws `cat results/ca/new.jws`
SELECT interop.verify(:'oldjws');
SELECT interop.verify(:'newjws');

-- a signer whose certificate names no member id
\! test/certs/testca leaf "$CA" issuing 'www.example.org' ES256 "$CA/web" && test/certs/testca chain "$CA" issuing "$CA/web.crt" > "$CA/web.chain" && test/certs/jws sign ES256 "$CA/web.key" "$CA/web.chain" '{}' > "$CA/web.jws"
\set webjws `cat results/ca/web.jws`
SELECT interop.verify(:'webjws');

-- revocation: the CRL must come from a trust anchor, or from a CA of the
-- node's own chain that chains to one (here: the issuing CA); once
-- installed, the cached chain is dropped and the revoked signer is refused
-- at once
SELECT interop.add_crl('garbage');
\! test/certs/testca crl "$CA" rogue "$CA/rogue.crl"
\set roguecrl `cat results/ca/rogue.crl`
SELECT interop.add_crl(:'roguecrl');
\! test/certs/testca revoke "$CA" issuing "$CA/EdDSA.crt" && test/certs/testca crl "$CA" issuing "$CA/issuing.crl"
\set crl `cat results/ca/issuing.crl`
SELECT interop.add_crl(:'crl');
SELECT interop.add_trust_anchor(:'issuing');
SELECT interop.verify(:'eddsa');
SELECT interop.add_crl(:'crl');
SELECT interop.add_crl(:'crl');
SELECT interop.verify(:'eddsa');
SELECT interop.verify(:'es256');
SELECT issuer, next_update > this_update AS has_next FROM interop.crl;

-- removing the anchors removes the trust, in this and every session
DELETE FROM interop.trust_anchor;
SELECT interop.verify(:'es256');

DROP FUNCTION b64url(bytea);
DROP FUNCTION part(interop.jws, int);
