//! Remora: a sidecar data-plane proxy, a drop-in for Envoy in Istio-style meshes.

pub mod cli;
pub mod config;
pub mod routing;
pub mod stats;

/// Envoy's API descriptors, compiled from the protos in `envoy-types` by `build.rs`.
pub static DESCRIPTORS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/envoy_descriptors.bin"));
