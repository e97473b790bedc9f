#!/usr/bin/env node
// Runs page/ in Debian's headless Chromium against wsgate over wss and checks what the
// page's WebSocket objects saw. Started by tests/interop/browser.sh, which provides
// wsgate, the backend and the certificate:
//
//   node run.mjs --wss wss://127.0.0.1:PORT --spki BASE64 --page-port N --cert CHAIN --key KEY
//
// The page is served over https by this script on 127.0.0.1:N with the same test
// certificate as wsgate (a web app's page and its wss endpoint on loopback: Chromium's
// Local Network Access checks block a public origin from reaching 127.0.0.1). The
// certificate is trusted with --ignore-certificate-errors-spki-list for that one leaf
// key, not with a blanket ignore. Prints a table; exits 0 only if every check passed.
//
// With `--via h2 --page-origin https://127.0.0.1:GATE` the page comes THROUGH wsgate
// instead: this script serves page/ over plain http on 127.0.0.1:N under /page/ (the
// backend of a plain-HTTP route), Chromium loads GATE/page/ from wsgate's TLS listener
// over HTTP/2, and the same-origin WebSockets then go over that connection as RFC 8441
// extended CONNECTs. An extra check requires the page itself to have arrived over h2
// (Navigation Timing's nextHopProtocol); browser.sh checks wsgate's close reports.
import { createPrivateKey, sign } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer as createHttpServer } from 'node:http';
import { createServer } from 'node:https';
import { tmpdir } from 'node:os';
import { join, dirname, normalize } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const HERE = dirname(fileURLToPath(import.meta.url));
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const RUN_MS = 90_000; // the whole run, browser start included

function arg(name) {
  const i = process.argv.indexOf(name);
  if (i < 0 || i + 1 >= process.argv.length) {
    console.error(`usage: node run.mjs --wss URL --spki B64 --page-port N --cert F --key F (missing ${name})`);
    process.exit(2);
  }
  return process.argv[i + 1];
}

const wss = arg('--wss');
const spki = arg('--spki');
const pagePort = Number(arg('--page-port'));
const VIA_H2 = process.argv.includes('--via') && arg('--via') === 'h2';
const PAGE_ORIGIN = VIA_H2 ? arg('--page-origin') : `https://127.0.0.1:${pagePort}`;
// Where the page's files are below the origin: wsgate's page route in h2 mode.
const PAGE_PREFIX = VIA_H2 ? '/page' : '';
const tlsFiles = { cert: readFileSync(arg('--cert')), key: readFileSync(arg('--key')) };

// The JWT route's tokens, ES256 (JWS signatures are r||s, not DER: ieee-p1363).
const jwtKey = createPrivateKey(readFileSync(arg('--jwt-key')));
function mint(claims) {
  const part = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const input = `${part({ alg: 'ES256', typ: 'JWT' })}.${part(claims)}`;
  const sig = sign('sha256', Buffer.from(input), { key: jwtKey, dsaEncoding: 'ieee-p1363' });
  return `${input}.${sig.toString('base64url')}`;
}
const nowS = () => Math.floor(Date.now() / 1000);

const CONTENT_TYPES = { '.html': 'text/html; charset=utf-8', '.js': 'text/javascript; charset=utf-8' };

// Expected outcome per case: a list of [check name, predicate(result) -> true | string].
const closeIs = (r, code, reason, wasClean) => {
  const c = r.events.find((e) => e.type === 'close');
  if (!c) return 'no close event';
  if (c.code !== code || c.reason !== reason || c.wasClean !== wasClean) {
    return `close ${c.code} "${c.reason}" wasClean=${c.wasClean}`;
  }
  return true;
};
const types = (r) => r.events.map((e) => e.type).join(',');
// A refused upgrade: onerror then onclose 1006, and Chromium's console names the HTTP
// status wsgate answered (proof that the request reached wsgate and what it said).
// A 401 carrying `WWW-Authenticate` is named by Chromium as an authentication failure
// over HTTP/1.1, and not named at all over HTTP/2 (browser.sh then finds the 401 in
// wsgate's log).
const failedHandshake = (status) => (r, consoleErrors) => {
  const t = types(r);
  if (t !== 'error,close') return `events ${t}`;
  const c = closeIs(r, 1006, '', false);
  if (c !== true) return c;
  const said = consoleErrors.find((m) => m.includes(r.url));
  const expected = status === 401 ? 'HTTP Authentication failed' : `Unexpected response code: ${status}`;
  const unnamed401 = status === 401 && VIA_H2 && said?.endsWith('failed: ');
  if (!said || !(said.includes(expected) || unnamed401)) {
    return `console: ${said || '(nothing about this URL)'}`;
  }
  return true;
};

const CASES = [
  ['echo', 'open, text + ArrayBuffer + Blob echo, close 1000', (r) => {
    if (r.events[0]?.type !== 'open') return `events ${types(r)}`;
    const rt = r.roundTrips || [];
    if (rt.length !== 3 || !rt.every(Boolean)) return `round trips ${JSON.stringify(rt)}`;
    return closeIs(r, 1000, 'done', true);
  }],
  ['pingpong', 'server ping x3 → page pong, then close 1000', (r) => {
    if (r.pings !== 3) return `pings ${r.pings}`;
    if (r.final !== '{"pongs": 3}') return `final ${r.final}`;
    return closeIs(r, 1000, 'pingpong done', true);
  }],
  ['backendClose', 'backend closes 4001 "backend bye" → onclose', (r) => {
    if (types(r) !== 'open,close') return `events ${types(r)}`;
    return closeIs(r, 4001, 'backend bye', true);
  }],
  ['unreachable', 'backend port closed: 502 → onerror, onclose 1006', failedHandshake(502)],
  ['forbiddenOrigin', 'Origin not allowed: 403 → onerror, onclose 1006', failedHandshake(403)],
  ['pageClose', 'page close(4002, "page bye") reaches the backend', (r) => {
    const c = closeIs(r, 4002, 'page bye', true);
    if (c !== true) return c;
    const rec = r.record;
    if (!rec) return 'no report from the backend';
    if (rec.code !== 4002 || rec.reason !== 'page bye') return `backend saw ${rec.code} "${rec.reason}"`;
    if (rec.headers.origin !== PAGE_ORIGIN) return `backend saw Origin ${rec.headers.origin}`;
    if (rec.headers['x-forwarded-proto'] !== 'https') {
      return `backend saw X-Forwarded-Proto ${rec.headers['x-forwarded-proto']}`;
    }
    return true;
  }],
  ['jwtSubprotocol', 'token as a subprotocol entry: 101 names the marker, backend never sees it', (r) => {
    const opened = r.events[0];
    if (opened?.type !== 'open') return `events ${types(r)}`;
    if (opened.protocol !== 'wsgate.bearer') return `ws.protocol "${opened.protocol}"`;
    const c = closeIs(r, 4003, 'jwt bye', true);
    if (c !== true) return c;
    const rec = r.record;
    if (!rec) return 'no report from the backend';
    if (rec.headers['x-auth-sub'] !== 'browser-user') return `backend saw X-Auth-Sub ${rec.headers['x-auth-sub']}`;
    if (rec.headers['sec-websocket-protocol'] != null) {
      return `backend saw Sec-WebSocket-Protocol ${rec.headers['sec-websocket-protocol']}`;
    }
    return true;
  }, () => ({ token: mint({ sub: 'browser-user', exp: nowS() + 300 }) })],
  ['jwtMissing', 'marker offered without a token: 401 → onerror, onclose 1006', failedHandshake(401)],
  ['jwtNoMarker', 'token entry without the marker: a 101 naming no offer fails in Chromium', (r, consoleErrors) => {
    const t = types(r);
    if (t !== 'error,close') return `events ${t}`;
    const said = consoleErrors.find((m) => m.includes(r.url)) || '';
    if (!VIA_H2 && !said.includes('Sec-WebSocket-Protocol')) return `console: ${said || '(nothing)'}`;
    return closeIs(r, 1006, '', false);
  }, () => ({ token: mint({ sub: 'browser-user', exp: nowS() + 300 }) })],
  ['jwtExpiry', 'token 3 s from exp: open, then close 1008 "token expired" at exp', (r) => {
    if (r.events[0]?.type !== 'open') return `events ${types(r)}`;
    const c = closeIs(r, 1008, 'token expired', true);
    if (c !== true) return c;
    if (!(r.openForMs >= 1000)) return `closed ${r.openForMs} ms after open`;
    return true;
  }, () => ({ token: mint({ sub: 'browser-user', exp: nowS() + 3 }) })],
];

// The page's web server: https on 127.0.0.1 (plain http as wsgate's backend in h2
// mode), files from page/ only.
function servePage() {
  const root = join(HERE, 'page');
  const handler = (req, res) => {
    let path = new URL(req.url, PAGE_ORIGIN).pathname;
    if (PAGE_PREFIX) {
      if (!path.startsWith(PAGE_PREFIX + '/')) {
        res.writeHead(404).end();
        return;
      }
      path = path.slice(PAGE_PREFIX.length);
    }
    const file = normalize(join(root, path === '/' ? 'index.html' : path));
    let body;
    try {
      body = file.startsWith(root + '/') ? readFileSync(file) : null;
    } catch {
      body = null;
    }
    if (!body) {
      res.writeHead(404).end();
      return;
    }
    const type = CONTENT_TYPES[file.slice(file.lastIndexOf('.'))] || 'application/octet-stream';
    res.writeHead(200, { 'content-type': type }).end(body);
  };
  const server = VIA_H2 ? createHttpServer(handler) : createServer(tlsFiles, handler);
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(pagePort, '127.0.0.1', () => resolve(server));
  });
}

async function main() {
  const userDataDir = mkdtempSync(join(tmpdir(), 'wsgate-chromium-'));
  let context;
  const rows = [];
  const server = await servePage();
  try {
    context = await chromium.launchPersistentContext(userDataDir, {
      executablePath: CHROMIUM,
      headless: true,
      args: [
        '--headless',
        '--no-sandbox',
        '--disable-gpu',
        '--disable-quic',
        '--no-first-run',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
        `--ignore-certificate-errors-spki-list=${spki}`,
      ],
      timeout: 30_000,
    });
    const version = context.browser()?.version() ?? '(persistent context)';
    const page = context.pages()[0] || (await context.newPage());
    const consoleErrors = [];
    page.on('console', (m) => {
      if (m.type() === 'error') consoleErrors.push(m.text());
    });
    page.on('pageerror', (e) => consoleErrors.push(String(e)));
    if (process.env.BROWSER_DEBUG) page.on('console', (m) => console.log(`console.${m.type()}: ${m.text()}`));
    const pageUrl = `${PAGE_ORIGIN}${PAGE_PREFIX}/`;
    await page.goto(pageUrl, { timeout: 15_000 });
    console.log(`browser: ${CHROMIUM} ${version}; page ${pageUrl} ; wsgate ${wss}`);
    if (VIA_H2) {
      // The page and its script came through wsgate over HTTP/2, so the page's
      // same-origin WebSockets can share that connection (RFC 8441).
      const hops = await page.evaluate(() => [
        performance.getEntriesByType('navigation')[0]?.nextHopProtocol,
        ...performance.getEntriesByType('resource').map((e) => e.nextHopProtocol),
      ]);
      const ok = hops.length >= 2 && hops.every((h) => h === 'h2');
      rows.push({
        name: 'pageOverH2',
        what: 'page and app.js loaded through wsgate over h2',
        ok,
        detail: `nextHopProtocol ${hops.join(',')}`,
        ms: 0,
      });
    }

    for (const [name, what, check, extra] of CASES) {
      const started = Date.now();
      const args = [name, wss, extra ? extra() : {}];
      const result = await page.evaluate(([n, base, x]) => window.runCase(n, base, x), args);
      const verdict = result.timedOut ? 'timed out' : check(result, consoleErrors);
      rows.push({
        name,
        what,
        ok: verdict === true,
        detail: verdict === true ? types(result) : verdict,
        ms: Date.now() - started,
        result,
      });
    }
    // The failed handshakes log "WebSocket connection to ... failed" on purpose.
    const unexpected = consoleErrors.filter((m) => !/WebSocket connection to .* failed/.test(m));
    rows.push({
      name: 'console',
      what: 'no page errors besides the expected failed handshakes',
      ok: unexpected.length === 0,
      detail: unexpected.length ? unexpected.join(' | ').slice(0, 200) : `${consoleErrors.length} expected`,
      ms: 0,
    });
  } finally {
    if (context) await context.close().catch(() => {});
    server.close();
    rmSync(userDataDir, { recursive: true, force: true });
  }

  const w = Math.max(...rows.map((r) => r.name.length));
  const ww = Math.max(...rows.map((r) => r.what.length));
  console.log(`\n${'case'.padEnd(w)}  ${'checks'.padEnd(ww)}  result  ${'ms'.padStart(5)}  detail`);
  for (const r of rows) {
    console.log(
      `${r.name.padEnd(w)}  ${r.what.padEnd(ww)}  ${(r.ok ? 'ok' : 'FAILED').padEnd(6)}  ${String(r.ms).padStart(5)}  ${r.detail}`,
    );
  }
  const failed = rows.filter((r) => !r.ok);
  for (const r of failed) {
    if (r.result) console.log(`\n${r.name} saw: ${JSON.stringify(r.result)}`);
  }
  console.log(`\n${rows.length - failed.length} passed, ${failed.length} failed`);
  return failed.length === 0 ? 0 : 1;
}

const timer = setTimeout(() => {
  console.error(`error: browser run still going after ${RUN_MS / 1000}s, giving up`);
  process.exit(1);
}, RUN_MS);
main().then(
  (code) => {
    clearTimeout(timer);
    process.exitCode = code;
  },
  (err) => {
    clearTimeout(timer);
    console.error(`error: ${err.stack || err}`);
    process.exitCode = 1;
  },
);
