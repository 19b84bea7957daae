//! Generates the tonic client and server for `schemas/proto/raft.proto`. Needs `protoc`
//! (`make deps` installs Debian's protobuf-compiler).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=../schemas/proto/raft.proto");
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_protos(&["../schemas/proto/raft.proto"], &["../schemas/proto"])
        .map_err(|e| format!("compiling schemas/proto/raft.proto (is protoc installed? run `make deps`): {e}"))?;
    Ok(())
}
