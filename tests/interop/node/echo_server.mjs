#!/usr/bin/env node
// A third-party echo backend: Node `ws` (npm), with nothing of its own but the echo.
//
//   node tests/interop/node/echo_server.mjs [--port 0]
//
// Prints `listening 127.0.0.1:PORT` once it accepts connections; serves until
// SIGTERM/SIGINT. Every message is sent back as received (text stays text, binary
// stays binary). Compression off (wsgate strips extensions), a 128 MiB message cap
// (Autobahn case 9 sends 16 MiB), no fragment-count cap, UTF-8 validated by the
// library, no keepalive pings.
// This is the Autobahn backend of tests/interop/autobahn.sh (AUTOBAHN_BACKEND=node).
import { WebSocketServer } from 'ws';

const args = process.argv.slice(2);
const portArg = args.indexOf('--port');
const port = portArg >= 0 ? Number(args[portArg + 1]) : 0;

const server = new WebSocketServer({
  host: '127.0.0.1',
  port,
  perMessageDeflate: false,
  maxPayload: 128 * 1024 * 1024,
  // ws 8.23 caps a message at 16384 fragments by default (a DoS guard, close 1008);
  // Autobahn 9.3.1 sends 65536 (4 MiB in 64-byte fragments). 0 = no cap.
  maxFragments: 0,
});

server.on('connection', (ws) => {
  ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
  ws.on('error', () => {}); // the library closes the connection itself (1002/1007/1009)
});

server.on('listening', () => {
  const { address, port: bound } = server.address();
  console.log(`listening ${address}:${bound}`);
});

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => {
    for (const ws of server.clients) ws.terminate();
    server.close(() => process.exit(0));
  });
}
