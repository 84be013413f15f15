// Cluster: every replica's role, term, lag and health, the leader, and a health summary.
import {get} from '../api.js';
import {badge, h, replace, table} from '../dom.js';

export async function render(ctx) {
  const {session} = ctx;
  const [members, ready] = await Promise.all([
    get('/v1/status/members'),
    fetch('/v1/health/ready').then((r) => r.json()),
  ]);
  const nodes = session.can('node:read') ? (await get('/v1/nodes?stale=true')).nodes : null;
  const jobs = (await get('/v1/jobs?stale=true')).jobs;
  const allocs = (await get('/v1/allocations?stale=true')).allocations;

  const healthy = members.members.filter((m) => m.reachable && m.healthy).length;
  const byState = {};
  for (const a of allocs) byState[a.state] = (byState[a.state] || 0) + 1;
  const failing = (byState.failed || 0) + (byState.lost || 0);
  const summary = [
    ['leader', members.leader || 'none', members.leader ? 'ok' : 'bad'],
    ['replicas healthy', `${healthy} / ${members.members.length}`,
      healthy === members.members.length ? 'ok' : healthy * 2 > members.members.length ? 'warn' : 'bad'],
    ['this replica', `${ready.id} (${ready.ready ? 'ready' : 'not ready'})`, ready.ready ? 'ok' : 'bad'],
    nodes ? ['nodes ready', `${nodes.filter((n) => n.status === 'ready').length} / ${nodes.length}`,
      nodes.every((n) => n.status === 'ready') ? 'ok' : 'warn'] : null,
    ['jobs', String(jobs.length), 'ok'],
    ['allocations running', `${byState.running || 0} / ${allocs.length}`, 'ok'],
    ['allocations failed or lost', String(failing), failing ? 'warn' : 'ok'],
  ].filter(Boolean);

  replace(ctx.root,
    h('h1', {}, 'Cluster'),
    h('div', {class: 'cards', id: 'health-summary'}, summary.map(([k, v, level]) =>
      h('div', {class: 'card ' + level}, h('div', {class: 'card-value'}, v), h('div', {class: 'card-label'}, k)))),
    h('h2', {}, 'Replicas'),
    table([
      ['id', (m) => h('strong', {}, m.id)],
      ['role', (m) => badge(m.role || 'unreachable')],
      ['term', (m) => m.term ?? '-'],
      ['commit', (m) => m.commit_index ?? '-'],
      ['applied', (m) => m.applied_index ?? '-'],
      ['lag', (m) => m.lag ?? '-'],
      ['health', (m) => badge(!m.reachable ? 'unreachable' : m.healthy ? 'healthy' : 'unhealthy')],
      ['api', (m) => m.api],
      ['note', (m) => m.error || m.storage_error || ''],
    ], members.members, (m) => ({class: 'replica', 'data-id': m.id, 'data-role': m.role || 'unreachable'})),
    h('p', {class: 'muted'}, `Asked through replica ${members.asked}.`));
}
