//! Remora: a sidecar data-plane proxy, a drop-in for Envoy in Istio-style meshes.

pub mod access_log;
pub mod admin;
pub mod cli;
pub mod config;
pub mod drain;
pub mod h1;
pub mod http;
pub mod io;
pub mod listener;
pub mod logging;
pub mod net;
pub mod routing;
pub mod runtime;
pub mod server;
pub mod stats;
pub mod tcp;
#[cfg(test)]
pub(crate) mod testutil;
pub mod upstream;
pub mod wake_gate;
pub mod xds;

/// Envoy's API descriptors, compiled from the protos in `envoy-types` by `build.rs`.
pub static DESCRIPTORS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/envoy_descriptors.bin"));
