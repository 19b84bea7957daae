//! Where a node reads material a config names but must never hold: certificates, keys,
//! secrets.

use serde::{Deserialize, Serialize};

/// A file (absolute path) or an environment variable of each node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum PemSourceSpec {
    File(String),
    Env(String),
}
