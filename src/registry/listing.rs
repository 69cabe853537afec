//! Listings at any size: tags, the catalog and referrers, read a page at a time from the
//! position the caller gives, so a page costs the page (storage lists from a start key:
//! ListObjectsV2 `start-after` on S3, a sorted directory index on the fs backend), and a
//! walk over everything (retention, scrub, GC's tag checks) holds one page at a time.
//!
//! Orders are the storage key orders: tags lexically (byte order), referrers by digest, and
//! repositories as their catalog keys `<name>/_repository` sort (byte order of the name
//! followed by `/`, so `a-b` comes before `a`, and a repository before the repositories
//! nested in it whose next component starts with a letter). Paging by `last` is exact in
//! that order.

use super::{layout, Registry};
use crate::error::Result;
use crate::oci::{Descriptor, Digest, RepoName};
use crate::storage::{Backend, Storage};

/// Keys one storage call lists for a walk: one page held at a time (~100 bytes a key).
const WALK_PAGE_KEYS: usize = 1000;

/// Pages through the keys under a prefix from a position, one page held at a time.
pub(crate) struct KeyPages {
    prefix: String,
    after: Option<String>,
    chunk: usize,
    done: bool,
}

impl KeyPages {
    pub(crate) fn new(prefix: String, after: Option<String>) -> KeyPages {
        KeyPages {
            prefix,
            after,
            chunk: WALK_PAGE_KEYS,
            done: false,
        }
    }

    fn with_chunk(mut self, chunk: usize) -> KeyPages {
        self.set_chunk(chunk);
        self
    }

    /// Keys per storage call from now on (a page's size, so one call serves a page).
    fn set_chunk(&mut self, chunk: usize) {
        self.chunk = chunk.clamp(1, crate::storage::LIST_KEYS_MAX);
    }

    /// The next page of keys, or `None` after the last.
    pub(crate) async fn next(&mut self, store: &Backend) -> Result<Option<Vec<String>>> {
        if self.done {
            return Ok(None);
        }
        let page = store
            .list(&self.prefix, self.after.as_deref(), self.chunk)
            .await?;
        self.done = page.len() < self.chunk;
        match page.last() {
            Some(last) => self.after = Some(last.clone()),
            None => return Ok(None),
        }
        Ok(Some(page))
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Tags,
    Catalog,
}

/// Names (tags or repositories) a page at a time, in storage order.
pub struct NamePages {
    keys: KeyPages,
    kind: Kind,
    /// Names read but not yet handed out (`take_next` with a smaller limit than a page).
    pending: Vec<String>,
}

impl NamePages {
    /// The next non-empty page of names, or `None` after the last.
    pub async fn next(&mut self, store: &Backend) -> Result<Option<Vec<String>>> {
        if !self.pending.is_empty() {
            return Ok(Some(std::mem::take(&mut self.pending)));
        }
        while let Some(keys) = self.keys.next(store).await? {
            let names: Vec<String> = keys.iter().filter_map(|k| self.name(k)).collect();
            if !names.is_empty() {
                return Ok(Some(names));
            }
        }
        Ok(None)
    }

    /// Up to `limit` names from the current position; the position moves past them.
    pub async fn take_next(&mut self, store: &Backend, limit: usize) -> Result<Vec<String>> {
        let mut out = Vec::new();
        if limit == 0 {
            return Ok(out);
        }
        self.keys.set_chunk(limit);
        while out.len() < limit {
            let Some(page) = self.next(store).await? else {
                break;
            };
            let room = limit - out.len();
            let mut page = page.into_iter();
            out.extend(page.by_ref().take(room));
            self.pending.extend(page);
        }
        Ok(out)
    }

    /// Up to `limit` names from the current position.
    pub async fn take(mut self, store: &Backend, limit: usize) -> Result<Vec<String>> {
        self.take_next(store, limit).await
    }

    fn name(&self, key: &str) -> Option<String> {
        let rest = key.strip_prefix(self.keys.prefix.as_str())?;
        match self.kind {
            // A tag is one key component.
            Kind::Tags => (!rest.contains('/')).then(|| rest.to_owned()),
            Kind::Catalog => {
                let listed = key.strip_prefix(layout::CATALOG_PREFIX)?;
                layout::catalog_name(listed).map(str::to_owned)
            }
        }
    }
}

impl Registry {
    /// The repository's tags in lexical order, after `last` when given.
    pub fn tag_pages(&self, name: &RepoName, last: Option<&str>) -> NamePages {
        let prefix = format!("{}/", layout::tags_dir(name));
        let after = last.map(|l| format!("{prefix}{l}"));
        NamePages {
            keys: KeyPages::new(prefix, after),
            kind: Kind::Tags,
            pending: Vec::new(),
        }
    }

    /// Up to `limit` tags of the repository after `last`, in lexical order.
    pub async fn tags_page(
        &self,
        name: &RepoName,
        last: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>> {
        self.tag_pages(name, last).take(&self.store, limit).await
    }

    /// The repositories (under namespace `ns` when given: names starting with `ns/`) in
    /// catalog order, after `last` when given.
    pub fn catalog_pages(&self, ns: Option<&RepoName>, last: Option<&str>) -> NamePages {
        let prefix = match ns {
            Some(ns) => format!("{}{ns}/", layout::CATALOG_PREFIX),
            None => layout::CATALOG_PREFIX.to_owned(),
        };
        let after = last.map(layout::catalog_position);
        NamePages {
            keys: KeyPages::new(prefix, after),
            kind: Kind::Catalog,
            pending: Vec::new(),
        }
    }

    /// Descriptors of the manifests whose subject is `subject` (of one artifact type when
    /// given), by digest, after `last`, at most `limit`. Entries are read `limit` at a time,
    /// so a filter that keeps few of them costs more reads but no more memory.
    pub async fn referrers_page(
        &self,
        name: &RepoName,
        subject: &Digest,
        artifact_type: Option<&str>,
        last: Option<&Digest>,
        limit: usize,
    ) -> Result<Vec<Descriptor>> {
        let dir = layout::referrers_dir(name, subject);
        let prefix = format!("{dir}/");
        let after = last.map(|d| layout::referrer_entry(name, subject, d));
        let mut keys = KeyPages::new(prefix, after).with_chunk(limit);
        let mut out = Vec::new();
        while out.len() < limit {
            let Some(page) = keys.next(&self.store).await? else {
                break;
            };
            for key in page {
                let Some(obj) = self.store.get(&key).await? else {
                    continue;
                };
                let Ok(d) = serde_json::from_slice::<Descriptor>(&obj.bytes) else {
                    tracing::warn!(key, "unreadable referrer entry skipped");
                    continue;
                };
                if artifact_type.is_none_or(|t| d.artifact_type.as_deref() == Some(t)) {
                    out.push(d);
                    if out.len() == limit {
                        break;
                    }
                }
            }
        }
        Ok(out)
    }

    /// The referrers of `subject` a page of keys at a time (entry keys, any type).
    pub(crate) fn referrer_key_pages(&self, name: &RepoName, subject: &Digest) -> KeyPages {
        KeyPages::new(format!("{}/", layout::referrers_dir(name, subject)), None)
    }
}
