//! Path normalization never panics and never yields a path escaping the root.
#![no_main]

use libfuzzer_sys::fuzz_target;
use remora::http::headers::normalize;

fuzz_target!(|data: &[u8]| {
    if let Ok(path) = std::str::from_utf8(data) {
        if let Some(out) = normalize(path, true, true) {
            let p = out.split('?').next().unwrap_or("");
            assert!(p.starts_with('/'), "{path:?} -> {out:?}");
            assert!(!p.split('/').any(|seg| seg == ".."), "{path:?} -> {out:?}");
        }
    }
});
