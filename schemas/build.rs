//! With the `admin-api` feature, generates the tonic client and server for
//! `proto/admin.proto`. Needs `protoc` (`make deps` installs Debian's protobuf-compiler).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/admin.proto");
    if std::env::var_os("CARGO_FEATURE_ADMIN_API").is_none() {
        return Ok(());
    }
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // The dashboard serves these messages as JSON (`/ui/api/...`), field names as the
        // page reads them.
        .message_attribute(".", "#[derive(serde::Serialize)] #[serde(rename_all = \"camelCase\")]")
        .compile_protos(&["proto/admin.proto"], &["proto"])
        .map_err(|e| format!("compiling schemas/proto/admin.proto (is protoc installed? run `make deps`): {e}"))?;
    Ok(())
}
