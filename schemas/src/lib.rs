//! `schemas` defines raftgate's configuration: the resources users write in their config
//! repository (`Upstream`, `Route`, `Certificate`, `SecurityPolicy`), their strict parsing and complete
//! validation with file:line:column diagnostics, and their compilation into one canonical
//! [`ConfigSnapshot`] with a content hash that is the same on every machine.
//!
//! It must never do I/O in its core: parsing, validation and compilation take file contents
//! that are already in memory, so the same code runs in the CLI, in the leader's Git sync
//! and in tests. The one exception is the optional [`source`] module (feature `source`),
//! which reads a tree from a directory or a Git commit and hands it to the core.

/// The admin API's gRPC types, client and server (`proto/admin.proto`).
#[cfg(feature = "admin-api")]
pub mod admin {
    #![allow(missing_debug_implementations, clippy::all, clippy::pedantic)]
    tonic::include_proto!("raftgate.admin.v1");
}
#[cfg(feature = "admin-api")]
pub mod admin_client;
pub(crate) mod compile;
pub(crate) mod diag;
pub mod diff;
pub mod duration;
pub(crate) mod load;
pub(crate) mod model;
pub mod patterns;
pub mod policy;
pub mod snapshot;
#[cfg(feature = "source")]
pub mod source;
pub mod yaml;

pub use diag::Diagnostic;
pub use duration::Duration;
pub use load::{SourceFile, TreeLimits};
pub use policy::Policy;
pub use snapshot::{ConfigSnapshot, ContentHash, SNAPSHOT_FORMAT};

/// A validated config tree.
#[derive(Debug, Clone)]
pub struct Compiled {
    pub snapshot: ConfigSnapshot,
    pub hash: ContentHash,
    /// Number of YAML files read.
    pub files: usize,
}

impl Compiled {
    /// `3 upstreams, 2 routes, 1 certificate, 1 security policy in 4 files` (policies only
    /// when there are some).
    pub fn summary(&self) -> String {
        let n = |count: usize, one: &str| format!("{count} {one}{}", if count == 1 { "" } else { "s" });
        let policies = match self.snapshot.security_policies.len() {
            0 => String::new(),
            1 => ", 1 security policy".to_string(),
            k => format!(", {k} security policies"),
        };
        let tls = if self.snapshot.tls_policy.name.is_empty() {
            String::new()
        } else {
            format!(", TLS policy `{}`", self.snapshot.tls_policy.name)
        };
        format!(
            "{}, {}, {}{policies}{tls} in {}",
            n(self.snapshot.upstreams.len(), "upstream"),
            n(self.snapshot.routes.len(), "route"),
            n(self.snapshot.certificates.len(), "certificate"),
            n(self.files, "file"),
        )
    }
}

/// Validates and compiles a whole config tree with the default limits.
///
/// Returns every problem found, sorted by file and position, or the compiled snapshot.
pub fn compile_tree(files: &[SourceFile]) -> Result<Compiled, Vec<Diagnostic>> {
    compile_tree_with(files, &TreeLimits::default())
}

pub fn compile_tree_with(files: &[SourceFile], limits: &TreeLimits) -> Result<Compiled, Vec<Diagnostic>> {
    compile_tree_for(files, limits, &Policy::default())
}

/// Validates and compiles a tree under the nodes' `Policy` (what their operator allows).
pub fn compile_tree_for(
    files: &[SourceFile],
    limits: &TreeLimits,
    policy: &Policy,
) -> Result<Compiled, Vec<Diagnostic>> {
    let mut diags = Vec::new();
    let resources = load::load(files, limits, &mut diags);
    let snapshot = compile::compile(&resources, policy, &mut diags);
    if diags.is_empty() {
        let hash = snapshot.content_hash();
        Ok(Compiled { snapshot, hash, files: files.len() })
    } else {
        diags.sort();
        diags.dedup();
        Err(diags)
    }
}

/// The JSON Schema of one resource document, generated from the Rust types. The committed
/// copy lives at `schemas/raftgate.schema.json`; a test fails when it is stale.
pub fn json_schema() -> serde_json::Value {
    let mut schema = schemars::schema_for!(model::ResourceDocument);
    schema.insert("$id".into(), serde_json::Value::String("https://raftgate.dev/schemas/raftgate.schema.json".into()));
    schema.to_value()
}

/// The file name of the committed schema, relative to the `schemas` crate.
pub const SCHEMA_FILE: &str = "raftgate.schema.json";

/// Is this path one the loader reads? (`*.yaml` / `*.yml`)
pub fn is_config_file(path: &str) -> bool {
    path.ends_with(".yaml") || path.ends_with(".yml")
}
