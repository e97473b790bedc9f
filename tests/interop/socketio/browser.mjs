#!/usr/bin/env node
// The browser Socket.IO client in Debian's headless Chromium (playwright-core), through
// wsgate. Started by tests/interop/socketio.sh:
//
//   node browser.mjs --url http://WSGATE --backends http://B1,http://B2,http://B3 [--resolve NAME]
//
// With --resolve NAME, Chromium resolves NAME to 127.0.0.1 (so --url can name a route's
// host, such as the sticky-cookie route of socketio.sh).
// Chromium opens http://WSGATE/, a page served by a Socket.IO server through wsgate's
// plain HTTP forwarding (page/index.html), which loads /socket.io/socket.io.js (served by
// the same server, through wsgate) and connects with io() and default options. The page
// records connect, acks and the transport before and after the upgrade in window.result;
// the servers' /report (read directly) says where the session's requests went. Prints a
// table; exits 0 only if every check passed.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const STEP_MS = 15_000;

function arg(name) {
  const i = process.argv.indexOf(name);
  if (i < 0 || i + 1 >= process.argv.length) {
    console.error(`usage: node browser.mjs --url URL --backends URL,URL,URL (missing ${name})`);
    process.exit(2);
  }
  return process.argv[i + 1].replace(/\/$/, '');
}
const url = arg('--url');
const backends = arg('--backends').split(',');
const resolve = process.argv.includes('--resolve') ? arg('--resolve') : null;

const rows = [];
const ensure = (cond, msg) => {
  if (!cond) throw new Error(msg);
};
async function check(name, fn) {
  try {
    rows.push([name, 'ok', (await fn()) ?? '']);
  } catch (e) {
    rows.push([name, 'FAIL', e.message.split('\n')[0]]);
  }
}

async function main() {
  const userDataDir = mkdtempSync(join(tmpdir(), 'wsgate-chromium-'));
  let context;
  try {
    context = await chromium.launchPersistentContext(userDataDir, {
      executablePath: CHROMIUM,
      headless: true,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run',
        '--disable-background-networking', '--disable-component-update', '--disable-sync',
        ...(resolve ? [`--host-resolver-rules=MAP ${resolve} 127.0.0.1`] : [])],
      timeout: 30_000,
    });
    const page = context.pages()[0] || (await context.newPage());
    const consoleErrors = [];
    page.on('console', (m) => m.type() === 'error' && consoleErrors.push(m.text()));
    page.on('pageerror', (e) => consoleErrors.push(String(e)));
    const script = { status: null };
    page.on('response', (r) => {
      if (new URL(r.url()).pathname === '/socket.io/socket.io.js') script.status = r.status();
    });

    let servedBy = null;
    await check('page through wsgate (plain HTTP)', async () => {
      const res = await page.goto(`${url}/`, { timeout: STEP_MS });
      ensure(res && res.status() === 200, `GET / → ${res ? res.status() : 'no response'}`);
      servedBy = res.headers()['x-served-by'];
      return `200 from ${servedBy}`;
    });
    await check('/socket.io/socket.io.js through wsgate', async () => {
      ensure(await page.evaluate(() => typeof io === 'function'), `io() not defined (script ${script.status})`);
      return `HTTP ${script.status}`;
    });
    let result = null;
    await check('connect with default options', async () => {
      await page.waitForFunction(() => window.result.done || window.result.error, null, { timeout: STEP_MS })
        .catch(() => {});
      result = await page.evaluate(() => window.result);
      ensure(result.connected, `not connected: ${result.error || 'no connect within the time'}`);
      return `sid ${result.sid}`;
    });
    await check('ack round trips before and after the upgrade', async () => {
      ensure(result?.done, `page did not finish: ${JSON.stringify(result)}`);
      const [a, b] = result.acks;
      ensure(a?.payload === 'before upgrade' && b?.payload === 'after upgrade ü', `acks ${JSON.stringify(result.acks)}`);
      ensure(b.transport === 'websocket', `server saw the second emit on ${b.transport}`);
      ensure(a.server === b.server, `acks from ${a.server} and ${b.server}`);
      return `both from ${a.server}`;
    });
    await check('transport upgraded to websocket', async () => {
      ensure(result?.done, 'page did not finish');
      const now = await page.evaluate(() => socket.io.engine.transport.name);
      ensure(now === 'websocket', `socket.io.engine.transport.name = ${now}`);
      return `transports seen: ${result.transports.join(' → ')}`;
    });
    await check('polling + upgrade on ONE backend', async () => {
      ensure(result?.sid, 'no session');
      const rep = await Promise.all(backends.map(async (b) => (await fetch(`${b}/report`)).json()));
      const at = rep.filter((r) => r.sids[result.sid]);
      ensure(at.length === 1, `seen by ${at.map((r) => r.name).join(',') || 'no backend'}`);
      const t = at[0].sids[result.sid];
      for (const want of ['handshake:polling', 'polling', 'websocket']) {
        ensure(t.includes(want), `${at[0].name}: ${t.join(',')} (no ${want})`);
      }
      ensure(at[0].name === servedBy, `page from ${servedBy}, session on ${at[0].name}`);
      return `${at[0].name}: ${t.join(', ')} (the page too)`;
    });
    await check('no errors in the console', async () => {
      ensure(consoleErrors.length === 0, consoleErrors.join(' | '));
      return '';
    });
  } catch (e) {
    rows.push(['browser', 'FAIL', e.message.split('\n')[0]]);
  } finally {
    if (context) await context.close().catch(() => {});
    rmSync(userDataDir, { recursive: true, force: true });
  }
  const width = Math.max(...rows.map((r) => r[0].length));
  console.log(`${'check'.padEnd(width)}  result  detail`);
  for (const [name, res, detail] of rows) console.log(`${name.padEnd(width)}  ${res.padEnd(6)}  ${detail}`);
  const failed = rows.filter((r) => r[1] !== 'ok').length;
  console.log(`\nsocket.io browser: ${rows.length - failed} of ${rows.length} checks passed`);
  process.exit(failed ? 1 : 0);
}

const killer = setTimeout(() => {
  console.error('error: browser run not finished within 90 s');
  process.exit(1);
}, 90_000);
killer.unref();
main();
