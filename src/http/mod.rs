//! HTTP/1.1 by hand: head parsing, chunked decoding, the connection state machine.
//!
//! Nothing here knows about OCI, storage or routes: a [`Handler`] gets each request.

pub mod chunked;
pub mod client;
pub mod conn;
pub mod growing;
pub mod head;
pub mod query;
pub mod response;

pub use conn::{
    serve_connection, BodyError, BodyRead, BodyReader, ConnLimits, Handler, Peer, Request,
};
pub use head::{BodyKind, Method, RequestHead};
pub use response::{Body, FileBody, Response};
