//! The upstream side: clusters with their hosts and load balancer, name resolution for
//! DNS clusters, connection establishment and per-worker connection pools.

pub mod breakers;
pub mod cluster;
pub mod connect;
pub mod dns;
pub mod h1;
pub mod health;
pub mod host;
pub mod lb;
pub mod outlier;
pub mod pool;

pub use cluster::{ClusterManager, ClusterState, Host};
