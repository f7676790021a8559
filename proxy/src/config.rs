//! Configuration: Envoy v3 protos in, Remora's validated types out.
//!
//! This is the only module that sees `envoy-types` protos. `load` turns text into protos;
//! the other submodules convert protos into the types the data path uses, each error naming
//! the field path.

// Envoy keeps deprecated fields working, and so must we: configs in the wild use them.
#![allow(deprecated)]

pub mod access_log;
pub mod bootstrap;
pub mod common;
pub mod dump;
pub mod dynamic;
pub mod error;
pub mod listener;
pub mod listener_filter;
pub mod load;
pub mod matcher;

pub use error::{ConfigError, Result};
pub mod circuit_breakers;
pub mod cluster;
pub mod fault;
pub mod hash_policy;
pub mod hcm;
pub mod headers;
pub mod health_check;
pub mod lb;
pub mod outlier;
pub mod per_filter;
pub mod retry;
pub mod route;
pub mod route_action;
pub mod stream_duration;
pub mod tcp_proxy;
