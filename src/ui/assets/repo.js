// A repository: its tags (digest, media type, size), sorted and filtered in the page,
// paged from the server, with pull commands by tag and by digest.
import { h, view, api, bytes, short, table, pullCommands, breadcrumbs, text } from './dom.js';

export async function repoView(el, params, current) {
  const name = params.get('name') || '';
  const tags = [];
  let next = null;
  const sort = { key: 'tag', desc: false, by: null };
  let chosen = null;
  const filter = h('input', { type: 'search', placeholder: 'Filter tags', 'aria-label': 'Filter tags', id: 'filter' });
  const tableBox = h('div', { id: 'tags' });
  const more = h('button', { type: 'button', id: 'more' }, 'Load more tags');
  const summary = h('span', { class: 'note', id: 'summary' });
  const pull = h('div', { class: 'card', id: 'pull' });

  sort.by = (key) => {
    sort.desc = sort.key === key ? !sort.desc : false;
    sort.key = key;
    render();
  };

  async function load() {
    const page = await api('tags', { repo: name, last: next });
    tags.push(...page.tags);
    next = page.next;
    if (!chosen && tags.length) chosen = tags.find((t) => t.tag === 'latest') || tags[0];
    render();
  }

  function render() {
    const q = filter.value.trim().toLowerCase();
    const rows = tags.filter((t) => !q || t.tag.toLowerCase().includes(q));
    rows.sort((a, b) => {
      const x = a[sort.key], y = b[sort.key];
      const c = typeof x === 'number' ? x - y : String(x).localeCompare(String(y));
      return sort.desc ? -c : c;
    });
    const columns = [
      { key: 'tag', label: 'Tag', sortable: true,
        render: (t) => h('a', { href: view('manifest', { repo: name, ref: t.tag }), class: 'tag' }, t.tag) },
      { key: 'digest', label: 'Digest', render: (t) => h('a', { class: 'mono', href: view('manifest', { repo: name, ref: t.digest }), title: t.digest }, short(t.digest)) },
      { key: 'mediaType', label: 'Media type', sortable: true, wide: true },
      { key: 'size', label: 'Size', sortable: true, num: true, render: (t) => bytes(t.size) },
      { key: 'pull', label: '', render: (t) => h('button', { type: 'button', onclick: () => { chosen = t; renderPull(); } }, 'Pull') },
    ];
    tableBox.replaceChildren(rows.length ? table(columns, rows, sort)
      : h('p', { class: 'note' }, q ? 'No tag matches the filter.' : 'This repository has no tags.'));
    more.hidden = !next;
    summary.textContent = `${tags.length}${next ? '+' : ''} tags`;
    renderPull();
  }

  function renderPull() {
    if (!chosen) { pull.hidden = true; return; }
    pull.hidden = false;
    pull.replaceChildren(h('h2', {}, 'Pull ', h('code', {}, text(chosen.tag))),
      pullCommands(name, [':' + chosen.tag, '@' + chosen.digest]));
  }

  filter.addEventListener('input', render);
  more.addEventListener('click', () => load().catch((e) => { summary.textContent = e.message; }));
  el.append(breadcrumbs(name, view('repo', { name })), h('h1', {}, name),
    h('div', { class: 'tools' }, filter, summary), tableBox, h('div', { class: 'tools' }, more), pull);
  await load();
  if (!current()) return;
}
