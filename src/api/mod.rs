//! The distribution API: routing, then one handler per endpoint.

pub mod route;

use crate::error::{Code, Error, Result};
use crate::http::{Method, Request, Response};
pub use route::{Action, Endpoint};

/// Answers one request. Errors become OCI error bodies in the caller.
pub async fn dispatch(req: &mut Request<'_>) -> Result<Response> {
    let (endpoint, _action) = match route::route(req.head.method, req.head.path()) {
        Ok(r) => r,
        Err(route::RouteError::NotFound) => {
            return Err(Error::new(Code::NotFound, "no such endpoint"))
        }
        Err(route::RouteError::MethodNotAllowed(allow)) => {
            return Err(
                Error::new(Code::Unsupported, "method not allowed on this endpoint")
                    .with_status(405)
                    .with_header("Allow", allow),
            )
        }
    };
    match endpoint {
        Endpoint::Base => Ok(base(req.head.method)),
        _ => Err(Error::new(Code::Unsupported, "not implemented yet").with_status(501)),
    }
}

/// `GET /v2/`: the API version check every client starts with.
fn base(method: Method) -> Response {
    let _ = method;
    Response::json(200, b"{}".to_vec())
}
