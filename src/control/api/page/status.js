// wsgate's live status page: plain JS, no build step. Every API call carries the admin
// token (sessionStorage, this tab only) as `Authorization: Bearer`; the event stream is
// read with fetch streaming, since EventSource cannot send that header. Per-route rates,
// close codes and ping RTTs come from /metrics (same listener, read every 2 s).
'use strict';

const KEY = 'wsgate.admin.token';
const HISTORY_S = 300; // chart span
const POLL_MS = 2000;
const COLOURS = ['#2457d6', '#e8590c', '#2f9e44', '#ae3ec9', '#f08c00', '#0c8599', '#c2255c', '#5c940d'];

const $ = (id) => document.getElementById(id);
const state = {
  history: [], // [{t, routes: {name: active}}]
  routeNames: [],
  prevMetrics: null, // {t, values}
  rates: {},
  rtt: {},
  closes: [],
  recent: [],
  stream: null,
  timer: null,
};

const token = () => sessionStorage.getItem(KEY);

function showLogin(message) {
  stop();
  sessionStorage.removeItem(KEY);
  $('app').hidden = true;
  $('logout').hidden = true;
  $('login').hidden = false;
  $('login-error').textContent = message || '';
  $('token').focus();
}

class Unauthorized extends Error {}

async function api(method, path) {
  const res = await fetch(path, { method, headers: { Authorization: `Bearer ${token()}` }, cache: 'no-store' });
  if (res.status === 401) throw new Unauthorized('the admin token was refused');
  const body = res.headers.get('content-type')?.includes('json') ? await res.json() : await res.text();
  if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${body.message || body}`);
  return body;
}

function fail(e) {
  if (e instanceof Unauthorized) showLogin('The token was refused (401).');
  else $('error').textContent = String(e.message || e);
}

// ---- formatting ----
function fmtBytes(n) {
  if (n == null) return '–';
  const u = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return `${n < 10 && i ? n.toFixed(1) : Math.round(n)} ${u[i]}`;
}
const fmtRate = (n) => (n == null ? '–' : n < 10 ? n.toFixed(1) : Math.round(n).toLocaleString());
const fmtMs = (ms) => (ms == null ? '–' : ms < 10 ? `${ms.toFixed(2)} ms` : `${Math.round(ms)} ms`);
function fmtAge(ms) {
  const s = Math.floor(ms / 1000);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${s % 60}s`;
  return `${Math.floor(s / 3600)}h${Math.floor((s % 3600) / 60)}m`;
}
function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v == null) continue;
    if (k === 'class') e.className = v;
    else if (k === 'style') e.style.cssText = v; // CSSOM: allowed by the page's CSP
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const k of kids) e.append(k instanceof Node ? k : document.createTextNode(k ?? ''));
  return e;
}
const colour = (name) => COLOURS[Math.max(0, state.routeNames.indexOf(name)) % COLOURS.length];

// ---- the event stream ----
async function streamEvents() {
  const ctrl = new AbortController();
  state.stream = ctrl;
  let backoff = 500;
  while (!ctrl.signal.aborted) {
    try {
      const res = await fetch('/api/events', { headers: { Authorization: `Bearer ${token()}` }, signal: ctrl.signal, cache: 'no-store' });
      if (res.status === 401) throw new Unauthorized();
      if (!res.ok || !res.body) throw new Error(`event stream: ${res.status}`);
      live(true);
      backoff = 500;
      const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
      let buf = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += value;
        let at;
        while ((at = buf.indexOf('\n\n')) >= 0) {
          const block = buf.slice(0, at);
          buf = buf.slice(at + 2);
          let kind = 'message', data = '';
          for (const line of block.split('\n')) {
            if (line.startsWith('event:')) kind = line.slice(6).trim();
            else if (line.startsWith('data:')) data += line.slice(5).trim();
          }
          try { onEvent(kind, data ? JSON.parse(data) : null); } catch (e) { console.error(e); }
        }
      }
    } catch (e) {
      if (ctrl.signal.aborted) return;
      if (e instanceof Unauthorized) { showLogin('The token was refused (401).'); return; }
    }
    live(false);
    await new Promise((r) => setTimeout(r, backoff));
    backoff = Math.min(backoff * 2, 10000);
  }
}

function live(on) {
  $('live').textContent = on ? 'live' : 'offline';
  $('live').classList.toggle('off', !on);
}

let refreshSoon = null;
function onEvent(kind, data) {
  if (kind === 'counts') {
    const routes = {};
    for (const r of data.routes) routes[r.name] = r.active;
    state.history.push({ t: Date.now(), routes });
    const cut = Date.now() - HISTORY_S * 1000;
    while (state.history.length && state.history[0].t < cut) state.history.shift();
    for (const r of data.routes) if (!state.routeNames.includes(r.name)) state.routeNames.push(r.name);
    $('total').textContent = `${data.active} live connection${data.active === 1 ? '' : 's'}`;
    drawChart();
  } else if (kind === 'open' || kind === 'close') {
    if (kind === 'close') {
      state.recent.unshift(data);
      state.recent.length = Math.min(state.recent.length, 20);
      renderRecent();
    }
    // A burst of opens or closes makes one refresh.
    clearTimeout(refreshSoon);
    refreshSoon = setTimeout(() => refresh().catch(fail), 150);
  }
}

// ---- the chart ----
function drawChart() {
  const canvas = $('chart');
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth, h = canvas.clientHeight || 180;
  if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
    canvas.width = Math.round(w * dpr);
    canvas.height = Math.round(h * dpr);
  }
  const g = canvas.getContext('2d');
  g.setTransform(dpr, 0, 0, dpr, 0, 0);
  const css = getComputedStyle(document.body);
  const fg = css.getPropertyValue('color'), line = getComputedStyle(document.documentElement).getPropertyValue('--line').trim();
  g.fillStyle = getComputedStyle(document.documentElement).getPropertyValue('--card').trim() || '#fff';
  g.fillRect(0, 0, w, h);
  const pad = { l: 36, r: 8, t: 8, b: 18 };
  const now = Date.now(), t0 = now - HISTORY_S * 1000;
  let max = 1;
  for (const p of state.history) for (const v of Object.values(p.routes)) max = Math.max(max, v);
  const step = niceStep(max);
  max = Math.ceil(max / step) * step;
  const x = (t) => pad.l + ((t - t0) / (HISTORY_S * 1000)) * (w - pad.l - pad.r);
  const y = (v) => h - pad.b - (v / max) * (h - pad.t - pad.b);
  g.font = '11px system-ui, sans-serif';
  g.fillStyle = fg;
  g.strokeStyle = line || '#ddd';
  g.lineWidth = 1;
  for (let v = 0; v <= max; v += step) {
    g.beginPath(); g.moveTo(pad.l, y(v) + 0.5); g.lineTo(w - pad.r, y(v) + 0.5); g.stroke();
    g.fillText(String(v), 4, y(v) + 4);
  }
  for (let m = 0; m <= HISTORY_S / 60; m++) {
    const t = now - m * 60000;
    g.fillText(m ? `-${m}m` : 'now', x(t) - (m ? 10 : 22), h - 4);
  }
  g.lineWidth = 2;
  for (const name of state.routeNames) {
    g.strokeStyle = colour(name);
    g.beginPath();
    let started = false;
    for (const p of state.history) {
      if (!(name in p.routes)) continue;
      const px = x(p.t), py = y(p.routes[name]);
      if (started) g.lineTo(px, py); else { g.moveTo(px, py); started = true; }
    }
    g.stroke();
  }
  const last = state.history[state.history.length - 1]?.routes || {};
  $('legend').replaceChildren(...state.routeNames.map((n) =>
    el('span', {}, el('i', { style: `background:${colour(n)}` }), `${n}: ${last[n] ?? 0}`)));
}
function niceStep(max) {
  const raw = max / 4;
  const p = Math.pow(10, Math.floor(Math.log10(Math.max(raw, 1))));
  for (const m of [1, 2, 5, 10]) if (m * p >= raw) return Math.max(1, m * p);
  return 10 * p;
}

// ---- /metrics: rates, RTTs, close codes ----
function parseMetrics(text) {
  const out = [];
  for (const line of text.split('\n')) {
    const m = /^wsgate_(messages_total|bytes_total|closes_total|ping_rtt_seconds_sum|ping_rtt_seconds_count)\{([^}]*)\} (\S+)/.exec(line);
    if (!m) continue;
    const labels = {};
    for (const [, k, v] of m[2].matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[k] = v;
    out.push({ name: m[1], labels, value: Number(m[3]) });
  }
  return out;
}
async function readMetrics() {
  const res = await fetch('/metrics', { cache: 'no-store' });
  if (!res.ok) return;
  const samples = parseMetrics(await res.text());
  const now = Date.now();
  const values = {};
  const rtt = {};
  const closes = [];
  for (const s of samples) {
    const route = s.labels.route;
    if (s.name === 'messages_total' || s.name === 'bytes_total') {
      values[`${s.name}|${route}|${s.labels.direction}`] = s.value;
    } else if (s.name.startsWith('ping_rtt')) {
      const k = `${route}|${s.labels.hop}`;
      rtt[k] = rtt[k] || {};
      rtt[k][s.name.endsWith('sum') ? 'sum' : 'count'] = s.value;
    } else if (s.name === 'closes_total' && s.value > 0) {
      closes.push(s);
    }
  }
  const prev = state.prevMetrics;
  if (prev) {
    const dt = (now - prev.t) / 1000;
    const rates = {};
    for (const [k, v] of Object.entries(values)) {
      const d = v - (prev.values[k] ?? 0);
      rates[k] = d >= 0 && dt > 0 ? d / dt : 0;
    }
    state.rates = rates;
  }
  // RTT: the mean over the last interval when pings came in, else the mean so far.
  const rttNow = {};
  for (const [k, v] of Object.entries(rtt)) {
    const p = prev?.rtt?.[k];
    const dc = p ? v.count - p.count : 0;
    rttNow[k] = dc > 0 ? ((v.sum - p.sum) / dc) * 1000 : v.count > 0 ? (v.sum / v.count) * 1000 : null;
  }
  state.rtt = rttNow;
  state.prevMetrics = { t: now, values, rtt };
  state.closes = closes;
}

// ---- tables ----
function renderRoutes(routes) {
  const rate = (metric, name, dir) => state.rates[`${metric}|${name}|${dir}`];
  $('routes').tBodies[0].replaceChildren(...routes.map((r) => el('tr', {},
    el('td', {}, el('i', { class: 'dot', style: `color:${colour(r.name)}` }, '● '), r.name, el('span', { class: 'muted' }, ` ${r.path ?? ''}`)),
    el('td', { class: 'n' }, String(r.active)),
    el('td', { class: 'n' }, fmtRate(rate('messages_total', r.name, 'client_to_backend'))),
    el('td', { class: 'n' }, fmtRate(rate('messages_total', r.name, 'backend_to_client'))),
    el('td', { class: 'n' }, rateBytes(rate('bytes_total', r.name, 'client_to_backend'))),
    el('td', { class: 'n' }, rateBytes(rate('bytes_total', r.name, 'backend_to_client'))),
    el('td', { class: 'n' }, fmtMs(state.rtt[`${r.name}|client`])),
    el('td', { class: 'n' }, fmtMs(state.rtt[`${r.name}|backend`])),
  )));
}
const rateBytes = (n) => (n == null ? '–' : `${fmtBytes(n)}/s`);

function renderBackends(routes) {
  const rows = [];
  for (const r of routes) {
    if (r.echo) {
      rows.push(el('tr', {}, el('td', {}, r.name), el('td', { class: 'muted' }, '(built-in echo)'), el('td', {}), el('td', { class: 'n' }, String(r.active)), el('td', {}), el('td', {})));
      continue;
    }
    for (const b of r.backends) {
      const health = !b.healthy ? ['unhealthy', 'unhealthy'] : b.usable ? ['healthy', 'healthy'] : ['unhealthy', 'not taking new'];
      rows.push(el('tr', { 'data-backend': b.url },
        el('td', {}, r.name),
        el('td', { class: 'wrap' }, b.url),
        el('td', { class: health[0] }, health[1]),
        el('td', { class: 'n' }, String(b.active)),
        el('td', { class: 'n' }, String(b.weight)),
        el('td', {}, el('button', { type: 'button', class: 'danger drain', disabled: b.active ? null : 'disabled',
          onclick: (ev) => drain(b.url, ev.target) }, 'drain')),
      ));
    }
  }
  $('backends').tBodies[0].replaceChildren(...rows);
}

function renderTop(conns) {
  $('top-empty').hidden = conns.length > 0;
  // Rows are kept by id and updated in place, so a close button does not move or get
  // replaced under the operator's pointer between refreshes.
  const body = $('top').tBodies[0];
  const old = new Map([...body.rows].map((tr) => [tr.dataset.id, tr]));
  const rows = conns.map((c) => {
    const rtt = c.rtt_client_ms ?? c.rtt_backend_ms;
    let tr = old.get(String(c.id));
    if (!tr) {
      const btn = el('button', { type: 'button', class: 'danger close', onclick: (ev) => closeConn(c.id, ev.target) }, 'close');
      tr = el('tr', { 'data-id': String(c.id) }, ...Array.from({ length: 8 }, () => el('td', {})), el('td', {}, btn));
      for (const i of [4, 5, 6, 7]) tr.cells[i].className = 'n';
    }
    const cells = [String(c.id), c.route, c.client, c.identity ?? '–', fmtAge(c.age_ms),
      `${c.msgs_in} / ${c.msgs_out}`, `${fmtBytes(c.bytes_in)} / ${fmtBytes(c.bytes_out)}`, fmtMs(rtt)];
    cells.forEach((text, i) => { if (tr.cells[i].textContent !== text) tr.cells[i].textContent = text; });
    if (c.closing) { const b = tr.querySelector('button'); b.disabled = true; b.textContent = 'closing'; }
    return tr;
  });
  rows.forEach((tr, i) => { if (body.rows[i] !== tr) body.insertBefore(tr, body.rows[i] || null); });
  while (body.rows.length > rows.length) body.deleteRow(rows.length);
}

function renderCloses() {
  const rows = [...state.closes].sort((a, b) => b.value - a.value);
  const merged = new Map();
  for (const s of rows) {
    const k = `${s.labels.code}|${s.labels.closed_by}`;
    merged.set(k, (merged.get(k) || 0) + s.value);
  }
  $('closes').tBodies[0].replaceChildren(...[...merged].sort((a, b) => b[1] - a[1]).map(([k, v]) => {
    const [code, by] = k.split('|');
    return el('tr', {}, el('td', {}, code), el('td', {}, by), el('td', { class: 'n' }, String(v)));
  }));
}

function renderRecent() {
  $('recent').replaceChildren(...state.recent.map((r) => el('li', {},
    `#${r.id} ${r.route} ${r.client}: ${r.close_code ?? '–'} ${r.close_reason || ''} (${r.closed_by}, ${r.outcome}, ${fmtAge(r.duration_ms)})`)));
}

// ---- actions ----
async function closeConn(id, button) {
  if (!confirm(`Close connection ${id} (1000, both hops)?`)) return;
  button.disabled = true;
  try {
    await api('DELETE', `/api/connections/${id}?code=1000&reason=${encodeURIComponent('closed by operator')}`);
    button.textContent = 'closing';
  } catch (e) { button.disabled = false; fail(e); }
}

async function drain(url, button) {
  const window = prompt(`Drain ${url}: close its connections with 1012 over this window`, '30s');
  if (window == null) return;
  button.disabled = true;
  try {
    const r = await api('POST', `/api/backends/drain?url=${encodeURIComponent(url)}&window=${encodeURIComponent(window)}`);
    button.textContent = `draining ${r.connections}`;
  } catch (e) { button.disabled = false; fail(e); }
}

// ---- the loop ----
async function refresh() {
  const [routes, top] = await Promise.all([api('GET', '/api/routes'), api('GET', '/api/top?limit=20')]);
  await readMetrics().catch(() => {});
  for (const r of routes.routes) if (!state.routeNames.includes(r.name)) state.routeNames.push(r.name);
  renderRoutes(routes.routes);
  renderBackends(routes.routes);
  renderTop(top.connections);
  renderCloses();
  $('error').textContent = '';
}

function stop() {
  state.stream?.abort();
  state.stream = null;
  clearInterval(state.timer);
  state.timer = null;
  live(false);
}

async function start() {
  $('login').hidden = true;
  $('app').hidden = false;
  $('logout').hidden = false;
  try {
    await refresh();
  } catch (e) {
    fail(e);
    if (e instanceof Unauthorized) return;
  }
  drawChart();
  streamEvents();
  state.timer = setInterval(() => refresh().catch(fail), POLL_MS);
}

$('login').addEventListener('submit', (ev) => {
  ev.preventDefault();
  sessionStorage.setItem(KEY, $('token').value.trim());
  $('token').value = '';
  start();
});
$('logout').addEventListener('click', () => showLogin(''));
window.addEventListener('resize', () => drawChart());

if (token()) start(); else showLogin('');
