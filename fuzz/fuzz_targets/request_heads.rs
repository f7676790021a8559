//! The HTTP/1.1 server's request reading (heads, then their bodies, as a connection's
//! bytes come) never panics and always makes progress.
#![no_main]

use libfuzzer_sys::fuzz_target;
use remora::http::h1::read_requests_for_fuzzing;

fuzz_target!(|data: &[u8]| {
    read_requests_for_fuzzing(data);
});
