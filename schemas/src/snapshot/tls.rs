//! The compiled `TLSPolicy`.

use serde::{Deserialize, Serialize};

/// The cipher suites a node can offer (rustls with *ring*), in rustls's default order.
/// A node checks at start that each name is one of its suites.
pub const CIPHER_SUITES: [&str; 9] = [
    "TLS13_AES_256_GCM_SHA384",
    "TLS13_AES_128_GCM_SHA256",
    "TLS13_CHACHA20_POLY1305_SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
];

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TlsPolicySpec {
    /// Empty for the defaults (no `TLSPolicy` in the config).
    pub name: String,
    /// TLS 1.3 only (else 1.2 and 1.3).
    pub tls13_only: bool,
    /// Most preferred first; every entry is in `CIPHER_SUITES`.
    pub cipher_suites: Vec<String>,
    pub server_cipher_order: bool,
    pub tickets: bool,
    pub session_cache_size: u32,
}

impl Default for TlsPolicySpec {
    fn default() -> Self {
        TlsPolicySpec {
            name: String::new(),
            tls13_only: false,
            cipher_suites: CIPHER_SUITES.iter().map(|s| s.to_string()).collect(),
            server_cipher_order: true,
            tickets: true,
            session_cache_size: 10_000,
        }
    }
}
