// verify-evidence.cjs: checks a document of interop.evidence() with node's
// crypto and the jose library alone, no code of interop:
//
//   NODE_PATH=/usr/share/nodejs node verify-evidence.cjs EVIDENCE.json OUTDIR
//
// It verifies the signatures of the request and the answer (with the key of
// the first certificate of each x5c), that the answer is bound to the
// request (req, jti), that the record's bytes hold both messages and hash to
// the leaf, the Merkle path from the leaf to the seal's signed root, the
// seal's signature (seal_key), that each seal of the chain names the hash
// of the one before it, and each witness's cosignature: signed by the key
// of its x5c certificate, whose common name is the witness, for this node,
// over the hash of a seal of the chain.  It writes to OUTDIR what openssl
// then checks: request.leaf.pem / request.chain.pem, response.*.pem and
// cosignature-N.*.pem (for openssl verify against the federation's root),
// timestamped.jws and token.der (for openssl ts -verify).  Prints the checks
// passed; exits 1 on the first one that fails.
'use strict';
const fs = require('fs');
const crypto = require('crypto');
const jose = require('jose');

const [file, out] = process.argv.slice(2);
const ev = JSON.parse(fs.readFileSync(file, 'utf8'));
const sha256 = (b) => crypto.createHash('sha256').update(b).digest();
const b64u = (b) => Buffer.from(b).toString('base64url');
const pem = (der) => '-----BEGIN CERTIFICATE-----\n' + der.match(/.{1,64}/g).join('\n') + '\n-----END CERTIFICATE-----\n';
const fail = (why) => { throw new Error(why); };
const passed = [];

// a field of the record as the sealer wrote it: presence byte, 4-byte big-endian length, bytes
function field(s) {
  const b = Buffer.from(s, 'utf8');
  const head = Buffer.alloc(5);
  head[0] = 1;
  head.writeUInt32BE(b.length, 1);
  return Buffer.concat([head, b]);
}

// a message as a record keeps it: a protected header of 64 characters or
// more is replaced by "~" and its base64url SHA-256 (records written before
// 0.2.0 keep the whole JWS)
function stored(jws) {
  const header = jws.split('.')[0];
  return header.length >= 64 ? '~' + b64u(sha256(header)) + jws.slice(header.length) : jws;
}
const holds = (bytes, jws) => bytes.includes(field(stored(jws))) || bytes.includes(field(jws));

async function signedBy(jws, name) {
  const header = jose.decodeProtectedHeader(jws);
  if (!Array.isArray(header.x5c) || header.x5c.length === 0) fail(`the ${name} carries no x5c`);
  const key = await jose.importX509(pem(header.x5c[0]), header.alg);
  const { payload } = await jose.compactVerify(jws, key);
  fs.writeFileSync(`${out}/${name}.leaf.pem`, pem(header.x5c[0]));
  fs.writeFileSync(`${out}/${name}.chain.pem`, header.x5c.slice(1).map(pem).join(''));
  passed.push(`the ${name} signature verifies (${header.alg}, ${header.typ})`);
  return JSON.parse(Buffer.from(payload).toString('utf8'));
}

async function main() {
  if (ev.typ !== 'interop-evidence') fail('not an evidence document');
  const request = await signedBy(ev.request, 'request');
  const answer = await signedBy(ev.response, 'response');
  if (answer.req !== b64u(sha256(ev.request))) fail('the answer is not bound to these request bytes (req)');
  if (answer.jti !== request.jti) fail('the answer names another request (jti)');
  passed.push('the answer is bound to the request (req, jti)');

  const bytes = Buffer.from(ev.leaf.bytes, 'base64url');
  const leaf = sha256(Buffer.concat([Buffer.from([0]), bytes]));
  if (b64u(leaf) !== ev.leaf.hash) fail('the record bytes do not hash to the leaf');
  if (!holds(bytes, ev.request) || !holds(bytes, ev.response))
    fail('the record bytes do not hold the request and the answer');
  passed.push('the record holds both messages and hashes to the leaf');

  let node = leaf;
  for (const step of ev.seal.path) {
    const sibling = Buffer.from(step.hash, 'base64url');
    const pair = step.side === 'left' ? [sibling, node] : [node, sibling];
    node = sha256(Buffer.concat([Buffer.from([1]), ...pair]));
  }
  const sealHeader = jose.decodeProtectedHeader(ev.seal.jws);
  const sealKey = await jose.importSPKI(ev.seal_key, sealHeader.alg);
  const seal = JSON.parse(Buffer.from((await jose.compactVerify(ev.seal.jws, sealKey)).payload).toString('utf8'));
  if (seal.typ !== 'interop-seal' || seal.log !== 'message_log') fail('the seal is not a seal of the message log');
  if (!(ev.record.id > seal.after && ev.record.id <= seal.upto)) fail('the record is outside the seal\'s range');
  if (seal.root !== b64u(node)) fail('the Merkle path does not lead to the seal\'s signed root');
  passed.push(`the Merkle path (${ev.seal.path.length} steps) leads to the root signed by seal ${ev.seal.id}`);

  if (ev.chain[0] !== ev.seal.jws) fail('the chain does not start at the seal');
  for (let k = 1; k < ev.chain.length; k++) {
    const p = JSON.parse(Buffer.from((await jose.compactVerify(ev.chain[k], sealKey)).payload).toString('utf8'));
    if (p.prev !== b64u(sha256(ev.chain[k - 1]))) fail(`seal ${k} of the chain does not follow the one before it`);
  }
  passed.push(`the chain of ${ev.chain.length} seals links up`);

  if (ev.timestamp) {
    const t = ev.chain[ev.timestamp.index];
    if (t === undefined) fail('the timestamp names no seal of the chain');
    fs.writeFileSync(`${out}/timestamped.jws`, t);
    fs.writeFileSync(`${out}/token.der`, Buffer.from(ev.timestamp.token, 'base64'));
  }

  for (const [n, c] of (ev.cosignatures || []).entries()) {
    const header = jose.decodeProtectedHeader(c.jws);
    if (header.typ !== 'interop-cosignature') fail(`cosignature ${n} is not a cosignature`);
    const p = await signedBy(c.jws, `cosignature-${n}`);
    const cn = new crypto.X509Certificate(Buffer.from(header.x5c[0], 'base64')).subject
      .split('\n').find((l) => l.startsWith('CN='));
    if (cn !== `CN=${c.witness}`) fail(`cosignature ${n} is signed by ${cn}, not by the witness ${c.witness}`);
    if (p.iss !== c.witness || p.node !== ev.node) fail(`cosignature ${n} is not ${c.witness}'s of the seals of ${ev.node}`);
    const k = ev.chain.findIndex((jws) => b64u(sha256(jws)) === p.head);
    if (k < 0) fail(`the head cosigned by ${c.witness} is no seal of the chain`);
    passed.pop();
    passed.push(`${c.witness} cosigned seal ${k} of the chain (${header.alg}), which follows the record's seal`);
  }
  console.log(passed.join('\n'));
}

main().catch((e) => { console.error(`evidence refused: ${e.message}`); process.exit(1); });
