//! Compiles the gRPC test service (pure Rust: protox parses, tonic-prost-build generates).

fn main() {
    println!("cargo:rerun-if-changed=proto/echo.proto");
    let fds = protox::compile(["echo.proto"], ["proto"]).expect("compile proto/echo.proto");
    tonic_prost_build::configure()
        .compile_fds(fds)
        .expect("generate gRPC code for proto/echo.proto");
}
