// One job: its spec, counts and current deployment's progress, its allocations, its
// versions with a diff between any two; scale, stop, revert and edit where allowed.
import {ApiError, api, get, path} from '../api.js';
import yaml from '../vendor/js-yaml.mjs';
import {actionButton, ago, badge, diff, diffTable, h, replace, table} from '../dom.js';

const SPEC_SKIP = new Set(['namespace', 'name', 'version', 'status', 'created_at', 'updated_at',
  'modify_index', 'deployment', 'counts', 'allocations']);

export function specOf(jobView) {
  return Object.fromEntries(Object.entries(jobView).filter(([k]) => !SPEC_SKIP.has(k)));
}

function progress(job) {
  const d = job.deployment;
  const current = job.allocations.filter((a) => a.version === job.version);
  const placed = current.filter((a) => a.node).length;
  const running = current.filter((a) => a.state === 'running').length;
  const healthy = current.filter((a) => a.state === 'running' && a.health !== 'unhealthy' && a.health !== 'starting').length;
  const failed = current.filter((a) => a.state === 'failed').length;
  const want = job.counts.desired;
  const step = (label, n) => h('div', {class: 'step', 'data-step': label},
    h('div', {class: 'bar-track'}, h('div', {class: 'bar-fill low', 'data-pct': want ? Math.min(100, (n / want) * 100).toFixed(0) : 100})),
    h('span', {}, `${label} ${n} / ${want}`));
  return h('div', {class: 'deployment', id: 'deployment'},
    h('div', {}, d ? ['Deployment of version ', d.version, ' from ', d.from_version, ': ', badge(d.status),
      d.status === 'running' && d.deadline ? ` (deadline ${new Date(d.deadline * 1000).toLocaleTimeString()})` : '',
      d.reverted_from ? ` (reverts the failed version ${d.reverted_from})` : '']
      : ['Version ', job.version, ': no rollout under way']),
    h('div', {class: 'steps'}, step('placed', placed), step('running', running), step('healthy', healthy),
      failed ? h('span', {class: 'error'}, `${failed} failed`) : null));
}

function versionsPanel(ctx, versions, canRevert, job) {
  if (!ctx.pick) ctx.pick = {a: versions[1]?.version ?? versions[0]?.version, b: versions[0]?.version};
  const byNo = Object.fromEntries(versions.map((v) => [v.version, v]));
  const choose = (key) => h('select', {id: 'diff-' + key, 'aria-label': `version ${key}`,
    onchange: (e) => { ctx.pick[key] = Number(e.target.value); ctx.refresh(); }},
  versions.map((v) => h('option', {value: v.version, selected: v.version === ctx.pick[key]}, `v${v.version}`)));
  const a = byNo[ctx.pick.a];
  const b = byNo[ctx.pick.b];
  return h('div', {id: 'versions'},
    table([
      ['version', (v) => `v${v.version}`],
      ['submitted', (v) => ago(v.submitted_at)],
      ['stable', (v) => (v.stable ? 'yes' : 'no')],
      ['count', (v) => v.spec.count],
      ['', (v) => (canRevert && v.version !== job.version
        ? actionButton('Revert to this', async () => {
          await api('POST', path`/v1/jobs/${job.namespace}/${job.name}/revert`, {version: v.version});
          await ctx.refresh();
          return `reverted to v${v.version}`;
        }, {'data-version': v.version}) : '')],
    ], versions),
    versions.length > 1 ? h('div', {class: 'diff'}, h('h3', {}, 'Diff ', choose('a'), ' → ', choose('b')),
      a && b ? diffTable(diff(a.spec, b.spec)) : null) : null);
}

export async function render(ctx) {
  const [ns, name] = ctx.params;
  const {session} = ctx;
  if (ctx.root.contains(document.activeElement) && ['INPUT', 'SELECT'].includes(document.activeElement.tagName)) return;
  let job;
  let versions;
  try {
    ({job} = await get(path`/v1/jobs/${ns}/${name}`));
    ({versions} = await get(path`/v1/jobs/${ns}/${name}/versions`));
  } catch (e) {
    if (!(e instanceof ApiError) || e.status !== 404) throw e;
    // A stopped job is removed once none of its processes run.
    replace(ctx.root, h('h1', {}, h('a', {href: '#/jobs'}, 'Jobs'), ' / ', `${ns}/${name}`),
      h('p', {id: 'job-gone'}, 'No such job (a stopped job is removed once its processes have ended).'));
    return;
  }
  const canScale = session.can('scale-job', ns);
  const canSubmit = session.can('submit-job', ns);
  const scaleTo = h('input', {type: 'number', min: 0, value: job.count, id: 'scale-count', 'aria-label': 'count'});
  const actions = h('div', {class: 'actions'},
    canScale && job.status === 'running' ? h('span', {class: 'scale'}, 'Count ', scaleTo, ' ',
      actionButton('Scale', async () => {
        await api('POST', path`/v1/jobs/${ns}/${name}/scale`, {count: Number(scaleTo.value)});
        await ctx.refresh();
        return `scaled to ${scaleTo.value}`;
      }, {id: 'scale'})) : null,
    canSubmit ? h('a', {class: 'button', href: `#/run/${encodeURIComponent(ns)}/${encodeURIComponent(name)}`, id: 'edit'}, 'Edit') : null,
    canSubmit && job.status === 'running' ? actionButton('Stop job', async () => {
      if (!window.confirm(`Stop job ${ns}/${name}?`)) return 'kept';
      await api('DELETE', path`/v1/jobs/${ns}/${name}`);
      await ctx.refresh();
      return 'stopping';
    }, {id: 'stop', class: 'danger'}) : null);
  replace(ctx.root,
    h('h1', {}, h('a', {href: '#/jobs'}, 'Jobs'), ' / ', `${ns}/${name} `, badge(job.status)),
    actions,
    progress(job),
    h('h2', {}, 'Allocations'),
    table([
      ['id', (a) => h('a', {href: '#/allocations/' + encodeURIComponent(a.id)}, a.id)],
      ['version', (a) => a.version],
      ['node', (a) => a.node || '-'],
      ['state', (a) => badge(a.state)],
      ['health', (a) => a.health || '-'],
      ['restarts', (a) => a.restarts],
      ['exit', (a) => a.signal || (a.exit_code ?? '')],
      ['why', (a) => a.pending_reason || a.reason || a.message || ''],
    ], job.allocations, (a) => ({class: 'alloc', 'data-state': a.state})),
    h('h2', {}, 'Versions'),
    versionsPanel(ctx, versions, canSubmit, job),
    h('h2', {}, 'Spec'),
    h('pre', {class: 'spec', id: 'spec'}, yaml.dump(specOf(job), {noRefs: true})));
}
