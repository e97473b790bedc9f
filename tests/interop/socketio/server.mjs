#!/usr/bin/env node
// One Socket.IO server with default options, for tests/interop/socketio.sh (three of them
// run behind one wsgate route).
//
//   node server.mjs --name s1
//
// Listens on 127.0.0.1, port 0, and prints `listening 127.0.0.1:PORT`. Besides Socket.IO
// (which also serves its browser client at /socket.io/socket.io.js), the same HTTP server
// answers:
//   GET /         the test page (page/index.html), fetched by the browser through wsgate
//                 (and /favicon.ico, 204)
//   GET /report   JSON {name, sids: {sid: [transport, ...]}}: every Engine.IO request this
//                 server saw, by session id, as `polling` (a polling GET/POST carrying the
//                 sid), `websocket` (the upgrade request) or `handshake:polling` (the
//                 sid-less first request that made the session here). Read directly, not
//                 through wsgate, by the test.
// Socket.IO events: `echo` (ack with the payload, this server's name, the session id and
// the transport in use).
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Server } from 'socket.io';

const HERE = dirname(fileURLToPath(import.meta.url));
const i = process.argv.indexOf('--name');
const NAME = i > 0 ? process.argv[i + 1] : 'server';
const PAGE = readFileSync(join(HERE, 'page', 'index.html'));

const seen = new Map(); // sid → Set of transports
const note = (sid, what) => {
  if (!seen.has(sid)) seen.set(sid, new Set());
  seen.get(sid).add(what);
};
// Engine.IO requests carry the session in the query: `?EIO=4&transport=polling&sid=…`.
const record = (req, upgrade) => {
  const url = new URL(req.url, 'http://x');
  if (!url.pathname.startsWith('/socket.io/')) return;
  const sid = url.searchParams.get('sid');
  if (sid) note(sid, upgrade ? 'websocket' : url.searchParams.get('transport'));
};

const http = createServer((req, res) => {
  const path = new URL(req.url, 'http://x').pathname;
  if (path === '/report') {
    const sids = Object.fromEntries([...seen].map(([k, v]) => [k, [...v].sort()]));
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ name: NAME, sids }));
  } else if (path === '/') {
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'x-served-by': NAME }).end(PAGE);
  } else if (path === '/favicon.ico') {
    res.writeHead(204).end(); // the browser asks; a 404 would be a console error
  } else {
    res.writeHead(404).end();
  }
});
const io = new Server(http);
// After attach: engine.io wrapped the `request` listeners; these run before it, for every
// request, and only look.
http.prependListener('request', (req) => record(req, false));
http.prependListener('upgrade', (req) => record(req, true));
io.engine.on('connection', (raw) => note(raw.id, `handshake:${raw.transport.name}`));
io.on('connection', (socket) => {
  socket.on('echo', (payload, ack) => {
    if (typeof ack === 'function') {
      ack({ payload, server: NAME, sid: socket.conn.id, transport: socket.conn.transport.name });
    }
  });
});
http.listen(0, '127.0.0.1', () => {
  const { address, port } = http.address();
  console.log(`listening ${address}:${port}`);
});
const stop = () => {
  io.close();
  process.exit(0);
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
