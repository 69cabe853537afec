//! `identity` and `request` as CEL values that borrow the request's strings.
//!
//! Built as objects with fixed fields rather than CEL maps: a map costs a `HashMap` and a box
//! per field on every request, which was most of the evaluation time; these cost one small
//! allocation per certificate name and none per field access.

use cel::common::traits::Indexer;
use cel::common::types::{CelList, CelString, Type};
use cel::common::value::{CowVal, Val};
use cel::context::VariableResolver;
use cel::ExecutionError;

use super::claims::ClaimsVal;
use super::AccessRequest;
use crate::auth::Identity;

static IDENTITY_TYPE: Type = Type::new_unspecified_type("origin.Identity");
static CERTIFICATE_TYPE: Type = Type::new_unspecified_type("origin.Certificate");
static OIDC_TYPE: Type = Type::new_unspecified_type("origin.Oidc");
static REQUEST_TYPE: Type = Type::new_unspecified_type("origin.Request");

/// The variables of one evaluation, handed to CEL through a resolver (no map of names).
#[derive(Debug)]
pub(super) struct Vars<'a> {
    identity: IdentityVal<'a>,
    request: RequestVal<'a>,
}

impl<'a> Vars<'a> {
    pub(super) fn new(identity: &'a Identity, req: &AccessRequest<'a>) -> Vars<'a> {
        let text = |s: Option<&'a str>| CelString::from(s.unwrap_or(""));
        Vars {
            identity: IdentityVal {
                id: text(identity.id.as_deref()),
                username: text(identity.username.as_deref()),
                certificate: CertificateVal {
                    common_names: list(&identity.common_names),
                    organizations: list(&identity.organizations),
                },
                oidc: OidcVal {
                    provider: text(identity.oidc.as_deref().map(|o| o.provider.as_str())),
                    claims: ClaimsVal(identity.oidc.as_deref().map(|o| &o.claims)),
                },
            },
            request: RequestVal {
                action: CelString::from(req.action.as_str()),
                namespace: CelString::from(req.namespace),
                digest: text(req.digest),
                reference: text(req.reference),
            },
        }
    }
}

impl VariableResolver for Vars<'_> {
    fn resolve<'b>(&'b self, variable: &str) -> Option<CowVal<'b, 'b>> {
        match variable {
            "identity" => Some(CowVal::Borrowed(&self.identity)),
            "request" => Some(CowVal::Borrowed(&self.request)),
            _ => None,
        }
    }
}

fn list(items: &[String]) -> CelList<'_> {
    let items: Vec<Box<dyn Val + '_>> = items
        .iter()
        .map(|s| Box::new(CelString::from(s.as_str())) as Box<dyn Val + '_>)
        .collect();
    CelList::from(items)
}

fn clone_list<'v>(l: &CelList<'v>) -> CelList<'v> {
    CelList::from(l.inner().to_vec())
}

fn field_name(idx: &dyn Val) -> Option<&str> {
    idx.downcast_ref::<CelString>().map(CelString::inner)
}

/// Implements `Val` for a struct-like type: its CEL type, field access through `Indexer`,
/// and a clone that keeps the borrows.
macro_rules! object {
    ($name:ident, $ty:ident, { $($field:literal => $member:ident),* }) => {
        impl Indexer for $name<'_> {
            fn get<'b, 'v>(&'b self, idx: &dyn Val) -> Result<CowVal<'b, 'v>, ExecutionError>
            where
                Self: 'v,
            {
                match field_name(idx) {
                    $(Some($field) => Ok(CowVal::Borrowed(&self.$member)),)*
                    Some(other) => Err(ExecutionError::no_such_key(other)),
                    None => Err(ExecutionError::no_such_key("(not a field name)")),
                }
            }

            fn steal<'v>(self: Box<Self>, idx: &dyn Val) -> Result<Box<dyn Val + 'v>, ExecutionError>
            where
                Self: 'v,
            {
                self.get(idx).map(CowVal::into_owned)
            }
        }

        impl Val for $name<'_> {
            fn get_type(&self) -> &Type {
                &$ty
            }

            fn cel_type() -> &'static Type {
                &$ty
            }

            fn as_indexer<'b, 'v>(&'b self) -> Option<&'b (dyn Indexer + 'v)>
            where
                Self: 'v,
            {
                Some(self)
            }

            fn clone_as_boxed<'v>(&self) -> Box<dyn Val + 'v>
            where
                Self: 'v,
            {
                Box::new(self.clone())
            }
        }
    };
}

#[derive(Debug)]
struct IdentityVal<'a> {
    id: CelString<'a>,
    username: CelString<'a>,
    certificate: CertificateVal<'a>,
    oidc: OidcVal<'a>,
}

/// `identity.oidc`: the provider is "" and every claim null for callers without a token.
#[derive(Debug, Clone)]
struct OidcVal<'a> {
    provider: CelString<'a>,
    claims: ClaimsVal<'a>,
}

#[derive(Debug)]
struct CertificateVal<'a> {
    common_names: CelList<'a>,
    organizations: CelList<'a>,
}

#[derive(Debug, Clone)]
struct RequestVal<'a> {
    action: CelString<'a>,
    namespace: CelString<'a>,
    digest: CelString<'a>,
    reference: CelString<'a>,
}

impl Clone for CertificateVal<'_> {
    fn clone(&self) -> Self {
        CertificateVal {
            common_names: clone_list(&self.common_names),
            organizations: clone_list(&self.organizations),
        }
    }
}

impl Clone for IdentityVal<'_> {
    fn clone(&self) -> Self {
        IdentityVal {
            id: self.id.clone(),
            username: self.username.clone(),
            certificate: self.certificate.clone(),
            oidc: self.oidc.clone(),
        }
    }
}

object!(IdentityVal, IDENTITY_TYPE, {
    "id" => id, "username" => username, "certificate" => certificate, "oidc" => oidc
});
object!(OidcVal, OIDC_TYPE, { "provider" => provider, "claims" => claims });
object!(CertificateVal, CERTIFICATE_TYPE, {
    "common_names" => common_names, "organizations" => organizations
});
object!(RequestVal, REQUEST_TYPE, {
    "action" => action, "namespace" => namespace, "digest" => digest, "reference" => reference
});
