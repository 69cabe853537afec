//! Retention rules: per `[[repository]]` entry, CEL expressions that say which manifests to
//! **keep**, compiled and test-evaluated at load. A manifest no rule keeps is deleted by the
//! retention pass (`crate::registry::retention`).
//!
//! # Variables
//! `image.tag` (string, `null` when untagged), `image.digest`, `image.media_type` (strings),
//! `image.pushed_at`, `image.last_pulled_at` (Unix seconds; `last_pulled_at` is `null` when
//! no pull was recorded), `image.repository`, `now` (Unix seconds). Functions: `days(n)`,
//! `hours(n)` (seconds), `top_pushed(n)` and `top_pulled(n)` (true when the manifest is among
//! the n most recently pushed, or pulled, of its repository).
//!
//! A rule that fails at run time, or yields anything but a bool, keeps the manifest (a broken
//! rule must not delete) and is logged.

use std::collections::HashMap;
use std::sync::Arc;

use cel::{Context, Env, Program, Value};

use crate::config::{ConfigError, RepositoryConfig};

/// Rules per entry; each is evaluated for every manifest (and tag) of the namespace.
pub const RULES_PER_NAMESPACE_MAX: usize = 64;
/// Source length of one rule, as for access policies.
pub const RULE_SOURCE_BYTES_MAX: usize = 4096;

/// What the rules see of one manifest under one of its tags (or none).
#[derive(Debug, Clone)]
pub struct Image<'a> {
    pub repository: &'a str,
    pub tag: Option<&'a str>,
    pub digest: &'a str,
    pub media_type: &'a str,
    pub pushed_at: i64,
    pub last_pulled_at: Option<i64>,
    /// 1 for the most recently pushed manifest of the repository.
    pub push_rank: i64,
    /// 1 for the most recently pulled; `None` when never pulled.
    pub pull_rank: Option<i64>,
}

struct Rule {
    source: String,
    program: Program,
}

struct Entry {
    namespace: String,
    rules: Vec<Rule>,
}

/// Every entry's retention rules.
pub struct RetentionRules {
    env: Arc<Env>,
    /// Longest namespace first; entries without `retention` are kept (they keep everything,
    /// and a longer namespace without rules shadows a shorter one with rules).
    entries: Vec<Entry>,
}

impl Default for RetentionRules {
    fn default() -> Self {
        RetentionRules {
            env: Arc::new(Env::stdlib()),
            entries: Vec::new(),
        }
    }
}

fn int(v: i64) -> Value {
    Value::Int(v)
}

fn context<'a>(env: &Arc<Env>, img: &Image<'_>, now: i64) -> Context<'a, 'a> {
    let mut ctx = Context::with_env(env.clone());
    let opt = |v: Option<i64>| v.map_or(Value::Null, int);
    let text = |s: &str| Value::String(Arc::new(s.to_string()));
    let mut image: HashMap<&str, Value> = HashMap::new();
    image.insert("repository", text(img.repository));
    image.insert("tag", img.tag.map_or(Value::Null, text));
    image.insert("digest", text(img.digest));
    image.insert("media_type", text(img.media_type));
    image.insert("pushed_at", int(img.pushed_at));
    image.insert("last_pulled_at", opt(img.last_pulled_at));
    ctx.add_variable_from_value("image", image);
    ctx.add_variable_from_value("now", now);
    let (push_rank, pull_rank) = (img.push_rank, img.pull_rank);
    // These names are not in the standard library, so adding them cannot conflict.
    let _ = ctx.add_function("days", |n: i64| n.saturating_mul(86_400));
    let _ = ctx.add_function("hours", |n: i64| n.saturating_mul(3_600));
    let _ = ctx.add_function("top_pushed", move |n: i64| push_rank <= n);
    let _ = ctx.add_function("top_pulled", move |n: i64| {
        pull_rank.is_some_and(|r| r <= n)
    });
    ctx
}

/// The images every rule is test-evaluated against at load.
fn samples() -> [Image<'static>; 2] {
    let digest = "sha256:0000000000000000000000000000000000000000000000000000000000000000";
    [
        Image {
            repository: "sample/repository",
            tag: Some("v1"),
            digest,
            media_type: "application/vnd.oci.image.manifest.v1+json",
            pushed_at: 1_700_000_000,
            last_pulled_at: Some(1_700_000_100),
            push_rank: 1,
            pull_rank: Some(1),
        },
        Image {
            repository: "sample/repository",
            tag: None,
            digest,
            media_type: "application/vnd.oci.image.index.v1+json",
            pushed_at: 1_700_000_000,
            last_pulled_at: None,
            push_rank: 2,
            pull_rank: None,
        },
    ]
}

impl RetentionRules {
    /// Compiles every entry's `retention`; the error names the key.
    pub fn compile(repositories: &[RepositoryConfig]) -> Result<RetentionRules, ConfigError> {
        let env = Arc::new(Env::stdlib());
        let mut entries = Vec::new();
        for (i, repo) in repositories.iter().enumerate() {
            let key = format!("repository[{i}].retention");
            if repo.retention.len() > RULES_PER_NAMESPACE_MAX {
                return Err(ConfigError::new(format!(
                    "{key}: at most {RULES_PER_NAMESPACE_MAX} rules"
                )));
            }
            let mut rules = Vec::new();
            for (j, source) in repo.retention.iter().enumerate() {
                let program = compile_one(&env, source)
                    .map_err(|e| ConfigError::caused(format!("{key}[{j}] `{source}`"), e))?;
                rules.push(Rule {
                    source: source.clone(),
                    program,
                });
            }
            entries.push(Entry {
                namespace: repo.namespace.trim_end_matches('/').to_string(),
                rules,
            });
        }
        entries.sort_by_key(|e| std::cmp::Reverse(e.namespace.len()));
        Ok(RetentionRules { env, entries })
    }

    fn entry_for(&self, repository: &str) -> Option<&Entry> {
        self.entries
            .iter()
            .find(|e| crate::config::namespace_covers(&e.namespace, repository))
    }

    /// True when the repository's entry has rules (else everything is kept).
    pub fn applies(&self, repository: &str) -> bool {
        self.entry_for(repository)
            .is_some_and(|e| !e.rules.is_empty())
    }

    /// The rules that judge `repository`, as written (none: everything is kept).
    pub fn rules_for(&self, repository: &str) -> Vec<String> {
        self.entry_for(repository)
            .map(|e| e.rules.iter().map(|r| r.source.clone()).collect())
            .unwrap_or_default()
    }

    /// True when no entry has rules.
    pub fn is_empty(&self) -> bool {
        self.entries.iter().all(|e| e.rules.is_empty())
    }

    /// Whether some rule keeps this image. No rules: kept. A failing rule keeps it.
    pub fn keeps(&self, img: &Image<'_>, now: i64) -> bool {
        let Some(entry) = self.entry_for(img.repository) else {
            return true;
        };
        if entry.rules.is_empty() {
            return true;
        }
        let ctx = context(&self.env, img, now);
        for rule in &entry.rules {
            match rule.program.execute(&ctx) {
                Ok(Value::Bool(true)) => return true,
                Ok(Value::Bool(false)) => {}
                outcome => {
                    tracing::warn!(
                        repository = img.repository,
                        digest = img.digest,
                        rule = %rule.source,
                        ?outcome,
                        "retention rule failed at run time; keeping the manifest"
                    );
                    return true;
                }
            }
        }
        false
    }
}

fn compile_one(env: &Arc<Env>, source: &str) -> Result<Program, ConfigError> {
    if source.len() > RULE_SOURCE_BYTES_MAX {
        return Err(ConfigError::new(format!(
            "longer than {RULE_SOURCE_BYTES_MAX} bytes"
        )));
    }
    let program = env
        .compile(source)
        .map_err(|e| ConfigError::caused("syntax error", e))?;
    for img in samples() {
        let ctx = context(env, &img, 1_700_000_200);
        let label = if img.tag.is_some() {
            "a tagged, pulled image"
        } else {
            "an untagged, never pulled image"
        };
        match program.execute(&ctx) {
            Ok(Value::Bool(_)) => {}
            Ok(other) => {
                return Err(ConfigError::new(format!(
                    "yields {other:?} for {label}, not a bool"
                )))
            }
            Err(e) => return Err(ConfigError::new(format!("fails for {label}: {e}"))),
        }
    }
    Ok(program)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(retention: &[&str]) -> Result<RetentionRules, ConfigError> {
        let repo = RepositoryConfig {
            namespace: "team".into(),
            retention: retention.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        RetentionRules::compile(&[repo, RepositoryConfig::default()])
    }

    fn image(tag: Option<&'static str>, age_days: i64, push_rank: i64) -> Image<'static> {
        Image {
            repository: "team/app",
            tag,
            digest: "sha256:00",
            media_type: "m",
            pushed_at: 1_000_000 - age_days * 86_400,
            last_pulled_at: None,
            push_rank,
            pull_rank: None,
        }
    }

    #[test]
    fn rules_keep_what_any_rule_keeps() {
        let r = rules(&[
            "image.tag != null && image.tag.startsWith('release-')",
            "now - image.pushed_at < days(30)",
            "top_pushed(2)",
        ])
        .unwrap();
        let now = 1_000_000;
        assert!(r.keeps(&image(Some("release-1"), 400, 9), now));
        assert!(r.keeps(&image(None, 3, 9), now));
        assert!(r.keeps(&image(None, 400, 2), now));
        assert!(!r.keeps(&image(None, 400, 3), now));
        assert!(!r.keeps(&image(Some("dev"), 31, 3), now));
        // Other namespaces have no rules: everything is kept.
        let other = Image {
            repository: "else/app",
            ..image(None, 400, 9)
        };
        assert!(r.keeps(&other, now));
        assert!(r.applies("team/app") && !r.applies("else/app"));
    }

    #[test]
    fn bad_rules_fail_the_load_naming_the_key() {
        for bad in [
            "image.tag ==",
            "image.pushed_at",
            "unknown_var",
            "top_pushed('x')",
        ] {
            let e = rules(&["true", bad]).err().unwrap();
            assert!(
                e.to_string().starts_with("repository[0].retention[1]"),
                "{bad}: {e}"
            );
        }
    }
}
