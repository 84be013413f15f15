// Nodes: capacity and use as bars, status, drain on and off with a deadline, labels.
import {api, get, path} from '../api.js';
import {actionButton, ago, badge, bar, h, replace, table} from '../dom.js';

export async function render(ctx) {
  const {session} = ctx;
  const {nodes} = await get('/v1/nodes?stale=true');
  const canDrain = session.can('node:write');
  if (!ctx.deadline) ctx.deadline = 60;

  const drainCell = (n) => {
    if (!canDrain) return n.drain ? 'draining' : '';
    const deadline = h('input', {type: 'number', min: 0, max: 604800, value: ctx.deadline,
      class: 'deadline', title: 'deadline in seconds', 'aria-label': `drain deadline of ${n.name}`,
      oninput: (e) => { ctx.deadline = Number(e.target.value); }});
    return h('span', {class: 'drain'},
      n.drain ? null : [deadline, 's '],
      actionButton(n.drain ? 'End drain' : 'Drain', async () => {
        await api('POST', path`/v1/nodes/${n.name}/drain`,
          n.drain ? {enable: false} : {enable: true, deadline_s: ctx.deadline});
        await ctx.refresh();
        return n.drain ? 'drain ended' : 'draining';
      }, {class: n.drain ? '' : 'warn', 'data-node': n.name}));
  };
  // Keep a half-typed deadline: do not rebuild while the user is in one of the inputs.
  if (ctx.root.contains(document.activeElement) && document.activeElement.tagName === 'INPUT') return;
  replace(ctx.root,
    h('h1', {}, 'Nodes'),
    table([
      ['name', (n) => h('strong', {}, n.name)],
      ['status', (n) => [badge(n.status), n.drain ? [' ', badge('draining')] : null,
        n.eligible === false && !n.drain ? [' ', badge('ineligible')] : null]],
      // Reserved (what placement counts) and, from the leader, measured (what runs uses).
      ['cpu', (n) => [bar(n.capacity.cpu - n.free.cpu, n.capacity.cpu, 'cores reserved'),
        n.measured ? bar(n.measured.cpu, n.capacity.cpu, 'cores used') : null]],
      ['memory', (n) => [bar(n.capacity.memory_mb - n.free.memory_mb, n.capacity.memory_mb, 'MB reserved'),
        n.measured ? bar(n.measured.memory_mb, n.capacity.memory_mb, 'MB used') : null]],
      ['allocations', (n) => h('a', {href: '#/allocations?node=' + encodeURIComponent(n.name)}, String(n.allocations))],
      ['labels', (n) => Object.entries(n.labels || {}).map(([k, v]) => h('span', {class: 'label'}, `${k}=${v}`))],
      ['heartbeat', (n) => ago(n.last_heartbeat)],
      ['drain', (n) => [drainCell(n), n.drain && n.drain_deadline ? h('div', {class: 'muted'}, 'deadline ' + new Date(n.drain_deadline * 1000).toLocaleTimeString()) : null]],
    ], nodes, (n) => ({class: 'node', 'data-name': n.name})));
}
