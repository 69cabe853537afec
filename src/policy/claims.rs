//! `identity.oidc.claims`: a verified token's JSON claims as a CEL value, converted lazily on
//! access (a policy reads two or three claims of the twenty a CI token carries).
//!
//! Field access and `[...]` on a claim that is absent give `null` rather than an error, so a
//! policy on claims reads naturally for every caller: `identity.oidc.claims.repository ==
//! "acme/app"` is false, not a run-time error (which would deny the whole request), for a
//! password identity or a token without that claim. `"ref" in identity.oidc.claims` tests
//! presence. JSON objects inside claims behave the same way.

use cel::common::traits::{Container, Indexer};
use cel::common::types::{CelBool, CelDouble, CelInt, CelList, CelNull, CelString, CelUInt, Type};
use cel::common::value::{CowVal, Val};
use cel::ExecutionError;
use serde_json::{Map, Value};

static CLAIMS_TYPE: Type = Type::new_unspecified_type("origin.Claims");

/// A JSON object (or none: no claims) as a CEL value.
#[derive(Debug, Clone, Copy)]
pub(super) struct ClaimsVal<'a>(pub(super) Option<&'a Map<String, Value>>);

impl<'a> ClaimsVal<'a> {
    fn lookup(&self, idx: &dyn Val) -> Option<&'a Value> {
        let key = idx.downcast_ref::<CelString>()?.inner();
        self.0?.get(key)
    }
}

/// One JSON value as a CEL value, borrowing its strings.
fn to_val<'a>(v: &'a Value) -> Box<dyn Val + 'a> {
    match v {
        Value::Null => Box::new(CelNull),
        Value::Bool(b) => Box::new(CelBool::from(*b)),
        Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => Box::new(CelInt::from(i)),
            (None, Some(u)) => Box::new(CelUInt::from(u)),
            _ => Box::new(CelDouble::from(n.as_f64().unwrap_or(f64::NAN))),
        },
        Value::String(s) => Box::new(CelString::from(s.as_str())),
        Value::Array(items) => Box::new(CelList::from(
            items.iter().map(to_val).collect::<Vec<Box<dyn Val + 'a>>>(),
        )),
        Value::Object(map) => Box::new(ClaimsVal(Some(map))),
    }
}

impl Indexer for ClaimsVal<'_> {
    fn get<'b, 'v>(&'b self, idx: &dyn Val) -> Result<CowVal<'b, 'v>, ExecutionError>
    where
        Self: 'v,
    {
        Ok(match self.lookup(idx) {
            Some(v) => CowVal::Owned(to_val(v)),
            None => CowVal::owned(CelNull),
        })
    }

    fn steal<'v>(self: Box<Self>, idx: &dyn Val) -> Result<Box<dyn Val + 'v>, ExecutionError>
    where
        Self: 'v,
    {
        self.get(idx).map(CowVal::into_owned)
    }
}

impl Container for ClaimsVal<'_> {
    fn contains(&self, value: &dyn Val) -> Result<bool, ExecutionError> {
        Ok(self.lookup(value).is_some())
    }
}

impl Val for ClaimsVal<'_> {
    fn get_type(&self) -> &Type {
        &CLAIMS_TYPE
    }

    fn cel_type() -> &'static Type {
        &CLAIMS_TYPE
    }

    fn as_indexer<'b, 'v>(&'b self) -> Option<&'b (dyn Indexer + 'v)>
    where
        Self: 'v,
    {
        Some(self)
    }

    fn as_container(&self) -> Option<&dyn Container> {
        Some(self)
    }

    fn clone_as_boxed<'v>(&self) -> Box<dyn Val + 'v>
    where
        Self: 'v,
    {
        Box::new(*self)
    }
}
