//! An xDS client for Remora, independent of the proxy: it speaks the Aggregated Discovery
//! Service (ADS) to a control plane over TCP or a Unix socket, keeps the protocol state
//! (versions, nonces, subscriptions), and hands each response to its consumer as one
//! batch to validate and apply; the consumer's verdict becomes the ACK or NACK.
//!
//! - [`resource`]: the resource types and their type URLs.
//! - [`sotw`] and [`delta`]: the state-of-the-world and incremental protocol states
//!   (pure, no I/O); `protocol` puts both behind the one trait the stream loop uses.
//! - [`transport`]: the gRPC channel to the control plane.
//! - [`backoff`]: jittered exponential reconnect delays.
//! - [`cache`]: the accepted resources per type, as snapshots behind `watch` channels.
//! - [`client`]: the stream loop: connect, subscribe, deliver, ACK/NACK, reconnect.

pub mod backoff;
pub mod cache;
pub mod client;
pub mod delta;
mod protocol;
pub mod resource;
pub mod sotw;
pub mod transport;

pub use client::{spawn, Api, Config, Event, Handle, Rejection, Update};
pub use resource::ResourceType;
pub use transport::Target;
