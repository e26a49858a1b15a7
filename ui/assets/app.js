// reshard's dashboard: one page, no framework. The server sends the whole
// state once ("state"), then each section as it changes (server-sent
// events from etcd watches); the page redraws what changed, once a frame.
'use strict';

const ui = window.reshardUI = {
  state: { ring: null, history: [], jobs: [], routers: [], shards: [], locks: {}, actions: false },
  geometry: null,   // where the ring's spans are drawn, for tests and tooltips
  events: 0,        // events received
  firstPaint: 0,    // ms from navigation start to the first ring drawn
  longTasks: [],    // main-thread tasks over 50 ms, as the browser reports them
};
if (window.PerformanceObserver && PerformanceObserver.supportedEntryTypes.includes('longtask')) {
  new PerformanceObserver(list => { for (const e of list.getEntries()) ui.longTasks.push(Math.round(e.duration)); })
    .observe({ type: 'longtask', buffered: true });
}

const TERMINAL = new Set(['done', 'aborted', 'reverted']);
const PALETTE = ['#1f77b4', '#ff7f0e', '#2ca02c', '#d62728', '#9467bd', '#8c564b', '#e377c2', '#7f7f7f',
  '#bcbd22', '#17becf', '#393b79', '#637939', '#8c6d31', '#843c39', '#7b4173', '#3182bd'];

const $ = (sel, root = document) => root.querySelector(sel);
const el = (tag, attrs = {}, ...kids) => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === 'class') e.className = v;
    else if (k.startsWith('data-')) e.setAttribute(k, v);
    else if (k === 'text') e.textContent = v;
    else e[k] = v;
  }
  for (const k of kids) if (k != null) e.append(k);
  return e;
};

function colorOf(pnode) {
  const ps = ui.state.ring ? ui.state.ring.pnodes : [];
  const i = ps.indexOf(pnode);
  return PALETTE[(i < 0 ? 0 : i) % PALETTE.length];
}

// rgbOf is a pnode's colour as [red, green, blue].
ui.rgbOf = (pnode) => { const h = colorOf(pnode); return [1, 3, 5].map(i => parseInt(h.slice(i, i + 2), 16)); };

function bytes(n) {
  if (n == null) return '';
  const u = ['B', 'KB', 'MB', 'GB', 'TB'];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : n) + ' ' + u[i];
}
const num = (n, d = 0) => n == null ? '' : Number(n).toLocaleString('en', { maximumFractionDigits: d });
const ms = (n) => n == null ? '' : (n >= 1000 ? (n / 1000).toFixed(2) + ' s' : n.toFixed(n < 10 ? 1 : 0) + ' ms');
const secs = (s) => s == null ? '' : s < 90 ? s.toFixed(s < 10 ? 1 : 0) + ' s' : (s / 60).toFixed(1) + ' min';
const when = (t) => t ? new Date(t).toLocaleString() : '';

// The spans a vnode list ("0-499998/2,7") touches, as [first, last] pairs.
function spansOf(list, per) {
  const out = [];
  for (const f of String(list || '').split(/[,\s]+/)) {
    if (!f) continue;
    const m = /^(\d+)(?:-(\d+))?(?:\/\d+)?$/.exec(f);
    if (!m) continue;
    const lo = +m[1], hi = m[2] ? +m[2] : lo;
    out.push([Math.floor(lo / per), Math.floor(hi / per)]);
  }
  return out;
}

// ---- drawing, at most once a frame --------------------------------------
const dirty = new Set();
let frame = 0;
function mark(...sections) {
  for (const s of sections) dirty.add(s);
  if (!frame) frame = requestAnimationFrame(draw);
}
function draw() {
  frame = 0;
  const d = new Set(dirty);
  dirty.clear();
  if (d.has('ring')) drawRing();
  if (d.has('history')) drawHistory();
  if (d.has('jobs')) { drawJobs(); drawRing(); }
  if (d.has('shards')) drawShards();
  if (d.has('routers')) drawRouters();
  if (d.has('locks')) drawLocks();
  if (d.has('charts')) drawCharts();
}

function drawRing() {
  const r = ui.state.ring;
  const c = $('#ringcanvas');
  if (!r) { $('#ringsub').textContent = 'No ring in etcd yet.'; return; }
  const spans = r.grid.length ? r.grid[0].length : 0;
  const labelW = 150, rowH = 16, cellW = Math.max(1, Math.floor((1200 - labelW) / Math.max(1, spans)));
  const active = ui.state.jobs.filter(j => !TERMINAL.has(j.state));
  const rows = r.pnodes.length + 2; // the pnodes, read-only, moving
  c.width = labelW + spans * cellW;
  c.height = rows * rowH + 4;
  const g = c.getContext('2d');
  g.clearRect(0, 0, c.width, c.height);
  g.font = '12px system-ui, sans-serif';
  g.textBaseline = 'middle';
  r.pnodes.forEach((p, i) => {
    const y = i * rowH;
    g.fillStyle = '#1d1f21';
    g.fillText(p, 4, y + rowH / 2, labelW - 8);
    g.fillStyle = colorOf(p);
    const row = r.grid[i];
    for (let s = 0; s < spans; s++) {
      if (!row[s]) continue;
      const full = Math.min(r.per, r.vnodes - s * r.per);
      g.globalAlpha = 0.25 + 0.75 * row[s] / full;
      g.fillRect(labelW + s * cellW, y + 2, cellW, rowH - 4);
    }
    g.globalAlpha = 1;
  });
  // Read-only vnodes.
  let y = r.pnodes.length * rowH;
  g.fillStyle = '#6b7078';
  g.fillText('read-only', 4, y + rowH / 2);
  r.read_only.forEach((n, s) => { if (n) g.fillRect(labelW + s * cellW, y + 4, cellW, rowH - 8); });
  // What running jobs move, frozen in red while their write block lasts.
  y += rowH;
  g.fillStyle = '#6b7078';
  g.fillText('moving / frozen', 4, y + rowH / 2);
  for (const j of active) {
    g.fillStyle = j.frozen ? '#c62828' : '#1565c0';
    for (const m of j.moves || []) {
      for (const [a, b] of spansOf(m.vnodes, r.per)) {
        g.fillRect(labelW + a * cellW, y + 4, (b - a + 1) * cellW, rowH - 8);
      }
    }
  }
  ui.geometry = { labelW, cellW, rowH, spans, per: r.per, rows: r.pnodes.slice() };
  c.dataset.version = r.version;
  $('#ringversion').textContent = 'ring version ' + r.version;
  $('#ringsub').textContent = `${num(r.vnodes)} vnodes (${r.algorithm}) over ${r.pnodes.length} pnodes, drawn as ${spans} spans of ${num(r.per)} vnodes; version ${r.version}, stored ${r.stored}.`;
  const leg = $('#ringlegend');
  leg.replaceChildren(...r.pnodes.flatMap((p, i) => [el('span', { class: 'swatch', style: 'background:' + colorOf(p) }), el('span', { text: `${p} ${num(r.counts[i])}` })]));
  if (!ui.firstPaint) ui.firstPaint = performance.now();
}

function drawHistory() {
  const tb = $('#history tbody');
  tb.replaceChildren(...ui.state.history.map(v => el('tr', { 'data-version': v.version },
    el('td', { class: 'num', text: v.version }), el('td', { text: when(v.time) }), el('td', { text: v.stored }),
    el('td', { text: (v.moved || []).map(m => `${num(m.count)} to ${m.to}`).join(', ') || (v.stored === 'full' ? 'whole ring' : '') }),
    el('td', { text: v.comment }))));
}

function phaseBox(p) {
  const box = el('div', { class: 'phase', 'data-phase': p.name, 'data-state': p.state },
    el('div', {}, el('span', { class: 'name', text: p.name }), ' ', el('span', { class: 'state ' + p.state, text: p.state })));
  const pr = p.progress;
  if (pr && pr.total > 0) {
    box.append(el('div', { class: 'bar' }, el('div', { style: `width:${Math.min(100, 100 * pr.done / pr.total).toFixed(1)}%` })));
    box.append(el('div', { class: 'facts', text: `${num(pr.done)} / ${num(pr.total)} ${pr.unit || ''}` +
      (pr.rate ? ` · ${num(pr.rate)}/s` : '') + (pr.eta_seconds ? ` · ETA ${secs(pr.eta_seconds)}` : '') }));
  } else if (pr && pr.note) {
    box.append(el('div', { class: 'facts', text: pr.note }));
  }
  if (p.seconds) box.append(el('div', { class: 'facts', text: secs(p.seconds) }));
  if (p.error) box.append(el('div', { class: 'err', text: p.error }));
  return box;
}

function moveText(j) {
  return `${j.from} → ${(j.to || []).join(', ')}` + (j.moves && j.moves.length ? ` (${num(j.moves.reduce((a, m) => a + m.count, 0))} vnodes)` : '');
}

function jobCard(j) {
  const card = el('div', { class: 'job', 'data-job': j.id, 'data-state': j.state },
    el('h3', {}, j.id + ' ', el('span', { class: 'state ' + j.state, text: j.state }), ' ', el('span', { class: 'facts', text: `${j.strategy} · ${moveText(j)}` })));
  card.append(el('div', { class: 'phases' }, ...(j.phases || []).map(phaseBox)));
  const facts = [];
  if (j.write_block_ms) facts.push(['write block', ms(j.write_block_ms)]);
  if (j.cutover_ms) facts.push(['cutover steps', Object.entries(j.cutover_ms).map(([k, v]) => `${k} ${ms(v)}`).join(', ')]);
  if (j.revert && j.revert.write_block_ms) facts.push(["revert's write block", ms(j.revert.write_block_ms)]);
  facts.push(['ring', `${j.ring_version_before}` + (j.ring_version_after ? ` → ${j.ring_version_after}` : '')]);
  if (j.frozen) facts.push(['frozen', 'writes to the moving vnodes wait']);
  card.append(el('div', { class: 'facts' }, ...facts.flatMap(([k, v]) => [k + ': ', el('b', { text: v }), '   '])));
  if (j.paused) card.append(el('div', { class: 'warn', text: 'paused: ' + j.paused }));
  for (const w of j.warnings || []) card.append(el('div', { class: 'warn', text: w }));
  if (j.error) card.append(el('div', { class: 'err', text: j.error }));
  if (ui.state.actions) {
    const bar = el('div', { class: 'actions' });
    for (const a of ['revert', 'complete', 'abort']) {
      const b = el('button', { text: a, 'data-action': a });
      b.onclick = () => act(j.id, a);
      bar.append(b, ' ');
    }
    card.append(bar);
  }
  return card;
}

async function act(id, action) {
  const token = $('#token').value;
  if (!confirm(`${action} job ${id}?`)) return;
  const r = await fetch(`api/jobs/${encodeURIComponent(id)}/${action}`, { method: 'POST', headers: token ? { Authorization: 'Bearer ' + token } : {} });
  const body = await r.json().catch(() => ({}));
  if (!r.ok) alert(`${action} ${id}: ${body.error || r.status}`);
}

function drawJobs() {
  const jobs = ui.state.jobs;
  const active = jobs.filter(j => !TERMINAL.has(j.state));
  const box = $('#activejobs');
  box.replaceChildren(...(active.length ? active.map(jobCard) : [el('p', { class: 'none', text: 'No job running.' })]));
  const done = jobs.filter(j => TERMINAL.has(j.state));
  $('#finishedcount').textContent = done.length;
  $('#finished tbody').replaceChildren(...done.map(j => el('tr', { 'data-job': j.id },
    el('td', { text: j.id }), el('td', {}, el('span', { class: 'state ' + j.state, text: j.state })), el('td', { text: moveText(j) }),
    el('td', { text: j.strategy }), el('td', { class: 'num', text: ms(j.write_block_ms) }),
    el('td', { class: 'num', text: j.revert ? ms(j.revert.write_block_ms) : '' }), el('td', { text: when(j.created) }))));
}

function drawShards() {
  const list = $('#shardlist');
  list.replaceChildren(...ui.state.shards.map(s => {
    const heat = el('div', { class: 'heat' });
    const btn = el('button', { text: 'vnode heat' });
    btn.onclick = async () => {
      btn.disabled = true;
      const r = await fetch('api/vnode-stats?pnode=' + encodeURIComponent(s.name) + '&top=20');
      const body = await r.json();
      btn.disabled = false;
      if (!r.ok) { heat.replaceChildren(el('span', { class: 'err', text: body.error })); return; }
      const most = body.top.length ? body.top[0].rows : 1;
      heat.replaceChildren(...body.top.flatMap(v => [el('span', { text: 'vnode ' + v.vnode }),
        el('div', { class: 'hb', style: `width:${(100 * v.rows / most).toFixed(1)}%` }), el('span', { text: num(v.rows) + ' rows' })]));
    };
    return el('div', { class: 'shard', 'data-shard': s.name },
      el('h3', {}, el('span', { class: 'swatch', style: 'background:' + colorOf(s.name) }), s.name + ' ',
        el('span', { class: 'facts', text: `≈${num(s.rows)} rows, ${bytes(s.bytes)}` }), ' ', btn),
      s.error ? el('div', { class: 'err', text: s.error }) : null,
      el('table', {}, el('thead', {}, el('tr', {}, ...['peer', 'role', 'address', 'state', 'WAL', 'stream', 'lag', 'lag time'].map(h => el('th', { text: h })))),
        el('tbody', {}, ...s.peers.map(p => el('tr', { 'data-peer': p.name },
          el('td', { text: p.name }), el('td', { text: p.role }), el('td', { text: p.addr }),
          el('td', {}, el('span', { class: 'state ' + (p.up ? 'done' : 'failed'), text: p.up ? (p.in_recovery ? 'standby' : 'primary') : 'down' })),
          el('td', { text: p.wal }), el('td', { text: p.sync || '' }),
          el('td', { class: 'num', text: p.lag_bytes == null ? '' : bytes(p.lag_bytes) }),
          el('td', { class: 'num', text: p.lag_seconds == null ? '' : secs(p.lag_seconds) }))))),
      heat);
  }));
}

function drawRouters() {
  const cur = ui.state.ring ? ui.state.ring.version : 0;
  $('#routers tbody').replaceChildren(...ui.state.routers.map(r => {
    const s = r.stats || {};
    return el('tr', { 'data-router': r.name, class: r.ring_version < cur ? 'behind' : '' },
      el('td', { text: r.name }), el('td', { class: 'num version', text: r.ring_version }),
      el('td', { class: 'num', text: s.up ? num(s.request_rate, 1) : 'unreachable' }),
      el('td', { class: 'num', text: s.up ? num(s.errors) : '' }), el('td', { class: 'num', text: s.up ? num(s.retry_rate, 1) : '' }),
      el('td', { class: 'num', text: s.p99_ms ? ms(s.p99_ms) : '' }), el('td', { class: 'num', text: s.ring_load_ms ? ms(s.ring_load_ms) : '' }),
      el('td', { text: r.url }));
  }));
}

function drawLocks() {
  const rows = Object.entries(ui.state.locks).sort();
  $('#locks tbody').replaceChildren(...(rows.length ? rows.map(([k, v]) => el('tr', {}, el('td', { text: k }), el('td', { text: v.length > 120 ? v.slice(0, 117) + '…' : v })))
    : [el('tr', {}, el('td', { text: 'none held' }), el('td'))]));
}

// ---- charts: the last 5 minutes of samples ------------------------------
const series = { lag: new Map(), pace: new Map() };
const KEEP = 5 * 60 * 1000;
function sample(kind, name, v) {
  const now = Date.now();
  const s = series[kind].get(name) || [];
  s.push([now, v]);
  while (s.length && s[0][0] < now - KEEP) s.shift();
  series[kind].set(name, s);
}
function drawChart(canvas, data) {
  const g = canvas.getContext('2d');
  const W = canvas.width, H = canvas.height, pad = 4;
  g.clearRect(0, 0, W, H);
  const now = Date.now();
  let top = 1;
  for (const s of data.values()) for (const [, v] of s) top = Math.max(top, v);
  g.strokeStyle = '#dfe1e4';
  g.strokeRect(0.5, 0.5, W - 1, H - 1);
  g.font = '11px system-ui, sans-serif';
  g.fillStyle = '#6b7078';
  g.fillText(num(top), pad, 12);
  let i = 0;
  for (const [name, s] of data) {
    g.strokeStyle = PALETTE[i++ % PALETTE.length];
    g.beginPath();
    s.forEach(([t, v], k) => {
      const x = W - (now - t) / KEEP * W, y = H - pad - (H - 2 * pad - 14) * v / top;
      k ? g.lineTo(x, y) : g.moveTo(x, y);
    });
    g.stroke();
    g.fillStyle = g.strokeStyle;
    g.fillText(name, W - 120, 14 * i);
  }
}
function drawCharts() {
  drawChart($('#lagchart'), series.lag);
  drawChart($('#pacechart'), series.pace);
}

// ---- the live feed -------------------------------------------------------
function setJob(j) {
  const i = ui.state.jobs.findIndex(x => x.id === j.id);
  if (i >= 0) ui.state.jobs[i] = j; else ui.state.jobs.unshift(j);
  const running = (j.phases || []).find(p => p.state === 'running' && p.progress && p.progress.rate);
  if (running) { sample('pace', `${j.id} ${running.name}`, running.progress.rate); mark('charts'); }
}

const handlers = {
  state(s) {
    Object.assign(ui.state, s);
    ui.state.jobs = s.jobs || [];
    $('#tokenbox').hidden = !s.actions;
    mark('ring', 'history', 'jobs', 'shards', 'routers', 'locks');
  },
  ring(r) { ui.state.ring = r; mark('ring', 'routers'); },
  history(h) { ui.state.history = h || []; mark('history'); },
  jobs(js) { ui.state.jobs = js || []; mark('jobs'); },
  job(j) { setJob(j); mark('jobs'); },
  'job-gone'(x) { ui.state.jobs = ui.state.jobs.filter(j => j.id !== x.id); mark('jobs'); },
  routers(rs) { ui.state.routers = rs || []; mark('routers'); },
  shards(ss) {
    ui.state.shards = ss || [];
    for (const s of ui.state.shards) for (const p of s.peers) if (p.lag_bytes != null) sample('lag', p.name, p.lag_bytes);
    mark('shards', 'charts');
  },
  locks(l) { ui.state.locks = l || {}; mark('locks'); },
  action(a) { if (a.error) alert(`${a.action} ${a.job}: ${a.error}`); },
};

function connect() {
  const es = new EventSource('api/events');
  const conn = $('#conn');
  es.onopen = () => { conn.textContent = 'live'; conn.className = 'conn up'; };
  es.onerror = () => { conn.textContent = 'reconnecting…'; conn.className = 'conn down'; };
  for (const [name, fn] of Object.entries(handlers)) {
    es.addEventListener(name, (e) => { ui.events++; fn(JSON.parse(e.data)); });
  }
}
connect();
