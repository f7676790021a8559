//! Configuration: Envoy v3 protos in, Remora's validated types out.
//!
//! This is the only module that sees `envoy-types` protos. `load` turns text into protos;
//! the other submodules convert protos into the types the data path uses, each error naming
//! the field path.

pub mod error;
pub mod load;

pub use error::{ConfigError, Result};
