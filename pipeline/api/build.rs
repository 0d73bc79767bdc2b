//! Generates the gRPC `SentimentService` (messages, server and client) from
//! `schemas/proto/sentiment.proto` when the feature `grpc` is on: protox (a protobuf compiler in
//! Rust, so no `protoc` is needed) parses the file into a descriptor set, and tonic-prost-build
//! writes the Rust code into `OUT_DIR`. Without the feature it does nothing.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if std::env::var_os("CARGO_FEATURE_GRPC").is_none() {
        return;
    }
    #[cfg(feature = "grpc")]
    if let Err(e) = grpc::generate() {
        // A build script reports through its exit status; the message says what failed.
        eprintln!("error: generating the gRPC code failed: {e}");
        std::process::exit(1);
    }
}

#[cfg(feature = "grpc")]
mod grpc {
    use std::path::PathBuf;

    pub fn generate() -> Result<(), Box<dyn std::error::Error>> {
        let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
        let proto_dir = manifest.join("../../schemas/proto");
        let proto = proto_dir.join("sentiment.proto");
        println!("cargo:rerun-if-changed={}", proto.display());
        let fds = protox::compile([&proto], [&proto_dir])?;
        tonic_prost_build::configure()
            .build_server(true)
            .build_client(true)
            // Client without `connect` (tonic's `channel` transport): callers bring a channel.
            .build_transport(false)
            // Maps as BTreeMap, as in the REST answers: stable order.
            .btree_map(".")
            .compile_fds(fds)?;
        Ok(())
    }
}
