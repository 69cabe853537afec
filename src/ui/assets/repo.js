// A repository: its tags (digest, media type, size, immutable marker), sorted and filtered
// in the page, paged from the server, with pull commands by tag and by digest, and a delete
// button (with a confirmation) on the tags the visitor's identity may delete. In a mirror
// namespace, what it mirrors: the tags listed are what is cached.
import { h, view, api, post, bytes, short, table, pullCommands, breadcrumbs, text, confirmDelete, mirrorCard } from './dom.js';

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
  const confirmBox = h('div', { id: 'confirm-box' });
  const notice = h('p', { class: 'note', id: 'notice', role: 'status' });
  const mirrorBox = h('div', {});

  sort.by = (key) => {
    sort.desc = sort.key === key ? !sort.desc : false;
    sort.key = key;
    render();
  };

  async function load() {
    const page = await api('tags', { repo: name, last: next });
    tags.push(...page.tags);
    next = page.next;
    if (page.mirror && !mirrorBox.firstChild) mirrorBox.append(mirrorCard(page.mirror));
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
        render: (t) => [h('a', { href: view('manifest', { repo: name, ref: t.tag }), class: 'tag' }, t.tag),
          t.immutable ? [' ', h('span', { class: 'badge lock', title: t.immutable }, 'immutable')] : null] },
      { key: 'digest', label: 'Digest', render: (t) => h('a', { class: 'mono', href: view('manifest', { repo: name, ref: t.digest }), title: t.digest }, short(t.digest)) },
      { key: 'mediaType', label: 'Media type', sortable: true, wide: true },
      { key: 'size', label: 'Size', sortable: true, num: true, render: (t) => bytes(t.size) },
      { key: 'pull', label: '', render: (t) => h('span', { class: 'actions' },
        h('button', { type: 'button', onclick: () => { chosen = t; renderPull(); } }, 'Pull'),
        t.deletable && !t.immutable ? h('button', { type: 'button', class: 'danger delete', 'data-tag': t.tag, onclick: () => ask(t) }, 'Delete') : null,
        t.deletable && t.immutable ? h('span', { class: 'note why', title: t.immutable }, 'immutable: cannot be deleted') : null) },
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

  // Deletes a tag after asking; the manifest it names stays, reachable by its digest.
  function ask(t) {
    notice.textContent = '';
    confirmDelete(confirmBox, ['Delete the tag ', h('code', {}, text(t.tag)), ' of ', name,
      '? Pulls by this tag will fail; the manifest stays, by its digest.'], async () => {
      await post('delete', { repo: name, ref: t.tag });
      tags.splice(tags.indexOf(t), 1);
      if (chosen === t) chosen = tags[0] || null;
      notice.textContent = `Deleted the tag ${text(t.tag)}.`;
      render();
    });
  }

  filter.addEventListener('input', render);
  more.addEventListener('click', () => load().catch((e) => { summary.textContent = e.message; }));
  el.append(breadcrumbs(name, view('repo', { name })), h('h1', {}, name), mirrorBox,
    h('div', { class: 'tools' }, filter, summary), confirmBox, notice, tableBox, h('div', { class: 'tools' }, more), pull);
  await load();
  if (!current()) return;
}
