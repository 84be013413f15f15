// The shell: log in, find out what the token may do, and route between the pages.
import {ApiError, get, token} from './api.js';
import {h, replace, sizeBars} from './dom.js';
import * as cluster from './pages/cluster.js';
import * as nodes from './pages/nodes.js';
import * as jobs from './pages/jobs.js';
import * as job from './pages/job.js';
import * as editor from './pages/editor.js';
import * as allocations from './pages/allocations.js';
import * as allocation from './pages/allocation.js';
import * as events from './pages/events.js';

const REFRESH_MS = 2000;

// What the token may do (GET /v1/acl/tokens/self): the UI offers nothing else.
export const session = {
  token: null,
  cluster: new Set(),
  namespaces: {},
  can(action, ns) {
    if (this.token && this.token.type === 'management') return true;
    if (ns === undefined || ns === null) return this.cluster.has(action);
    return (this.namespaces[ns] || []).includes(action);
  },
  canAnywhere(action) {
    return this.token?.type === 'management'
      || Object.values(this.namespaces).some((acts) => acts.includes(action));
  },
};

const ROUTES = [
  [/^#\/cluster$/, cluster, () => []],
  [/^#\/nodes$/, nodes, () => []],
  [/^#\/jobs$/, jobs, () => []],
  [/^#\/jobs\/([^/]+)\/([^/]+)$/, job, (m) => [m[1], m[2]]],
  [/^#\/run$/, editor, () => [null, null]],
  [/^#\/run\/([^/]+)\/([^/]+)$/, editor, (m) => [m[1], m[2]]],
  [/^#\/allocations$/, allocations, () => []],
  [/^#\/allocations\/([^/]+)$/, allocation, (m) => [m[1]]],
  [/^#\/events$/, events, () => []],
];

const errorBox = () => document.getElementById('error');
let current = null; // {page, timer, ctx}

export function showError(e) {
  if (e instanceof ApiError && e.status === 401) { logout(); return; }
  errorBox().textContent = e ? String(e.message || e) : '';
}

async function loadSession() {
  const self = await get('/v1/acl/tokens/self');
  session.token = self.token;
  const perms = self.permissions || {cluster: [], namespaces: {}};
  session.cluster = new Set(perms.cluster);
  session.namespaces = perms.namespaces;
  // Pages whose reads the token may not make are not offered.
  const needs = {nodes: 'node:read', events: 'operator:read'};
  for (const a of document.querySelectorAll('#nav a')) {
    a.hidden = Boolean(needs[a.dataset.page]) && !session.can(needs[a.dataset.page]);
  }
  replace(document.getElementById('who'),
    h('span', {class: 'token-name'}, self.token.name || self.token.accessor_id),
    ' ', h('span', {class: 'badge'}, self.token.type));
}

function logout() {
  token.clear();
  stop();
  document.getElementById('nav').hidden = true;
  document.getElementById('logout').hidden = true;
  replace(document.getElementById('who'));
  replace(document.getElementById('view'));
  document.getElementById('login').hidden = false;
}

function stop() {
  if (!current) return;
  clearInterval(current.timer);
  if (current.ctx.cleanup) current.ctx.cleanup();
  current = null;
}

async function route() {
  stop();
  if (!location.hash || location.hash === '#/' || location.hash === '#') {
    location.hash = '#/cluster';
    return;
  }
  const [hashPath, query = ''] = location.hash.split('?');
  const found = ROUTES.map(([re, page, args]) => [hashPath.match(re), page, args])
    .find(([m]) => m);
  const view = document.getElementById('view');
  if (!found) { replace(view, h('p', {}, 'No such page.')); return; }
  const [m, page, args] = found;
  const params = args(m).map((p) => (p === null ? null : decodeURIComponent(p)));
  for (const a of document.querySelectorAll('#nav a')) {
    a.classList.toggle('active', location.hash.startsWith('#/' + a.dataset.page));
  }
  const root = h('section', {class: 'page'});
  replace(view, root);
  const ctx = {root, params, query: new URLSearchParams(query), session, showError,
               cleanup: null, refresh: null};
  current = {page, ctx, timer: null};
  const me = current;
  const tick = async () => {
    try {
      await page.render(ctx);
      sizeBars(root);
      if (current === me) showError(null);
    } catch (e) {
      if (current === me) showError(e);
    }
  };
  ctx.refresh = tick;
  await tick();
  if (page.live !== false && current === me) me.timer = setInterval(tick, REFRESH_MS);
}

async function start() {
  try {
    await loadSession();
  } catch (e) {
    if (e instanceof ApiError && (e.status === 401 || e.status === 403)) {
      token.clear();
      document.getElementById('login-error').textContent = e.message;
      document.getElementById('login').hidden = false;
      return;
    }
    showError(e);
    return;
  }
  document.getElementById('login').hidden = true;
  document.getElementById('nav').hidden = false;
  document.getElementById('logout').hidden = false;
  await route();
}

document.getElementById('login').addEventListener('submit', (ev) => {
  ev.preventDefault();
  token.set(document.getElementById('token').value.trim());
  document.getElementById('token').value = '';
  start();
});
document.getElementById('logout').addEventListener('click', logout);
window.addEventListener('hashchange', () => { if (session.token) route(); });

if (token.get()) start(); else document.getElementById('login').hidden = false;
