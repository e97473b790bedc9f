#!/usr/bin/env node
// Third-party client interop: Node `ws` (npm) through wsgate to ws_backend.py.
//
//   node tests/interop/node/client.mjs --url ws://WSGATE --direct ws://BACKEND
//
// The same checks as python_client.py (see there for the wsgate routes it expects),
// written with the `ws` client library. Every check has its own timeout; prints a table
// (check, result, detail) and exits 0 only if every check passed.
import { randomUUID } from 'node:crypto';
import WebSocket from 'ws';

const MiB = 1 << 20;
const SIZES = [0, 1, 125, 126, 65535, 65536, MiB, 16 * MiB];
const TEXT_SIZES = [0, 126, 65536, 16 * MiB];
const CLOSE_CODES = [1000, 1001, 3000, 4999];
const CONCURRENT = 300;
const CHECK_MS = 30_000;
const STEP_MS = 10_000;
// Exactly 123 bytes of UTF-8: the most a Close frame can carry.
const LONG_REASON = Buffer.from('ünïcödé reason '.repeat(10)).subarray(0, 123).toString();
const INVALID_UTF8 = Buffer.from([0xff, 0xfe, 0x20, 0x69, 0x6e, 0x76]);

function arg(name) {
  const i = process.argv.indexOf(name);
  if (i < 0 || i + 1 >= process.argv.length) {
    console.error(`usage: node client.mjs --url ws://WSGATE --direct ws://BACKEND (missing ${name})`);
    process.exit(2);
  }
  return process.argv[i + 1].replace(/\/$/, '');
}

function withTimeout(promise, ms, what) {
  let timer;
  return Promise.race([
    promise.finally(() => clearTimeout(timer)),
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms`)), ms);
    }),
  ]);
}

// A connected socket with an inbox: next() resolves with the next message or rejects
// once the connection is closed; closed resolves with {code, reason}.
function open(url, protocols = []) {
  const ws = new WebSocket(url, protocols, { perMessageDeflate: false, maxPayload: 64 * MiB });
  const inbox = [];
  const waiters = [];
  let closeInfo = null;
  const closed = new Promise((resolve) => {
    ws.on('close', (code, reason) => {
      closeInfo = { code, reason: reason.toString() };
      for (const w of waiters.splice(0)) w.reject(new Error(`closed ${code} ${closeInfo.reason}`));
      resolve(closeInfo);
    });
  });
  ws.on('message', (data, isBinary) => {
    const msg = { data, isBinary };
    const w = waiters.shift();
    if (w) w.resolve(msg);
    else inbox.push(msg);
  });
  let lastError = null;
  ws.on('error', (err) => {
    lastError = err; // also surfaces as a close
  });
  const next = () => {
    if (inbox.length) return Promise.resolve(inbox.shift());
    if (closeInfo) return Promise.reject(new Error(`closed ${closeInfo.code} ${closeInfo.reason}`));
    return withTimeout(new Promise((resolve, reject) => waiters.push({ resolve, reject })), STEP_MS, url);
  };
  const opened = withTimeout(
    new Promise((resolve, reject) => {
      ws.once('open', () => resolve());
      ws.once('unexpected-response', (_req, res) => reject(new Error(`HTTP ${res.statusCode}`)));
      ws.once('close', (code) => reject(new Error(`closed ${code} before open${lastError ? `: ${lastError.message}` : ''}`)));
    }),
    STEP_MS,
    `open ${url}`,
  );
  return { ws, next, closed: withTimeout(closed, STEP_MS, `close ${url}`), opened };
}

function payload(size, text, seed = 0) {
  if (text) {
    const alphabet = 'abcdefghijklmnopqrstuvwxyz0123456789 ';
    const unit = Array.from({ length: 4096 }, (_, i) => alphabet[(i + seed) % alphabet.length]).join('');
    return unit.repeat(Math.floor(size / 4096) + 1).slice(0, size);
  }
  const unit = Buffer.from(Array.from({ length: 4096 }, (_, i) => (i * 7 + seed) % 256));
  return Buffer.concat(Array(Math.floor(size / 4096) + 1).fill(unit)).subarray(0, size);
}

async function checkEcho(base) {
  const c = open(`${base}/echo/sizes`);
  await c.opened;
  for (const text of [false, true]) {
    for (const size of text ? TEXT_SIZES : SIZES) {
      const msg = payload(size, text, size % 251);
      c.ws.send(msg, { binary: !text });
      const got = await c.next();
      const same = text ? !got.isBinary && got.data.toString() === msg : got.isBinary && got.data.equals(msg);
      if (!same) return `FAILED ${text ? 'text' : 'binary'} ${size} B: got ${got.data.length} B binary=${got.isBinary}`;
    }
  }
  c.ws.close(1000);
  await c.closed;
  return `ok: binary ${SIZES.length} sizes, text ${TEXT_SIZES.length} sizes, 0 B..16 MiB`;
}

async function checkFragments(base) {
  // Text cut inside multi-byte characters (☃ = e2 98 83, κ = ce ba); binary with an
  // empty middle fragment and a 64 KiB one.
  const cases = [
    ['text', [Buffer.from('ab\xe2', 'latin1'), Buffer.from('\x98\x83cd', 'latin1'), Buffer.from([0xce]), Buffer.from('\xba end', 'latin1')]],
    ['binary', [payload(1000, false), Buffer.alloc(0), payload(65536, false, 1), Buffer.from([0])]],
  ];
  const c = open(`${base}/fragments/node`);
  await c.opened;
  const done = [];
  for (const [kind, chunks] of cases) {
    chunks.forEach((chunk, i) => c.ws.send(chunk, { binary: kind === 'binary', fin: i === chunks.length - 1 }));
    const echo = await c.next();
    const report = JSON.parse((await c.next()).data.toString());
    const sizes = chunks.map((b) => b.length);
    if (JSON.stringify(report.received) !== JSON.stringify(sizes)) {
      return `FAILED ${kind}: backend got frames ${JSON.stringify(report.received)}, sent ${JSON.stringify(sizes)}`;
    }
    if (report.type !== kind.toUpperCase()) return `FAILED ${kind}: backend saw type ${report.type}`;
    if (echo.isBinary !== (kind === 'binary') || !echo.data.equals(Buffer.concat(chunks))) {
      return `FAILED ${kind}: echo differs`;
    }
    done.push(`${kind} ${JSON.stringify(sizes)}`);
  }
  c.ws.close(1000);
  await c.closed;
  return `ok: frames kept to the backend: ${done.join('; ')}; echoes reassembled intact`;
}

async function checkSubprotocol(base, direct) {
  const offered = ['v1.wsgate.test', 'v2.wsgate.test'];
  const c = open(`${base}/subprotocol?supported=v2.wsgate.test`, offered);
  await c.opened;
  const hello = JSON.parse((await c.next()).data.toString());
  if (c.ws.protocol !== 'v2.wsgate.test' || hello.subprotocol !== 'v2.wsgate.test') {
    return `FAILED: client sees '${c.ws.protocol}', backend chose ${hello.subprotocol}`;
  }
  c.ws.close(1000);
  await c.closed;
  // None offered: no subprotocol either side.
  const n = open(`${base}/subprotocol?supported=v2.wsgate.test`);
  await n.opened;
  const none = JSON.parse((await n.next()).data.toString());
  if (n.ws.protocol !== '' || none.subprotocol !== null) {
    return `FAILED (none offered): client '${n.ws.protocol}', backend ${none.subprotocol}`;
  }
  n.ws.close(1000);
  await n.closed;
  // Offered but none supported: the backend picks none, and `ws` itself refuses such a
  // handshake ("Server sent no subprotocol"): the same through wsgate as directly.
  const refusal = async (url) => {
    try {
      await open(`${url}/subprotocol?supported=none`, offered).opened;
      return 'opened';
    } catch (err) {
      return err.message;
    }
  };
  const [own, through] = [await refusal(direct), await refusal(base)];
  if (!/no subprotocol/.test(own) || own !== through) return `FAILED (unsupported): direct '${own}', via wsgate '${through}'`;
  return 'ok: offered v1,v2 -> v2 both sides; none offered -> none; unsupported -> ws refuses, as directly';
}

async function backendRecord(base, token) {
  const r = open(`${base}/report/${token}`);
  await r.opened;
  const record = JSON.parse((await r.next()).data.toString());
  await r.closed;
  return record;
}

async function checkCloseClient(base) {
  for (const code of CLOSE_CODES) {
    for (const reason of [`client bye ${code}`, LONG_REASON]) {
      const token = randomUUID();
      const c = open(`${base}/record/${token}`);
      await c.opened;
      c.ws.send('x');
      await c.next();
      c.ws.close(code, reason);
      const reply = await c.closed;
      const record = await backendRecord(base, token);
      if (record.code !== code || record.reason !== reason) {
        return `FAILED ${code}: backend got ${record.code} '${record.reason}'`;
      }
      if (reply.code !== code || reply.reason !== reason) return `FAILED ${code}: close reply ${JSON.stringify(reply)}`;
    }
  }
  return `ok: [${CLOSE_CODES.join(', ')}] + reasons (incl. 123-byte UTF-8) reach the backend`;
}

async function checkCloseBackend(base) {
  for (const code of CLOSE_CODES) {
    for (const reason of [`backend bye ${code}`, LONG_REASON]) {
      const c = open(`${base}/close?code=${code}&reason=${encodeURIComponent(reason)}`);
      await c.opened;
      const got = await c.closed;
      if (got.code !== code || got.reason !== reason) return `FAILED ${code}: client got ${JSON.stringify(got)}`;
    }
  }
  return `ok: [${CLOSE_CODES.join(', ')}] + reasons reach the client`;
}

async function closeAfterInvalidUtf8(url, fragments = null) {
  const c = open(url);
  await c.opened;
  if (fragments) fragments.forEach((f, i) => c.ws.send(f, { binary: false, fin: i === fragments.length - 1 }));
  else c.ws.send(INVALID_UTF8, { binary: false });
  return c.closed;
}

async function checkUtf8(base, direct) {
  const own = await closeAfterInvalidUtf8(`${direct}/echo/utf8`);
  const through = await closeAfterInvalidUtf8(`${base}/raw/utf8`);
  if (own.code !== 1007) return `FAILED: the backend itself answered ${JSON.stringify(own)}`;
  if (through.code !== own.code || through.reason !== own.reason) {
    return `FAILED: validate_utf8 off: got ${JSON.stringify(through)}, backend says ${JSON.stringify(own)}`;
  }
  const byGate = await closeAfterInvalidUtf8(`${base}/echo/utf8`);
  if (byGate.code !== 1007) return `FAILED: default route answered ${JSON.stringify(byGate)}`;
  const split = await closeAfterInvalidUtf8(`${base}/echo/utf8`, [Buffer.from('valid '), Buffer.from([0xce])]);
  if (split.code !== 1007) return `FAILED: truncated sequence across fragments: ${JSON.stringify(split)}`;
  return `ok: backend 1007 '${own.reason}' passes intact; wsgate 1007 '${byGate.reason}' (also across fragments)`;
}

async function checkConcurrent(base) {
  const started = Date.now();
  const conns = Array.from({ length: CONCURRENT }, (_, i) => open(`${base}/echo/c${i}`));
  const opened = await Promise.allSettled(conns.map((c) => c.opened));
  const failedOpen = opened.filter((r) => r.status === 'rejected');
  if (failedOpen.length) return `FAILED: ${failedOpen.length} of ${CONCURRENT} did not open: ${failedOpen[0].reason}`;
  // All 300 are open at once now; each echoes one message.
  const echoes = await Promise.allSettled(
    conns.map(async (c, i) => {
      c.ws.send(`conn ${i}`);
      const got = await c.next();
      if (got.data.toString() !== `conn ${i}`) throw new Error(`conn ${i}: echo differs`);
    }),
  );
  const bad = echoes.filter((r) => r.status === 'rejected');
  for (const c of conns) c.ws.close(1000);
  const closes = await Promise.allSettled(conns.map((c) => c.closed));
  const notClean = closes.filter((r) => r.status === 'rejected' || r.value.code !== 1000);
  if (bad.length || notClean.length) {
    return `FAILED: ${bad.length} bad echoes, ${notClean.length} closes not 1000`;
  }
  return `ok: ${CONCURRENT} open at once, all echoed, closed 1000 (${((Date.now() - started) / 1000).toFixed(1)}s)`;
}

async function main() {
  const base = arg('--url');
  const direct = arg('--direct');
  if (Buffer.byteLength(LONG_REASON) !== 123) throw new Error(`LONG_REASON is ${Buffer.byteLength(LONG_REASON)} bytes`);
  const { createRequire } = await import('node:module');
  const version = createRequire(import.meta.url)('ws/package.json').version;
  console.log(`client: Node ${process.version}, ws ${version}; wsgate ${base}; backend ${direct}`);
  const checks = [
    ['echo 0 B..16 MiB', () => checkEcho(base)],
    ['fragmented sends', () => checkFragments(base)],
    ['subprotocol', () => checkSubprotocol(base, direct)],
    ['close from client', () => checkCloseClient(base)],
    ['close from backend', () => checkCloseBackend(base)],
    ['invalid UTF-8 -> 1007', () => checkUtf8(base, direct)],
    [`${CONCURRENT} concurrent`, () => checkConcurrent(base)],
  ];
  const rows = [];
  for (const [name, check] of checks) {
    const started = Date.now();
    let detail;
    try {
      detail = await withTimeout(check(), CHECK_MS, name);
    } catch (err) {
      detail = `FAILED: ${err.message}`;
    }
    rows.push([name, detail, (Date.now() - started) / 1000]);
  }
  const w = Math.max(...rows.map((r) => r[0].length));
  console.log(`\n${'check'.padEnd(w)}  result  ${'s'.padStart(5)}  detail`);
  let failed = 0;
  for (const [name, detail, secs] of rows) {
    const ok = detail.startsWith('ok');
    if (!ok) failed += 1;
    console.log(`${name.padEnd(w)}  ${(ok ? 'ok' : 'FAILED').padEnd(6)}  ${secs.toFixed(1).padStart(5)}  ${detail.replace(/^ok: /, '')}`);
  }
  console.log(`\n${rows.length - failed} passed, ${failed} failed`);
  return failed ? 1 : 0;
}

main().then(
  (code) => process.exit(code),
  (err) => {
    console.error(`error: ${err.stack || err}`);
    process.exit(1);
  },
);
