// Run or edit a job from YAML or JSON, with a plan preview (a dry run of the scheduler)
// before submitting. Submitting after a plan sends its job_modify_index as check_index, so
// the server refuses (409) when the job changed since the preview.
import {ApiError, api, get, path} from '../api.js';
import {diffTable, h, replace, table} from '../dom.js';
import yaml from '../vendor/js-yaml.mjs';
import {specOf} from './job.js';

export const live = false; // nothing here changes by itself; the editor must keep its text

const EXAMPLE = `command: [sleep, "3600"]
count: 1
resources: {cpu: 0.1, memory_mb: 64}
`;

function parse(text) {
  // JSON is YAML, so one parser reads both; the server checks the result field by field.
  const spec = yaml.load(text, {schema: yaml.CORE_SCHEMA});
  if (spec === null || typeof spec !== 'object' || Array.isArray(spec)) {
    throw new Error('the spec must be a mapping of fields');
  }
  return spec;
}

function showPlan(plan) {
  const c = plan.changes || {};
  return h('div', {id: 'plan-result'},
    h('div', {class: 'cards'}, ['create', 'replace', 'stop', 'ignore', 'pending'].map((k) =>
      h('div', {class: 'card', 'data-change': k}, h('div', {class: 'card-value'}, String(c[k] ?? 0)), h('div', {class: 'card-label'}, k)))),
    h('p', {class: plan.quota && plan.quota.ok === false ? 'error' : 'ok'},
      plan.quota ? (plan.quota.ok ? 'Quota: fits.' : `Quota: refused: ${plan.quota.reason}`) : ''),
    h('h3', {}, 'Changes to the spec'),
    diffTable(plan.diff || []),
    h('h3', {}, 'Placements'),
    table([['action', (p) => p.action], ['allocation', (p) => p.allocation || '-'],
           ['node', (p) => p.node || '-'], ['reason', (p) => p.reason]], plan.placements || []),
    h('p', {class: 'muted'}, `Planned at job modify index ${plan.job_modify_index}; submitting refuses if the job changed since.`));
}

export async function render(ctx) {
  const [ns0, name0] = ctx.params;
  const editing = ns0 !== null;
  let text = EXAMPLE;
  if (editing) {
    const {job} = await get(path`/v1/jobs/${ns0}/${name0}`);
    text = yaml.dump(specOf(job), {noRefs: true, sortKeys: false});
  }
  const ns = h('input', {id: 'job-namespace', value: ns0 || 'default', 'aria-label': 'namespace', readonly: editing});
  const name = h('input', {id: 'job-name', value: name0 || '', placeholder: 'job name', 'aria-label': 'name', readonly: editing});
  const area = h('textarea', {id: 'job-spec', rows: 22, cols: 80, spellcheck: 'false', 'aria-label': 'job spec'}, text);
  const out = h('div', {id: 'plan'});
  const msg = h('p', {id: 'editor-message', class: 'muted'});
  let planned = null; // the job_modify_index of the last preview of exactly this text
  area.addEventListener('input', () => { planned = null; });

  const target = () => {
    if (!name.value.trim()) throw new Error('name: required');
    return path`/v1/jobs/${ns.value.trim()}/${name.value.trim()}`;
  };
  const fail = (e) => {
    msg.className = 'error';
    msg.textContent = e.field ? `${e.field}: ${e.message}` : e.message;
  };
  const plan = async () => {
    msg.className = 'muted';
    msg.textContent = 'planning…';
    try {
      const spec = parse(area.value);
      const result = await api('POST', target() + '/plan', spec);
      planned = {index: result.job_modify_index, text: area.value};
      replace(out, showPlan(result));
      msg.textContent = 'Plan ready: review it, then submit.';
    } catch (e) {
      if (e instanceof ApiError && (e.status === 404 || e.status === 405) && e.field !== 'name') {
        // The route is missing (an older server): submitting still works, without a check.
        replace(out, h('p', {class: 'warn', id: 'plan-unavailable'}, 'plan preview unavailable'));
        msg.className = 'muted';
        msg.textContent = '';
        return;
      }
      fail(e);
    }
  };
  const submit = async () => {
    msg.className = 'muted';
    msg.textContent = 'submitting…';
    try {
      const spec = parse(area.value);
      const check = planned && planned.text === area.value ? `?check_index=${planned.index}` : '';
      const res = await api('PUT', target() + check, spec);
      msg.textContent = `Submitted: version ${res.job.version}${res.changed === false ? ' (unchanged)' : ''}.`;
      location.hash = `#/jobs/${encodeURIComponent(ns.value.trim())}/${encodeURIComponent(name.value.trim())}`;
    } catch (e) {
      if (e instanceof ApiError && e.status === 409 && planned) {
        planned = null;
        msg.className = 'error';
        msg.textContent = `${e.message}: the job changed since the plan; plan again.`;
        return;
      }
      fail(e);
    }
  };
  replace(ctx.root,
    h('h1', {}, editing ? `Edit ${ns0}/${name0}` : 'Run a job'),
    h('div', {class: 'filters'}, h('label', {}, 'Namespace ', ns), h('label', {}, 'Name ', name)),
    area,
    h('div', {class: 'actions'},
      h('button', {type: 'button', id: 'plan-button', onclick: plan}, 'Plan'),
      h('button', {type: 'button', id: 'submit-button', class: 'primary', onclick: submit}, 'Submit')),
    msg, out);
}
