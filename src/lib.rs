//! Origin: an OCI container registry on a hand-rolled HTTP/1.1 server, one runtime per core.
#![allow(async_fn_in_trait)] // thread-per-core: futures stay on their core, no Send bounds

pub mod api;
pub mod app;
pub mod auth;
pub mod auth_hash;
pub mod cli;
pub mod clock;
pub mod config;
pub mod error;
pub mod events;
pub mod failpoint;
pub mod future;
pub mod http;
pub mod log;
pub mod maintenance;
pub mod metrics;
pub mod metrics_s3;
pub mod mirror;
pub mod notify;
pub mod oci;
pub mod ops;
pub mod policy;
pub mod pool;
pub mod registry;
pub mod reload;
pub mod serve;
pub mod server;
pub mod storage;
pub mod sys;
pub mod tls;
