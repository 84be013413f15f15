// Cluster: every replica's role, term, lag and health, the leader, a health summary, and the
// cluster health score with every reason that lowers it (GET /v1/health/score, operator:read).
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
  // The score is a read of its own: a token without operator:read sees the page without it.
  const health = session.can('operator:read')
    ? await get('/v1/health/score?stale=true').catch(() => null) : null;

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
    health ? scoreSection(health) : h('p', {class: 'muted', id: 'health-score'},
      'Health score: needs operator:read.'),
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

// The score as a card, and each reason with its penalty (text nodes only: the reasons name
// nodes, namespaces and jobs, which are user data).
function scoreSection(health) {
  const level = health.score >= 90 ? 'ok' : health.score >= 60 ? 'warn' : 'bad';
  const reasons = health.reasons.length
    ? table([
      ['reason', (r) => h('strong', {}, r.reason)],
      ['penalty', (r) => '-' + r.penalty],
      ['count', (r) => String(r.count)],
      ['items', (r) => (r.items || []).join(', ')],
    ], health.reasons, (r) => ({class: 'health-reason', 'data-reason': r.reason}))
    : h('p', {class: 'muted'}, 'Nothing lowers the score.');
  return h('section', {id: 'health-score', 'data-score': String(health.score)},
    h('div', {class: 'cards'},
      h('div', {class: 'card ' + level},
        h('div', {class: 'card-value', id: 'health-score-value'}, `${health.score} / 100`),
        h('div', {class: 'card-label'}, 'health score'))),
    reasons);
}
