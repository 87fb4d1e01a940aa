// The Agora dashboard: one page over the admin API (the same routes and token as the CLI), kept
// live by server-sent events (`GET /v1/live`: a snapshot, then a tick a second with what
// changed, and each lifecycle event as it happens), read with fetch so that the token travels in
// a header. No framework, no network but the host.
'use strict';

const ROW = 28;
const HISTORY = 300; // samples kept per chart: five minutes at one a second
const KEPT_EVENTS = 500;

const COLUMNS = [
  { key: 'name', label: 'name' },
  { key: 'id', label: 'id', num: true },
  { key: 'module', label: 'module@version', show: (r) => `${r.module}@${r.version}` },
  { key: 'state', label: 'state', show: (r) => r.state, cls: (r) => `state-${r.state}` },
  { key: 'supervisor', label: 'supervisor' },
  { key: 'mailbox', label: 'mailbox', num: true },
  { key: 'memory_peak', label: 'memory', num: true, show: (r) => bytes(r.memory_peak) },
  { key: 'cpu_ticks', label: 'cpu ticks', num: true },
  { key: 'restarts', label: 'restarts', num: true },
  { key: 'uptime_ms', label: 'uptime', num: true, show: (r) => duration(r.uptime_ms) },
];

const state = {
  token: null,
  agents: new Map(), // id -> row
  status: {},
  rates: {},
  series: { messages: [], restarts: [], events: [], memory: [] },
  events: [],
  sort: { key: 'name', desc: false },
  filter: '',
  sorted: null, // the agents view's rows, sorted and filtered; null when stale
  collapsed: new Set(),
  tree: null,
  view: 'overview',
  agent: null,
  dirty: true,
};

const $ = (id) => document.getElementById(id);

function bytes(n) {
  if (n == null) return '';
  const units = ['B', 'KiB', 'MiB', 'GiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${n >= 100 || i === 0 ? Math.round(n) : n.toFixed(1)} ${units[i]}`;
}

function duration(ms) {
  if (ms == null) return '';
  const s = Math.floor(ms / 1000);
  if (s < 60) return `${(ms / 1000).toFixed(1)}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${s % 60}s`;
  return `${Math.floor(s / 3600)}h${Math.floor((s % 3600) / 60)}m`;
}

function escape(text) {
  return String(text ?? '').replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]);
}

async function api(method, path, body) {
  const response = await fetch(path, { method, headers: { Authorization: `Bearer ${state.token}` }, body });
  const text = await response.text();
  let json = null;
  try { json = JSON.parse(text); } catch { /* not JSON */ }
  if (!response.ok) {
    const error = new Error(json?.error?.message || text || response.statusText);
    error.status = response.status;
    error.code = json?.error?.code;
    throw error;
  }
  return json;
}

// --- The token: from the link `agora run` printed (#token=...), or asked for. -----------------

function readToken() {
  const match = location.hash.match(/token=([0-9A-Za-z._~-]+)/);
  if (match) {
    sessionStorage.setItem('agora-token', match[1]);
    history.replaceState(null, '', `${location.pathname}#/`);
  }
  return sessionStorage.getItem('agora-token');
}

function showLogin(message) {
  $('app').hidden = true;
  $('login').hidden = false;
  $('login-error').textContent = message || '';
}

let streaming = false;

async function open(token) {
  state.token = token;
  try {
    state.status = await api('GET', '/v1/status');
  } catch (error) {
    sessionStorage.removeItem('agora-token');
    showLogin(error.status === 401 ? 'The host refused this token.' : `The host cannot be reached: ${error.message}`);
    return;
  }
  $('login').hidden = true;
  $('app').hidden = false;
  if (!streaming) {
    streaming = true;
    live();
  }
  route();
}

// --- Live updates. ---------------------------------------------------------------------------

let retry = 500;

async function live() {
  try {
    const response = await fetch('/v1/live', { headers: { Authorization: `Bearer ${state.token}` } });
    if (response.status === 401) return showLogin('The host refused this token.');
    if (!response.ok) throw new Error(response.statusText);
    $('connection').textContent = 'live';
    $('connection').className = 'badge live';
    retry = 500;
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let pending = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      pending += decoder.decode(value, { stream: true });
      let end;
      // Events end with a blank line; their `data:` lines carry the JSON.
      while ((end = pending.indexOf('\n\n')) >= 0) {
        const block = pending.slice(0, end);
        pending = pending.slice(end + 2);
        const data = block.split('\n').filter((l) => l.startsWith('data:')).map((l) => l.slice(5).trim()).join('\n');
        if (data) receive(JSON.parse(data));
      }
    }
  } catch (error) {
    console.warn('live stream:', error);
  }
  $('connection').textContent = 'offline';
  $('connection').className = 'badge';
  setTimeout(live, retry);
  retry = Math.min(retry * 2, 10000);
}

function receive(message) {
  if (message.t === 'hello') {
    state.agents.clear();
    for (const row of message.agents) state.agents.set(row.id, row);
    state.status = message.status;
    for (const event of message.events || []) remember(event);
    refreshTree();
  } else if (message.t === 'tick') {
    state.status = message.status;
    state.rates = message.rates;
    for (const row of message.changed) state.agents.set(row.id, row);
    for (const id of message.gone) state.agents.delete(id);
    const s = state.series;
    push(s.messages, message.rates.messages_per_s);
    push(s.restarts, message.rates.restarts_per_min);
    push(s.events, message.rates.events_per_s);
    push(s.memory, message.rates.memory_bytes);
  } else if (message.t === 'event') {
    remember(message);
    refreshTree();
  }
  state.sorted = null;
  state.dirty = true;
}

function push(series, value) {
  series.push(value ?? 0);
  if (series.length > HISTORY) series.shift();
}

function remember(event) {
  state.events.unshift(event);
  if (state.events.length > KEPT_EVENTS) state.events.pop();
}

// The tree changes only with lifecycle events: fetched again then, at most every 200 ms.
let treeTimer = null;
function refreshTree() {
  if (treeTimer) return;
  treeTimer = setTimeout(async () => {
    treeTimer = null;
    try {
      state.tree = await api('GET', '/v1/tree');
      state.dirty = true;
    } catch (error) {
      console.warn('tree:', error);
    }
  }, 200);
}

// --- Rendering, at most once a frame. --------------------------------------------------------

function frame() {
  if (state.dirty) {
    state.dirty = false;
    render();
  }
  requestAnimationFrame(frame);
}

function render() {
  switch (state.view) {
    case 'overview': return renderOverview();
    case 'agents': return renderAgents();
    case 'tree': return renderTree();
    case 'agent': return renderAgent();
    case 'events': return renderEvents();
    default: return undefined;
  }
}

function card(label, value) {
  return `<div class="card"><div class="label">${escape(label)}</div><div class="value">${escape(value)}</div></div>`;
}

function renderOverview() {
  const s = state.status;
  const r = state.rates;
  const byState = {};
  for (const row of state.agents.values()) byState[row.state] = (byState[row.state] || 0) + 1;
  const states = Object.entries(byState).map(([k, v]) => `${v} ${k}`).join(', ') || 'none';
  const classes = (s.classes || []).map((c) => `${c.class}: ${c.agents}/${c.slots}`).join(', ');
  $('cards').innerHTML = [
    card('version', s.version),
    card('uptime', duration(s.uptime_ms)),
    card('agents', `${state.agents.size} (${states})`),
    card('pool slots used', classes),
    card('messages/s', Math.round(r.messages_per_s ?? 0)),
    card('restarts/min', r.restarts_per_min ?? 0),
    card('events/s', Math.round(r.events_per_s ?? 0)),
    card('memory', bytes(r.memory_bytes ?? s.memory_bytes)),
  ].join('');
  chart('chart-messages', state.series.messages);
  chart('chart-restarts', state.series.restarts);
  chart('chart-events', state.series.events);
  chart('chart-memory', state.series.memory);
}

function chart(id, values) {
  const canvas = $(id);
  const context = canvas.getContext('2d');
  const { width, height } = canvas;
  context.clearRect(0, 0, width, height);
  if (values.length < 2) return;
  const max = Math.max(...values, 1);
  context.strokeStyle = '#a371f7';
  context.lineWidth = 1.5;
  context.beginPath();
  // Newest at the right edge, as a strip chart.
  const offset = HISTORY - values.length;
  values.forEach((v, i) => {
    const x = ((offset + i) / (HISTORY - 1)) * width;
    const y = height - 4 - (v / max) * (height - 12);
    if (i === 0) context.moveTo(x, y); else context.lineTo(x, y);
  });
  context.stroke();
  context.fillStyle = '#8b97a5';
  context.font = '11px sans-serif';
  context.fillText(id === 'chart-memory' ? bytes(max) : String(Math.round(max)), 4, 11);
}

function sortedAgents() {
  if (state.sorted) return state.sorted;
  const needle = state.filter.toLowerCase();
  let rows = [...state.agents.values()];
  if (needle) {
    rows = rows.filter((r) => `${r.name} ${r.module}@${r.version} ${r.supervisor} ${r.state}`.toLowerCase().includes(needle));
  }
  const { key, desc } = state.sort;
  rows.sort((a, b) => {
    const x = a[key];
    const y = b[key];
    const order = typeof x === 'number' ? x - y : String(x).localeCompare(String(y));
    return desc ? -order : order;
  });
  state.sorted = rows;
  return rows;
}

function renderAgents() {
  const head = $('agents-head');
  if (!head.firstChild) {
    head.innerHTML = `<div class="row">${COLUMNS.map((c) => `<span data-key="${c.key}" class="${c.num ? 'num' : ''}">${c.label}</span>`).join('')}</div>`;
    head.addEventListener('click', (event) => {
      const key = event.target.dataset.key;
      if (!key) return;
      state.sort = { key, desc: state.sort.key === key ? !state.sort.desc : COLUMNS.find((c) => c.key === key).num };
      state.sorted = null;
      state.dirty = true;
    });
  }
  for (const span of head.querySelectorAll('span')) {
    const sorted = span.dataset.key === state.sort.key;
    span.textContent = COLUMNS.find((c) => c.key === span.dataset.key).label + (sorted ? (state.sort.desc ? ' ▾' : ' ▴') : '');
  }
  const rows = sortedAgents();
  $('agents-count').textContent = `${rows.length} of ${state.agents.size} agents`;
  const body = $('agents-body');
  $('agents-spacer').style.height = `${rows.length * ROW}px`;
  // Only the rows in view exist in the page: 10,000 agents cost what 30 do.
  const first = Math.max(0, Math.floor(body.scrollTop / ROW) - 5);
  const count = Math.ceil(body.clientHeight / ROW) + 10;
  const shown = rows.slice(first, first + count);
  const pool = body.querySelectorAll('.row');
  for (let i = pool.length; i < shown.length; i++) {
    const div = document.createElement('div');
    div.className = 'row';
    div.addEventListener('click', () => { location.hash = `#/agent/${encodeURIComponent(div.dataset.name)}`; });
    body.appendChild(div);
  }
  const all = body.querySelectorAll('.row');
  all.forEach((div, i) => {
    const row = shown[i];
    if (!row) { div.hidden = true; return; }
    div.hidden = false;
    div.dataset.name = row.name;
    div.style.top = `${(first + i) * ROW}px`;
    div.innerHTML = COLUMNS.map((c) => {
      const value = c.show ? c.show(row) : row[c.key];
      return `<span class="${c.num ? 'num' : ''} ${c.cls ? c.cls(row) : ''}">${escape(value)}</span>`;
    }).join('');
  });
}

function renderTree() {
  const tree = state.tree;
  if (!tree) { $('tree').textContent = 'loading…'; return; }
  const node = (name, info, depth) => {
    const children = tree.supervisors[name] || [];
    const restarts = info ? ` · ${info.restarts} restarts` : '';
    const label = `<span class="node"><span class="dot ${info ? info.state : 'running'}"></span><b>${escape(name)}</b>` +
      `<span class="state-${info ? info.state : 'running'}">supervisor${info ? ` · ${info.state}` : ''}${restarts}</span></span>`;
    const open = state.collapsed.has(name) ? '' : ' open';
    return `<details data-name="${escape(name)}"${open}><summary>${label}</summary>${children.map((c) => {
      if (c.kind === 'supervisor') return node(c.name, c, depth + 1);
      const id = c.id == null ? '' : ` · id ${c.id}`;
      return `<div class="leaf node"><span class="dot ${c.state}"></span><a href="#/agent/${encodeURIComponent(c.name)}">${escape(c.name)}</a>` +
        `<span class="state-${c.state}">${c.state}${id} · ${c.restarts} restarts</span></div>`;
    }).join('')}</details>`;
  };
  const root = tree.root || 'root';
  $('tree').className = 'tree';
  $('tree').innerHTML = node(root, null, 0);
  for (const details of $('tree').querySelectorAll('details')) {
    details.addEventListener('toggle', () => {
      if (details.open) state.collapsed.delete(details.dataset.name); else state.collapsed.add(details.dataset.name);
    });
  }
}

async function loadAgent(name) {
  state.agent = { name, detail: null, logs: [], events: [] };
  try {
    const [detail, logs, events] = await Promise.all([
      api('GET', `/v1/agents/${encodeURIComponent(name)}`),
      api('GET', `/v1/logs?agent=${encodeURIComponent(name)}&limit=50`),
      api('GET', `/v1/events?agent=${encodeURIComponent(name)}&newest=true&limit=50`),
    ]);
    state.agent = { name, detail, logs: logs.lines, events: events.events };
  } catch (error) {
    state.agent.error = error.message;
  }
  state.dirty = true;
}

function renderAgent() {
  const agent = state.agent;
  if (!agent) return;
  $('agent-name').textContent = agent.name;
  if (agent.error) { $('agent-cards').innerHTML = `<p class="error">${escape(agent.error)}</p>`; return; }
  const d = agent.detail;
  if (!d) return;
  const live = [...state.agents.values()].find((r) => r.name === agent.name) || d;
  const limits = d.limits || {};
  $('agent-cards').innerHTML = [
    card('module', `${live.module}@${live.version}`),
    card('state', live.state),
    card('supervisor', live.supervisor),
    card('memory', `${bytes(live.memory_peak)} of ${bytes(limits.memory)}`),
    card('mailbox', `${live.mailbox} of ${limits.mailbox ?? '?'}`),
    card('cpu ticks / budget', `${live.cpu_ticks} / ${limits.budget_ms ?? '?'} ms`),
    card('fuel', live.fuel),
    card('messages in / out', `${live.messages_in} / ${live.messages_out}`),
    card('restarts', live.restarts),
    card('uptime', duration(live.uptime_ms)),
  ].join('');
  const relations = d.relations || {};
  const list = (values) => (values && values.length ? values.map(escape).join(', ') : '—');
  $('agent-relations').innerHTML = [
    ['links', relations.links], ['monitors (it watches)', relations.monitoring], ['monitored by', relations.monitored_by],
    ['subscriptions', relations.topics], ['locks', relations.locks], ['groups', relations.groups]
  ].map(([k, v]) => `<dt>${k}</dt><dd>${list(v)}</dd>`).join('') + `<dt>traps exits</dt><dd>${relations.trap_exits ? 'yes' : 'no'}</dd>`;
  $('agent-logs').textContent = agent.logs.map((l) => `${new Date(l.time_ms).toISOString().slice(11, 23)} ${l.level} ${l.message}`).join('\n') || '—';
  $('agent-events').textContent = agent.events.map((e) => `#${e.seq} ${e.kind} ${e.payload}`).join('\n') || '—';
}

async function act(action) {
  const name = state.agent?.name;
  if (!name) return;
  const path = `/v1/agents/${encodeURIComponent(name)}/${action}`;
  const payload = $('payload').value;
  $('action-result').textContent = '…';
  try {
    const answer = await api('POST', action === 'call' ? `${path}?timeout_ms=5000` : path,
      action === 'call' || action === 'send' ? payload : undefined);
    $('action-result').textContent = action === 'call' ? `reply: ${answer.reply}` : `${action}: done`;
  } catch (error) {
    $('action-result').textContent = `${action}: ${error.message}`;
  }
  loadAgent(name);
}

function renderEvents() {
  const kind = $('event-kind').value.trim();
  const agent = $('event-agent').value.trim();
  const shown = state.events.filter((e) => (!kind || e.kind === kind) && (!agent || e.agent === agent)).slice(0, 300);
  $('events').innerHTML = shown.map((e) =>
    `<li><span>${new Date(e.time_ms).toISOString().slice(11, 23)}</span><span class="kind">${escape(e.kind)}</span>` +
    `<span>${escape(e.agent || '')}</span> ${escape(e.text)}</li>`).join('');
}

async function renderEconomy() {
  try {
    const economy = await api('GET', '/v1/economy');
    if (!economy.enabled) { $('economy').innerHTML = '<p>The economy is not enabled on this host ([economics] in the manifest).</p>'; return; }
    const table = (title, rows, columns) => `<h3>${title}</h3>` + (rows.length
      ? `<table class="plain"><tr>${columns.map((c) => `<th>${c}</th>`).join('')}</tr>${rows.map((r) => `<tr>${columns.map((c) => `<td>${escape(typeof r[c] === 'object' ? JSON.stringify(r[c]) : r[c])}</td>`).join('')}</tr>`).join('')}</table>`
      : '<p>none</p>');
    $('economy').innerHTML = table('Wallets', economy.wallets, ['name', 'balance', 'held']) +
      table('Open auctions', economy.auctions, ['id', 'item', 'seller', 'format', 'standing']) +
      table('Open tasks', economy.tasks, ['id', 'client', 'description', 'state']);
  } catch (error) {
    $('economy').innerHTML = `<p class="error">${escape(error.message)}</p>`;
  }
}

// --- Routing. --------------------------------------------------------------------------------

function route() {
  const hash = location.hash.replace(/^#\/?/, '');
  const [view, ...rest] = hash.split('/');
  state.view = view === '' ? 'overview' : view;
  for (const section of document.querySelectorAll('.view')) section.hidden = section.id !== `view-${state.view}`;
  for (const link of document.querySelectorAll('nav a')) link.classList.toggle('active', link.dataset.view === state.view);
  if (state.view === 'agent') loadAgent(decodeURIComponent(rest.join('/')));
  if (state.view === 'tree') refreshTree();
  if (state.view === 'economy') renderEconomy();
  state.dirty = true;
}

window.addEventListener('hashchange', () => {
  // A link with a token, followed while the page is open.
  if (location.hash.includes('token=')) open(readToken()); else route();
});
$('agents-body').addEventListener('scroll', () => { state.dirty = true; });
$('filter').addEventListener('input', (event) => { state.filter = event.target.value; state.sorted = null; state.dirty = true; });
$('event-kind').addEventListener('input', () => { state.dirty = true; });
$('event-agent').addEventListener('input', () => { state.dirty = true; });
document.querySelectorAll('.actions button').forEach((b) => b.addEventListener('click', () => act(b.dataset.action)));
$('login-form').addEventListener('submit', (event) => { event.preventDefault(); open($('token').value.trim()); });

requestAnimationFrame(frame);
const token = readToken();
if (token) open(token); else showLogin();
