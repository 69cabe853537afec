//! Immutable tags: per `[[repository]]` entry, `immutable_tags` and the exclusions that stay
//! mutable, compiled once at load (and at reload) and answered without I/O.
//!
//! The entry is chosen as for policies: the longest `namespace` that is a prefix of the
//! repository name on `/` boundaries. What the rule protects is enforced in `manifests.rs`
//! with conditional writes only (a tag is created with `IfAbsent`), so several nodes on one
//! storage agree without a lock.

use regex::Regex;

use crate::config::{ConfigError, RepositoryConfig};

/// Exclusions per entry: each one is tried on every tag write and delete of the namespace.
pub const EXCLUSIONS_PER_NAMESPACE_MAX: usize = 64;
/// Compiled size limit of one exclusion (the regex crate's DFA budget), so a pathological
/// pattern fails the load instead of costing memory per check.
const EXCLUSION_COMPILED_BYTES_MAX: usize = 256 * 1024;

struct Entry {
    namespace: String,
    immutable: bool,
    exclusions: Vec<Regex>,
}

/// The immutable-tag rules of every `[[repository]]` entry.
#[derive(Default)]
pub struct ImmutableTags {
    /// Longest namespace first, so the first match is the longest prefix.
    entries: Vec<Entry>,
}

/// Compiles one exclusion, anchored so it must match the whole tag.
pub fn compile_exclusion(pattern: &str) -> Result<Regex, ConfigError> {
    regex::RegexBuilder::new(&format!("^(?:{pattern})$"))
        .size_limit(EXCLUSION_COMPILED_BYTES_MAX)
        .build()
        .map_err(|e| ConfigError::new(e.to_string()))
}

impl ImmutableTags {
    /// Compiles every entry's exclusions; the error names the key.
    pub fn compile(repositories: &[RepositoryConfig]) -> Result<ImmutableTags, ConfigError> {
        let mut entries = Vec::new();
        for (i, repo) in repositories.iter().enumerate() {
            let key = format!("repository[{i}].immutable_tags_exclusions");
            if repo.immutable_tags_exclusions.len() > EXCLUSIONS_PER_NAMESPACE_MAX {
                return Err(ConfigError::new(format!(
                    "{key}: at most {EXCLUSIONS_PER_NAMESPACE_MAX}"
                )));
            }
            let mut exclusions = Vec::new();
            for (j, p) in repo.immutable_tags_exclusions.iter().enumerate() {
                exclusions.push(
                    compile_exclusion(p)
                        .map_err(|e| ConfigError::caused(format!("{key}[{j}]"), e))?,
                );
            }
            entries.push(Entry {
                namespace: repo.namespace.trim_end_matches('/').to_string(),
                immutable: repo.immutable_tags,
                exclusions,
            });
        }
        entries.sort_by_key(|e| std::cmp::Reverse(e.namespace.len()));
        Ok(ImmutableTags { entries })
    }

    /// True when a tag of this repository may never move nor be deleted.
    pub fn is_immutable(&self, repository: &str, tag: &str) -> bool {
        let Some(e) = self
            .entries
            .iter()
            .find(|e| crate::config::namespace_covers(&e.namespace, repository))
        else {
            return false;
        };
        e.immutable && !e.exclusions.iter().any(|r| r.is_match(tag))
    }

    /// True when no entry makes any tag immutable (the request path skips every check).
    pub fn is_empty(&self) -> bool {
        !self.entries.iter().any(|e| e.immutable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(toml: &str) -> Result<ImmutableTags, ConfigError> {
        let c = crate::config::Config::parse(toml)?;
        ImmutableTags::compile(&c.repository)
    }

    #[test]
    fn longest_namespace_decides_and_exclusions_match_the_whole_tag() {
        let r = rules(
            "[[repository]]\nnamespace = \"\"\n\
             [[repository]]\nnamespace = \"rel\"\nimmutable_tags = true\n\
             immutable_tags_exclusions = [\"latest\", \"dev-.*\"]\n\
             [[repository]]\nnamespace = \"rel/scratch\"\n",
        )
        .unwrap();
        assert!(r.is_immutable("rel/app", "v1"));
        assert!(r.is_immutable("rel", "v1"));
        assert!(!r.is_immutable("rel/app", "latest"));
        assert!(
            r.is_immutable("rel/app", "latest2"),
            "exclusions are anchored"
        );
        assert!(!r.is_immutable("rel/app", "dev-42"));
        assert!(!r.is_immutable("release/app", "v1"));
        assert!(!r.is_immutable("rel/scratch/x", "v1"));
        assert!(!r.is_empty());
        assert!(rules("[[repository]]\nnamespace = \"\"\n")
            .unwrap()
            .is_empty());
    }

    #[test]
    fn a_bad_exclusion_names_its_key() {
        let e = rules(
            "[[repository]]\nnamespace = \"\"\nimmutable_tags = true\n\
             immutable_tags_exclusions = [\"ok\", \"(\"]\n",
        )
        .err()
        .unwrap();
        assert!(
            e.to_string()
                .contains("repository[0].immutable_tags_exclusions[1]"),
            "{e}"
        );
    }
}
