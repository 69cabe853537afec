// The UI's router: the view is chosen by the URL's fragment (#/repos, #/repo, #/manifest,
// #/login), so the page itself always lives at the UI's path and needs no server route per
// view. The visitor's session is loaded first: the header shows who is logged in.
import { h, errorBox, me, loadSession, post, view } from './dom.js';
import { reposView } from './repos.js';
import { repoView } from './repo.js';
import { manifestView } from './manifest.js';
import { loginView } from './login.js';

const main = document.getElementById('main');
const user = document.getElementById('user');
let shown = 0;

async function route() {
  const hash = location.hash.replace(/^#\/?/, '');
  const at = hash.indexOf('?');
  const name = at < 0 ? hash : hash.slice(0, at);
  const params = new URLSearchParams(at < 0 ? '' : hash.slice(at + 1));
  const token = ++shown;
  const el = document.createElement('div');
  el.className = 'view';
  el.dataset.view = name || 'repos';
  main.replaceChildren(el);
  // A view renders into its own element; a later navigation replaces it, and a view that
  // finishes after that is not shown.
  const current = () => token === shown;
  try {
    if (name === 'repo') await repoView(el, params, current);
    else if (name === 'manifest') await manifestView(el, params, current);
    else if (name === 'login') await loginView(el, params, current, start);
    else await reposView(el, params, current);
  } catch (e) {
    if (current()) el.replaceChildren(errorBox(e));
  }
  if (current()) el.dataset.ready = 'true';
}

// Who is logged in, and the way to log in or out.
function header() {
  if (me.identity) {
    const out = h('button', { type: 'button', id: 'logout' }, 'Log out');
    out.addEventListener('click', async () => {
      out.disabled = true;
      try { await post('logout'); } catch (_) { /* the cookie is gone either way */ }
      await start('#/');
    });
    user.replaceChildren(h('span', { id: 'who', title: 'logged in with ' + me.identity.via }, me.identity.name), out);
  } else if (me.login.password || me.login.token) {
    user.replaceChildren(h('a', { href: view('login', { next: location.hash }), id: 'login-link' }, 'Log in'));
  } else {
    user.replaceChildren();
  }
}

// Loads the session, draws the header, and shows `hash` (or the current view).
async function start(hash) {
  try { await loadSession(); } catch (e) { main.replaceChildren(errorBox(e)); return; }
  header();
  if (hash !== undefined && location.hash !== hash) location.hash = hash;
  else await route();
}

window.addEventListener('hashchange', () => { header(); route(); });
start();
