// Log in: a username and password (checked as Basic credentials are, with the same limit on
// failures), or, where the registry accepts OIDC tokens, a pasted token. A session cookie
// is set by the server; this page never sees it.
import { h, add, me, post, text } from './dom.js';

export async function loginView(el, params, current, start) {
  const next = params.get('next') || '#/';
  const status = h('div', { id: 'login-status', role: 'status' });
  const done = (e) => status.replaceChildren(h('div', { class: 'card error', role: 'alert' }, text(e.message)));
  const forms = [];
  if (me.login.password) {
    const user = h('input', { id: 'username', name: 'username', autocomplete: 'username', required: true });
    const pass = h('input', { id: 'password', name: 'password', type: 'password', autocomplete: 'current-password', required: true });
    const form = h('form', { class: 'card login', id: 'password-login' },
      h('label', {}, 'Username', user), h('label', {}, 'Password', pass),
      h('button', { type: 'submit', id: 'login-submit' }, 'Log in'));
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      try { await post('login', { username: user.value, password: pass.value }); } catch (e) { done(e); return; }
      await start(next.startsWith('#/login') ? '#/' : next);
    });
    forms.push(form);
  }
  if (me.login.token) {
    const token = h('textarea', { id: 'token', name: 'token', rows: '4', spellcheck: 'false', required: true });
    const form = h('form', { class: 'card login', id: 'token-login' },
      h('label', {}, 'Token from your identity provider (OIDC)', token),
      h('button', { type: 'submit' }, 'Log in with token'));
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      try { await post('login', { token: token.value.trim() }); } catch (e) { done(e); return; }
      await start(next.startsWith('#/login') ? '#/' : next);
    });
    forms.push(form);
  }
  if (!current()) return;
  add(el, [h('h1', {}, 'Log in'),
    me.identity ? h('p', { class: 'note' }, 'You are logged in as ', h('b', {}, me.identity.name), '.') : null,
    forms.length ? forms : h('p', { class: 'note' }, 'This registry has no identities to log in as.'),
    status]);
}
