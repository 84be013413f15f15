// One allocation: state, restarts, exit cause, CPU and memory over the last minutes, and
// the live tail of its stdout and stderr.
import {api, get, path, stream} from '../api.js';
import {actionButton, ago, badge, fmtBytes, h, replace, sparkline} from '../dom.js';
import {exitCause} from './allocations.js';

const KEEP_S = 300; // the charts show the last five minutes
const MAX_LOG_CHARS = 200000;
// Samples taken while the UI is open, by allocation id: the API answers a current value
// (the leader's latest report), so the history is what this tab has seen.
const history = new Map();

function sample(alloc) {
  const now = Date.now() / 1000;
  const seen = history.get(alloc.id) || [];
  const m = alloc.metrics;
  seen.push({t: now, cpu: m ? m.cpu_percent : null, rss: m ? m.rss_bytes : null});
  while (seen.length && seen[0].t < now - KEEP_S) seen.shift();
  history.set(alloc.id, seen);
  return seen;
}

function logPane(ctx, id, which) {
  const pre = h('pre', {class: 'log', id: 'log-' + which});
  const state = h('span', {class: 'muted'});
  let abort = null;
  const follow = h('input', {type: 'checkbox', id: 'follow-' + which, checked: true});
  const start = () => {
    if (abort) abort.abort();
    abort = new AbortController();
    pre.textContent = '';
    state.textContent = follow.checked ? 'following' : '';
    const q = `?stream=${which}&tail=200${follow.checked ? '&follow=true' : ''}`;
    stream(path`/v1/allocations/${id}/logs` + q, (text) => {
      const atEnd = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
      pre.textContent = (pre.textContent + text).slice(-MAX_LOG_CHARS);
      if (atEnd) pre.scrollTop = pre.scrollHeight;
    }, abort.signal).then(() => {
      state.textContent = 'ended';
    }).catch((e) => {
      if (e.name !== 'AbortError') state.textContent = e.message;
    });
  };
  follow.addEventListener('change', start);
  ctx.stops.push(() => abort && abort.abort());
  start();
  return h('div', {class: 'log-pane'}, h('h3', {}, which, ' ', h('label', {}, follow, ' follow'), ' ', state), pre);
}

function build(ctx, alloc) {
  ctx.stops = [];
  ctx.cleanup = () => ctx.stops.forEach((s) => s());
  ctx.info = h('div', {id: 'alloc-info'});
  // Carried to the agent that runs the allocation; offered only to a token that may.
  const control = (action, label) => actionButton(label, async () => {
    await api('POST', path`/v1/allocations/${alloc.id}/${action}`, {});
    await ctx.refresh();
    return `${action} sent`;
  }, {id: 'alloc-' + action});
  const controls = ctx.session.can('alloc-lifecycle', alloc.namespace)
    ? h('div', {class: 'actions', id: 'alloc-controls'}, control('restart', 'Restart'),
      control('pause', 'Pause'), control('resume', 'Resume')) : null;
  ctx.charts = h('div', {class: 'charts', id: 'charts'});
  replace(ctx.root,
    h('h1', {}, h('a', {href: '#/allocations'}, 'Allocations'), ' / ', alloc.id),
    controls, ctx.info, h('h2', {}, `CPU and memory, last ${KEEP_S / 60} minutes (as this tab sampled them)`), ctx.charts, h('h2', {}, 'Logs'),
    ctx.session.can('read-logs', alloc.namespace)
      ? h('div', {class: 'logs'}, logPane(ctx, alloc.id, 'stdout'), logPane(ctx, alloc.id, 'stderr'))
      : h('p', {class: 'muted'}, 'This token may not read logs here.'));
}

export async function render(ctx) {
  const [id] = ctx.params;
  const {allocation: a} = await get(path`/v1/allocations/${id}`);
  if (!ctx.info) build(ctx, a);
  const seen = sample(a);
  if (!a.metrics && ctx.leaderApi === undefined) {
    const st = await fetch('/v1/status').then((r) => r.json());
    const api = st.leader_api || '';
    ctx.leaderApi = st.role !== 'leader' && /^https?:\/\//.test(api) ? api : null;
  }
  const field = (k, v) => [h('dt', {}, k), h('dd', {}, v)];
  replace(ctx.info, h('dl', {class: 'facts'},
    field('job', h('a', {href: `#/jobs/${encodeURIComponent(a.namespace)}/${encodeURIComponent(a.job)}`}, `${a.namespace}/${a.job}`)),
    field('version', a.version),
    field('node', a.node || '-'),
    field('state', [badge(a.state), a.desired !== 'run' ? ` (desired ${a.desired})` : '']),
    field('health', a.health || '-'),
    field('pid', a.pid ?? '-'),
    field('restarts', a.restarts),
    field('exit cause', exitCause(a) || '-'),
    field('reason', a.pending_reason || a.reason || a.message || '-'),
    field('running since', ago(a.running_since)),
    field('resources', `${a.resources.cpu} cpu, ${a.resources.memory_mb} MB`)));
  const last = seen[seen.length - 1];
  const limitBytes = a.resources.memory_mb ? a.resources.memory_mb * 1048576 : null;
  // Scaled to what was seen (with headroom), so a small process still draws a line; the
  // top of each chart is labelled.
  const cpuTop = Math.max(5, 1.25 * Math.max(0, ...seen.map((s) => s.cpu || 0)));
  const memTop = Math.max(1048576, 1.25 * Math.max(0, ...seen.map((s) => s.rss || 0)));
  const axis = {xs: seen.map((s) => s.t), span: [last.t - KEEP_S, last.t]};
  replace(ctx.charts,
    h('figure', {id: 'chart-cpu'}, sparkline(seen.map((s) => s.cpu), {...axis, label: 'cpu percent', max: cpuTop, topLabel: `${cpuTop.toFixed(0)}%`}),
      h('figcaption', {}, `CPU ${last.cpu === null ? '-' : last.cpu.toFixed(1) + '%'} (100% = one core)`)),
    h('figure', {id: 'chart-memory'}, sparkline(seen.map((s) => s.rss), {...axis, label: 'resident memory', max: memTop, topLabel: fmtBytes(memTop)}),
      h('figcaption', {}, `memory ${fmtBytes(last.rss)}${limitBytes ? ' of ' + fmtBytes(limitBytes) : ''}`)),
    a.metrics ? null : h('p', {class: 'muted', id: 'no-metrics'}, 'No metrics here: an allocation that does not run has none, and only the leader keeps the agents\' reports. ',
      ctx.leaderApi ? h('a', {href: `${ctx.leaderApi}/ui/#/allocations/${encodeURIComponent(a.id)}`}, 'Open this page on the leader') : null));
}
