// lovebeat web UI: plain JS, no build step. Loads the lists over HTTP,
// then applies the changes /ws sends (README, "The web UI"). Every URL is relative, so
// the page works under a reverse-proxy path prefix.
'use strict';

const STATE_ORDER = { error: 0, muted: 1, ok: 2, new: 3 };
const ICON = { ok: '\u2714', error: '\u2716', muted: '\u25D0', new: '\u2026' };

const store = {
  services: new Map(),   // name -> service object as the API sends it
  alarms: new Map(),     // name -> alarm object
  skew: 0,               // server clock minus browser clock, ms
  loaded: false,
};
const ui = {
  route: { view: 'home', alarm: null, state: null },
  selected: new Set(),
  shown: [],             // names, filtered and sorted
  needSort: true,
  lastSort: 0,
  frame: 0,
  editing: null,         // name whose timeout is being edited
  detail: null,          // name in the detail panel
};

const $ = (id) => document.getElementById(id);
const now = () => Date.now() + store.skew;

// ---------------------------------------------------------------- formatting

function human(ms) {
  if (ms < 1000) return `${ms} ms`;
  let s = Math.round(ms / 1000);
  const parts = [];
  for (const [unit, size] of [['d', 86400], ['h', 3600], ['m', 60], ['s', 1]]) {
    if (s >= size) { parts.push(`${Math.floor(s / size)}${unit}`); s %= size; }
  }
  return parts.slice(0, 2).join(' ');
}

const DAYS = ['Sunday', 'Monday', 'Tuesday', 'Wednesday', 'Thursday', 'Friday', 'Saturday'];
const DAY_NAMES = { sun: 0, mon: 1, tue: 2, wed: 3, thu: 4, fri: 5, sat: 6 };

function dayName(d) {
  const n = DAY_NAMES[d.toLowerCase()] ?? Number(d) % 7;
  return DAYS[n] || d;
}

function pad2(n) { return String(n).padStart(2, '0'); }

// A cron expression in words, for the common shapes; the expression
// itself otherwise.
function describeCron(expr) {
  const nick = {
    '@hourly': 'every hour', '@daily': 'every day at 00:00', '@midnight': 'every day at 00:00',
    '@weekly': 'every Sunday at 00:00', '@monthly': 'on day 1 of every month at 00:00',
    '@yearly': 'every year on 1 January at 00:00', '@annually': 'every year on 1 January at 00:00',
  }[expr.trim().toLowerCase()];
  if (nick) return nick;
  const f = expr.trim().split(/\s+/);
  if (f.length !== 5) return `cron ${expr}`;
  const [mi, h, dom, mon, dow] = f;
  const num = (x) => /^\d+$/.test(x);
  if (f.every((x) => x === '*')) return 'every minute';
  let m;
  if ((m = /^\*\/(\d+)$/.exec(mi)) && h === '*' && dom === '*' && mon === '*' && dow === '*') return `every ${m[1]} minutes`;
  if (num(mi) && h === '*' && dom === '*' && mon === '*' && dow === '*') return `every hour at :${pad2(mi)}`;
  if (num(mi) && (m = /^\*\/(\d+)$/.exec(h)) && dom === '*' && mon === '*' && dow === '*') return `every ${m[1]} hours at :${pad2(mi)}`;
  if (!num(mi) || !num(h) || mon !== '*') return `cron ${expr}`;
  const at = `${pad2(h)}:${pad2(mi)}`;
  if (dom === '*' && dow === '*') return `every day at ${at}`;
  if (dom === '*') {
    const days = dow.split(',').map((part) => {
      const r = part.split('-');
      return r.length === 2 ? `${dayName(r[0])} to ${dayName(r[1])}` : dayName(part);
    });
    return `every ${days.join(', ')} at ${at}`;
  }
  if (num(dom) && dow === '*') return `on day ${dom} of every month at ${at}`;
  return `cron ${expr}`;
}

function scheduleText(svc) {
  return `${describeCron(svc.schedule)} ${svc.tz || 'UTC'}`;
}

function timeoutText(svc) {
  switch (svc.timeout) {
    case -3: return scheduleText(svc);
    case -1: return 'never';
    case 0: return 'always error';
    case -2: return svc.effective_timeout
      ? `auto (learned ${human(svc.effective_timeout)})` : 'auto (learning)';
    default: return human(svc.timeout);
  }
}

function ago(ts) {
  const s = Math.round((now() - ts) / 1000);
  if (s < 5) return 'just now';
  if (s < 60) return `${s} s ago`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ago`;
  const h = Math.floor(m / 60);
  if (h < 48) return `${h} h ago`;
  return `${Math.floor(h / 24)} days ago`;
}

// A time the same for every reader: ISO order, 24 hours, and the zone it
// is given in (the browser's own, by its offset from UTC).
function localTime(ts) {
  const d = new Date(ts);
  const p = (n, w = 2) => String(n).padStart(w, '0');
  const off = -d.getTimezoneOffset();
  const zone = off === 0 ? 'UTC'
    : `UTC${off > 0 ? '+' : '-'}${p(Math.floor(Math.abs(off) / 60))}:${p(Math.abs(off) % 60)}`;
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} `
    + `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())} ${zone}`;
}

// Names in the order a person expects: runs of digits compare by value
// (worker1003 before worker10003), the rest by code point.
function naturalCmp(a, b) {
  const re = /(\d+)|(\D+)/g;
  const xa = a.match(re) || [];
  const xb = b.match(re) || [];
  for (let i = 0; i < Math.min(xa.length, xb.length); i++) {
    const [x, y] = [xa[i], xb[i]];
    if (x === y) continue;
    const dx = /^\d/.test(x);
    const dy = /^\d/.test(y);
    if (dx && dy) {
      const [tx, ty] = [x.replace(/^0+/, ''), y.replace(/^0+/, '')];
      if (tx.length !== ty.length) return tx.length - ty.length;
      if (tx !== ty) return tx < ty ? -1 : 1;
      return x.length - y.length;
    }
    return x < y ? -1 : 1;
  }
  return xa.length - xb.length;
}

function failureText(f) {
  if (f.reason) return f.reason;
  return f.exit_code === null || f.exit_code === undefined ? 'failed' : `exit ${f.exit_code}`;
}

function analysisText(a) {
  if (!a) return '';
  return `${human(a.lower * 1000)}–${human(a.upper * 1000)}`;
}

function esc(s) {
  return String(s).replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }[c]));
}

function stateBadge(state) {
  return `<span class="state ${state}"><span aria-hidden="true">${ICON[state] || ''}</span>${state.toUpperCase()}</span>`;
}

// ---------------------------------------------------------------- data

// An API key, asked for once when the daemon wants one, kept in the
// browser's storage (README, "Cron jobs and scripts").
const KEY_STORE = 'lovebeat.key';
const apiKey = () => localStorage.getItem(KEY_STORE) || '';

function askForKey(status) {
  const why = status === 403
    ? 'This action needs a write key.'
    : 'This lovebeat needs an API key.';
  const k = window.prompt(`${why}\nEnter the key (it is kept in this browser):`, '');
  if (k === null || !k.trim()) return false;
  localStorage.setItem(KEY_STORE, k.trim());
  return true;
}

async function api(path, opts = {}, retried = false) {
  const headers = { ...(opts.headers || {}) };
  const sent = apiKey();
  if (sent) headers.Authorization = `Bearer ${sent}`;
  const r = await fetch(path, { ...opts, headers });
  let body = null;
  try { body = await r.json(); } catch (_) { /* not JSON */ }
  // Requests refused together ask once: a key entered meanwhile is tried.
  if ((r.status === 401 || r.status === 403) && !retried
      && (apiKey() !== sent || askForKey(r.status))) {
    if (socket) socket.close();
    return api(path, opts, true);
  }
  if (!r.ok) throw new Error((body && body.error) || `${r.status} ${r.statusText}`);
  return body;
}

let pending = null; // messages that arrive while the lists load

async function reload() {
  pending = [];
  try {
    const [s, a] = await Promise.all([api('api/services'), api('api/alarms')]);
    store.skew = s.now - Date.now();
    store.services = new Map(s.services.map((x) => [x.name, x]));
    store.alarms = new Map(a.alarms.map((x) => [x.name, x]));
    store.loaded = true;
    const queued = pending;
    pending = null;
    queued.forEach(apply);
  } catch (e) {
    pending = null;
    toast(`Could not load: ${e.message}`);
  }
  ui.needSort = true;
  render();
}

function apply(msg) {
  if (pending) { pending.push(msg); return; }
  switch (msg.type) {
    case 'ADD_SERVICE':
    case 'UPDATE_SERVICE':
      store.services.set(msg.service.name, msg.service); break;
    case 'REMOVE_SERVICE':
      store.services.delete(msg.service.name);
      ui.selected.delete(msg.service.name); break;
    case 'ADD_ALARM':
    case 'UPDATE_ALARM':
      // An alarm whose page is open before it existed gets its alerts now.
      if (!store.alarms.has(msg.alarm.name) && msg.alarm.name === ui.route.alarm) {
        loadAlarmAlerts(msg.alarm.name);
      }
      store.alarms.set(msg.alarm.name, msg.alarm); break;
    case 'REMOVE_ALARM':
      store.alarms.delete(msg.alarm.name); break;
    case 'RESYNC':
      reload(); return;
    default: return;
  }
  ui.needSort = true;
  if (msg.service && msg.service.name === ui.detail) loadDetail(ui.detail);
  schedule();
}

let socket = null;
let retry = 500;

// The key travels as a websocket subprotocol (base64url): a browser cannot
// set a header on a websocket, and a key in the URL would be written to
// every reverse proxy's access log.
function keyProtocol(key) {
  const bytes = new TextEncoder().encode(key);
  let bin = '';
  for (const b of bytes) bin += String.fromCharCode(b);
  return `lovebeat-key.${btoa(bin).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '')}`;
}

function connect() {
  const url = new URL('ws', document.baseURI);
  url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
  const protocols = ['lovebeat'];
  if (apiKey()) protocols.push(keyProtocol(apiKey()));
  socket = new WebSocket(url, protocols);
  socket.onopen = () => {
    retry = 500;
    setLive(true);
    reload();
  };
  socket.onmessage = (ev) => {
    try { apply(JSON.parse(ev.data)); } catch (e) { console.error(e); }
  };
  socket.onclose = () => {
    setLive(false);
    // Refused (no or wrong key): the list request asks for one.
    if (!store.loaded) reload();
    setTimeout(connect, retry);
    retry = Math.min(retry * 2, 10000);
  };
}

function setLive(on) {
  const el = $('live');
  el.textContent = on ? 'live' : 'reconnecting…';
  el.className = `live ${on ? 'on' : 'off'}`;
}

// ---------------------------------------------------------------- routing

function parseRoute() {
  const h = decodeURIComponent(location.hash.replace(/^#\/?/, ''));
  const [path, query] = h.split('?');
  const params = new URLSearchParams(query || '');
  if (path.startsWith('alarm/')) return { view: 'alarm', alarm: path.slice(6), state: params.get('state') };
  if (path === 'services') return { view: 'services', alarm: null, state: params.get('state') };
  return { view: 'home', alarm: null, state: null };
}

// The alerts an alarm fires, each with a button that sends it a test
// (README, "Alerts"). Loaded when the alarm's page opens.
async function loadAlarmAlerts(alarm) {
  $('alarm-alerts').hidden = true;
  $('test-results').innerHTML = '';
  let alerts;
  try {
    alerts = (await api(`api/alarms/${encodeURIComponent(alarm)}/alerts`)).alerts;
  } catch (_) { return; } // no such alarm (yet): the page says so
  if (ui.route.alarm !== alarm) return;
  $('alarm-alerts').hidden = false;
  $('alert-list').textContent = alerts.length
    ? `Alerts: ${alerts.map((a) => `${a.name} (${a.alerters.join(', ')})`).join(' · ')}`
    : 'This alarm fires no alerts.';
  // A name a URL path cannot carry cannot be asked for (README).
  $('alert-tests').innerHTML = alerts.filter((a) => /^[A-Za-z0-9._~-]+$/.test(a.name)).map((a) =>
    `<button type="button" data-test-alert="${esc(a.name)}" data-alerters="${esc(a.alerters.join(', '))}">Send test alert: ${esc(a.name)}</button>`).join(' ');
}

async function testAlert(button) {
  const name = button.dataset.testAlert;
  if (!window.confirm(`Send a test alert to every alerter of "${name}" (${button.dataset.alerters})?\nIt is marked as a test; pagers open a test incident and close it seconds later.`)) return;
  button.disabled = true;
  const out = $('test-results');
  const alarm = ui.route.alarm;
  out.innerHTML = `<li>Sending a test to ${esc(name)}…</li>`;
  try {
    const r = await api(`api/alerts/${encodeURIComponent(name)}/test`, { method: 'POST' });
    // Another alarm's page by now: the toast says it, the list stays its own.
    if (ui.route.alarm !== alarm) {
      toast(r.delivered ? `Test of ${name} delivered` : `Test of ${name}: not every alerter delivered it`);
      return;
    }
    out.innerHTML = r.results.map((x) => (x.delivered
      ? `<li class="ok">${esc(x.alerter)}: delivered</li>`
      : `<li class="error">${esc(x.alerter)}: not delivered: ${esc(x.error || 'no reason given')}</li>`)).join('')
      || '<li>This alert has no alerters.</li>';
    toast(r.delivered ? `Test of ${name} delivered` : `Test of ${name}: not every alerter delivered it`);
  } catch (e) {
    if (ui.route.alarm === alarm) out.innerHTML = `<li class="error">Test not sent: ${esc(e.message)}</li>`;
    else toast(`Test of ${name} not sent: ${e.message}`);
  } finally {
    button.disabled = false;
  }
}

function onRoute() {
  const before = ui.route.alarm;
  ui.route = parseRoute();
  if (ui.route.view === 'alarm' && ui.route.alarm !== before) {
    loadAlarmAlerts(ui.route.alarm);
    loadAlarmHistory(ui.route.alarm);
  }
  if (ui.route.view !== 'alarm') {
    $('alarm-alerts').hidden = true;
    $('alarm-history').hidden = true;
  }
  ui.selected.clear();
  ui.needSort = true;
  $('viewport').scrollTop = 0;
  render();
}

// ---------------------------------------------------------------- rendering

function schedule() {
  if (!ui.frame) ui.frame = requestAnimationFrame(() => { ui.frame = 0; render(); });
}

function render() {
  const r = ui.route;
  document.querySelectorAll('[data-nav]').forEach((a) => {
    const current = (a.dataset.nav === 'home' && r.view === 'home')
      || (a.dataset.nav === 'services' && r.view === 'services');
    if (current) a.setAttribute('aria-current', 'page'); else a.removeAttribute('aria-current');
  });
  renderSummary();
  $('home').hidden = r.view !== 'home';
  $('list').hidden = r.view === 'home';
  if (r.view === 'home') renderAlarms(); else renderList();
}

function renderSummary() {
  const n = { ok: 0, error: 0, muted: 0 };
  for (const s of store.services.values()) if (s.state in n) n[s.state] += 1;
  $('n-ok').textContent = n.ok;
  $('n-error').textContent = n.error;
  $('n-muted').textContent = n.muted;
}

function renderAlarms() {
  const list = [...store.alarms.values()].sort((a, b) =>
    (STATE_ORDER[a.state] - STATE_ORDER[b.state]) || naturalCmp(a.name, b.name));
  $('no-alarms').hidden = list.length > 0 || !store.loaded;
  $('alarms').innerHTML = list.map((a) => {
    const failed = a.failed_services.length;
    return `<li><a class="${a.state}" href="#/alarm/${encodeURIComponent(a.name)}" data-alarm="${esc(a.name)}">
      <div>${stateBadge(a.state)} <span class="name">${esc(a.name)}</span></div>
      <div class="sub">${failed ? `${failed} failed: ${esc(a.failed_services.slice(0, 3).join(', '))}${failed > 3 ? '…' : ''}` : 'all good'}
      · incident #${a.incident_nbr}</div>${(a.suppressed_by || []).length
  ? `<div class="sub held">alerts held while ${esc(a.suppressed_by.join(', '))} ${a.suppressed_by.length > 1 ? 'are' : 'is'} in ERROR</div>` : ''}${(a.maintenance || []).length
  ? `<div class="sub held maintenance">in maintenance: ${esc(a.maintenance.join(', '))} (alerts held)</div>` : ''}</a></li>`;
  }).join('');
}

function matches(svc, filter, r) {
  if (r.alarm && !(svc.in_alarms || []).includes(r.alarm)) return false;
  if (r.state && svc.state !== r.state) return false;
  return !filter || svc.name.includes(filter);
}

function resort() {
  const filter = $('filter').value.trim().toLowerCase();
  const key = $('sort').value;
  const r = ui.route;
  const shown = [];
  for (const s of store.services.values()) if (matches(s, filter, r)) shown.push(s);
  const byName = (a, b) => naturalCmp(a.name, b.name);
  const cmp = {
    name: byName,
    state: (a, b) => (STATE_ORDER[a.state] - STATE_ORDER[b.state]) || byName(a, b),
    beat: (a, b) => (b.last_beat - a.last_beat) || byName(a, b),
  }[key];
  shown.sort(cmp);
  ui.shown = shown.map((s) => s.name);
  ui.needSort = false;
  ui.lastSort = performance.now();
}

function renderList() {
  const r = ui.route;
  if (r.view === 'alarm') {
    const a = store.alarms.get(r.alarm);
    $('list-title').innerHTML = `Alarm ${esc(r.alarm)} ${a ? stateBadge(a.state) : ''}`;
    $('alarm-info').textContent = a
      ? `Incident #${a.incident_nbr} · ${a.failed_services.length} failed · last change ${localTime(a.last_state_change)}`
      : (store.loaded ? 'No such alarm.' : '');
  } else {
    $('list-title').textContent = r.state ? `Services in ${r.state.toUpperCase()}` : 'All services';
    $('alarm-info').textContent = '';
  }
  // A burst of updates re-sorts at most every 300 ms; rows are redrawn
  // from the current objects on every frame anyway.
  if (ui.needSort) {
    if (performance.now() - ui.lastSort > 300 || ui.shown.length < 5000) resort();
    else setTimeout(schedule, 300);
  }
  $('count').textContent = `${ui.shown.length} shown · ${ui.selected.size} selected`;
  const all = $('select-all');
  all.checked = ui.shown.length > 0 && ui.shown.every((n) => ui.selected.has(n));
  drawRows();
}

function rowHeight() {
  return parseFloat(getComputedStyle(document.documentElement).getPropertyValue('--row')) || 44;
}

// Only the rows in view exist in the DOM: 50 000 services cost 50 000
// objects in a Map, not 50 000 elements. A row's element is replaced only
// when its markup changed, so a burst of updates touches only what changed
// on screen, and focus and double-clicks survive redraws.
const rowEls = new Map();

function focusSelector(el) {
  if (el.matches('input[type=checkbox]')) return 'input[type=checkbox]';
  if (el.classList.contains('edit')) return '.edit';
  return '[data-open]';
}

function drawRows() {
  if (ui.editing) return;
  const vp = $('viewport');
  const h = rowHeight();
  $('spacer').style.height = `${ui.shown.length * h}px`;
  const first = Math.max(0, Math.floor(vp.scrollTop / h) - 5);
  const last = Math.min(ui.shown.length, Math.ceil((vp.scrollTop + vp.clientHeight) / h) + 5);
  const want = new Set();
  for (let i = first; i < last; i += 1) {
    const name = ui.shown[i];
    const svc = store.services.get(name);
    if (!svc) continue;
    want.add(name);
    // The row's place is set as a style property: the page's CSP allows
    // no inline style attributes.
    const top = i * h;
    const html = rowHtml(svc);
    const old = rowEls.get(name);
    if (old && old.lovebeatHtml === html && old.lovebeatTop === top) continue;
    const tmp = document.createElement('div');
    tmp.innerHTML = html;
    const el = tmp.firstElementChild;
    el.style.top = `${top}px`;
    el.lovebeatHtml = html;
    el.lovebeatTop = top;
    if (old) {
      const active = document.activeElement;
      const sel = old.contains(active) ? focusSelector(active) : null;
      old.replaceWith(el);
      if (sel) { const f = el.querySelector(sel); if (f) f.focus({ preventScroll: true }); }
    } else {
      vp.appendChild(el);
    }
    rowEls.set(name, el);
  }
  for (const [name, el] of rowEls) {
    if (!want.has(name)) { el.remove(); rowEls.delete(name); }
  }
}

function rowHtml(svc) {
  const n = esc(svc.name);
  const sel = ui.selected.has(svc.name);
  const beat = svc.last_beat > 0
    ? `${ago(svc.last_beat)}<small>${localTime(svc.last_beat)}</small>` : 'never';
  const a = svc.analysis;
  const analysis = a ? `${analysisText(a)}${a.unstable ? '<span class="unstable">unstable</span>' : ''}` : '';
  const muted = svc.muted_since > 0
    ? `${ago(svc.muted_since)}<small>${svc.muted_until ? `until ${localTime(svc.muted_until)}` : localTime(svc.muted_since)}</small>` : '';
  const running = svc.running
    ? `<span class="running" title="started ${localTime(svc.started_at)}"><span aria-hidden="true">&#9654;</span> running ${human(Math.max(0, now() - svc.started_at))}</span>` : '';
  const failure = svc.state === 'error' && svc.last_failure
    ? `<span class="failed">${esc(failureText(svc.last_failure))}</span>` : '';
  const next = svc.timeout === -3 && svc.next_deadline ? `<small>due by ${localTime(svc.next_deadline)}</small>` : '';
  return `<div class="row${sel ? ' selected' : ''}" role="row" data-name="${n}">
    <span class="c-sel"><input type="checkbox" ${sel ? 'checked' : ''} aria-label="Select ${n}"></span>
    <span class="c-state">${stateBadge(svc.state)}${running}${failure}</span>
    <span class="c-name"><button type="button" data-open title="${n}: show beat chart">${n}</button></span>
    <span class="c-beat">${beat}</span>
    <span class="c-timeout" title="${esc(timeoutText(svc))}${svc.timeout === -3 && svc.next_deadline ? `, due by ${localTime(svc.next_deadline)}` : ''}"><button type="button" class="edit" aria-label="Timeout of ${n}: ${esc(timeoutText(svc))}. Press Enter to edit." title="Double-click to edit">${esc(timeoutText(svc))}</button>${next}</span>
    <span class="c-analysis">${analysis}</span>
    <span class="c-muted">${muted}</span>
  </div>`;
}

// ---------------------------------------------------------------- actions

async function act(action, names) {
  if (!names.length) { toast('Select one or more services first.'); return; }
  let snoozeFor = '';
  if (action === 'snooze') {
    snoozeFor = (window.prompt('Snooze for how long? (e.g. 30m, 2h, 1d)', '1h') || '').trim();
    if (!snoozeFor) return;
  }
  if (action === 'delete' && !window.confirm(`Delete ${names.length} service${names.length > 1 ? 's' : ''}?\n${names.slice(0, 10).join('\n')}${names.length > 10 ? '\n…' : ''}`)) return;
  const path = (n) => `api/services/${encodeURIComponent(n)}`;
  const req = {
    beat: (n) => api(path(n), { method: 'POST' }),
    mute: (n) => api(`${path(n)}/mute`, { method: 'POST' }),
    unmute: (n) => api(`${path(n)}/unmute`, { method: 'POST' }),
    delete: (n) => api(path(n), { method: 'DELETE' }),
    snooze: (n) => api(`${path(n)}/mute?for=${encodeURIComponent(snoozeFor)}`, { method: 'POST' }),
  }[action];
  const failures = [];
  // A few requests at a time: fast for many services, gentle on the daemon.
  const queue = [...names];
  await Promise.all(Array.from({ length: Math.min(8, queue.length) }, async () => {
    while (queue.length) {
      const n = queue.shift();
      try { await req(n); } catch (e) { failures.push(`${n}: ${e.message}`); }
    }
  }));
  if (action === 'delete') names.forEach((n) => ui.selected.delete(n));
  toast(failures.length ? `${failures.length} failed: ${failures[0]}` : `${action}: ${names.length} done`);
  schedule();
}

function timeoutValue(text) {
  const t = text.trim().toLowerCase().replace(/\s+/g, '');
  if (t === 'never' || t === 'none') return -1;
  if (t === 'alwayserror' || t === 'error') return 0;
  if (/^-?\d+$/.test(t)) return Number(t);
  return t;
}

// A timeout, or a cron expression (five fields or @daily…) that keeps
// the service's zone and grace.
function editBody(text, svc) {
  const t = text.trim();
  if (t.startsWith('@') || t.split(/\s+/).length === 5) {
    const body = { schedule: t, beat: false, tz: svc.tz || 'UTC' };
    if (svc.grace !== undefined) body.grace = `${svc.grace}ms`;
    return body;
  }
  return { timeout: timeoutValue(t), beat: false };
}

function editTimeout(name) {
  const row = document.querySelector(`.row[data-name="${CSS.escape(name)}"] .c-timeout`);
  const svc = store.services.get(name);
  if (!row || !svc) return;
  ui.editing = name;
  const current = svc.timeout > 0 ? human(svc.timeout).replace(/ /g, '')
    : svc.timeout === -3 ? svc.schedule : timeoutText(svc).split(' ')[0];
  row.innerHTML = `<input type="text" aria-label="New timeout for ${esc(name)}, e.g. 1h30m, 90s, auto, never, or a cron schedule" value="${esc(current)}">`;
  const input = row.querySelector('input');
  input.focus();
  input.select();
  const done = async (save) => {
    if (ui.editing !== name) return;
    ui.editing = null;
    const el = rowEls.get(name);
    if (el) el.lovebeatHtml = '';
    if (save) {
      try {
        await api(`api/services/${encodeURIComponent(name)}`, {
          method: 'POST',
          headers: { 'Content-Type': 'application/json' },
          body: JSON.stringify(editBody(input.value, svc)),
        });
        toast(`Timeout of ${name} set to ${input.value.trim()}`);
      } catch (e) { toast(`Timeout not changed: ${e.message}`); }
    }
    schedule();
  };
  input.addEventListener('keydown', (e) => {
    if (e.key === 'Enter') done(true);
    if (e.key === 'Escape') done(false);
  });
  input.addEventListener('blur', () => done(false));
}

// ---------------------------------------------------------------- detail

async function loadDetail(name) {
  ui.detail = name;
  $('detail').hidden = false;
  $('detail-name').textContent = name;
  let svc;
  try {
    svc = (await api(`api/services/${encodeURIComponent(name)}?details=1`)).service;
  } catch (e) {
    $('detail-text').textContent = e.message;
    $('chart').innerHTML = '';
    return;
  }
  const limit = svc.timeout > 0 ? svc.timeout : (svc.effective_timeout || 0);
  const when = svc.timeout === -3
    ? `runs ${esc(scheduleText(svc))}, due by ${esc(localTime(svc.next_deadline))} (grace ${human(svc.grace)})`
    : `timeout ${esc(timeoutText(svc))}`;
  $('detail-text').innerHTML = `${stateBadge(svc.state)} ${when}`
    + (svc.running ? ` · running for ${human(Math.max(0, now() - svc.started_at))}` : '')
    + (svc.max_runtime ? ` · may run ${human(svc.max_runtime)}` : '')
    + (svc.analysis ? ` · usually every ${analysisText(svc.analysis)}${svc.analysis.unstable ? ' (unstable)' : ''}` : '');
  const learned = svc.learned_timeouts || null;
  drawChart($('chart'), svc.beat_history || [], limit, 'no intervals yet', learned);
  // Name the line only when there is one (a schedule has no timeout).
  $('chart-cap').textContent = learned
    ? 'Recent intervals between beats (bars) against the timeout learned before each (step line).'
    : limit
      ? 'Recent intervals between beats (bars) against the timeout (line).'
      : 'Recent intervals between beats.';
  loadTimeline(name);
  loadUptime($('uptime'), 'services', name, () => ui.detail === name);
  loadRuns(name);
  const runs = svc.run_history || [];
  $('runs').hidden = runs.length === 0;
  if (runs.length) drawChart($('run-chart'), runs, svc.max_runtime || 0, 'no runs yet');
  $('run-cap').textContent = svc.max_runtime
    ? 'Recent run times (bars) against max_runtime (line).'
    : 'Recent run times.';
  const f = svc.last_failure;
  $('failure').hidden = !f;
  if (f) {
    $('failure-head').textContent = `Last failure ${localTime(f.ts)} (${ago(f.ts)}): ${failureText(f)}`;
    $('failure-output').textContent = f.output || '(no output)';
  }
}

// The state of `name` over the chosen range, from its history: one
// segment per state it was in, hover for the exact times.
function loadTimeline(name) {
  return drawTimeline($('timeline'), 'services', name, Number($('timeline-range').value),
    () => ui.detail === name);
}

// Draws the timeline of a service or alarm (`kind`: 'services' or
// 'alarms') into `svg`, unless `current()` says the page moved on while
// the history loaded. Drawn from the state changes: maintenance windows
// change no state, so they are in the uptime figures, not here.
async function drawTimeline(svg, kind, name, range, current) {
  const until = now();
  const since = until - range;
  const path = `api/${kind}/${encodeURIComponent(name)}/history`;
  let changes = [];
  let before = null;
  try {
    let cursor = '';
    for (let page = 0; page < 5; page++) {
      const r = await api(`${path}?since=${since}&until=${until}&limit=1000${cursor}`);
      changes = changes.concat(r.changes);
      if (!r.next_cursor) break;
      cursor = `&cursor=${encodeURIComponent(r.next_cursor)}`;
    }
    before = (await api(`${path}?until=${since}&limit=1`)).changes[0] || null;
  } catch (e) {
    if (current()) svg.innerHTML = `<text x="200" y="16" text-anchor="middle" font-size="10" fill="#57606a">${esc(e.message)}</text>`;
    return;
  }
  if (!current()) return;
  changes.reverse();
  const cls = (st) => (['ok', 'error', 'muted'].includes(st) ? st : 'unknown');
  const segs = [];
  let [from, state] = [since, before ? before.to : 'unknown'];
  for (const c of changes) {
    if (c.ts > from) segs.push([from, c.ts, state]);
    [from, state] = [Math.max(from, c.ts), c.to];
  }
  segs.push([from, until, state]);
  const x = (t) => ((t - since) / range) * 400;
  svg.innerHTML = segs.map(([a, b, st]) =>
    `<rect class="${cls(st)}" x="${x(a)}" y="0" width="${Math.max(0.5, x(b) - x(a))}" height="24"><title>${esc(st)}: ${localTime(a)} to ${localTime(b)} (${human(b - a)})</title></rect>`).join('');
  svg.setAttribute('aria-label', `${segs.length} periods over ${human(range)}`);
  // Maintenance changes no state, so the changes cannot place it: the
  // daily figures (whole UTC days, from the rollups) mark each day that
  // had some with a blue strip along the bar's foot.
  let days = [];
  try {
    days = (await api(`api/${kind}/${encodeURIComponent(name)}/daily?since=${since}&until=${until}&tz=UTC`)).days;
  } catch (_) { return; } // the bar without the strip is still true
  if (!current()) return;
  svg.insertAdjacentHTML('beforeend', days.filter((d) => d.maintenance_ms > 0).map((d) =>
    `<rect class="maintenance" x="${x(d.since)}" y="18" width="${Math.max(0.5, x(d.until) - x(d.since))}" height="6"><title>maintenance on ${esc(d.date)} (UTC): ${human(d.maintenance_ms)}</title></rect>`).join(''));
}

// A fraction as a percentage that never rounds a down time away:
// 99.9996 % shows as 99.999 %, not 100 %.
function percent(f) {
  if (f === null || f === undefined) return '–';
  if (f >= 1) return '100 %';
  const p = Math.floor(f * 100000) / 1000;
  return `${p.toFixed(3).replace(/\.?0+$/, '')} %`;
}

const msText = (ms) => (ms === null || ms === undefined ? '–' : ms === 0 ? '0' : human(ms));

// The uptime figures of a service or alarm over 24 h to 365 d, as a table
// (README, "Uptime"). Resolves to the answer, or null when it failed.
async function loadUptime(el, kind, name, current) {
  let r;
  try {
    r = await api(`api/${kind}/${encodeURIComponent(name)}/uptime?windows=24h,7d,30d,90d,365d`);
  } catch (e) {
    if (current()) el.innerHTML = `<p class="hint">Uptime: ${esc(e.message)}</p>`;
    return null;
  }
  if (!current()) return null;
  const rows = r.windows.map((w) => `<tr data-window="${esc(w.window)}">
    <th scope="row">${esc(w.window)}</th><td class="up">${percent(w.uptime)}</td>
    <td>${msText(w.down_ms)}</td><td>${w.incidents}</td><td>${msText(w.mttr_ms)}</td>
    <td>${msText(w.longest_down_ms)}</td><td>${msText(w.maintenance_ms)}</td></tr>`).join('');
  el.innerHTML = `<table class="figures"><caption>Uptime (maintenance and muted time left out)</caption>
    <thead><tr><th scope="col">Last</th><th scope="col">Uptime</th><th scope="col">Down</th>
    <th scope="col">Incidents</th><th scope="col">MTTR</th><th scope="col">Longest down</th>
    <th scope="col">Maintenance</th></tr></thead><tbody>${rows}</tbody></table>`;
  return r;
}

// An alarm's incidents, newest first, each with its duration (README,
// "Uptime": /incidents). Resolves to how many are still open.
async function loadIncidents(el, alarm, current) {
  let r;
  try {
    r = await api(`api/alarms/${encodeURIComponent(alarm)}/incidents?limit=50`);
  } catch (e) {
    if (current()) el.innerHTML = `<li class="hint">${esc(e.message)}</li>`;
    return 0;
  }
  if (!current()) return 0;
  el.innerHTML = r.incidents.map((i) => {
    const lasted = i.closed === null
      ? `<b class="open">open</b> for ${human(Math.max(0, now() - i.opened))}`
      : `${localTime(i.closed)} <span class="lasted" title="${Number(i.duration_ms)} ms">(${human(i.duration_ms)})</span>`;
    const why = i.first_failed
      ? ` · ${i.failed_at_open} failed, first ${esc(i.first_failed)}` : '';
    return `<li data-incident="${Number(i.number)}" class="${i.closed === null ? 'error' : ''}">#${Number(i.number)}: ${localTime(i.opened)} to ${lasted}${why}</li>`;
  }).join('') || '<li class="hint">No incidents kept.</li>';
  if (r.next_cursor) el.insertAdjacentHTML('beforeend', '<li class="hint">Older incidents: see /api/alarms/…/incidents.</li>');
  return r.incidents.filter((i) => i.closed === null).length;
}

// A job's runs, latest first: when, how long, its exit code, and the tail
// of its output behind a click (README, "Cron jobs and scripts").
async function loadRuns(name) {
  const current = () => ui.detail === name;
  let r;
  try {
    r = await api(`api/services/${encodeURIComponent(name)}/runs?limit=20`);
  } catch (_) {
    if (current()) $('run-list').hidden = true;
    return;
  }
  if (!current()) return;
  $('run-list').hidden = r.runs.length === 0;
  // The end reads as a time of day when it is the start's day: the row
  // fits a phone. The output is a row of its own under its run.
  $('run-rows').innerHTML = r.runs.map((x, i) => {
    const code = x.exit_code === null || x.exit_code === undefined ? 'none' : String(Number(x.exit_code));
    const ok = x.result === 'ok';
    const start = x.started === null ? null : localTime(x.started);
    const end = localTime(x.ended);
    const sameDay = start && start.slice(0, 10) === end.slice(0, 10);
    const output = x.output
      ? `<button type="button" class="show-output" aria-expanded="false" aria-controls="run-output-${i}">output</button>` : '';
    return `<tr class="${ok ? 'ok' : 'error'}" data-exit="${esc(code)}">
      <td>${start || '–'}</td>
      <td title="${end}">${sameDay ? end.slice(11, 19) : end}</td>
      <td class="exit">${ok ? '' : '&#10006; '}${esc(code)}</td>
      <td>${msText(x.duration_ms)}${x.ran_too_long ? ' <b class="late">too long</b>' : ''}</td>
      <td>${output}</td></tr>${x.output
      ? `<tr class="output" id="run-output-${i}" hidden><td colspan="5"><pre>${esc(x.output)}</pre></td></tr>` : ''}`;
  }).join('');
}

// The history part of an alarm's page: its timeline, uptime figures and
// incidents, loaded when the page opens and when its range changes.
function loadAlarmHistory(alarm) {
  const current = () => ui.route.alarm === alarm;
  $('alarm-history').hidden = false;
  drawTimeline($('alarm-timeline'), 'alarms', alarm, Number($('alarm-range').value), current);
  Promise.all([
    loadUptime($('alarm-uptime'), 'alarms', alarm, current),
    loadIncidents($('alarm-incidents'), alarm, current),
  ]).then(([up, open]) => {
    if (!current() || !up) return;
    const day = up.windows.find((w) => w.window === '24h');
    const month = up.windows.find((w) => w.window === '30d');
    $('alarm-history-sum').textContent = `History: ${percent(day && day.uptime)} up over 24 h, `
      + `${percent(month && month.uptime)} over 30 days${open ? `, ${open} incident open` : ''}`;
  });
}

// `steps`, when given, is the limit in force for each bar (null: none):
// an automatic timeout, drawn as a step line that moves as it was learned.
function drawChart(svg, history, limit, empty, steps = null) {
  const W = 400; const H = 120; const pad = 4;
  if (!history.length) {
    svg.innerHTML = `<text x="${W / 2}" y="${H / 2}" text-anchor="middle" font-size="12" fill="#57606a">${empty}</text>`;
    return;
  }
  const limitOf = (i) => (steps ? steps[i] : limit);
  const top = Math.max(limit, ...history, ...(steps || []).filter((v) => v)) * 1.1;
  const bw = (W - pad * 2) / history.length;
  const y = (v) => H - pad - (v / top) * (H - pad * 2);
  const bars = history.map((v, i) =>
    `<rect class="bar${limitOf(i) && v > limitOf(i) ? ' late' : ''}" x="${pad + i * bw}" y="${y(v)}" width="${Math.max(1, bw - 1)}" height="${H - pad - y(v)}"><title>${human(v)}${limitOf(i) ? ` (timeout ${human(limitOf(i))})` : ''}</title></rect>`).join('');
  let line = '';
  if (steps) {
    const points = [];
    steps.forEach((t, i) => {
      if (t) points.push(`${pad + i * bw},${y(t)} ${pad + (i + 1) * bw},${y(t)}`);
    });
    line = points.length
      ? `<polyline class="limit learned" fill="none" points="${points.join(' ')}"><title>learned timeout</title></polyline>`
      : '';
  } else if (limit) {
    line = `<line class="limit" x1="0" x2="${W}" y1="${y(limit)}" y2="${y(limit)}"><title>limit ${human(limit)}</title></line>`;
  }
  // Axes: the scale's top and the timeout, in time units; oldest left.
  const axis = `<text class="axis" x="${W - pad}" y="10" text-anchor="end">${human(Math.round(top))}</text>`
    + `<text class="axis" x="${W - pad}" y="${H - pad - 2}" text-anchor="end">0</text>`
    + `<text class="axis" x="${pad}" y="10">oldest → newest</text>`;
  svg.innerHTML = bars + line + axis;
  svg.setAttribute('aria-label', `${history.length} intervals between ${human(Math.min(...history))} and ${human(Math.max(...history))}${limit ? `, timeout ${human(limit)}` : ''}`);
}

// ---------------------------------------------------------------- wiring

let toastTimer = 0;
function toast(text) {
  const t = $('toast');
  t.textContent = text;
  t.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { t.hidden = true; }, 4000);
}

function wire() {
  window.addEventListener('hashchange', onRoute);
  $('filter').addEventListener('input', () => { ui.needSort = true; ui.lastSort = 0; schedule(); });
  $('sort').addEventListener('change', () => { ui.needSort = true; ui.lastSort = 0; schedule(); });
  $('viewport').addEventListener('scroll', schedule, { passive: true });
  window.addEventListener('resize', schedule);
  $('select-all').addEventListener('change', (e) => {
    if (e.target.checked) ui.shown.forEach((n) => ui.selected.add(n));
    else ui.shown.forEach((n) => ui.selected.delete(n));
    schedule();
  });
  document.querySelectorAll('[data-act]').forEach((b) => b.addEventListener('click', () => {
    act(b.dataset.act, ui.shown.filter((n) => ui.selected.has(n)));
  }));
  const vp = $('viewport');
  vp.addEventListener('change', (e) => {
    const row = e.target.closest('.row');
    if (!row || e.target.type !== 'checkbox') return;
    if (e.target.checked) ui.selected.add(row.dataset.name); else ui.selected.delete(row.dataset.name);
    schedule();
  });
  vp.addEventListener('click', (e) => {
    const row = e.target.closest('.row');
    if (row && e.target.closest('[data-open]')) loadDetail(row.dataset.name);
  });
  vp.addEventListener('dblclick', (e) => {
    const row = e.target.closest('.row');
    if (row && e.target.closest('.c-timeout')) editTimeout(row.dataset.name);
  });
  vp.addEventListener('keydown', (e) => {
    const row = e.target.closest('.row');
    if (row && e.key === 'Enter' && e.target.classList.contains('edit')) {
      e.preventDefault();
      editTimeout(row.dataset.name);
    }
  });
  $('alert-tests').addEventListener('click', (e) => {
    const b = e.target.closest('[data-test-alert]');
    if (b) testAlert(b);
  });
  $('run-rows').addEventListener('click', (e) => {
    const b = e.target.closest('.show-output');
    const out = b && $(b.getAttribute('aria-controls'));
    if (!out) return;
    out.hidden = !out.hidden;
    b.setAttribute('aria-expanded', String(!out.hidden));
  });
  $('timeline-range').addEventListener('change', () => { if (ui.detail) loadTimeline(ui.detail); });
  $('alarm-range').addEventListener('change', () => {
    const alarm = ui.route.alarm;
    if (alarm) {
      drawTimeline($('alarm-timeline'), 'alarms', alarm, Number($('alarm-range').value),
        () => ui.route.alarm === alarm);
    }
  });
  $('detail-close').addEventListener('click', () => { ui.detail = null; $('detail').hidden = true; });
  // Relative times age even when nothing changes.
  setInterval(schedule, 5000);
}

wire();
onRoute();
connect();
