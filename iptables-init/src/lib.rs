//! `iptables-init`: the pod's traffic redirection, compatible with `istio-iptables`.
//!
//! - `builder.rs`: rules per IP family as istio-iptables builds them (append, insert,
//!   address-family-specific values), rendered as `iptables` arguments or as an
//!   `iptables-restore` payload (Istio's builder goldens).
//! - `cli.rs`: istio-iptables' flags, as text.
//! - `settings.rs`: the environment for flags not given, Istio's defaults, validation
//!   (usage errors name the flag).
//!
//! Rule generation (a pure function from settings to `iptables-restore` payloads), applying
//! and `--run-validation` come next.

pub mod builder;
pub mod capture;
pub mod cli;
pub mod settings;

pub use cli::Args;
pub use settings::{Host, Settings, UsageError};
