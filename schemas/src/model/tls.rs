//! `kind: TLSPolicy`: how every node's HTTPS listener negotiates TLS (Envoy Gateway's
//! `ClientTrafficPolicy.tls` vocabulary, for the one listener raftgate has).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

kind_tag!(
    /// Always `TLSPolicy`.
    TlsPolicyKind,
    "TLSPolicy"
);

/// The HTTPS listener's TLS settings, the same on every node. At most one per config;
/// without one: TLS 1.2 and 1.3, every supported cipher suite in rustls's order (AEAD
/// only, strongest first), the server's order, session tickets and a session cache.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct TlsPolicy {
    pub kind: TlsPolicyKind,
    pub name: String,
    /// The oldest TLS version accepted: `"1.2"` (default) or `"1.3"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_version: Option<TlsVersion>,
    /// The cipher suites offered, most preferred first, by their IANA names (e.g.
    /// `TLS13_AES_256_GCM_SHA384`, `TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256`). Default:
    /// all that rustls supports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cipher_suites: Option<Vec<String>>,
    /// The server's order of `cipherSuites` wins over the client's. Default: true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_cipher_order: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_resumption: Option<SessionResumption>,
}

/// How returning clients skip the full handshake.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct SessionResumption {
    /// Stateless session tickets (TLS 1.2 tickets, TLS 1.3 PSKs), encrypted with keys that
    /// rotate; the same keys on every node when the nodes share `--tls-ticket-key-file`.
    /// Default: true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tickets: Option<bool>,
    /// Sessions each node remembers for resumption by session ID (0 turns it off).
    /// Default: 10000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_size: Option<u32>,
}

/// A TLS version: `"1.2"` or `"1.3"` (a bare YAML number is read the same way).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
pub(crate) enum TlsVersion {
    #[serde(rename = "1.2")]
    Tls12,
    #[serde(rename = "1.3")]
    Tls13,
}

impl<'de> Deserialize<'de> for TlsVersion {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = TlsVersion;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a TLS version, \"1.2\" or \"1.3\"")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<TlsVersion, E> {
                match v.trim().trim_start_matches("TLS").trim_start_matches("v").trim() {
                    "1.2" => Ok(TlsVersion::Tls12),
                    "1.3" => Ok(TlsVersion::Tls13),
                    _ => Err(E::custom(format!(
                        "unsupported TLS version `{v}`: write \"1.2\" or \"1.3\" (older versions are not offered)"
                    ))),
                }
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<TlsVersion, E> {
                self.visit_str(&v.to_string())
            }
        }
        d.deserialize_any(V)
    }
}
