// The API as the CLI sees it: same routes, a bearer token, JSON errors naming the field.
// The token lives in sessionStorage: it is gone when the tab closes and other tabs do not
// share it.

const KEY = 'hacontrol-token';

export const token = {
  get: () => sessionStorage.getItem(KEY),
  set: (t) => sessionStorage.setItem(KEY, t),
  clear: () => sessionStorage.removeItem(KEY),
};

export class ApiError extends Error {
  constructor(status, body) {
    const e = (body && body.error) || {};
    super(e.message || `HTTP ${status}`);
    this.status = status;
    this.code = e.code;
    this.field = e.field;
  }
}

function headers(extra) {
  const h = {Accept: 'application/json', ...extra};
  const t = token.get();
  if (t) h.Authorization = 'Bearer ' + t;
  return h;
}

export function path(strings, ...values) {
  // A URL path with each value percent-encoded: path`/v1/jobs/${ns}/${name}`.
  return strings.reduce((acc, s, i) => acc + s + (i < values.length ? encodeURIComponent(values[i]) : ''), '');
}

export async function api(method, url, body) {
  const init = {method, headers: headers(body === undefined ? {} : {'Content-Type': 'application/json'})};
  if (body !== undefined) init.body = JSON.stringify(body);
  const resp = await fetch(url, init);
  let data = null;
  const text = await resp.text();
  try { data = text ? JSON.parse(text) : null; } catch { data = null; }
  if (!resp.ok) throw new ApiError(resp.status, data);
  return data;
}

export const get = (url) => api('GET', url);

// A streamed GET (logs in follow mode, the event stream): calls onText with each decoded
// chunk until the response ends or `signal` aborts. fetch, not EventSource: EventSource
// cannot send the Authorization header.
export async function stream(url, onText, signal, extra = {}) {
  const resp = await fetch(url, {headers: headers({Accept: '*/*', ...extra}), signal});
  if (!resp.ok) {
    let data = null;
    try { data = await resp.json(); } catch { data = null; }
    throw new ApiError(resp.status, data);
  }
  const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
  for (;;) {
    const {value, done} = await reader.read();
    if (done) return;
    onText(value);
  }
}

// Server-sent events over `stream`, reconnecting after a drop and resuming after the last
// event seen (the Last-Event-ID header, as the API documents). `on(type, data, id)` gets
// every event; `status(text)` is told about connection changes. Returns a stop function.
export function events(url, on, status, lastId = null) {
  const ctl = {stopped: false, abort: null, lastId};
  const run = async () => {
    let delay = 500;
    while (!ctl.stopped) {
      const abort = new AbortController();
      ctl.abort = abort;
      let buf = '';
      try {
        status('connected');
        const extra = ctl.lastId ? {'Last-Event-ID': ctl.lastId} : {};
        await stream(url, (text) => {
          buf += text;
          let cut;
          while ((cut = buf.indexOf('\n\n')) >= 0) {
            const block = buf.slice(0, cut);
            buf = buf.slice(cut + 2);
            const ev = {type: 'message', data: [], id: null};
            for (const line of block.split('\n')) {
              if (!line || line.startsWith(':')) continue;
              const i = line.indexOf(':');
              const field = i < 0 ? line : line.slice(0, i);
              const value = i < 0 ? '' : line.slice(i + 1).replace(/^ /, '');
              if (field === 'event') ev.type = value;
              else if (field === 'data') ev.data.push(value);
              else if (field === 'id') ev.id = value;
            }
            if (ev.id) ctl.lastId = ev.id;
            if (ev.data.length) on(ev.type, JSON.parse(ev.data.join('\n')), ev.id);
          }
          delay = 500;
        }, abort.signal, extra);
      } catch (e) {
        if (ctl.stopped) return;
        if (e instanceof ApiError && (e.status === 401 || e.status === 403)) {
          status('refused: ' + e.message);
          return;
        }
      }
      if (ctl.stopped) return;
      status(`reconnecting after ${ctl.lastId || 'the start'}`);
      await new Promise((r) => setTimeout(r, delay));
      delay = Math.min(delay * 2, 5000);
    }
  };
  run();
  return {
    stop() { ctl.stopped = true; if (ctl.abort) ctl.abort.abort(); },
    // Drop the connection (as a network failure would): the loop reconnects and resumes.
    drop() { if (ctl.abort) ctl.abort.abort(); },
    get lastId() { return ctl.lastId; },
  };
}
