#!/usr/bin/env node
// Keys and tokens for the `connauth` measure of benches/compare.sh, made fresh per run:
//
//   node benches/jwt-fixture.mjs DIR
//
// writes DIR/jwks.json (a P-256 key `es` and an RSA-2048 key `rs`, public halves only)
// and DIR/es256.token, DIR/rs256.token (signed by them, `sub` bench, valid one day).
// Node's own crypto: nothing to install, and no key ever leaves the scratch folder.
import { generateKeyPairSync, sign } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';

const dir = process.argv[2];
if (!dir) {
  console.error('usage: node jwt-fixture.mjs DIR');
  process.exit(2);
}
const part = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
const exp = Math.floor(Date.now() / 1000) + 86400;
const keys = [];
for (const [kid, alg, type, opts, dsa] of [
  ['es', 'ES256', 'ec', { namedCurve: 'P-256' }, 'ieee-p1363'],
  ['rs', 'RS256', 'rsa', { modulusLength: 2048 }, undefined],
]) {
  const { publicKey, privateKey } = generateKeyPairSync(type, opts);
  keys.push({ ...publicKey.export({ format: 'jwk' }), kid, alg, use: 'sig' });
  const input = `${part({ alg, typ: 'JWT', kid })}.${part({ sub: 'bench', exp })}`;
  const sig = sign('sha256', Buffer.from(input), { key: privateKey, dsaEncoding: dsa });
  writeFileSync(join(dir, `${alg.toLowerCase()}.token`), `${input}.${sig.toString('base64url')}\n`);
}
writeFileSync(join(dir, 'jwks.json'), JSON.stringify({ keys }));
