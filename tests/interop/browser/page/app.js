// The page's WebSocket code: plain browser API, as a web app uses it.
//
// window.runCase(name, base) opens `base + path` (base = wss://HOST:PORT of wsgate),
// plays one scenario and resolves with what the page saw: an ordered list of events
// (open, message, error, close with code/reason/wasClean) plus scenario-specific facts.
// It never throws: a scenario that hangs resolves with `timedOut: true` after CASE_MS.
'use strict';

const CASE_MS = 10000;

function log(line) {
  const el = document.getElementById('log');
  if (el) el.textContent += line + '\n';
}

// Opens a socket and records every event in `out.events`; `on` adds scenario behaviour;
// `protocols` is the subprotocol offer, if any.
function open(url, out, on = {}, protocols = undefined) {
  const ws = protocols ? new WebSocket(url, protocols) : new WebSocket(url);
  if (!out.url) out.url = url;
  ws.binaryType = 'arraybuffer';
  ws.onopen = () => {
    out.events.push({ type: 'open', protocol: ws.protocol });
    if (on.open) on.open(ws);
  };
  ws.onmessage = (e) => {
    const isText = typeof e.data === 'string';
    out.events.push({
      type: 'message',
      kind: isText ? 'text' : 'binary',
      size: isText ? new TextEncoder().encode(e.data).length : e.data.byteLength,
    });
    if (on.message) on.message(ws, e.data);
  };
  ws.onerror = () => {
    out.events.push({ type: 'error' });
  };
  ws.onclose = (e) => {
    out.events.push({ type: 'close', code: e.code, reason: e.reason, wasClean: e.wasClean });
    if (on.close) on.close(e);
  };
  return ws;
}

function sameBytes(a, b) {
  if (a.byteLength !== b.byteLength) return false;
  const x = new Uint8Array(a);
  const y = new Uint8Array(b);
  for (let i = 0; i < x.length; i++) if (x[i] !== y[i]) return false;
  return true;
}

function pattern(size, seed) {
  const bytes = new Uint8Array(size);
  for (let i = 0; i < size; i++) bytes[i] = (i * 7 + seed) % 256;
  return bytes;
}

const TEXT = 'héllo wsgate ✓ — ünïcödé 🚀';
const BINARY = pattern(65536, 3); // crosses the 16-bit frame-length boundary
const BLOB_BYTES = pattern(1000, 11);

const scenarios = {
  // open → text → binary (ArrayBuffer) → Blob → close(1000): everything comes back intact.
  echo(base, out, done) {
    const expect = [TEXT, BINARY.buffer, BLOB_BYTES.buffer];
    out.roundTrips = [];
    open(`${base}/echo/browser`, out, {
      open: (ws) => ws.send(TEXT),
      message: (ws, data) => {
        const i = out.roundTrips.length;
        const want = expect[i];
        const ok = typeof want === 'string' ? data === want : data instanceof ArrayBuffer && sameBytes(data, want);
        out.roundTrips.push(ok);
        if (i === 0) ws.send(BINARY.buffer);
        else if (i === 1) ws.send(new Blob([BLOB_BYTES]));
        else ws.close(1000, 'done');
      },
      close: done,
    });
  },

  // App-level keepalive: the server sends `ping`, the page answers `pong`.
  pingpong(base, out, done) {
    out.pings = 0;
    out.final = null;
    open(`${base}/pingpong?count=3`, out, {
      message: (ws, data) => {
        if (data === 'ping') {
          out.pings += 1;
          ws.send('pong');
        } else {
          out.final = data;
        }
      },
      close: done,
    });
  },

  // The backend closes with 4001 and a reason right after the handshake.
  backendClose(base, out, done) {
    open(`${base}/close?code=4001&reason=backend%20bye`, out, { close: done });
  },

  // The route's backend port is closed: wsgate answers 502, the handshake fails.
  unreachable(base, out, done) {
    open(`${base}/down`, out, { close: done });
  },

  // The route allows another Origin only: wsgate answers 403.
  forbiddenOrigin(base, out, done) {
    open(`${base}/forbidden`, out, { close: done });
  },

  // The page closes with 4002 "page bye"; then it asks the backend what it received.
  pageClose(base, out, done) {
    const token = `page-${Date.now()}-${Math.floor(Math.random() * 1e9)}`;
    out.record = null;
    open(`${base}/record/${token}`, out, {
      open: (ws) => ws.send('hi'),
      message: (ws) => ws.close(4002, 'page bye'),
      close: () => {
        const report = { events: [] };
        open(`${base}/report/${token}`, report, {
          message: (_ws, data) => {
            out.record = JSON.parse(data);
          },
          close: done,
        });
      },
    });
  },
};

// The JWT route: the token travels as a subprotocol entry beside the marker, the only
// way a browser can send a credential on a WebSocket without a cookie.
const bearer = (token) => ['wsgate.bearer', `wsgate.bearer.${token}`];

Object.assign(scenarios, {
  // Opens with the token, echoes once, closes 4003; then asks the backend what it saw.
  jwtSubprotocol(base, out, done, extra) {
    const id = `jwt-${Date.now()}-${Math.floor(Math.random() * 1e9)}`;
    out.record = null;
    open(`${base}/jwt/${id}`, out, {
      open: (ws) => ws.send('hi'),
      message: (ws) => ws.close(4003, 'jwt bye'),
      close: () => {
        const report = { events: [] };
        open(`${base}/report/${id}`, report, {
          message: (_ws, data) => {
            out.record = JSON.parse(data);
          },
          close: done,
        });
      },
    }, bearer(extra.token));
  },

  // The marker alone: no token, so wsgate answers 401.
  jwtMissing(base, out, done) {
    open(`${base}/jwt/none`, out, { close: done }, ['wsgate.bearer']);
  },

  // Why the marker is offered too: without it the backend picks nothing, the 101 names
  // no subprotocol, and Chromium fails the connection.
  jwtNoMarker(base, out, done, extra) {
    open(`${base}/jwt/nomarker`, out, { close: done }, [`wsgate.bearer.${extra.token}`]);
  },

  // A token that expires in a few seconds: wsgate closes the open socket at exp.
  jwtExpiry(base, out, done, extra) {
    let openedAt = 0;
    open(`${base}/jwt/expiry-${Date.now()}`, out, {
      open: () => {
        openedAt = Date.now();
      },
      close: () => {
        out.openForMs = openedAt ? Date.now() - openedAt : 0;
        done();
      },
    }, bearer(extra.token));
  },
});

window.runCase = (name, base, extra = {}) =>
  new Promise((resolve) => {
    const out = { name, events: [], timedOut: false };
    const timer = setTimeout(() => {
      out.timedOut = true;
      resolve(out);
    }, CASE_MS);
    const done = () => {
      clearTimeout(timer);
      log(`${name}: ${JSON.stringify(out.events)}`);
      resolve(out);
    };
    const scenario = scenarios[name];
    if (!scenario) {
      out.events.push({ type: 'unknown-case' });
      done();
      return;
    }
    scenario(base, out, done, extra);
  });
