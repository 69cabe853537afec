// A manifest: an index's platforms (each leading to its child), an image's config and
// layers, annotations, and the referrers grouped by artifact type with badges.
import { h, add, view, api, post, bytes, short, table, pullCommands, breadcrumbs, text, confirmDelete } from './dom.js';

export async function manifestView(el, params, current) {
  const name = params.get('repo') || '';
  const ref = params.get('ref') || '';
  const m = await api('manifest', { repo: name, ref });
  if (!current()) return;
  const byTag = ref.includes(':') ? [] : [':' + ref];
  el.append(
    breadcrumbs(name, view('repo', { name })),
    h('h1', {}, name, byTag.length ? ':' + ref : '@' + short(m.digest)),
    h('div', { class: 'card' }, meta([
      ['Digest', h('span', { class: 'mono', id: 'digest' }, m.digest)],
      ['Kind', h('span', { id: 'kind' }, m.kind)],
      ['Media type', m.mediaType],
      ['Artifact type', m.artifactType],
      ['Size', bytes(m.size)],
      ['Subject', m.subject && h('a', { class: 'mono', href: view('manifest', { repo: name, ref: m.subject.digest }) }, short(m.subject.digest))],
    ])),
  );
  if (m.immutable) el.append(h('p', { class: 'note why', id: 'immutable' }, 'This tag is ' + m.immutable + '.'));
  if (m.deletable && !m.immutable) {
    const box = h('div', { id: 'confirm-box' });
    const what = byTag.length ? ['the tag ', h('code', {}, text(ref)), ' (the manifest stays, by its digest)']
      : ['the manifest ', h('code', {}, short(m.digest)), ' and every tag that names it'];
    const del = h('button', { type: 'button', class: 'danger', id: 'delete' }, byTag.length ? 'Delete tag' : 'Delete manifest');
    del.addEventListener('click', () => confirmDelete(box, ['Delete ', what, ' from ', name, '?'], async () => {
      await post('delete', { repo: name, ref: byTag.length ? ref : m.digest });
      location.hash = view('repo', { name });
    }));
    el.append(h('div', { class: 'tools' }, del), box);
  }
  if (m.truncated) el.append(h('p', { class: 'note' }, 'Some values were too long or too many and are shown cut short.'));
  el.append(h('h2', {}, 'Pull'), h('div', { class: 'card' }, pullCommands(name, [...byTag, '@' + m.digest])));
  if (m.kind === 'index') el.append(platforms(name, m.manifests));
  if (m.image) el.append(config(m.image));
  if (m.kind === 'image') el.append(layers(name, m.layers));
  if (m.annotations) el.append(h('h2', {}, 'Annotations'), h('div', { class: 'card', id: 'annotations' }, meta(Object.entries(m.annotations))));
  const refs = h('div', { id: 'referrers' });
  el.append(h('h2', {}, 'Referrers'), refs);
  await referrers(refs, name, m.digest, current);
}

// Characters of a value shown before it is folded behind a "show all" button.
const FOLD_CHARS = 300;

function meta(pairs) {
  return h('dl', { class: 'meta' }, pairs.filter(([, v]) => v !== null && v !== undefined && v !== '')
    .map(([k, v]) => [h('dt', {}, k), h('dd', {}, typeof v === 'object' && !(v instanceof Node) ? fold(JSON.stringify(v)) : fold(v))]));
}

function fold(v) {
  if (typeof v !== 'string' || v.length <= FOLD_CHARS) return v;
  const span = h('span', {}, v.slice(0, FOLD_CHARS) + '\u2026 ');
  const all = h('button', { type: 'button', class: 'fold', onclick: () => span.replaceChildren(text(v)) },
    `show all ${v.length} characters`);
  span.append(all);
  return span;
}

function platformName(p) {
  if (!p) return 'unknown platform';
  return [p.os, p.architecture, p.variant].filter(Boolean).join('/') + (p.osVersion ? ` (${p.osVersion})` : '');
}

function platforms(name, list) {
  const columns = [
    { key: 'platform', label: 'Platform', render: (d) => h('a', { class: 'platform', href: view('manifest', { repo: name, ref: d.digest }) },
      d.platform ? platformName(d.platform) : (d.artifactType || 'no platform')) },
    { key: 'digest', label: 'Digest', render: (d) => h('span', { class: 'mono', title: d.digest }, short(d.digest)) },
    { key: 'mediaType', label: 'Media type', wide: true },
    { key: 'size', label: 'Size', num: true, render: (d) => bytes(d.size) },
  ];
  return h('section', { id: 'platforms' }, h('h2', {}, `Platforms (${list.length})`), table(columns, list));
}

function config(c) {
  if (c.unavailable) return h('section', { id: 'config' }, h('h2', {}, 'Config'), h('p', { class: 'note' }, 'Config not shown: ' + c.unavailable));
  const list = (v) => Array.isArray(v) ? h('ul', { class: 'kv' }, v.map((x) => h('li', { class: 'mono' }, x))) : v;
  const cmd = (v) => Array.isArray(v) ? h('code', {}, JSON.stringify(v)) : v;
  const labels = c.labels && typeof c.labels === 'object' ? Object.entries(c.labels) : [];
  return h('section', { id: 'config' }, h('h2', {}, 'Config'),
    h('div', { class: 'card' }, meta([
      ['Created', c.created], ['Author', c.author],
      ['Platform', platformName({ os: c.os, architecture: c.architecture, variant: c.variant })],
      ['Entrypoint', cmd(c.entrypoint)], ['Command', cmd(c.cmd)],
      ['Working dir', c.workingDir], ['User', c.user],
      ['Ports', Array.isArray(c.exposedPorts) ? c.exposedPorts.join(', ') : null],
      ['Environment', list(c.env)],
    ])),
    labels.length ? [h('h2', {}, 'Labels'), h('div', { class: 'card', id: 'labels' }, meta(labels))] : null,
    c.history && c.history.length ? [h('h2', {}, `History (${c.history.length})`), table([
      { key: 'createdBy', label: 'Step', render: (e) => h('span', { class: 'mono' }, e.createdBy || e.comment || '') },
      { key: 'created', label: 'Created', wide: true },
      { key: 'emptyLayer', label: 'Layer', render: (e) => e.emptyLayer ? 'no' : 'yes' },
    ], c.history)] : null);
}

function layers(name, list) {
  const total = list.reduce((s, l) => s + (typeof l.size === 'number' ? l.size : 0), 0);
  const files = h('div', { id: 'files' });
  const columns = [
    { key: 'i', label: '#', num: true, render: (l) => String(list.indexOf(l) + 1) },
    { key: 'digest', label: 'Digest', render: (l) => h('a', { class: 'mono', href: `/v2/${name}/blobs/${l.digest}`, title: 'Download ' + l.digest }, short(l.digest)) },
    { key: 'mediaType', label: 'Media type', wide: true },
    { key: 'size', label: 'Size', num: true, render: (l) => bytes(l.size) },
    { key: 'files', label: '', render: (l) => h('button', { type: 'button', class: 'list-files', onclick: () => layerFiles(files, name, l) }, 'Files') },
  ];
  return h('section', { id: 'layers' }, h('h2', {}, `Layers (${list.length}, ${bytes(total)})`), table(columns, list), files);
}

// Files up to this size download on their own (the server's cap).
const FILE_BYTES_MAX = 1024 * 1024;

function fileLink(name, digest, path) {
  return location.pathname + 'api/layer-file?' + new URLSearchParams({ repo: name, digest, path });
}

// The files of one layer, listed by the server as it reads the layer (capped; it says
// where it stopped), filtered here.
async function layerFiles(box, name, layer) {
  box.replaceChildren(h('p', { class: 'note' }, 'Listing the files of ', short(layer.digest), '…'));
  let r;
  try { r = await api('layer', { repo: name, digest: layer.digest }); } catch (e) {
    box.replaceChildren(h('p', { class: 'note' }, 'Files not listed: ' + e.message));
    return;
  }
  const filter = h('input', { type: 'search', placeholder: 'Filter files', 'aria-label': 'Filter files', id: 'file-filter' });
  const list = h('div', { id: 'file-list' });
  const SHOWN_MAX = 1000;
  const render = () => {
    const q = filter.value.trim().toLowerCase();
    const rows = r.entries.filter((e) => !q || e.path.toLowerCase().includes(q));
    list.replaceChildren();
    add(list, [table([
      { key: 'path', label: 'Path', render: (e) => e.type === 'file' && e.size <= FILE_BYTES_MAX
        ? h('a', { class: 'mono file', download: '', title: 'Download this file', href: fileLink(name, layer.digest, e.path) }, e.path)
        : h('span', { class: 'mono' }, e.path, e.link ? ' → ' + text(e.link) : '') },
      { key: 'type', label: 'Type', wide: true },
      { key: 'mode', label: 'Mode', wide: true, render: (e) => h('span', { class: 'mono' }, e.mode) },
      { key: 'size', label: 'Size', num: true, render: (e) => e.type === 'file' ? bytes(e.size) : '' },
    ], rows.slice(0, SHOWN_MAX)), rows.length > SHOWN_MAX ? h('p', { class: 'note' }, `${rows.length - SHOWN_MAX} more: filter to see them.`) : null]);
  };
  filter.addEventListener('input', render);
  box.replaceChildren();
  add(box, [h('h2', {}, 'Files of ', h('span', { class: 'mono' }, short(layer.digest)), ` (${r.entries.length}, ${r.format})`),
    r.cut ? h('p', { class: 'note', id: 'files-cut' }, 'The list stops early: ' + r.cut + '.') : null,
    h('div', { class: 'tools' }, filter), list]);
  render();
}

async function referrers(box, name, digest, current) {
  let next = null;
  const groups = new Map();
  const list = h('div', {});
  const more = h('button', { type: 'button' }, 'Load more referrers');
  box.append(list, more);
  async function load() {
    const page = await api('referrers', { repo: name, digest, last: next });
    for (const g of page.groups) {
      const known = groups.get(g.artifactType);
      if (known) known.items.push(...g.items); else groups.set(g.artifactType, g);
    }
    next = page.next;
    render();
  }
  function render() {
    more.hidden = !next;
    if (!groups.size) { list.replaceChildren(h('p', { class: 'note' }, 'No referrers.')); return; }
    list.replaceChildren(...[...groups.values()].map((g) => h('div', { class: 'card referrer-group' },
      h('div', {}, h('span', { class: 'badge ' + g.badge.kind }, g.badge.label), h('span', { class: 'mono' }, g.artifactType || '(no artifact type)')),
      h('ul', { class: 'kv' }, g.items.map((d) => h('li', {},
        h('a', { class: 'mono', href: view('manifest', { repo: name, ref: d.digest }) }, short(d.digest)), ' ', bytes(d.size),
        d.annotations && d.annotations['org.opencontainers.image.created'] ? ' \u00B7 ' + text(d.annotations['org.opencontainers.image.created']) : ''))))));
  }
  more.addEventListener('click', () => load());
  try { await load(); } catch (e) {
    if (current()) list.replaceChildren(h('p', { class: 'note' }, 'Referrers not shown: ' + e.message));
  }
}
