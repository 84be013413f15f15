// One allocation: state, restarts, exit cause, CPU and memory over the last minutes, and
// the live tail of its stdout and stderr.
import {api, get, path, stream} from '../api.js';
import {actionButton, ago, badge, fmtBytes, h, replace, sparkline} from '../dom.js';
import {exitCause} from './allocations.js';

const KEEP_S = 600; // the leader keeps ten minutes (observe/history.py); it says so
const MAX_LOG_CHARS = 200000;

// The leader's history of the allocation's CPU and memory: all of it on the first render,
// then only the points after the last one held. Points arrive when the values change, so
// each holds until the next, and the last until the server's `now`.
async function loadHistory(ctx, id) {
  const last = ctx.series.length ? ctx.series[ctx.series.length - 1].t : null;
  const res = await get(path`/v1/allocations/${id}/metrics` + (last === null ? '' : `?since=${last}`));
  for (const p of res.points) ctx.series.push({t: p.t, cpu: p.cpu_percent, rss: p.rss_bytes});
  if (ctx.fromHistory === undefined) ctx.fromHistory = res.points.length;
  ctx.window = res.window_s || KEEP_S;
  ctx.now = res.now;
  ctx.kept = res.kept;
  if (!res.kept) ctx.leaderApi = /^https?:\/\//.test(res.leader_api || '') ? res.leader_api : null;
  // Keep the point before the window: it is the value when the window starts.
  const from = res.now - ctx.window;
  while (ctx.series.length > 1 && ctx.series[1].t <= from) ctx.series.shift();
  return ctx.series;
}

// A step line of `key` over [now - window, now]: (x, value) pairs for sparkline.
function steps(series, key, from, now) {
  const xs = [];
  const values = [];
  series.forEach((p, i) => {
    const end = i + 1 < series.length ? series[i + 1].t : now;
    xs.push(Math.max(p.t, from), Math.max(end, from));
    values.push(p[key], p[key]);
  });
  return {xs, values};
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
  ctx.series = [];
  replace(ctx.root,
    h('h1', {}, h('a', {href: '#/allocations'}, 'Allocations'), ' / ', alloc.id),
    controls, ctx.info, h('h2', {id: 'charts-title'}, `CPU and memory, up to the last ${KEEP_S / 60} minutes`), ctx.charts, h('h2', {}, 'Logs'),
    ctx.session.can('read-logs', alloc.namespace)
      ? h('div', {class: 'logs'}, logPane(ctx, alloc.id, 'stdout'), logPane(ctx, alloc.id, 'stderr'))
      : h('p', {class: 'muted'}, 'This token may not read logs here.'));
}

export async function render(ctx) {
  const [id] = ctx.params;
  const {allocation: a} = await get(path`/v1/allocations/${id}`);
  if (!ctx.info) build(ctx, a);
  const seen = await loadHistory(ctx, a.id);
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
  const last = seen.length ? seen[seen.length - 1] : {cpu: null, rss: null};
  const limitBytes = a.resources.memory_mb ? a.resources.memory_mb * 1048576 : null;
  // Scaled to what was seen (with headroom), so a small process still draws a line; the
  // top of each chart is labelled.
  const cpuTop = Math.max(5, 1.25 * Math.max(0, ...seen.map((s) => s.cpu || 0)));
  const memTop = Math.max(1048576, 1.25 * Math.max(0, ...seen.map((s) => s.rss || 0)));
  // The x axis spans the history there is (at least a minute, at most the window), so a
  // young allocation's chart is not a sliver at the right edge.
  const from = Math.min(ctx.now - 60, Math.max(ctx.now - ctx.window, seen.length ? seen[0].t : ctx.now));
  const spanText = `, last ${Math.round((ctx.now - from) / 60)} min`;
  const chart = (key, opts) => {
    const {xs, values} = steps(seen, key, from, ctx.now);
    return sparkline(values, {xs, span: [from, ctx.now], ...opts});
  };
  // data-points: what the chart draws; data-history: how many came with the first load.
  const stats = {'data-points': seen.length, 'data-history': ctx.fromHistory};
  replace(ctx.charts,
    h('figure', {id: 'chart-cpu', ...stats}, chart('cpu', {label: 'cpu percent', max: cpuTop, topLabel: `${cpuTop.toFixed(0)}%`}),
      h('figcaption', {}, `CPU ${last.cpu === null ? '-' : last.cpu.toFixed(1) + '%'} (100% = one core)${spanText}`)),
    h('figure', {id: 'chart-memory', ...stats}, chart('rss', {label: 'resident memory', max: memTop, topLabel: fmtBytes(memTop)}),
      h('figcaption', {}, `memory ${fmtBytes(last.rss)}${limitBytes ? ' of ' + fmtBytes(limitBytes) : ''}${spanText}`)),
    ctx.kept ? null : h('p', {class: 'muted', id: 'no-metrics'}, 'No metrics here: only the leader keeps the agents\' reports. ',
      ctx.leaderApi ? h('a', {href: `${ctx.leaderApi}/ui/#/allocations/${encodeURIComponent(a.id)}`}, 'Open this page on the leader') : null),
    ctx.kept && !seen.length ? h('p', {class: 'muted', id: 'no-metrics'}, 'No metrics yet: an allocation that does not run has none.') : null);
}
