#!/usr/bin/env node
// The Node Socket.IO client with default options (long-polling first, then the upgrade to
// websocket) through wsgate to three Socket.IO servers (server.mjs). Started by
// tests/interop/socketio.sh:
//
//   node client.mjs --url http://WSGATE --backends http://B1,http://B2,http://B3 \
//       --sid-hash-host NAME --cookie-hash-host NAME
//
// --url is a wsgate route with `balance: hash` (client_ip); each client connects from its
// own loopback address (127.0.0.11, .12, …) through an http.Agent with `localAddress`, the
// only option set, so that clients look like different hosts. --sid-hash-host and
// --cookie-hash-host are the Hosts of routes with `hash_on: query:sid` and `cookie:io`
// over the same servers (on the same wsgate), checked to show why that is not the
// Socket.IO config. The servers' /report (read directly) tells which sessions each saw on
// which transport. Prints a table (check, result, detail); exits 0 only if every check
// passed.
import { Agent, request } from 'node:http';
import { io } from 'socket.io-client';

// 12 clients on 3 backends: all on one by chance has odds 3 * 3^-12 (under 1e-5).
const CLIENTS = 12;
const ACKS = 20;
const STEP_MS = 10_000;
const SID_HASH_SESSIONS = 20;

function arg(name) {
  const i = process.argv.indexOf(name);
  if (i < 0 || i + 1 >= process.argv.length) {
    console.error(`usage: node client.mjs --url URL --backends URL,URL,URL --sid-hash-host NAME --cookie-hash-host NAME (missing ${name})`);
    process.exit(2);
  }
  return process.argv[i + 1].replace(/\/$/, '');
}

const url = arg('--url');
const backends = arg('--backends').split(',');
const sidHashHost = arg('--sid-hash-host');
const cookieHashHost = arg('--cookie-hash-host');

function withTimeout(promise, ms, what) {
  let timer;
  return Promise.race([
    promise.finally(() => clearTimeout(timer)),
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what}: not within ${ms} ms`)), ms);
    }),
  ]);
}

const rows = [];
async function check(name, fn) {
  try {
    const detail = await fn();
    rows.push([name, 'ok', detail ?? '']);
  } catch (e) {
    rows.push([name, 'FAIL', e.message]);
  }
}
const ensure = (cond, msg) => {
  if (!cond) throw new Error(msg);
};

// One client from source address 127.0.0.(11 + n), default Socket.IO options otherwise.
function client(n) {
  const agent = new Agent({ localAddress: `127.0.0.${11 + n}` });
  const socket = io(url, { agent, reconnection: true });
  const errors = [];
  socket.on('connect_error', (e) => errors.push(e.message));
  const connected = withTimeout(
    new Promise((resolve) => socket.once('connect', resolve)),
    STEP_MS,
    `client ${n} connect (errors: ${errors.join('; ') || 'none'})`,
  );
  return { n, agent, socket, errors, connected };
}

// A request with its own Host header (fetch cannot set one), body read whole.
function hostRequest(method, target, host, body, headers = {}) {
  const done = new Promise((resolve, reject) => {
    const req = request(target, { method, headers: { ...headers, host }, agent: false }, (res) => {
      const chunks = [];
      res.on('data', (d) => chunks.push(d));
      res.on('end', () => resolve({ status: res.statusCode, text: Buffer.concat(chunks).toString() }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(body);
  });
  return withTimeout(done, STEP_MS, `${method} ${target}`);
}

const ack = (socket, payload) => withTimeout(socket.emitWithAck('echo', payload), STEP_MS, 'ack');

const upgraded = (socket) => {
  const engine = socket.io.engine;
  if (engine.transport.name === 'websocket') return Promise.resolve();
  return withTimeout(new Promise((resolve) => engine.once('upgrade', resolve)), STEP_MS, 'upgrade');
};

async function reports() {
  const all = await Promise.all(
    backends.map(async (b) => {
      const r = await withTimeout(fetch(`${b}/report`), STEP_MS, `${b}/report`);
      return r.json();
    }),
  );
  return all;
}

async function main() {
  const clients = [];
  await check(`${CLIENTS} clients connect (default options)`, async () => {
    for (let n = 0; n < CLIENTS; n++) clients.push(client(n));
    await Promise.all(clients.map((c) => c.connected));
    return `${clients.length} connected`;
  });
  await check('first transport is polling', async () => {
    ensure(clients.every((c) => c.socket.connected), 'not connected');
    // The upgrade may already be done by now; what the handshake used is in the report.
    const rep = await reports();
    for (const c of clients) {
      const sid = c.socket.io.engine.id;
      const had = rep.some((r) => (r.sids[sid] || []).includes('handshake:polling'));
      ensure(had, `session ${sid} has no polling handshake on any backend`);
    }
    return 'every session began with a polling handshake';
  });
  const servers = new Map(); // client n → server name from acks
  await check(`${ACKS} emit/ack round trips per client`, async () => {
    await Promise.all(
      clients.map(async (c) => {
        for (let k = 0; k < ACKS; k++) {
          const payload = { k, text: `ünïcödé ${c.n}/${k}` };
          const r = await ack(c.socket, payload);
          ensure(JSON.stringify(r.payload) === JSON.stringify(payload), `client ${c.n}: ack payload ${JSON.stringify(r.payload)}`);
          ensure(r.sid === c.socket.io.engine.id, `client ${c.n}: server's sid ${r.sid} is not the client's ${c.socket.io.engine.id}`);
          if (!servers.has(c.n)) servers.set(c.n, r.server);
          ensure(servers.get(c.n) === r.server, `client ${c.n}: acks from ${servers.get(c.n)} and ${r.server}`);
        }
      }),
    );
    return `${CLIENTS * ACKS} acks, each from the session's own server`;
  });
  await check('transport upgraded to websocket', async () => {
    await Promise.all(clients.map((c) => upgraded(c.socket)));
    const names = clients.map((c) => c.socket.io.engine.transport.name);
    ensure(names.every((t) => t === 'websocket'), `transports ${names.join(',')}`);
    const after = await Promise.all(clients.map((c) => ack(c.socket, 'after upgrade')));
    ensure(after.every((r) => r.transport === 'websocket'), `server side: ${after.map((r) => r.transport).join(',')}`);
    ensure(after.every((r, i) => r.server === servers.get(clients[i].n)), 'a session changed server on upgrade');
    return 'socket.io.engine.transport.name = websocket on every client and server';
  });
  await check('binary 512 KiB over websocket', async () => {
    const big = Buffer.alloc(512 * 1024, 0xa5);
    const r = await ack(clients[0].socket, big);
    ensure(Buffer.isBuffer(r.payload) && r.payload.equals(big), 'payload differs');
    return `${big.length} bytes round trip`;
  });
  await check('polling + upgrade of a session on ONE backend', async () => {
    const rep = await reports();
    const lines = [];
    for (const c of clients) {
      const sid = c.socket.io.engine.id;
      const at = rep.filter((r) => r.sids[sid]);
      ensure(at.length === 1, `session ${sid} seen by ${at.map((r) => r.name).join(',') || 'no backend'}`);
      const t = at[0].sids[sid];
      for (const want of ['handshake:polling', 'polling', 'websocket']) {
        ensure(t.includes(want), `session ${sid} on ${at[0].name}: ${t.join(',')} (no ${want})`);
      }
      ensure(at[0].name === servers.get(c.n), `session ${sid} acked by ${servers.get(c.n)}, reported by ${at[0].name}`);
      lines.push(`${at[0].name}`);
    }
    return `sessions on ${lines.join(' ')}; each saw handshake, polling, websocket`;
  });
  await check('clients spread over more than one backend', async () => {
    const used = new Set(servers.values());
    ensure(used.size > 1, `all ${CLIENTS} clients on ${[...used].join(',')}`);
    return `${used.size} of ${backends.length} backends used`;
  });
  await check('no connect errors, no reconnects', async () => {
    const errs = clients.flatMap((c) => c.errors);
    ensure(errs.length === 0, errs.join('; '));
    return '';
  });
  await check('disconnect', async () => {
    await Promise.all(
      clients.map((c) => {
        const gone = new Promise((resolve) => c.socket.once('disconnect', resolve));
        c.socket.disconnect();
        return withTimeout(gone, STEP_MS, `client ${c.n} disconnect`);
      }),
    );
    for (const c of clients) c.agent.destroy();
    return '';
  });
  // Why neither `hash_on: query:sid` nor `cookie:io` is the Socket.IO config: the first
  // request has no sid (nor cookie), so it is hashed on the client address; the sid it
  // gets is made by whichever server that was, and later requests hash on that sid (the
  // `io` cookie of the server's `cookie: true` holds the same value), which names some
  // server at random.
  for (const [key, host, extra] of [
    ['query:sid', sidHashHost, () => ({})],
    ['cookie:io', cookieHashHost, (sid) => ({ cookie: `io=${sid}` })],
  ]) {
    await check(`hash_on ${key} breaks sessions (${SID_HASH_SESSIONS} handshakes)`, async () => {
      let unknown = 0;
      for (let k = 0; k < SID_HASH_SESSIONS; k++) {
        const base = `${url}/socket.io/?EIO=4&transport=polling`;
        const hs = await hostRequest('GET', base, host);
        ensure(hs.status === 200, `handshake HTTP ${hs.status} ${hs.text}`);
        const sid = JSON.parse(hs.text.slice(1)).sid;
        // `40` is Socket.IO's CONNECT packet, what the client posts next.
        const next = await hostRequest('POST', `${base}&sid=${encodeURIComponent(sid)}`, host, '40', extra(sid));
        if (next.status === 400 && next.text.includes('Session ID unknown')) unknown++;
        else ensure(next.status === 200, `HTTP ${next.status} ${next.text}`);
      }
      ensure(unknown > 0, 'every session stayed on its server (expected some to be sent elsewhere)');
      return `${unknown} of ${SID_HASH_SESSIONS} sessions got 400 "Session ID unknown"`;
    });
  }

  const width = Math.max(...rows.map((r) => r[0].length));
  console.log(`${'check'.padEnd(width)}  result  detail`);
  for (const [name, result, detail] of rows) console.log(`${name.padEnd(width)}  ${result.padEnd(6)}  ${detail}`);
  const failed = rows.filter((r) => r[1] !== 'ok').length;
  console.log(`\nsocket.io: ${rows.length - failed} of ${rows.length} checks passed`);
  process.exit(failed ? 1 : 0);
}

withTimeout(main(), 90_000, 'socket.io client run').catch((e) => {
  console.error(`error: ${e.message}`);
  process.exit(1);
});
