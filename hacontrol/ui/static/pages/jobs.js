// Jobs: the list with filters, and counts by state over what the filters keep.
import {get} from '../api.js';
import {badge, h, replace, table} from '../dom.js';

const STATES = ['running', 'starting', 'pending', 'paused', 'failed', 'lost', 'exited', 'stopped', 'complete'];

function build(ctx) {
  const f = ctx.filters = {
    namespace: h('select', {id: 'f-namespace', 'aria-label': 'namespace'}, h('option', {value: ''}, 'all namespaces')),
    status: h('select', {id: 'f-status', 'aria-label': 'status'}, h('option', {value: ''}, 'any status'),
      ['running', 'stopping', 'complete'].map((s) => h('option', {value: s}, s))),
    name: h('input', {id: 'f-name', type: 'search', placeholder: 'name contains', 'aria-label': 'name'}),
  };
  for (const el of Object.values(f)) el.addEventListener('input', () => ctx.refresh());
  ctx.counts = h('div', {class: 'cards', id: 'job-counts'});
  ctx.list = h('div', {id: 'job-list'});
  replace(ctx.root,
    h('h1', {}, 'Jobs',
      ctx.session.canAnywhere('submit-job') ? h('a', {class: 'button', href: '#/run', id: 'run-job'}, 'Run a job') : null),
    h('div', {class: 'filters'}, f.namespace, f.status, f.name),
    ctx.counts, ctx.list);
}

export async function render(ctx) {
  if (!ctx.filters) build(ctx);
  const {jobs} = await get('/v1/jobs?stale=true');
  const f = ctx.filters;
  const namespaces = [...new Set(jobs.map((j) => j.namespace))].sort();
  const chosen = f.namespace.value;
  replace(f.namespace, h('option', {value: ''}, 'all namespaces'),
    namespaces.map((n) => h('option', {value: n, selected: n === chosen}, n)));
  const text = f.name.value.trim().toLowerCase();
  const shown = jobs.filter((j) => (!chosen || j.namespace === chosen)
    && (!f.status.value || j.status === f.status.value)
    && (!text || j.name.toLowerCase().includes(text)));
  const totals = {};
  for (const j of shown) for (const s of STATES) totals[s] = (totals[s] || 0) + (j.counts[s] || 0);
  replace(ctx.counts,
    h('div', {class: 'card'}, h('div', {class: 'card-value'}, String(shown.length)), h('div', {class: 'card-label'}, 'jobs')),
    STATES.filter((s) => totals[s] || ['running', 'pending', 'failed'].includes(s)).map((s) =>
      h('div', {class: 'card s-' + s, 'data-state': s}, h('div', {class: 'card-value'}, String(totals[s] || 0)),
        h('div', {class: 'card-label'}, s))));
  replace(ctx.list, table([
    ['namespace', (j) => j.namespace],
    ['name', (j) => h('a', {href: `#/jobs/${encodeURIComponent(j.namespace)}/${encodeURIComponent(j.name)}`}, j.name)],
    ['type', (j) => j.type],
    ['status', (j) => badge(j.status)],
    ['version', (j) => j.version],
    ['desired', (j) => j.counts.desired],
    ['running', (j) => j.counts.running || 0],
    ['pending', (j) => (j.counts.pending || 0) + (j.counts.starting || 0)],
    ['failed', (j) => j.counts.failed || 0],
    ['deployment', (j) => (j.deployment ? badge(j.deployment.status) : '')],
  ], shown, (j) => ({class: 'job', 'data-name': j.name})));
}
