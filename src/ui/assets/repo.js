// A repository: its tags (digest, media type, size, pushed and last pulled times, immutable
// and retention markers), sorted and filtered in the page, paged from the server, with pull
// commands by tag and by digest, and a delete button (with a confirmation) on the tags the
// visitor's identity may delete; its retention rules and what the next pass would delete;
// its untagged manifests. In a mirror namespace, what it mirrors: the tags listed are what
// is cached.
import { h, view, api, post, bytes, short, when, table, pullCommands, breadcrumbs, text, confirmDelete, mirrorCard } from './dom.js';

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
  const retentionBox = h('div', { id: 'retention' });
  const untaggedBox = h('div', { id: 'untagged' });
  // Digest -> true when the next retention pass would delete it (a preview; empty without rules).
  const due = new Map();
  let stored = null;

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
      // Unknown times (null) sort as the oldest.
      const x = a[sort.key] ?? -Infinity, y = b[sort.key] ?? -Infinity;
      const c = typeof x === 'number' ? x - y : String(x).localeCompare(String(y));
      return sort.desc ? -c : c;
    });
    const columns = [
      { key: 'tag', label: 'Tag', sortable: true,
        render: (t) => [h('a', { href: view('manifest', { repo: name, ref: t.tag }), class: 'tag' }, t.tag),
          t.immutable ? [' ', h('span', { class: 'badge lock', title: t.immutable }, 'immutable')] : null,
          due.get(t.digest) ? [' ', h('span', { class: 'badge due', title: 'no retention rule keeps it: the next retention pass deletes it' }, 'retention: due')] : null] },
      { key: 'digest', label: 'Digest', render: (t) => h('a', { class: 'mono', href: view('manifest', { repo: name, ref: t.digest }), title: t.digest }, short(t.digest)) },
      { key: 'mediaType', label: 'Media type', sortable: true, wide: true },
      { key: 'size', label: 'Size', sortable: true, num: true, render: (t) => bytes(t.size) },
      { key: 'pushed', label: 'Pushed', sortable: true, render: (t) => when(t.pushed) },
      { key: 'pulled', label: 'Last pulled', sortable: true, render: (t) => when(t.pulled) },
      { key: 'pull', label: '', render: (t) => h('span', { class: 'actions' },
        h('button', { type: 'button', onclick: () => { chosen = t; renderPull(); } }, 'Pull'),
        t.deletable && !t.immutable ? h('button', { type: 'button', class: 'danger delete', 'data-tag': t.tag, onclick: () => ask(t) }, 'Delete') : null,
        t.deletable && t.immutable ? h('span', { class: 'note why', title: t.immutable }, 'immutable: cannot be deleted') : null) },
    ];
    tableBox.replaceChildren(rows.length ? table(columns, rows, sort)
      : h('p', { class: 'note' }, q ? 'No tag matches the filter.' : 'This repository has no tags.'));
    more.hidden = !next;
    summary.textContent = `${tags.length}${next ? '+' : ''} tags` + (stored
      ? ` \u00b7 ${bytes(stored.bytes)}${stored.complete ? '' : '+'} stored (${stored.blobs} blobs, ${stored.manifests} manifests)` : '');
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

  // The rules that judge this repository, and what the next pass would delete now.
  async function loadRetention() {
    const r = await api('retention', { repo: name });
    if (!r) return;
    for (const d of r.due || []) due.set(d.digest, true);
    retentionBox.replaceChildren(h('div', { class: 'card' }, h('h2', {}, 'Retention'),
      h('p', { class: 'note' }, 'The retention pass deletes the manifests no rule keeps. Rules:'),
      h('ul', {}, r.rules.map((rule) => h('li', {}, h('code', {}, rule)))),
      h('p', { class: 'note' }, r.due === null
        ? `This repository has more than ${r.revisionsMax} manifests: what the next pass deletes is not previewed here.`
        : `${r.due.length} manifest${r.due.length === 1 ? '' : 's'} would be deleted by the next pass now (tags marked "retention: due").`)));
    render();
  }

  // Manifests no tag names: index children, referrers, images whose tag moved.
  const untagged = [];
  let untaggedNext = null;
  async function loadUntagged() {
    const page = await api('untagged', { repo: name, last: untaggedNext });
    if (!page.available) {
      untaggedBox.replaceChildren(h('h2', {}, 'Untagged manifests'),
        h('p', { class: 'note' }, `Not listed here: the repository has more than ${page.tagsMax} tags.`));
      return;
    }
    untagged.push(...page.manifests);
    untaggedNext = page.next;
    const moreUntagged = h('button', { type: 'button', id: 'more-untagged', hidden: !untaggedNext,
      onclick: () => loadUntagged().catch((e) => { untaggedBox.append(h('p', { class: 'note' }, e.message)); }) }, 'More untagged manifests');
    untaggedBox.replaceChildren(h('h2', {}, 'Untagged manifests'),
      untagged.length ? table([
        { key: 'digest', label: 'Digest', render: (m) => [h('a', { class: 'mono', href: view('manifest', { repo: name, ref: m.digest }), title: m.digest }, short(m.digest)),
          due.get(m.digest) ? [' ', h('span', { class: 'badge due' }, 'retention: due')] : null] },
        { key: 'mediaType', label: 'Media type', wide: true },
        { key: 'size', label: 'Size', num: true, render: (m) => bytes(m.size) },
        { key: 'pushed', label: 'Pushed', render: (m) => when(m.pushed) },
        { key: 'pulled', label: 'Last pulled', render: (m) => when(m.pulled) },
      ], untagged) : h('p', { class: 'note' }, untaggedNext ? 'None among the first manifests examined.' : 'Every manifest has a tag.'),
      h('div', { class: 'tools' }, moreUntagged));
  }

  filter.addEventListener('input', render);
  more.addEventListener('click', () => load().catch((e) => { summary.textContent = e.message; }));
  el.append(breadcrumbs(name, view('repo', { name })), h('h1', {}, name), mirrorBox,
    h('div', { class: 'tools' }, filter, summary), confirmBox, notice, tableBox, h('div', { class: 'tools' }, more), pull,
    retentionBox, untaggedBox);
  await load();
  if (!current()) return;
  await Promise.all([loadRetention(), loadUntagged(),
    api('size', { repo: name }).then((s) => { stored = s; render(); }).catch(() => {})]);
  if (!current()) return;
}
