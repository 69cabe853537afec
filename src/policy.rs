//! Access policies: CEL expressions per repository namespace, compiled and checked once at
//! config load, evaluated per request with no I/O. Every failure denies.
//!
//! # Semantics
//! - The `[[repository]]` entry with the longest `namespace` that is a prefix of the
//!   repository name on `/` boundaries applies: `""` matches every name, `team` matches `team`
//!   and `team/app` but not `teamx`. A trailing `/` in the configured namespace is ignored.
//! - Its policies run in order. With `policy_default_allow = true` access is allowed unless a
//!   policy is true (the first true one denies); with `false` access is denied unless a policy
//!   is true (the first true one allows).
//! - No entry matches: deny.
//! - A policy that fails at run time, or yields anything but a bool, denies (and is logged).
//! - `get-api-version` (`/v2/`) has no repository. An authenticated identity (a verified
//!   password or a client certificate) is always allowed: the endpoint reveals nothing, and
//!   `docker login` must see 200 for good credentials. An anonymous request is decided by the
//!   `""` entry (with `request.namespace == ""`) when there is one, and denied when there is
//!   none, so the server answers 401 with a challenge and clients know to send credentials.
//! - `list-catalog` (`/v2/_catalog`) is itself always allowed; its answer lists only the
//!   repositories for which [`PolicySet::may`] allows `list-catalog` with that repository as
//!   the namespace: see [`PolicySet::filter_catalog`].
//!
//! # Variables
//! `identity.id`, `identity.username` (strings), `identity.certificate.common_names`,
//! `identity.certificate.organizations` (lists of strings), `request.action`,
//! `request.namespace`, `request.digest`, `request.reference` (strings). Anything absent is
//! the empty string or the empty list. Any other variable or attribute fails the load.
//! For a verified OIDC token: `identity.oidc.provider` (the `[oidc.<name>]` key, "" for
//! other callers) and `identity.oidc.claims`, the token's claims by name (`.repository`,
//! `["job_workflow_ref"]`); an absent claim is `null`, so `identity.oidc.claims.ref ==
//! "refs/heads/main"` is simply false for password and certificate identities.

mod action;
mod claims;
pub mod condition;
pub mod retention;
mod vars;

use std::fmt;
use std::sync::Arc;

use cel::common::ast::Expr;
use cel::{Context, Env, IdedExpr, Program, Value};

use crate::auth::Identity;
use crate::config::{ConfigError, RepositoryConfig};
pub use action::Action;
use vars::Vars;

/// Policies per entry; a longer list is surely a configuration mistake, and each one costs
/// evaluation time on every request of the namespace.
pub const POLICIES_PER_NAMESPACE_MAX: usize = 256;
/// Source length of one policy: CEL walks the tree recursively, so a bound keeps that sane.
pub const POLICY_SOURCE_BYTES_MAX: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allow,
    Deny,
}

impl Decision {
    pub fn is_allowed(self) -> bool {
        self == Decision::Allow
    }
}

/// Which rule decided a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rule<'a> {
    /// `get-api-version` by an authenticated caller: always allowed.
    Authenticated,
    /// No `[[repository]]` entry matches the name: denied.
    NoEntry,
    /// No policy of the entry matched: its `policy_default_allow` decided.
    Default { namespace: &'a str, allow: bool },
    /// The entry's policy at `index` matched (allowing, or denying where the entry allows
    /// by default).
    Policy {
        namespace: &'a str,
        index: usize,
        source: &'a str,
    },
    /// The policy failed at run time: denied.
    Failed(Box<Rule<'a>>),
}

impl fmt::Display for Rule<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rule::Authenticated => f.write_str("authenticated callers may get-api-version"),
            Rule::NoEntry => f.write_str("no [[repository]] entry matches"),
            Rule::Default { namespace, allow } => write!(
                f,
                "repository {namespace:?}: no policy matched; policy_default_allow = {allow}"
            ),
            Rule::Policy {
                namespace,
                index,
                source,
            } => write!(f, "repository {namespace:?}: policies[{index}] `{source}`"),
            Rule::Failed(rule) => write!(f, "{rule} failed at run time"),
        }
    }
}

/// What a request wants to do, as the policies see it.
#[derive(Debug, Clone, Copy)]
pub struct AccessRequest<'a> {
    pub action: Action,
    /// The repository name; empty for `get-api-version` and the `list-catalog` endpoint.
    pub namespace: &'a str,
    pub digest: Option<&'a str>,
    pub reference: Option<&'a str>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicyError {
    /// A policy that does not parse, names an unknown variable or attribute, is too long, or
    /// does not evaluate to a bool for the sample requests.
    Invalid {
        namespace: String,
        index: usize,
        source: String,
        reason: String,
    },
    DuplicateNamespace(String),
    TooManyPolicies {
        namespace: String,
        count: usize,
    },
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PolicyError::Invalid {
                namespace,
                index,
                source,
                reason,
            } => write!(
                f,
                "repository {namespace:?}: policies[{index}] `{source}`: {reason}"
            ),
            PolicyError::DuplicateNamespace(ns) => {
                write!(f, "repository {ns:?}: namespace configured twice")
            }
            PolicyError::TooManyPolicies { namespace, count } => write!(
                f,
                "repository {namespace:?}: {count} policies, at most {POLICIES_PER_NAMESPACE_MAX}"
            ),
        }
    }
}

impl std::error::Error for PolicyError {}

struct Policy {
    source: String,
    program: Program,
}

struct Entry {
    namespace: String,
    default_allow: bool,
    policies: Vec<Policy>,
}

impl Entry {
    fn matches(&self, name: &str) -> bool {
        crate::config::namespace_covers(&self.namespace, name)
    }
}

/// The compiled policies of every `[[repository]]`, shared by all workers through an `Arc`.
///
/// `cel::Program` is plain data and the root `cel::Context` holds only `Send + Sync`
/// functions, so one set serves every thread; each decision reads its variables through a
/// resolver on a child scope of its own, borrowing the request's strings.
pub struct PolicySet {
    /// Longest namespace first, so the first match is the longest prefix.
    entries: Vec<Entry>,
    root: Context<'static, 'static>,
}

impl fmt::Debug for PolicySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ns: Vec<&str> = self.entries.iter().map(|e| e.namespace.as_str()).collect();
        f.debug_struct("PolicySet")
            .field("namespaces", &ns)
            .finish()
    }
}

impl PolicySet {
    /// Compiles every policy and checks it: it must parse, name only the documented variables
    /// and attributes, and evaluate to a bool for an anonymous and a fully populated sample.
    pub fn compile(repositories: &[RepositoryConfig]) -> Result<PolicySet, PolicyError> {
        let env = Arc::new(Env::stdlib());
        let root = Context::with_env(env.clone());
        let mut entries: Vec<Entry> = Vec::with_capacity(repositories.len());
        for repo in repositories {
            let namespace = repo.namespace.trim_end_matches('/').to_string();
            if entries.iter().any(|e| e.namespace == namespace) {
                return Err(PolicyError::DuplicateNamespace(namespace));
            }
            if repo.policies.len() > POLICIES_PER_NAMESPACE_MAX {
                return Err(PolicyError::TooManyPolicies {
                    namespace,
                    count: repo.policies.len(),
                });
            }
            let mut policies = Vec::with_capacity(repo.policies.len());
            for (index, source) in repo.policies.iter().enumerate() {
                let invalid = |reason: String| PolicyError::Invalid {
                    namespace: namespace.clone(),
                    index,
                    source: source.clone(),
                    reason,
                };
                let program =
                    compile_one(&env, &root, source).map_err(|e| invalid(e.to_string()))?;
                policies.push(Policy {
                    source: source.clone(),
                    program,
                });
            }
            entries.push(Entry {
                namespace,
                default_allow: repo.policy_default_allow,
                policies,
            });
        }
        entries.sort_by_key(|e| std::cmp::Reverse(e.namespace.len()));
        Ok(PolicySet { entries, root })
    }

    /// Decides one request. See the module documentation for the rules.
    pub fn may(&self, identity: &Identity, req: &AccessRequest<'_>) -> Decision {
        self.explain(identity, req).0
    }

    /// Decides one request, and says which rule decided (for the audit trail).
    pub fn explain(&self, identity: &Identity, req: &AccessRequest<'_>) -> (Decision, Rule<'_>) {
        if req.action == Action::GetApiVersion {
            if identity.is_authenticated() {
                return (Decision::Allow, Rule::Authenticated);
            }
            return match self.entries.iter().find(|e| e.namespace.is_empty()) {
                Some(entry) => self.decide(entry, identity, req),
                None => (Decision::Deny, Rule::NoEntry),
            };
        }
        match self.entry_for(req.namespace) {
            Some(entry) => self.decide(entry, identity, req),
            None => (Decision::Deny, Rule::NoEntry),
        }
    }

    /// Keeps the repository names on which `identity` may `list-catalog`, in their order.
    pub fn filter_catalog<'n, I>(&self, identity: &Identity, names: I) -> Vec<&'n str>
    where
        I: IntoIterator<Item = &'n str>,
    {
        names
            .into_iter()
            .filter(|name| {
                let req = AccessRequest {
                    action: Action::ListCatalog,
                    namespace: name,
                    digest: None,
                    reference: None,
                };
                self.may(identity, &req).is_allowed()
            })
            .collect()
    }

    /// A child scope of the shared root for one evaluation. The root lives for 'static;
    /// viewed for a shorter lifetime, its child may borrow the request's strings.
    fn scope<'s>(&'s self) -> Context<'s, 's> {
        let root: &'s Context<'s, 's> = &self.root;
        root.new_inner_scope()
    }

    fn entry_for(&self, name: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.matches(name))
    }

    /// The rule borrows the policies (`'s`); the evaluation's scope may borrow the request
    /// for less.
    fn decide<'s>(
        &'s self,
        entry: &'s Entry,
        identity: &Identity,
        req: &AccessRequest<'_>,
    ) -> (Decision, Rule<'s>) {
        let (on_match, otherwise) = match entry.default_allow {
            true => (Decision::Deny, Decision::Allow),
            false => (Decision::Allow, Decision::Deny),
        };
        let namespace = entry.namespace.as_str();
        let default = (
            otherwise,
            Rule::Default {
                namespace,
                allow: entry.default_allow,
            },
        );
        if entry.policies.is_empty() {
            return default;
        }
        // A span where policies run (a repository without any has nothing to evaluate).
        let _span = crate::span!(
            "policy.evaluate",
            oci.action = req.action.as_str(),
            policy.namespace = namespace,
            policy.count = entry.policies.len(),
        )
        .entered();
        let vars = Vars::new(identity, req);
        let mut scope = self.scope();
        scope.set_variable_resolver(&vars);
        for (index, policy) in entry.policies.iter().enumerate() {
            let rule = Rule::Policy {
                namespace,
                index,
                source: &policy.source,
            };
            match policy.program.execute(&scope) {
                Ok(Value::Bool(true)) => return (on_match, rule),
                Ok(Value::Bool(false)) => {}
                outcome => {
                    tracing::warn!(
                        namespace = %entry.namespace,
                        index,
                        policy = %policy.source,
                        action = req.action.as_str(),
                        repository = req.namespace,
                        ?outcome,
                        "policy failed at run time; denying"
                    );
                    return (Decision::Deny, Rule::Failed(Box::new(rule)));
                }
            }
        }
        default
    }
}

fn compile_one(
    env: &Env,
    root: &Context<'static, 'static>,
    source: &str,
) -> Result<Program, ConfigError> {
    if source.len() > POLICY_SOURCE_BYTES_MAX {
        return Err(ConfigError::new(format!(
            "longer than {POLICY_SOURCE_BYTES_MAX} bytes"
        )));
    }
    let program = env
        .compile(source)
        .map_err(|e| ConfigError::caused("syntax error", e))?;
    check_names(program.expression(), &mut Vec::new())?;
    for (label, identity, req) in samples() {
        let vars = Vars::new(&identity, &req);
        let mut scope = root.new_inner_scope();
        scope.set_variable_resolver(&vars);
        match program.execute(&scope) {
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

/// The requests every policy is test-evaluated against at load time.
fn samples() -> [(&'static str, Identity, AccessRequest<'static>); 2] {
    let anonymous = Identity::default();
    let full = Identity {
        id: Some("sample".into()),
        username: Some("sample".into()),
        common_names: vec!["sample".into()],
        organizations: vec!["sample".into()],
        oidc: Some(Arc::new(crate::auth::oidc::OidcIdentity {
            provider: "sample".into(),
            claims: serde_json::json!({"sub": "sample", "aud": ["sample"], "exp": 1})
                .as_object()
                .cloned()
                .unwrap_or_default(),
        })),
    };
    let bare = AccessRequest {
        action: Action::GetApiVersion,
        namespace: "",
        digest: None,
        reference: None,
    };
    let digest = "sha256:0000000000000000000000000000000000000000000000000000000000000000";
    let every = AccessRequest {
        action: Action::GetManifest,
        namespace: "sample/repository",
        digest: Some(digest),
        reference: Some("latest"),
    };
    [
        ("an anonymous request to /v2/", anonymous, bare),
        ("a request with every field set", full, every),
    ]
}

/// The attributes below each variable: (path, is a leaf).
const ATTRIBUTES: &[(&[&str], bool)] = &[
    (&["identity"], false),
    (&["identity", "id"], true),
    (&["identity", "username"], true),
    (&["identity", "certificate"], false),
    (&["identity", "certificate", "common_names"], true),
    (&["identity", "certificate", "organizations"], true),
    (&["identity", "oidc"], false),
    (&["identity", "oidc", "provider"], true),
    (&["identity", "oidc", "claims"], false),
    (&["request"], false),
    (&["request", "action"], true),
    (&["request", "namespace"], true),
    (&["request", "digest"], true),
    (&["request", "reference"], true),
];

/// Type names CEL lets an expression mention, as in `type(x) == string`.
const TYPE_NAMES: &[&str] = &[
    "bool",
    "bytes",
    "double",
    "int",
    "uint",
    "string",
    "list",
    "map",
    "null_type",
    "type",
];

/// Walks the whole tree, so a misspelled name fails even on a branch the samples skip.
/// `bound` holds the variables of the enclosing comprehensions (`exists(x, ...)`).
fn check_names(e: &IdedExpr, bound: &mut Vec<String>) -> Result<(), ConfigError> {
    match &e.expr {
        Expr::Ident(name) => {
            if bound.iter().any(|b| b == name)
                || name == "identity"
                || name == "request"
                || TYPE_NAMES.contains(&name.as_str())
            {
                return Ok(());
            }
            Err(ConfigError::new(format!("unknown variable `{name}`")))
        }
        Expr::Select(sel) => {
            if let Some(path) = select_path(e) {
                if !bound.iter().any(|b| b == path[0])
                    && (path[0] == "identity" || path[0] == "request")
                {
                    return check_path(&path);
                }
            }
            check_names(&sel.operand, bound)
        }
        Expr::Call(call) => {
            if let Some(t) = &call.target {
                check_names(t, bound)?;
            }
            call.args.iter().try_for_each(|a| check_names(a, bound))
        }
        Expr::Comprehension(c) => {
            check_names(&c.iter_range, bound)?;
            check_names(&c.accu_init, bound)?;
            let depth = bound.len();
            bound.push(c.iter_var.clone());
            bound.extend(c.iter_var2.clone());
            bound.push(c.accu_var.clone());
            let inner = [&c.loop_cond, &c.loop_step, &c.result]
                .into_iter()
                .try_for_each(|x| check_names(x, bound));
            bound.truncate(depth);
            inner
        }
        Expr::List(l) => l.elements.iter().try_for_each(|x| check_names(x, bound)),
        Expr::Map(m) => m.entries.iter().try_for_each(|entry| match &entry.expr {
            cel::common::ast::EntryExpr::MapEntry(me) => {
                check_names(&me.key, bound)?;
                check_names(&me.value, bound)
            }
            cel::common::ast::EntryExpr::StructField(sf) => check_names(&sf.value, bound),
        }),
        Expr::Struct(s) => Err(ConfigError::new(format!(
            "unknown message type `{}`",
            s.type_name
        ))),
        Expr::Literal(_) | Expr::Unspecified => Ok(()),
    }
}

/// `a.b.c` as [a, b, c] when the expression is a plain chain of field selections.
fn select_path(e: &IdedExpr) -> Option<Vec<&str>> {
    let mut rev = Vec::new();
    let mut cur = e;
    loop {
        match &cur.expr {
            Expr::Select(sel) => {
                rev.push(sel.field.as_str());
                cur = &sel.operand;
            }
            Expr::Ident(name) => {
                rev.push(name.as_str());
                rev.reverse();
                return Some(rev);
            }
            _ => return None,
        }
    }
}

fn check_path(path: &[&str]) -> Result<(), ConfigError> {
    // Claims are the provider's to name: any name below `identity.oidc.claims` is fine.
    if ATTRIBUTES.iter().any(|(known, _)| *known == path)
        || path.starts_with(&["identity", "oidc", "claims"])
    {
        return Ok(());
    }
    let parent = &path[..path.len() - 1];
    match ATTRIBUTES.iter().find(|(known, _)| *known == parent) {
        Some((_, true)) => Err(ConfigError::new(format!(
            "`{}` is a string or a list and has no attribute `{}`",
            parent.join("."),
            path[path.len() - 1]
        ))),
        _ => Err(ConfigError::new(format!(
            "unknown attribute `{}`",
            path.join(".")
        ))),
    }
}

#[cfg(test)]
mod tests;
