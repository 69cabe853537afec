//! Origin: an OCI container registry on a hand-rolled HTTP/1.1 server, one runtime per core.
#![allow(async_fn_in_trait)] // thread-per-core: futures stay on their core, no Send bounds

pub(crate) mod api;
pub(crate) mod app;
pub(crate) mod audit;
pub(crate) mod auth;
pub(crate) mod auth_hash;
pub mod cli;
pub(crate) mod clock;
pub(crate) mod config;
pub(crate) mod error;
pub(crate) mod events;
pub(crate) mod failpoint;
pub(crate) mod future;
pub(crate) mod http;
pub(crate) mod limits;
pub(crate) mod log;
pub(crate) mod maintenance;
pub(crate) mod metrics;
pub(crate) mod metrics_s3;
pub(crate) mod mirror;
pub(crate) mod notify;
pub(crate) mod oci;
pub(crate) mod ops;
pub(crate) mod policy;
pub(crate) mod pool;
pub(crate) mod registry;
pub(crate) mod reload;
pub(crate) mod replication;
pub(crate) mod serve;
pub(crate) mod server;
pub(crate) mod service;
pub(crate) mod storage;
pub(crate) mod sys;
pub(crate) mod tls;
pub(crate) mod trace;
pub(crate) mod ui;
