// The raftgate dashboard. It polls this node's /ui/api/cluster every two seconds and draws
// five views from it. Everything is built with DOM calls and textContent (never HTML
// strings), and every request goes to the node that served the page.
'use strict';

const POLL_MS = 2000;
const ROLES = ['unknown', 'leader', 'follower', 'learner', 'candidate', 'shutdown'];
const TOKEN_KEY = 'raftgate-admin-token';

const state = {
  data: null,
  view: 'cluster',
  failures: 0,
  // Per commit: when this page first saw it being rolled out, and when it reached every node.
  seen: {},
  diff: { from: null, to: null, auto: true },
  trafficNode: null,
};

// ---- small helpers ----------------------------------------------------------------------

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') e.className = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

const SVG = 'http://www.w3.org/2000/svg';
function svg(tag, attrs, ...children) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v !== undefined && v !== null) e.setAttribute(k, String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

function fill(id, ...children) {
  const target = document.getElementById(id);
  target.replaceChildren(...children.flat().filter((c) => c !== null && c !== undefined));
  return target;
}

const short = (sha) => (sha || '').slice(0, 8);

function ago(unixSeconds) {
  if (!unixSeconds) return '';
  const s = Math.max(0, Math.round(Date.now() / 1000 - unixSeconds));
  if (s < 60) return `${s}s ago`;
  if (s < 3600) return `${Math.round(s / 60)}m ago`;
  if (s < 86400) return `${Math.round(s / 3600)}h ago`;
  return `${Math.round(s / 86400)}d ago`;
}

function span(seconds) {
  return seconds < 120 ? `${seconds} seconds` : `${Math.round(seconds / 60)} minutes`;
}

function fmt(n, digits) {
  if (!isFinite(n)) return '–';
  if (n >= 1000) return `${(n / 1000).toFixed(1)}k`;
  return n.toFixed(digits);
}

// ---- the model: what the page derives from one poll ---------------------------------------

function statusOf(node) {
  return (node.dashboard && node.dashboard.status) || null;
}

function roleOf(node) {
  const s = statusOf(node);
  if (!node.reachable) return 'down';
  return ROLES[(s && s.role) || 0] || 'unknown';
}

// The log index of the config a node serves (0 when none).
function servedIndex(node) {
  const s = statusOf(node);
  return (node.reachable && s && s.config && s.config.logIndex) || 0;
}

function latestIndex(data) {
  return Math.max(0, ...data.nodes.map(servedIndex), ...(data.history || []).map((h) => h.logIndex));
}

// ok: up and serving the newest config; warn: up but behind; bad: down.
function health(node, latest) {
  if (!node.reachable) return 'bad';
  const s = statusOf(node);
  if (s && (s.raftError || s.lastApplyError)) return 'bad';
  return servedIndex(node) >= latest ? 'ok' : 'warn';
}

function leaderOf(data) {
  return data.nodes.find((n) => roleOf(n) === 'leader') || null;
}

// ---- polling -----------------------------------------------------------------------------

function headers() {
  const token = sessionStorage.getItem(TOKEN_KEY);
  return token ? { authorization: `Bearer ${token}` } : {};
}

async function poll() {
  try {
    const r = await fetch('/ui/api/cluster', { headers: headers(), cache: 'no-store' });
    if (r.status === 401) {
      showLogin(sessionStorage.getItem(TOKEN_KEY) ? 'That token was refused.' : '');
      return;
    }
    if (!r.ok) throw new Error(`the node answered ${r.status}`);
    const data = await r.json();
    document.getElementById('login').hidden = true;
    state.data = data;
    state.failures = 0;
    track(data);
    render();
  } catch (e) {
    state.failures += 1;
    const live = document.getElementById('live');
    live.className = 'live stale';
    live.textContent = 'not updating';
    const problem = document.getElementById('problem');
    problem.hidden = false;
    problem.textContent = `This node is not answering (${e.message}). The page shows what it saw last and keeps trying.`;
  }
}

function showLogin(message) {
  document.getElementById('login').hidden = false;
  document.getElementById('login-error').textContent = message;
  const live = document.getElementById('live');
  live.className = 'live stale';
  live.textContent = 'needs a token';
}

// Remembers when each commit's rollout was first seen incomplete and when it completed.
function track(data) {
  const now = Date.now();
  for (const h of data.history || []) {
    const served = data.nodes.filter((n) => servedIndex(n) >= h.logIndex).length;
    const total = data.nodes.length;
    const s = state.seen[h.commit] || (state.seen[h.commit] = { first: now, partial: served < total, done: null });
    if (served >= total && s.done === null) s.done = now;
  }
}

// ---- rendering ---------------------------------------------------------------------------

function render() {
  const data = state.data;
  if (!data) return;
  const live = document.getElementById('live');
  live.className = 'live ok';
  live.textContent = `live · node ${data.thisNode ?? 'local'} · ${new Date(data.generatedAt).toLocaleTimeString()}`;
  document.getElementById('problem').hidden = true;
  renderSummary(data);
  renderMap(data);
  renderNodes(data);
  renderRefusal(data);
  renderRollouts(data);
  renderHistory(data);
  renderUpstreams(data);
  renderTraffic(data);
  document.getElementById('footer').textContent =
    `raftgate ${((data.nodes.find((n) => n.id === data.thisNode) || data.nodes[0]).dashboard?.status || {}).version || ''} · term ${data.term} · this page asks node ${data.thisNode ?? 'local'} only`;
}

function card(label, value, sub, tone, attrs) {
  return el('div', Object.assign({ class: `card ${tone || ''}` }, attrs || {}),
    el('div', { class: 'label' }, label), el('div', { class: 'value' }, value), el('div', { class: 'sub' }, sub || ''));
}

function renderSummary(data) {
  const leader = leaderOf(data);
  const up = data.nodes.filter((n) => n.reachable).length;
  const latest = latestIndex(data);
  const newest = (data.history || [])[0];
  const serving = data.nodes.filter((n) => servedIndex(n) >= latest && latest > 0).length;
  const failingOn = {};
  for (const n of data.nodes) {
    for (const u of (n.dashboard && n.dashboard.upstreams) || []) {
      if (upstreamFailing(u)) failingOn[u.name] = (failingOn[u.name] || 0) + 1;
    }
  }
  const failing = Object.keys(failingOn).length;
  const failingText = Object.entries(failingOn).slice(0, 2).map(([name, nodes]) => `${name} failing on ${nodes} node${nodes > 1 ? 's' : ''}`)
    .join(', ') + (failing > 2 ? ` and ${failing - 2} more` : '');
  const total = data.nodes.reduce((sum, n) => sum + lastTotal(n).requestsPerSecond, 0);
  fill('summary',
    card('Leader', leader ? `node ${leader.id}` : 'none', leader ? `${leader.region || 'no region'} · term ${data.term}` : 'election in progress or no quorum',
      leader ? 'ok' : 'bad', { id: 'leader-card', 'data-leader': leader ? leader.id : '' }),
    card('Nodes up', `${up} / ${data.nodes.length}`, `${data.nodes.filter((n) => n.voter).length} voters · ${data.nodes.filter((n) => !n.voter).length} learners`,
      up === data.nodes.length ? 'ok' : 'bad', { id: 'nodes-card', 'data-up': up, 'data-total': data.nodes.length }),
    card('Latest config', newest ? short(newest.commit) : '–', newest ? `${serving}/${data.nodes.length} nodes · ${newest.message || ''}` : 'no commit applied yet',
      serving === data.nodes.length ? 'ok' : 'warn'),
    card('Last refusal', data.refusal ? short(data.refusal.commit) : 'none', data.refusal ? `${data.refusal.step}: ${data.refusal.errors[0] || ''}` : 'every commit since was accepted',
      data.refusal ? 'bad' : 'ok'),
    card('Traffic', `${fmt(total, 1)} req/s`, failing ? failingText : 'all upstreams healthy',
      failing ? 'warn' : 'ok'));
}

function renderMap(data) {
  const latest = latestIndex(data);
  const regions = [];
  for (const n of data.nodes) {
    let r = regions.find((x) => x.name === n.region);
    if (!r) regions.push((r = { name: n.region, nodes: [] }));
    r.nodes.push(n);
  }
  const nodeW = 150;
  const pad = 24;
  const gap = 26;
  const boxH = 230;
  let x = pad;
  const pos = {};
  const boxes = [];
  for (const r of regions) {
    const w = Math.max(200, r.nodes.length * nodeW + 20);
    boxes.push({ r, x, w });
    r.nodes.forEach((n, i) => {
      pos[n.id] = { x: x + 10 + nodeW * i + nodeW / 2, y: 110 };
    });
    x += w + gap;
  }
  const width = Math.max(x - gap + pad, 600);
  const leader = leaderOf(data);
  const root = svg('svg', { viewBox: `0 0 ${width} ${boxH + 40}`, role: 'img', 'aria-label': 'cluster map' });
  // Drawn a little larger than its own size (text stays readable), shrunk only when the
  // window is narrower.
  root.style.maxWidth = `${Math.round(width * 1.35)}px`;
  for (const b of boxes) {
    root.append(svg('g', { class: 'region', 'data-region': b.r.name },
      svg('rect', { x: b.x, y: 14, width: b.w, height: boxH, rx: 14 }),
      svg('text', { class: 'title', x: b.x + 16, y: 38 }, (b.r.name || 'no region').toUpperCase())));
  }
  if (leader) {
    for (const n of data.nodes) {
      if (n.id === leader.id) continue;
      const a = pos[leader.id];
      const b = pos[n.id];
      const mid = (a.x + b.x) / 2;
      const lift = Math.min(90, Math.abs(b.x - a.x) / 4);
      root.append(svg('path', { class: `link ${n.reachable ? '' : 'down'}`, d: `M ${a.x} ${a.y - 30} Q ${mid} ${a.y - 30 - lift - 20} ${b.x} ${b.y - 30}` }));
    }
  }
  const colours = { ok: 'var(--ok)', warn: 'var(--warn)', bad: 'var(--bad)' };
  for (const n of data.nodes) {
    const p = pos[n.id];
    const s = statusOf(n);
    const role = roleOf(n);
    const tone = health(n, latest);
    const g = svg('g', {
      class: `node ${n.voter ? 'voter' : 'learner'} ${tone}`,
      'data-id': n.id, 'data-role': role, 'data-up': n.reachable ? 'true' : 'false',
      'data-commit': s && s.config ? s.config.commit : '',
    });
    if (role === 'leader') g.append(svg('circle', { class: 'crown', cx: p.x, cy: p.y, r: 36 }));
    g.append(svg('circle', { class: 'body', cx: p.x, cy: p.y, r: 29, fill: colours[tone] }));
    g.append(svg('text', { class: 'id', x: p.x, y: p.y + 5 }, String(n.id)));
    g.append(svg('text', { class: 'role', x: p.x, y: p.y + 56 }, role === 'down' ? 'down' : `${role}${n.voter ? '' : ' (learner)'}`.replace('learner (learner)', 'learner')));
    const detail = n.reachable
      ? `${short(s && s.config ? s.config.commit : '') || 'no config'} · lag ${n.lag ?? '?'}`
      : 'not answering';
    g.append(svg('text', { class: 'detail', x: p.x, y: p.y + 73 }, detail));
    g.append(svg('text', { class: 'detail', x: p.x, y: p.y + 89 }, n.reachable ? `applied #${s ? s.appliedIndex : 0}` : n.adminAddr));
    g.append(svg('title', {}, n.reachable ? `node ${n.id} at ${n.adminAddr}` : `node ${n.id}: ${n.error}`));
    root.append(g);
  }
  fill('map', root);
  fill('legend',
    el('span', { style: null, class: 'l-ok' }, 'serving the latest config'),
    el('span', { class: 'l-warn' }, 'behind'),
    el('span', { class: 'l-bad' }, 'down or failing'),
    el('span', { class: 'l-leader' }, 'gold ring: leader · dashed: learner'));
  for (const [cls, colour] of [['l-ok', 'var(--ok)'], ['l-warn', 'var(--warn)'], ['l-bad', 'var(--bad)'], ['l-leader', 'var(--leader)']]) {
    document.querySelector(`#legend .${cls}`).style.setProperty('--c', colour);
  }
}

function renderNodes(data) {
  const latest = latestIndex(data);
  const rows = data.nodes.map((n) => {
    const s = statusOf(n) || {};
    const tone = health(n, latest);
    const role = roleOf(n);
    const problems = [n.error, s.lastApplyError, s.raftError, ...(s.configWarnings || [])].filter(Boolean);
    return el('tr', { 'data-node': n.id },
      el('td', {}, el('span', { class: `dot ${tone}` }), `node ${n.id}`),
      el('td', {}, n.region || '–'),
      el('td', {}, el('span', { class: `pill ${role === 'leader' ? 'leader' : role === 'down' ? 'bad' : ''}` }, role), n.voter ? '' : el('span', { class: 'pill' }, 'learner')),
      el('td', { class: 'mono' }, s.config ? short(s.config.commit) : '–'),
      el('td', {}, n.reachable ? String(s.appliedIndex) : '–'),
      el('td', {}, n.lag === null || n.lag === undefined ? '–' : String(n.lag)),
      el('td', {}, s.transport || ''),
      el('td', { class: 'mono' }, n.adminAddr || ''),
      el('td', { class: problems.length ? 'error' : '' }, problems.join('; ') || 'ok'));
  });
  fill('nodes', el('tr', {}, ['Node', 'Region', 'Role', 'Commit', 'Applied', 'Lag', 'Transport', 'Admin', 'Health'].map((h) => el('th', {}, h))), rows);
}

function renderRefusal(data) {
  const r = data.refusal;
  if (!r) {
    fill('refusal');
    return;
  }
  fill('refusal', el('div', { class: 'refusal', 'data-commit': r.commit },
    el('h2', {}, `Commit ${short(r.commit)} was refused at the ${r.step} step`),
    el('div', { class: 'meta' }, 'commit ', el('code', { class: 'commit-id', title: 'the full commit id' }, r.commit), ` · ${ago(r.at)} · every node keeps serving the last good config`),
    el('ul', {}, r.errors.map((e) => el('li', {}, e)))));
}

function renderRollouts(data) {
  const total = data.nodes.length;
  const rows = (data.history || []).slice(0, 10).map((h, i) => {
    const served = data.nodes.filter((n) => servedIndex(n) >= h.logIndex);
    const done = served.length >= total;
    const seen = state.seen[h.commit];
    let timing = '';
    if (seen && seen.partial && seen.done) timing = ` · all nodes ${((seen.done - seen.first) / 1000).toFixed(1)}s after this page first saw it`;
    else if (seen && seen.partial) timing = ` · rolling out for ${((Date.now() - seen.first) / 1000).toFixed(0)}s`;
    return el('div', { class: 'rollout', 'data-commit': h.commit, 'data-served': served.length, 'data-total': total },
      el('div', {}, el('code', { class: 'commit-id', title: h.commit }, short(h.commit)), i === 0 ? el('div', {}, el('span', { class: 'pill ok' }, 'latest')) : null),
      el('div', {}, el('div', { class: 'msg' }, h.message || '(no message)'),
        el('div', { class: 'meta' }, `${h.author || 'unknown author'} · log #${h.logIndex} · applied ${ago(h.appliedAt)} on node ${data.thisNode ?? ''}`)),
      el('div', {},
        el('div', { class: `bar ${done ? 'done' : ''}` }, el('div', { style: null, 'data-width': (100 * served.length) / total })),
        el('div', { class: 'bar-label' }, el('span', {}, el('b', {}, `${served.length}/${total}`), ' nodes serve it'), el('span', {}, timing.replace(/^ · /, ''))),
        el('div', { class: 'chips' }, data.nodes.map((n) => el('span', { class: `pill ${servedIndex(n) >= h.logIndex ? 'ok' : n.reachable ? 'warn' : 'bad'}` }, `node ${n.id}`)))));
  });
  fill('rollouts', rows.length ? rows : el('p', { class: 'hint' }, 'No commit applied yet.'));
  // Widths are set through the style object: the Content-Security-Policy forbids inline styles.
  for (const bar of document.querySelectorAll('#rollouts .bar > div')) bar.style.width = `${bar.dataset.width}%`;
}

function renderHistory(data) {
  const history = data.history || [];
  if (state.diff.auto && history.length >= 2 && !state.diff.from) {
    state.diff.from = history[1].commit;
    state.diff.to = history[0].commit;
  }
  const radio = (name, commit) => el('input', {
    type: 'radio', name, value: commit, checked: state.diff[name] === commit,
    onchange: () => { state.diff[name] = commit; state.diff.auto = false; updateCompare(); },
  });
  const rows = history.map((h) => el('tr', {},
    el('td', {}, radio('from', h.commit)), el('td', {}, radio('to', h.commit)),
    el('td', {}, el('code', { class: 'commit-id' }, h.commit)),
    el('td', {}, h.message || ''), el('td', {}, h.author || ''),
    el('td', {}, ago(h.appliedAt)), el('td', {}, `#${h.logIndex}`)));
  fill('history', el('tr', {}, ['From', 'To', 'Commit', 'Message', 'Author', 'Applied', 'Log'].map((t) => el('th', {}, t))),
    rows.length ? rows : el('tr', {}, el('td', { colspan: 7, class: 'hint' }, 'No commit applied yet.')));
  updateCompare();
  if (state.view === 'history' && state.diff.auto && state.diff.from && !state.diff.shown) compare();
}

function updateCompare() {
  const { from, to } = state.diff;
  document.getElementById('compare').disabled = !(from && to && from !== to);
  document.getElementById('compare-what').textContent = from && to ? `${short(from)} → ${short(to)}` : 'pick a "from" and a "to" commit';
}

async function compare() {
  const { from, to } = state.diff;
  if (!from || !to) return;
  state.diff.shown = true;
  fill('diff', el('p', { class: 'hint' }, `Comparing ${short(from)} and ${short(to)}…`));
  try {
    const r = await fetch(`/ui/api/diff?from=${encodeURIComponent(from)}&to=${encodeURIComponent(to)}`, { headers: headers() });
    const body = await r.json();
    if (!r.ok) throw new Error(body.error || `the node answered ${r.status}`);
    renderDiff(body);
  } catch (e) {
    fill('diff', el('p', { class: 'error' }, `Cannot compare: ${e.message}`));
  }
}

function renderDiff(d) {
  const show = (v) => (v === null || v === undefined ? '(none)' : JSON.stringify(v));
  const parts = [el('p', { class: 'hint' }, el('code', {}, short(d.from)), ' → ', el('code', {}, short(d.to)))];
  let any = false;
  for (const [key, label] of [['routes', 'Routes'], ['upstreams', 'Upstreams'], ['certificates', 'Certificates'], ['securityPolicies', 'Security policies'], ['tlsPolicy', 'TLS policy']]) {
    const k = d[key];
    if (!k || (!k.added.length && !k.removed.length && !k.changed.length)) continue;
    any = true;
    parts.push(el('h3', {}, label));
    for (const n of k.added) parts.push(el('div', { class: 'line add', 'data-change': `${key}:+${n}` }, `+ ${n}  added`));
    for (const n of k.removed) parts.push(el('div', { class: 'line del', 'data-change': `${key}:-${n}` }, `− ${n}  removed`));
    for (const c of k.changed) {
      parts.push(el('div', { class: 'line chg', 'data-change': `${key}:~${c.name}` }, `~ ${c.name}`));
      for (const f of c.fields) parts.push(el('div', { class: 'line field' }, `${f.path}: ${show(f.before)} → ${show(f.after)}`));
    }
  }
  if (!any) parts.push(el('p', {}, 'No changes between these commits.'));
  fill('diff', parts);
}

function upstreamFailing(u) {
  return u.circuit === 'open' || u.circuit === 'half-open' ||
    (u.endpoints || []).some((e) => e.health === 'unhealthy' || e.ejectedForMs > 0);
}

function renderUpstreams(data) {
  const rows = [];
  for (const n of data.nodes) {
    if (!n.reachable) continue;
    for (const u of (n.dashboard.upstreams || [])) rows.push({ n, u, failing: upstreamFailing(u) });
  }
  rows.sort((a, b) => (b.failing - a.failing) || a.u.name.localeCompare(b.u.name) || (a.n.id - b.n.id));
  const endpoint = (e) => {
    const tone = e.health === 'unhealthy' || e.ejectedForMs > 0 ? 'bad' : e.health === 'healthy' ? 'ok' : '';
    const what = e.ejectedForMs > 0 ? `ejected ${Math.ceil(e.ejectedForMs / 1000)}s` : e.health;
    return el('span', { class: `pill ${tone}`, title: `${e.inFlight} in flight · weight ${e.weight}` }, `${e.address} · ${what}`);
  };
  const circuit = (u) => el('span', { class: `pill ${u.circuit === 'open' ? 'bad' : u.circuit === 'half-open' ? 'warn' : u.circuit === 'closed' ? 'ok' : ''}` },
    u.circuitRetryAfterMs > 0 ? `${u.circuit} ${Math.ceil(u.circuitRetryAfterMs / 1000)}s` : u.circuit);
  const down = data.nodes.filter((n) => !n.reachable).map((n) => el('tr', {},
    el('td', {}, el('span', { class: 'dot bad' })), el('td', { colspan: 5, class: 'error' }, `node ${n.id} is not answering: its upstreams are unknown`)));
  fill('upstreams',
    el('tr', {}, ['', 'Upstream', 'Node', 'Circuit', 'Endpoints', 'In flight'].map((t) => el('th', {}, t))),
    rows.map(({ n, u, failing }) => el('tr', { 'data-upstream': u.name, 'data-node': n.id, 'data-failing': failing ? 'true' : 'false' },
      el('td', {}, el('span', { class: `dot ${failing ? 'bad' : 'ok'}` })),
      el('td', {}, el('b', {}, u.name), el('div', { class: 'meta hint' }, u.loadBalancer)),
      el('td', {}, `node ${n.id}`, el('div', { class: 'hint' }, n.region || '')),
      el('td', {}, circuit(u)),
      el('td', {}, (u.endpoints || []).map(endpoint)),
      el('td', {}, `${u.requestsInFlight} (+${u.retriesInFlight} retries)`))),
    down);
}

function lastTotal(n) {
  const samples = (n.dashboard && n.dashboard.traffic && n.dashboard.traffic.samples) || [];
  const last = samples[samples.length - 1];
  return (last && last.total) || { requestsPerSecond: 0, errorRatio: 0, p99Ms: 0 };
}

function spark(values, { colour, label, unit, digits, floor }) {
  const w = 240;
  const h = 38;
  // `floor`: the least top of the scale, so a small steady value does not fill the chart.
  const max = Math.max(floor || 1e-9, ...values);
  const pts = values.map((v, i) => [values.length > 1 ? (i * w) / (values.length - 1) : w, h - 3 - ((h - 6) * v) / max]);
  const line = pts.map(([x, y]) => `${x.toFixed(1)},${y.toFixed(1)}`).join(' ');
  const graph = svg('svg', { viewBox: `0 0 ${w} ${h}`, preserveAspectRatio: 'none' });
  if (pts.length > 1) {
    graph.append(svg('polygon', { points: `0,${h} ${line} ${w},${h}`, fill: colour, 'fill-opacity': 0.12 }));
    graph.append(svg('polyline', { points: line, fill: 'none', stroke: colour, 'stroke-width': 1.8, 'vector-effect': 'non-scaling-stroke' }));
  }
  const last = values.length ? values[values.length - 1] : 0;
  return el('div', { class: 'spark' }, graph, el('div', { class: 'num' }, `${fmt(last, digits)}${unit}`, el('small', {}, label)));
}

function chartRow(name, series, attrs) {
  const get = (f) => series.map(f);
  return el('div', Object.assign({ class: 'chart-row' }, attrs || {}),
    el('div', { class: 'name', title: name }, name),
    spark(get((t) => t.requestsPerSecond), { colour: '#4f46e5', label: 'requests/s', unit: '', digits: 1 }),
    spark(get((t) => 100 * t.errorRatio), { colour: '#d93a3f', label: '5xx', unit: '%', digits: 1, floor: 10 }),
    spark(get((t) => t.p99Ms), { colour: '#d98a04', label: 'p99', unit: ' ms', digits: 1 }));
}

function renderTraffic(data) {
  const up = data.nodes.filter((n) => n.reachable && n.dashboard.traffic);
  const interval = up.length ? up[0].dashboard.traffic.intervalSeconds : 5;
  const samples = (n) => n.dashboard.traffic.samples || [];
  document.getElementById('traffic-hint').textContent =
    `From each node's own metrics, sampled every ${interval}s: the last ${span(samples(up[0] || { dashboard: { traffic: {} } }).length * interval)}. No Prometheus needed.`;
  fill('traffic-nodes', up.map((n) => chartRow(`node ${n.id}${n.region ? ` · ${n.region}` : ''}`, samples(n).map((s) => s.total || {}), { 'data-node': n.id })),
    up.length ? null : el('p', { class: 'hint' }, 'No node is answering.'));
  const select = document.getElementById('traffic-node');
  if (state.trafficNode === null || !up.some((n) => n.id === state.trafficNode)) state.trafficNode = up.length ? up[0].id : null;
  select.replaceChildren(...up.map((n) => el('option', { value: n.id, selected: n.id === state.trafficNode }, `node ${n.id}`)));
  const node = up.find((n) => n.id === state.trafficNode);
  if (!node) {
    fill('traffic-routes');
    return;
  }
  const names = [];
  for (const s of samples(node)) for (const r of s.routes || []) if (!names.includes(r.route)) names.push(r.route);
  const zero = { requestsPerSecond: 0, errorRatio: 0, p99Ms: 0 };
  const series = (name) => samples(node).map((s) => (s.routes || []).find((r) => r.route === name) || zero);
  names.sort((a, b) => {
    const last = (name) => series(name).slice(-1)[0].requestsPerSecond;
    return last(b) - last(a) || a.localeCompare(b);
  });
  fill('traffic-routes', names.slice(0, 12).map((name) => chartRow(name, series(name), { 'data-route': name })),
    names.length ? null : el('p', { class: 'hint' }, 'No requests in the last minutes.'));
}

// ---- views -------------------------------------------------------------------------------

function showView() {
  const view = (location.hash || '#cluster').slice(1).split('?')[0] || 'cluster';
  state.view = document.getElementById(`view-${view}`) ? view : 'cluster';
  for (const v of document.querySelectorAll('.view')) v.classList.toggle('active', v.id === `view-${state.view}`);
  for (const a of document.querySelectorAll('#tabs a')) a.classList.toggle('active', a.dataset.view === state.view);
  if (state.view === 'history' && state.data) renderHistory(state.data);
}

function start() {
  window.addEventListener('hashchange', showView);
  showView();
  document.getElementById('compare').addEventListener('click', () => compare());
  document.getElementById('traffic-node').addEventListener('change', (e) => {
    state.trafficNode = Number(e.target.value);
    render();
  });
  document.getElementById('token-save').addEventListener('click', () => {
    const value = document.getElementById('token').value.trim();
    if (value) sessionStorage.setItem(TOKEN_KEY, value);
    else sessionStorage.removeItem(TOKEN_KEY);
    poll();
  });
  poll();
  setInterval(poll, POLL_MS);
}

document.addEventListener('DOMContentLoaded', start);
