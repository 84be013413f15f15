// Allocations: every allocation the token may read, with state, restarts and exit cause.
import {get} from '../api.js';
import {ago, badge, h, replace, table} from '../dom.js';

export function exitCause(a) {
  if (a.signal) return `signal ${a.signal}`;
  if (a.exit_code !== null && a.exit_code !== undefined) return `exit ${a.exit_code}`;
  return '';
}

function build(ctx) {
  const f = ctx.filters = {
    state: h('select', {id: 'f-state', 'aria-label': 'state'}, h('option', {value: ''}, 'any state'),
      ['pending', 'starting', 'running', 'paused', 'exited', 'failed', 'lost', 'stopped', 'complete']
        .map((s) => h('option', {value: s}, s))),
    text: h('input', {id: 'f-text', type: 'search', placeholder: 'job, node or id', 'aria-label': 'filter',
      value: ctx.query.get('node') || ctx.query.get('job') || ''}),
  };
  for (const el of Object.values(f)) el.addEventListener('input', () => ctx.refresh());
  ctx.list = h('div', {id: 'alloc-list'});
  replace(ctx.root, h('h1', {}, 'Allocations'), h('div', {class: 'filters'}, f.state, f.text), ctx.list);
}

export async function render(ctx) {
  if (!ctx.filters) build(ctx);
  const {allocations} = await get('/v1/allocations?stale=true');
  const {state, text} = ctx.filters;
  const t = text.value.trim();
  const shown = allocations
    .filter((a) => (!state.value || a.state === state.value)
      && (!t || [a.id, a.job, a.node || '', `${a.namespace}/${a.job}`].some((s) => s.includes(t))))
    .sort((a, b) => (b.updated_at || 0) - (a.updated_at || 0));
  replace(ctx.list, table([
    ['id', (a) => h('a', {href: '#/allocations/' + encodeURIComponent(a.id)}, a.id)],
    ['job', (a) => h('a', {href: `#/jobs/${encodeURIComponent(a.namespace)}/${encodeURIComponent(a.job)}`}, `${a.namespace}/${a.job}`)],
    ['version', (a) => a.version],
    ['node', (a) => a.node || '-'],
    ['state', (a) => badge(a.state)],
    ['restarts', (a) => a.restarts],
    ['exit cause', (a) => exitCause(a)],
    ['cpu', (a) => (a.metrics ? `${a.metrics.cpu_percent.toFixed(1)}%` : '-')],
    ['updated', (a) => ago(a.updated_at)],
  ], shown, (a) => ({class: 'alloc', 'data-id': a.id, 'data-state': a.state})));
}
