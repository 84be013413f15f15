// Building the page: elements are made with createElement and text nodes only (no HTML
// is ever parsed), so data from the cluster can never become markup.

const SVG = 'http://www.w3.org/2000/svg';

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  setAttrs(el, attrs);
  append(el, children);
  return el;
}

function setAttrs(el, attrs) {
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

export function svg(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  append(el, children);
  return el;
}

export function replace(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

export function table(columns, rows, rowAttrs = () => ({})) {
  return h('table', {},
    h('thead', {}, h('tr', {}, columns.map(([title]) => h('th', {}, title)))),
    h('tbody', {}, rows.length === 0
      ? h('tr', {}, h('td', {colspan: columns.length, class: 'empty'}, 'none'))
      : rows.map((r) => h('tr', rowAttrs(r), columns.map(([, cell]) => h('td', {}, cell(r)))))));
}

export function badge(state) {
  return h('span', {class: 'badge s-' + String(state || 'none').replace(/[^a-z-]/g, '')}, state ?? '-');
}

// A horizontal bar: `used` of `total`, with the numbers beside it.
export function bar(used, total, label) {
  const pct = total > 0 ? Math.min(100, Math.max(0, (used / total) * 100)) : 0;
  const level = pct > 90 ? 'high' : pct > 70 ? 'mid' : 'low';
  return h('div', {class: 'bar', title: `${label}: ${pct.toFixed(0)}%`},
    h('div', {class: 'bar-track'}, h('div', {class: 'bar-fill ' + level, 'data-pct': pct.toFixed(0)})),
    h('span', {class: 'bar-text'}, `${fmtNum(used)} / ${fmtNum(total)} ${label}`));
}

// Bars are sized with a class per 5% step (the policy forbids inline styles).
export function sizeBars(root) {
  for (const el of root.querySelectorAll('.bar-fill[data-pct]')) {
    el.classList.add('w' + Math.round(Number(el.dataset.pct) / 5) * 5);
  }
}

// A small line chart of `values` (numbers or null, for no sample), newest last. With `xs`
// (one time per value) and `span` [from, to] the x axis is time, so gaps and a short
// history show as such; otherwise the values are spread evenly.
export function sparkline(values, {width = 220, height = 48, max = null, label = '', topLabel = '',
                                   xs = null, span = null} = {}) {
  const top = max ?? Math.max(1e-9, ...values.filter((v) => v !== null && v !== undefined));
  const n = Math.max(values.length - 1, 1);
  const x = (i) => (xs && span ? ((xs[i] - span[0]) / Math.max(1e-9, span[1] - span[0])) * width
    : (i / n) * width);
  const xy = values.map((v, i) => [i, v]).filter(([, v]) => v !== null && v !== undefined)
    .map(([i, v]) => [x(i).toFixed(1), (height - (v / top) * (height - 2) - 1).toFixed(1)]);
  return svg('svg', {class: 'spark', width, height, viewBox: `0 0 ${width} ${height}`, role: 'img',
                     'aria-label': label},
    svg('rect', {x: 0, y: 0, width, height, class: 'spark-bg'}),
    topLabel ? svg('text', {x: 3, y: 10, class: 'spark-top'}, topLabel) : null,
    xy.length > 1 ? svg('polyline', {points: xy.map((p) => p.join(',')).join(' '), class: 'spark-line'}) : null,
    xy.length === 1 ? svg('circle', {cx: xy[0][0], cy: xy[0][1], r: 2, class: 'spark-dot'}) : null);
}

export function fmtNum(n) {
  if (n === null || n === undefined) return '-';
  return Number.isInteger(n) ? String(n) : Number(n).toFixed(2);
}

export function fmtBytes(b) {
  if (b === null || b === undefined) return '-';
  const units = ['B', 'KiB', 'MiB', 'GiB'];
  let i = 0;
  while (b >= 1024 && i < units.length - 1) { b /= 1024; i += 1; }
  return `${b.toFixed(i ? 1 : 0)} ${units[i]}`;
}

export function fmtTime(ts) {
  if (!ts) return '-';
  return new Date(ts * 1000).toLocaleTimeString([], {hour12: false});
}

export function ago(ts) {
  if (!ts) return '-';
  const s = Math.max(0, Date.now() / 1000 - ts);
  if (s < 90) return `${s.toFixed(0)}s ago`;
  if (s < 5400) return `${(s / 60).toFixed(0)}m ago`;
  return `${(s / 3600).toFixed(1)}h ago`;
}

export function link(href, text) { return h('a', {href}, text); }

// A button that runs `action` once at a time, and shows its failure next to it.
export function actionButton(text, action, attrs = {}) {
  const out = h('span', {class: 'action-result'});
  const btn = h('button', {type: 'button', ...attrs, onclick: async () => {
    btn.disabled = true;
    out.textContent = '';
    out.className = 'action-result';
    try {
      const msg = await action();
      out.textContent = msg || 'done';
    } catch (e) {
      out.textContent = e.message;
      out.className = 'action-result error';
    } finally {
      btn.disabled = false;
    }
  }}, text);
  return h('span', {class: 'action'}, btn, out);
}

// Flatten a value into dotted paths, for field-by-field diffs of job specs.
export function flatten(value, prefix = '', out = {}) {
  if (value !== null && typeof value === 'object' && !Array.isArray(value) && Object.keys(value).length) {
    for (const [k, v] of Object.entries(value)) flatten(v, prefix ? `${prefix}.${k}` : k, out);
  } else {
    out[prefix] = value;
  }
  return out;
}

export function diff(a, b) {
  const fa = flatten(a);
  const fb = flatten(b);
  const keys = [...new Set([...Object.keys(fa), ...Object.keys(fb)])].sort();
  return keys.filter((k) => JSON.stringify(fa[k]) !== JSON.stringify(fb[k]))
    .map((k) => ({field: k, old: fa[k], new: fb[k]}));
}

export function diffTable(rows) {
  const show = (v) => (v === undefined ? '(absent)' : JSON.stringify(v));
  return table([['field', (r) => r.field], ['old', (r) => h('code', {class: 'old'}, show(r.old))],
                ['new', (r) => h('code', {class: 'new'}, show(r.new))]], rows);
}
