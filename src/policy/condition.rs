//! One CEL expression over the same variables as the access policies (`identity.*`,
//! `request.*`), compiled and test-evaluated the same way: for features that select
//! requests with an expression rather than decide access (`[[rate_limit]] match`).

use cel::{Context, Env, Program, Value};

use super::{compile_one, AccessRequest, Vars};
use crate::auth::Identity;
use crate::config::ConfigError;

/// A compiled expression. Like `PolicySet`, plain data behind an `Arc`, shared by every
/// worker; each evaluation reads its variables through a child scope of its own.
pub struct Condition {
    program: Program,
    root: Context<'static, 'static>,
}

impl std::fmt::Debug for Condition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Condition")
    }
}

impl Condition {
    /// Compiles `source`: it must parse, name only the documented variables, and give a
    /// bool for an anonymous and a fully populated sample request (as policies must).
    pub fn compile(source: &str) -> Result<Condition, ConfigError> {
        let env = std::sync::Arc::new(Env::stdlib());
        let root = Context::with_env(env.clone());
        let program = compile_one(&env, &root, source)?;
        Ok(Condition { program, root })
    }

    /// The expression's value for a request; `None` when it fails or is not a bool (the
    /// caller decides what a failure means for its feature).
    pub fn eval(&self, identity: &Identity, req: &AccessRequest<'_>) -> Option<bool> {
        let vars = Vars::new(identity, req);
        let root: &Context<'_, '_> = &self.root;
        let mut scope = root.new_inner_scope();
        scope.set_variable_resolver(&vars);
        match self.program.execute(&scope) {
            Ok(Value::Bool(b)) => Some(b),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Action;

    /// An expression sees the request's identity and action; a misspelled variable fails
    /// the compile, as in a policy.
    #[test]
    fn evaluates_over_identity_and_request() {
        let c = Condition::compile("identity.username == 'ci' && request.action == 'get-blob'")
            .unwrap();
        let ci = Identity {
            username: Some("ci".into()),
            ..Identity::default()
        };
        let req = |action| AccessRequest {
            action,
            namespace: "a",
            digest: None,
            reference: None,
        };
        assert_eq!(c.eval(&ci, &req(Action::GetBlob)), Some(true));
        assert_eq!(c.eval(&ci, &req(Action::PutBlob)), Some(false));
        assert_eq!(
            c.eval(&Identity::default(), &req(Action::GetBlob)),
            Some(false)
        );
        assert!(Condition::compile("identity.usrname == 'ci'").is_err());
        assert!(Condition::compile("'not a bool'").is_err());
    }
}
