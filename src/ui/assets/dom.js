// DOM helpers. Every string shown is set as text (a Text node or an attribute value):
// nothing pushed to the registry is ever parsed as HTML or run as script.

// Control characters shown as U+FFFD, so a tag or label cannot disturb the layout.
const CONTROL = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f]/g;

export function text(v) {
  return String(v ?? '').replace(CONTROL, '\uFFFD');
}

// h('a', {href: '#/x', class: 'y'}, 'child', node, [more]) -> an element.
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'href') el.setAttribute('href', safeHref(v));
    else el.setAttribute(k, text(v));
  }
  add(el, children);
  return el;
}

export function add(el, children) {
  for (const c of [children].flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(text(c)));
  }
  return el;
}

// Only links this UI builds: a view of the page or a path of this server.
function safeHref(v) {
  const s = String(v);
  return s.startsWith('#') || (s.startsWith('/') && !s.startsWith('//')) ? s : '#';
}

// A link to one of the UI's views.
export function view(name, params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params || {})) if (v) q.set(k, v);
  const qs = q.toString();
  return '#/' + name + (qs ? '?' + qs : '');
}

export function bytes(n) {
  if (typeof n !== 'number') return '';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i === 0 ? n : n.toFixed(1)) + ' ' + units[i];
}

// A Unix time as "3 h ago" with the exact UTC time as its title; "—" when unknown.
export function when(secs) {
  if (typeof secs !== 'number') return h('span', { class: 'note', title: 'not recorded' }, '—');
  const ago = Math.max(0, Date.now() / 1000 - secs);
  const [n, unit] = ago < 60 ? [ago, 's'] : ago < 3600 ? [ago / 60, 'min'] : ago < 86400 ? [ago / 3600, 'h'] : [ago / 86400, 'd'];
  return h('time', { datetime: new Date(secs * 1000).toISOString(), title: new Date(secs * 1000).toISOString() },
    `${Math.floor(n)} ${unit} ago`);
}

export function short(digest) {
  const s = String(digest || '');
  const at = s.indexOf(':');
  return at < 0 ? s : s.slice(0, at + 13);
}

// The visitor as the server knows it: identity (null when anonymous), CSRF token, and how
// one may log in. Loaded by app.js before any view, refreshed after log-in and log-out.
export const me = { identity: null, csrf: '', login: { password: false, token: false } };

export async function loadSession() {
  Object.assign(me, await api('session'));
  return me;
}

// Calls the UI's JSON API; a failure throws an Error with the server's message.
export async function api(call, params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params || {})) if (v) q.set(k, v);
  return answer(await fetch('api/' + call + '?' + q, {
    credentials: 'same-origin', headers: { Accept: 'application/json' },
  }));
}

// A state-changing call (login, logout, delete): JSON body and the session's CSRF token.
export async function post(call, body) {
  return answer(await fetch('api/' + call, {
    method: 'POST', credentials: 'same-origin',
    headers: { Accept: 'application/json', 'Content-Type': 'application/json', 'X-CSRF-Token': me.csrf },
    body: JSON.stringify(body || {}),
  }));
}

async function answer(r) {
  let body = null;
  try { body = await r.json(); } catch (_) { body = null; }
  if (!r.ok) {
    const e = new Error((body && body.errors && body.errors[0] && body.errors[0].message) || r.statusText);
    e.status = r.status;
    throw e;
  }
  return body;
}

export function errorBox(e) {
  const hint = e.status === 403 ? ' Your identity may not do this.' : '';
  return h('div', { class: 'card error', role: 'alert' }, text(e.message) + hint,
    e.status === 401 ? [' ', h('a', { href: view('login', { next: location.hash }), id: 'login-hint' }, 'Log in')] : null);
}

// Asks before deleting: a card with the question and two buttons; `yes` runs on confirming
// and its error is shown in the card.
export function confirmDelete(box, question, yes) {
  const status = h('span', { class: 'note', role: 'status' });
  const go = h('button', { type: 'button', class: 'danger', id: 'confirm-delete' }, 'Delete');
  const cancel = h('button', { type: 'button', id: 'cancel-delete', onclick: () => box.replaceChildren() }, 'Cancel');
  go.addEventListener('click', async () => {
    go.disabled = true;
    try { await yes(); box.replaceChildren(); } catch (e) {
      go.disabled = false;
      status.replaceChildren(errorBox(e));
    }
  });
  box.replaceChildren(h('div', { class: 'card confirm', role: 'alertdialog', id: 'confirm' },
    h('p', {}, question), h('div', { class: 'tools' }, go, cancel), status));
  go.focus();
}

// A sortable, filterable table: columns [{key, label, num, wide, render}].
export function table(columns, rows, sort) {
  const thead = h('tr', {}, columns.map((c) => {
    const cls = [c.num ? 'num' : '', c.wide ? 'wide' : '', c.sortable ? 'sortable' : '',
      sort && sort.key === c.key ? 'sorted' + (sort.desc ? ' desc' : '') : ''].join(' ').trim();
    return h('th', { class: cls || null, onclick: c.sortable && sort ? () => sort.by(c.key) : null }, c.label);
  }));
  const body = rows.map((r) => h('tr', {}, columns.map((c) =>
    h('td', { class: [c.num ? 'num' : '', c.wide ? 'wide' : ''].join(' ').trim() || null },
      c.render ? c.render(r) : text(r[c.key])))));
  return h('div', { class: 'scroll' }, h('table', {}, h('thead', {}, thead), h('tbody', {}, body)));
}

// Copyable pull commands for `refs` (":tag", "@sha256:...") of repository `name`, for one
// client at a time (docker, podman, oras), chosen with the buttons above them.
const TOOLS = ['docker', 'podman', 'oras'];
let tool = TOOLS[0];

export function pullCommands(name, refs) {
  const host = location.host;
  const box = h('div', { class: 'pull-box' });
  const render = () => {
    const tabs = h('div', { class: 'tabs', role: 'tablist' }, TOOLS.map((t) => h('button', {
      type: 'button', role: 'tab', class: t === tool ? 'tab on' : 'tab', 'aria-selected': String(t === tool),
      onclick: () => { tool = t; render(); },
    }, t)));
    const lines = refs.map((ref) => `${tool} pull ${host}/${name}${ref}`);
    box.replaceChildren(tabs, h('div', { class: 'pull' }, lines.map((l) => [
      h('code', {}, l),
      h('button', { type: 'button', onclick: (ev) => copy(l, ev.target) }, 'Copy'),
    ])));
  };
  render();
  return box;
}

function copy(line, button) {
  const done = () => { button.textContent = 'Copied'; };
  if (navigator.clipboard) navigator.clipboard.writeText(line).then(done, () => { button.textContent = 'Select and copy'; });
}

export function breadcrumbs(name, last) {
  const parts = name ? name.split('/') : [];
  const out = [h('a', { href: view('repos', {}) }, 'repositories')];
  parts.forEach((p, i) => {
    const ns = parts.slice(0, i + 1).join('/');
    out.push(' / ');
    out.push(i === parts.length - 1 && last ? h('a', { href: last }, p) : h('a', { href: view('repos', { ns }) }, p));
  });
  return h('div', { class: 'crumbs' }, out);
}

// What a mirrored namespace is (`mirror` of the tags call, an entry of `mirrors` of the
// repositories call): of which registry, through which upstreams, and that what is listed
// under it is what is cached here.
export function mirrorCard(m) {
  const days = (s) => (s % 86400 === 0 ? `${s / 86400} d` : s % 3600 === 0 ? `${s / 3600} h` : `${s} s`);
  return h('div', { class: 'card mirror', id: 'mirror' },
    h('h2', {}, h('span', { class: 'badge mirror' }, 'mirror'), ' of ', h('code', {}, m.registry)),
    h('p', {}, 'Upstream: ', m.upstreams.map((u, i) => [i ? ', ' : '', h('code', {}, u)])),
    h('p', { class: 'note' }, 'Listed under ', h('code', {}, m.namespace + '/'),
      ' is what is cached here: tags and manifests pulled through this registry. ',
      'Anything else is fetched from the upstream at its first pull. ',
      `A cached tag is checked upstream again after ${days(m.tagFreshnessSecs)}`,
      m.evictAfterSecs ? `; content not pulled for ${days(m.evictAfterSecs)} is evicted.` : '; nothing is evicted.',
      m.writable ? ' Clients may also push here.' : ' Read-only: nothing can be pushed or deleted here.'));
}
