//! Config loading never panics: any text is either a bootstrap or a ConfigError.
#![no_main]

use libfuzzer_sys::fuzz_target;
use remora::config::bootstrap::{load, Source};

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = load(&Source { path: None, yaml: Some(text), unknown_fields: None });
    }
});
