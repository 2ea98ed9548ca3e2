-- node identity: init_node(), certificate_request(); the key never reaches SQL

-- no identity yet
SELECT interop.certificate_request();
SELECT interop.sign('{}');

-- unknown algorithm and bad member id
SELECT interop.init_node('MN/GOV/1234567/population', 'HS256');
SELECT interop.init_node('MN/GOV/1234567/population', 'none');
SELECT interop.init_node('MN GOV 1234567');

-- a new node returns its public key
SELECT interop.init_node('mn/gov/1234567/population') LIKE '-----BEGIN PUBLIC KEY-----%' AS public_key_pem;
SELECT member_id, alg, certificate_chain IS NULL AS no_certificate FROM interop.node;

-- the key file is 0600 in the data directory
SELECT current_setting('data_directory') AS datadir \gset
\setenv DATADIR :datadir
\! stat -c '%a' "$DATADIR/interop/node.key"

-- an existing key is not replaced unless asked
SELECT interop.init_node('MN/GOV/1234567/population');
-- a rolled-back replacement keeps the old key
SELECT public_key AS old_key FROM interop.node \gset
BEGIN;
SELECT interop.init_node('MN/GOV/1234567/population', 'EdDSA', overwrite => true) <> :'old_key' AS new_key;
ROLLBACK;
SELECT public_key = :'old_key' AS old_key_kept, alg FROM interop.node;
SELECT interop.verify(interop.sign('{"still":"signing"}'), :'old_key');
\! ls "$DATADIR/interop"

-- every algorithm: init, sign, verify with the returned public key
SELECT interop.init_node('MN/GOV/1234567/population', 'EdDSA', overwrite => true) AS pub \gset
SELECT interop.jws_header(interop.sign('{"a":1}')), interop.verify(interop.sign('{"a":1}'), :'pub');
SELECT interop.init_node('MN/GOV/1234567/population', 'PS256', overwrite => true) AS pub \gset
SELECT interop.jws_header(interop.sign('{"a":1}')), interop.verify(interop.sign('{"a":1}'), :'pub');
SELECT interop.init_node('MN/GOV/1234567/population', 'RS256', overwrite => true) AS pub \gset
SELECT interop.jws_header(interop.sign('{"a":1}')), interop.verify(interop.sign('{"a":1}'), :'pub');
SELECT interop.init_node('MN/GOV/1234567/population', 'ES256', overwrite => true) AS pub \gset
SELECT interop.jws_header(interop.sign('{"a":1}')), interop.verify(interop.sign('{"a":1}'), :'pub');

-- the CSR names the member id and is signed by the node key
SELECT interop.certificate_request() AS csr \gset
\setenv CSR :csr
\! printf '%s\n' "$CSR" | openssl req -noout -verify -subject -nameopt RFC2253 2>&1

-- the node table holds no private key
SELECT count(*) AS private_key_columns FROM information_schema.columns
WHERE table_schema = 'interop' AND (column_name ILIKE '%private%' OR column_name ILIKE '%secret%');
SELECT count(*) AS rows_with_private_key FROM interop.node WHERE public_key LIKE '%PRIVATE%';

-- a missing key file gives a clear error, not a crash (a new session has no cached key)
\! mv "$DATADIR/interop/node.key" "$DATADIR/interop/node.key.moved"
\c
SELECT interop.sign('{}');
\! mv "$DATADIR/interop/node.key.moved" "$DATADIR/interop/node.key"
SELECT interop.sign('{}') IS NOT NULL AS signs_again;
-- a corrupt key file likewise
\! cp "$DATADIR/interop/node.key" "$DATADIR/interop/node.key.saved"; echo garbage > "$DATADIR/interop/node.key"
\c
\set VERBOSITY terse
SELECT interop.sign('{}');
\set VERBOSITY default
\! mv "$DATADIR/interop/node.key.saved" "$DATADIR/interop/node.key"
