// The UI's router: the view is chosen by the URL's fragment (#/repos, #/repo, #/manifest),
// so the page itself always lives at the UI's path and needs no server route per view.
import { errorBox } from './dom.js';
import { reposView } from './repos.js';
import { repoView } from './repo.js';
import { manifestView } from './manifest.js';

const main = document.getElementById('main');
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
    else await reposView(el, params, current);
  } catch (e) {
    if (current()) el.replaceChildren(errorBox(e));
  }
  if (current()) el.dataset.ready = 'true';
}

window.addEventListener('hashchange', route);
route();
