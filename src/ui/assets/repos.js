// Repositories: a tree by namespace (the names under `ns`, grouped by their next segment),
// each folder with its count of repositories and each repository at this level with its
// stored size, a filter box over what is loaded, and paging on the catalog listing.
// Mirrored namespaces are marked, and inside one the page says what it mirrors. A level that
// a quota meters shows the namespace's usage against it.
import { h, view, api, bytes, breadcrumbs, mirrorCard } from './dom.js';

// Repositories of one level whose stored size is asked for (one call each, in turn).
const SIZES_SHOWN_MAX = 50;

export async function reposView(el, params, current) {
  const ns = (params.get('ns') || '').replace(/\/+$/, '');
  const names = [];
  let next = null;
  const filter = h('input', { type: 'search', placeholder: 'Filter repositories', 'aria-label': 'Filter repositories', id: 'filter' });
  const list = h('div', { id: 'repo-list' });
  const more = h('button', { type: 'button', id: 'more' }, 'Load more');
  const summary = h('span', { class: 'note', id: 'summary' });
  const mirrorBox = h('div', {});
  const quotaBox = h('p', { class: 'note', id: 'quota' });
  const mirrors = new Map();
  // name -> its `size` answer (null when it could not be had).
  const sizes = new Map();
  let sizing = false;

  // The stored size of the repositories at this level, one call at a time (the server
  // serves a worker's UI calls in turn anyway), re-rendering as each arrives.
  async function fillSizes() {
    if (sizing) return;
    sizing = true;
    try {
      const prefix = ns ? ns + '/' : '';
      const leaves = names.filter((n) => !n.slice(prefix.length).includes('/')).slice(0, SIZES_SHOWN_MAX);
      for (const n of leaves) {
        if (sizes.has(n)) continue;
        if (!current()) return;
        sizes.set(n, await api('size', { repo: n }).catch(() => null));
        render();
      }
    } finally {
      sizing = false;
    }
  }

  async function load() {
    const page = await api('repositories', { ns, last: next });
    names.push(...page.repositories);
    next = page.next;
    for (const m of page.mirrors || []) mirrors.set(m.namespace, m);
    const inside = [...mirrors.values()].filter((m) => ns === m.namespace || ns.startsWith(m.namespace + '/')).pop();
    if (inside && !mirrorBox.firstChild) mirrorBox.append(mirrorCard(inside));
    if (page.quota) quotaBox.textContent = quotaText(page.quota);
    render();
  }

  function render() {
    const q = filter.value.trim().toLowerCase();
    const prefix = ns ? ns + '/' : '';
    const items = [];
    if (q) {
      for (const n of names) if (n.toLowerCase().includes(q)) items.push(repoItem(n, n, sizes.get(n)));
    } else {
      const folders = new Map();
      for (const n of names) {
        const rest = n.slice(prefix.length);
        const slash = rest.indexOf('/');
        if (slash < 0) items.push(repoItem(n, rest, sizes.get(n)));
        else {
          const seg = rest.slice(0, slash);
          folders.set(seg, (folders.get(seg) || 0) + 1);
        }
      }
      const folderItems = [...folders].map(([seg, count]) => h('li', { class: 'folder' },
        h('span', { class: 'icon' }, '\u25B8'),
        h('a', { href: view('repos', { ns: prefix + seg }) }, seg + '/'),
        mirrors.has(prefix + seg) ? [' ', h('span', { class: 'badge mirror', title: 'mirror of ' + mirrors.get(prefix + seg).registry }, 'mirror')] : null,
        h('span', { class: 'count' }, `${count}${next ? '+' : ''} repositor${count === 1 ? 'y' : 'ies'}`)));
      items.unshift(...folderItems);
    }
    list.replaceChildren(items.length ? h('ul', { class: 'tree' }, items)
      : h('p', { class: 'note' }, q ? 'No repository matches the filter.' : 'No repositories here yet.'));
    more.hidden = !next;
    summary.textContent = `${names.length}${next ? '+' : ''} repositories${ns ? ' under ' + ns + '/' : ''}`;
  }

  filter.addEventListener('input', render);
  more.addEventListener('click', () => load().then(fillSizes).catch((e) => { summary.textContent = e.message; }));
  el.append(breadcrumbs(ns), h('h1', {}, ns ? ns + '/' : 'Repositories'), mirrorBox, quotaBox,
    h('div', { class: 'tools' }, filter, summary), list, h('div', { class: 'tools' }, more));
  await load();
  if (!current()) return;
  fillSizes();
}

// "Quota of team/: 1.2 MB of 10 MB (12 %); 3 of 100 manifests".
function quotaText(q) {
  const parts = [];
  if (q.quotaBytes != null) {
    const pct = q.quotaBytes ? Math.round((100 * q.usageBytes) / q.quotaBytes) : 100;
    parts.push(`${bytes(q.usageBytes)} of ${bytes(q.quotaBytes)} (${pct} %)`);
  } else parts.push(bytes(q.usageBytes));
  if (q.quotaManifests != null) parts.push(`${q.usageManifests} of ${q.quotaManifests} manifests`);
  return `Quota of ${q.namespace ? q.namespace + '/' : 'all repositories'}: ${parts.join('; ')}`;
}

function repoItem(name, label, size) {
  return h('li', { class: 'repo' }, h('span', { class: 'icon' }, '\u25A0'),
    h('a', { href: view('repo', { name }) }, label),
    size ? h('span', { class: 'count size', title: `${size.blobs} blobs and ${size.manifests} manifests` },
      bytes(size.bytes) + (size.complete ? '' : '+')) : null);
}
