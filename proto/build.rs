//! Compiles `proto/ferry/v1/*.proto` with protox (pure Rust), so no `protoc` is needed.
fn main() {
    let fds = protox::compile(["ferry/v1/ferry.proto"], ["proto"]).expect("parse .proto files");
    tonic_prost_build::configure()
        .compile_fds(fds)
        .expect("generate tonic/prost code");
    println!("cargo:rerun-if-changed=proto");
}
