// Events: the change feed, live over server-sent events, resumed after a reconnect from
// the last event id seen (Last-Event-ID), so nothing is missed or shown twice.
import {events} from '../api.js';
import {h, replace, fmtTime} from '../dom.js';

export const live = false; // the stream updates the page itself

const KEEP = 500;

function summary(e) {
  const skip = new Set(['id', 'index', 'seq', 'type', 'ts']);
  return Object.entries(e).filter(([k]) => !skip.has(k))
    .map(([k, v]) => `${k}=${typeof v === 'object' ? JSON.stringify(v) : v}`).join(' ');
}

export async function render(ctx) {
  const types = h('input', {id: 'f-types', placeholder: 'types, e.g. job_scaled,node_drain', 'aria-label': 'event types'});
  const text = h('input', {id: 'f-event-text', type: 'search', placeholder: 'text in the event', 'aria-label': 'text'});
  const state = h('span', {id: 'stream-state', class: 'muted'});
  const list = h('tbody', {id: 'event-rows'});
  const seen = [];
  let conn = null;

  const matches = (e) => !text.value || JSON.stringify(e).includes(text.value);
  const row = (e) => h('tr', {class: 'event', 'data-id': e.id, 'data-type': e.type},
    h('td', {}, e.id), h('td', {}, fmtTime(e.ts)), h('td', {}, h('span', {class: 'badge'}, e.type)),
    h('td', {}, summary(e)));
  const redraw = () => replace(list, seen.filter(matches).slice().reverse().map(row));
  const connect = () => {
    if (conn) conn.stop();
    seen.length = 0;
    redraw();
    const kinds = types.value.split(',').map((s) => s.trim()).filter(Boolean).join(',');
    // From the start of the buffer the server keeps; later, after the last id seen.
    const url = '/v1/events?follow=true' + (kinds ? '&type=' + encodeURIComponent(kinds) : '');
    conn = events(url, (type, data) => {
      if (type === 'truncated') {
        state.textContent = `older events are gone (oldest index ${data.oldest_index})`;
        return;
      }
      seen.push(data);
      if (seen.length > KEEP) seen.shift();
      if (matches(data)) {
        list.prepend(row(data));
        while (list.children.length > KEEP) list.lastChild.remove();
      }
    }, (s) => { state.textContent = s + (conn && conn.lastId ? ` (last event ${conn.lastId})` : ''); });
  };
  types.addEventListener('change', connect);
  text.addEventListener('input', redraw);
  ctx.cleanup = () => conn && conn.stop();
  replace(ctx.root,
    h('h1', {}, 'Events'),
    h('div', {class: 'filters'}, types, text,
      h('button', {type: 'button', id: 'reconnect', title: 'drop the connection and resume after the last event',
        onclick: () => conn && conn.drop()}, 'Reconnect'), ' ', state),
    h('table', {}, h('thead', {}, h('tr', {}, ['id', 'time', 'type', 'details'].map((t) => h('th', {}, t)))), list));
  connect();
}
