//! HTTP/1.1 by hand: head parsing, chunked decoding, the connection state machine.
//!
//! Nothing here knows about OCI, storage or routes: a [`Handler`] gets each request.

pub mod buffers;
pub mod chunked;
pub mod client;
pub mod conn;
pub mod growing;
pub mod head;
pub mod query;
pub mod response;

pub use conn::{BodyError, BodyRead, BodyReader, Handler, Request};
pub use head::Method;
pub use response::{Body, FileBody, Pacer, Response};
