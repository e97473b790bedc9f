#!/usr/bin/env node
// Drives wsgate's live status page (GET / of the admin listener) in Debian's headless
// Chromium. Started by tests/interop/status_page.sh, which runs wsgate with an admin
// token, an echo route and a route to a backend:
//
//   node status_page.mjs --admin http://127.0.0.1:A --gate ws://127.0.0.1:G --token-file F \
//        [--screenshot docs/status-page.png]
//
// Checks, in order: the page loads without the token and asks for it; a wrong token is
// refused (401) and the form comes back; with the right token it goes live; a WebSocket
// opened from a second tab appears in the top-connections table; clicking its close
// button (confirm accepted) removes it and the client gets Close 1000 "closed by
// operator"; clicking drain on the backend's row (window 1s) closes a connection on that
// backend with 1012 "backend drained"; the chart canvas and a screenshot are not blank.
// Prints a table; exits 0 only if every check passed.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
function arg(name, fallback) {
  const i = process.argv.indexOf(name);
  if (i < 0 || i + 1 >= process.argv.length) {
    if (fallback !== undefined) return fallback;
    console.error(`usage: node status_page.mjs --admin URL --gate URL --token-file F [--screenshot F] (missing ${name})`);
    process.exit(2);
  }
  return process.argv[i + 1];
}
const ADMIN = arg('--admin');
const GATE = arg('--gate');
const TOKEN = readFileSync(arg('--token-file'), 'utf8').trim();
const SHOT = arg('--screenshot', '');

const rows = [];
function check(name, ok, detail = '') {
  rows.push({ name, ok: !!ok, detail: String(detail) });
  if (process.env.STATUS_DEBUG) console.error(`  ${ok ? 'ok' : 'FAIL'}: ${name}`);
  return !!ok;
}
async function waitFor(fn, ms = 10_000) {
  const until = Date.now() + ms;
  let last;
  while (Date.now() < until) {
    try { last = await fn(); if (last) return last; } catch (e) { last = e; }
    await new Promise((r) => setTimeout(r, 100));
  }
  return null;
}

// A WebSocket from the client tab; its events are kept in window.__ws[name].
async function openSocket(tab, name, url) {
  return tab.evaluate(([name, url]) => new Promise((resolve) => {
    window.__ws = window.__ws || {};
    const rec = { events: [] };
    window.__ws[name] = rec;
    const ws = new WebSocket(url);
    setTimeout(() => resolve(`no open or close within 5 s: ${JSON.stringify(rec.events)}`), 5000);
    ws.onopen = () => {
      rec.events.push({ type: 'open' });
      ws.send('hello');
      // A little traffic every 100 ms, for the rates, the top table and the chart.
      rec.tick = setInterval(() => ws.readyState === 1 && ws.send('x'.repeat(200)), 100);
      resolve(true);
    };
    ws.onmessage = (e) => rec.events.push({ type: 'message', data: String(e.data) });
    ws.onclose = (e) => { clearInterval(rec.tick); rec.events.push({ type: 'close', code: e.code, reason: e.reason, wasClean: e.wasClean }); resolve(false); };
  }), [name, url]);
}
const closeOf = (tab, name) => tab.evaluate((n) => window.__ws[n].events.find((e) => e.type === 'close') || null, name);

// The whole run is bounded: past it, report what was checked so far.
setTimeout(() => { check('run finished within 90 s', false, 'timed out'); report(); }, 90_000).unref();

function report() {
  let failed = 0;
  for (const r of rows) {
    if (!r.ok) failed++;
    console.log(`${r.name.padEnd(62)} ${r.ok ? 'ok  ' : 'FAIL'}  ${r.detail}`);
  }
  console.log(failed ? `${failed} of ${rows.length} checks FAILED` : `all ${rows.length} checks passed`);
  process.exit(failed ? 1 : 0);
}

async function main() {
  const userDataDir = mkdtempSync(join(tmpdir(), 'wsgate-chromium-'));
  let context;
  try {
    context = await chromium.launchPersistentContext(userDataDir, {
      executablePath: CHROMIUM,
      headless: true,
      viewport: { width: 1280, height: 900 },
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
        '--disable-background-networking', '--disable-component-update', '--disable-sync'],
      timeout: 30_000,
    });
    context.setDefaultTimeout(15_000);
    const page = context.pages()[0] || (await context.newPage());
    const errors = [];
    page.on('pageerror', (e) => errors.push(String(e)));
    // Failed resources are expected (the wrong token's 401s); script errors are not.
    page.on('console', (m) => { if (m.type() === 'error' && !m.text().startsWith('Failed to load resource')) errors.push(m.text()); });
    // confirm() for close: accept; prompt() for drain: a 1 s window.
    page.on('dialog', (d) => d.accept(d.type() === 'prompt' ? '1s' : undefined));

    // A blank page of the same size, to compare the final screenshot with.
    await page.goto('about:blank');
    const blank = await page.screenshot({ fullPage: false });

    const res = await page.goto(`${ADMIN}/`);
    check('GET / without the token: 200 text/html', res.status() === 200 && res.headers()['content-type'].startsWith('text/html'),
      `${res.status()} ${res.headers()['content-type']}`);
    check('the page asks for the token', await page.locator('#login').isVisible(), '');

    await page.fill('#token', 'not-the-token-0123456789abcdef');
    await page.click('#login button[type=submit]');
    const refused = await waitFor(async () => (await page.locator('#login-error').textContent()).includes('401'));
    check('a wrong token: 401, the form again', refused, await page.locator('#login-error').textContent());

    await page.fill('#token', TOKEN);
    await page.click('#login button[type=submit]');
    const isLive = await waitFor(async () => (await page.locator('#live').textContent()) === 'live');
    check('the right token: the event stream is live', isLive, await page.locator('#live').textContent());
    check('the token is in sessionStorage only', await page.evaluate((t) => sessionStorage.getItem('wsgate.admin.token') === t && localStorage.length === 0, TOKEN), '');

    // The client tab: an empty page of its own on loopback (the status page's CSP rightly
    // keeps the admin origin from connecting anywhere else).
    const blankServer = createServer((req, res) => res.writeHead(200, { 'content-type': 'text/html' }).end('<!doctype html><title>client</title>'));
    await new Promise((r) => blankServer.listen(0, '127.0.0.1', r));
    blankServer.unref();
    const client = await context.newPage();
    if (process.env.STATUS_DEBUG) console.error('  client tab opened');
    await client.goto(`http://127.0.0.1:${blankServer.address().port}/`);
    if (process.env.STATUS_DEBUG) console.error('  client tab loaded');
    const opened = await openSocket(client, 'one', `${GATE}/app`);
    check('a client WebSocket opens through wsgate', opened === true, opened);
    const rowOf = (id) => page.locator(`#top tr[data-id="${id}"]`);
    const id = await waitFor(async () => {
      const ids = await page.locator('#top tbody tr').evaluateAll((trs) => trs.map((t) => t.dataset.id));
      return ids.length === 1 ? ids[0] : null;
    });
    check('the connection appears in the top table', id, id ? `id ${id}` : 'no row');

    // Let a few counts events and a metrics interval go by, so the chart and rates have data.
    await new Promise((r) => setTimeout(r, 3500));
    const rate = await page.locator('#routes tbody tr', { hasText: 'app' }).first().textContent();
    check('routes table shows route app live, with rates', /^● app \/app1\d/.test(rate.replace(/\s+/g, ' ').trim()), rate.replace(/\s+/g, ' ').trim());

    await page.bringToFront(); // a background tab gets no animation frames: no clicks
    if (id) {
      await rowOf(id).locator('button.close').click();
      const gone = await waitFor(async () => (await rowOf(id).count()) === 0);
      check('clicking close: the row goes', gone, '');
      const c = await waitFor(() => closeOf(client, 'one'));
      check('the client got Close 1000 "closed by operator"', c && c.code === 1000 && c.reason === 'closed by operator' && c.wasClean,
        c ? `${c.code} "${c.reason}" wasClean=${c.wasClean}` : 'no close');
      const recent = await waitFor(async () => (await page.locator('#recent').textContent()).includes(`#${id}`));
      check('its close report is listed', recent, '');
    }

    // Drain: a second connection on the backend, then the backend's drain button.
    await openSocket(client, 'two', `${GATE}/app`);
    await page.bringToFront();
    const drainable = await waitFor(async () => {
      const b = page.locator('#backends tr[data-backend] button.drain');
      return (await b.count()) === 1 && !(await b.isDisabled());
    });
    check('the backend row shows a live connection', drainable, '');
    if (drainable) {
      await page.locator('#backends tr[data-backend] button.drain').click();
      const c = await waitFor(() => closeOf(client, 'two'), 8000);
      check('clicking drain: the client got Close 1012 "backend drained"', c && c.code === 1012 && c.reason === 'backend drained',
        c ? `${c.code} "${c.reason}"` : 'no close');
    }

    // Keep a connection open for the picture, and let the chart and rates fill in.
    await openSocket(client, 'three', `${GATE}/echo`);
    await openSocket(client, 'four', `${GATE}/app`);
    await page.bringToFront();
    await new Promise((r) => setTimeout(r, 3000));

    const colours = await page.evaluate(() => {
      const c = document.getElementById('chart');
      const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
      const seen = new Set();
      for (let i = 0; i < d.length; i += 16) seen.add((d[i] << 16) | (d[i + 1] << 8) | d[i + 2]);
      return seen.size;
    });
    check('the chart canvas is drawn (distinct colours)', colours >= 4, `${colours} colours`);
    check('the token form is hidden once live', !(await page.locator('#login').isVisible()), '');
    const chartHeight = await page.evaluate(() => document.getElementById('chart').clientHeight);
    check('the chart keeps its height', chartHeight === 180, `${chartHeight} px`);
    const shot = await page.screenshot({ fullPage: true });
    check('the screenshot is not blank', shot.length > 4 * blank.length, `${shot.length} bytes, blank ${blank.length}`);
    if (SHOT) writeFileSync(SHOT, shot);

    // A phone: no horizontal scroll of the page itself.
    await page.setViewportSize({ width: 390, height: 844 });
    await new Promise((r) => setTimeout(r, 300));
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
    check('on a 390 px phone the page does not scroll sideways', overflow <= 0, `${overflow} px`);
    check('no script errors', errors.length === 0, errors.join(' | ').slice(0, 200));
  } catch (e) {
    check('run', false, e.stack || e);
  } finally {
    await context?.close().catch(() => {});
    rmSync(userDataDir, { recursive: true, force: true });
  }
  report();
}
main();
