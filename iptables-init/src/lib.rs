//! `iptables-init`: the pod's traffic redirection, compatible with `istio-iptables`.
//!
//! - `cli.rs`: istio-iptables' flags, as text.
//! - `settings.rs`: the environment for flags not given, Istio's defaults, validation
//!   (usage errors name the flag); `host.rs`: IPv6 and DNS servers detected from the host.
//! - `capture.rs`: rule generation, a pure function from settings to rules (Istio's
//!   capture goldens); `builder.rs`: rules per IP family, rendered as `iptables`
//!   arguments or an `iptables-restore` payload (Istio's builder goldens).
//! - `plan.rs`: the restore payload that replaces an earlier run's rules (apply) or removes
//!   them (cleanup) in one transaction per table; `apply.rs` runs it with rollback;
//!   `tools.rs` runs the iptables tools; `routes.rs` the TPROXY routes and `::6`.
//! - `validation.rs`: `--run-validation`.

pub mod apply;
pub mod builder;
pub mod capture;
pub mod cli;
pub mod host;
pub mod plan;
pub mod routes;
pub mod settings;
pub mod tools;
pub mod validation;

pub use cli::Args;
pub use settings::{Host, Settings, UsageError};
