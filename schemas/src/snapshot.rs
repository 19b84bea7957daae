//! The compiled, canonical configuration: the unit Raft replicates and the data plane runs.
//!
//! Every default is filled in and every list whose order carries no meaning is sorted, so
//! two trees that mean the same thing compile to equal snapshots with equal hashes, whatever
//! their file layout, document order or formatting. Rule order inside a route does carry
//! meaning (it breaks precedence ties) and is kept.

use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::duration::Duration;
pub use crate::model::{DnsRecordType, PathMatchType, RateLimitScope, RetryOn, StringMatchType, UpstreamProtocol};

/// Bumped whenever the meaning of a snapshot changes, so a node never runs a snapshot it
/// would misread.
pub const SNAPSHOT_FORMAT: u32 = 8;

mod security;
mod source;
mod tls;
mod traffic;
pub use security::*;
pub use source::PemSourceSpec;
pub use tls::*;
pub use traffic::*;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConfigSnapshot {
    pub format: u32,
    /// Sorted by name.
    pub upstreams: Vec<UpstreamSpec>,
    /// Sorted by name.
    pub routes: Vec<RouteSpec>,
    /// Sorted by name.
    pub certificates: Vec<CertificateSpec>,
    /// Sorted by name.
    pub security_policies: Vec<SecurityPolicySpec>,
    /// The HTTPS listener's TLS settings (the defaults when the config has no `TLSPolicy`).
    pub tls_policy: TlsPolicySpec,
}

impl Default for ConfigSnapshot {
    fn default() -> Self {
        Self {
            format: SNAPSHOT_FORMAT,
            upstreams: Vec::new(),
            routes: Vec::new(),
            certificates: Vec::new(),
            security_policies: Vec::new(),
            tls_policy: TlsPolicySpec::default(),
        }
    }
}

impl ConfigSnapshot {
    /// SHA-256 of the canonical JSON encoding. JSON of these types is deterministic: no maps,
    /// no floats, fields in declaration order.
    pub fn content_hash(&self) -> ContentHash {
        // Streamed into the hash through a small buffer: the JSON of a large config is
        // megabytes that would otherwise be allocated (and the pages zeroed) only to be
        // hashed once.
        let mut out = std::io::BufWriter::with_capacity(64 * 1024, Sha256::new());
        serde_json::to_writer(&mut out, self).expect("a snapshot always serializes");
        let hasher = out.into_inner().unwrap_or_else(|_| unreachable!("hashing cannot fail to write"));
        ContentHash(hasher.finalize().into())
    }
}

/// Content hash of a snapshot, printed as 64 hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ContentHash(pub [u8; 32]);

impl ContentHash {
    /// The first 12 hex digits, for tables and log lines.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..6])
    }
}

impl fmt::Display for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ContentHash({})", self.short())
    }
}

// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UpstreamSpec {
    pub name: String,
    /// Sorted by address; addresses are unique. Empty when `dns` finds them all.
    pub endpoints: Vec<EndpointSpec>,
    pub dns: Option<DnsSpec>,
    pub load_balancer: LoadBalancerSpec,
    pub protocol: UpstreamProtocol,
    pub connect_timeout: Duration,
    pub tls: Option<UpstreamTlsSpec>,
    pub active_health_check: Option<ActiveHealthCheckSpec>,
    pub passive_health_check: Option<PassiveHealthCheckSpec>,
    pub circuit_breaker: CircuitBreakerSpec,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointSpec {
    /// `host:port` as written (IPv6 hosts bracketed).
    pub address: String,
    pub weight: u32,
}

/// Endpoints from DNS records, resolved by each node on its own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DnsSpec {
    /// Lower-cased, without a trailing dot.
    pub name: String,
    /// The endpoints' port; 0 for SRV (the records carry it).
    pub port: u16,
    pub record_type: DnsRecordType,
    pub refresh: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum LoadBalancerSpec {
    RoundRobin,
    LeastRequest,
    Random,
    ConsistentHash(HashOn),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum HashOn {
    /// Lower-cased header name.
    Header(String),
    Cookie(String),
    SourceIp,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UpstreamTlsSpec {
    pub sni: Option<String>,
    pub ca_file: Option<String>,
    pub insecure_skip_verify: bool,
    /// `(certificate, private key)` presented to endpoints that ask for one.
    pub client_certificate: Option<(PemSourceSpec, PemSourceSpec)>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ActiveHealthCheckSpec {
    pub path: String,
    pub interval: Duration,
    pub timeout: Duration,
    pub healthy_threshold: u32,
    pub unhealthy_threshold: u32,
    /// Sorted, unique.
    pub expected_statuses: Vec<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PassiveHealthCheckSpec {
    pub consecutive_failures: u32,
    pub base_ejection_time: Duration,
    pub max_ejection_percent: u32,
}

/// Limits always apply (with generous defaults); failure-based opening only when the
/// upstream declares a `circuitBreaker`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CircuitBreakerSpec {
    pub consecutive_failures: Option<u32>,
    pub error_rate: Option<ErrorRateSpec>,
    pub open_for: Duration,
    pub half_open_requests: u32,
    pub max_connections: u32,
    pub max_pending_requests: u32,
    pub max_parallel_requests: u32,
    pub max_parallel_retries: u32,
    /// When set, replaces `max_parallel_retries`.
    pub retry_budget: Option<RetryBudgetSpec>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RetryBudgetSpec {
    pub percent: u32,
    pub min_concurrency: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorRateSpec {
    pub percent: u32,
    pub window: Duration,
    pub minimum_requests: u32,
}

// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteSpec {
    pub name: String,
    /// Lower-cased, sorted, unique. Empty: every host.
    pub hostnames: Vec<String>,
    /// In the order written.
    pub rules: Vec<RuleSpec>,
    /// Plain-HTTP requests are redirected to HTTPS.
    pub https_redirect: Option<HttpsRedirectSpec>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpsRedirectSpec {
    /// `None`: 443, left out of the `Location`.
    pub port: Option<u16>,
    pub status_code: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RuleSpec {
    pub name: Option<String>,
    /// Never empty: a rule without matches matches `PathPrefix /`.
    pub matches: Vec<MatchSpec>,
    pub filters: Vec<FilterSpec>,
    /// Empty only when a redirect filter answers the request.
    pub backends: Vec<BackendSpec>,
    pub request_timeout: Option<Duration>,
    pub backend_request_timeout: Option<Duration>,
    // The policies most rules do not have are boxed: kept inline they made every rule
    // about 740 bytes, 22 MB of a 10,000-route config (issue #17's memory goal).
    pub retry: Option<Box<RetrySpec>>,
    /// `None`: the node's default.
    pub max_request_body_bytes: Option<u64>,
    pub fallback: Option<Box<FallbackSpec>>,
    pub rate_limit: Option<Box<RateLimitSpec>>,
    /// Sorted by upstream; each upstream once.
    pub mirrors: Vec<MirrorSpec>,
    pub cache: Option<Box<CacheSpec>>,
    pub compression: Option<Box<CompressionSpec>>,
    pub session_persistence: Option<Box<SessionPersistenceSpec>>,
    /// The `SecurityPolicy` guarding this rule (one naming the rule wins over one naming
    /// its route).
    pub security: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum FallbackSpec {
    Static {
        status: u16,
        /// Names lower-cased, in the order written.
        headers: Vec<(String, String)>,
        body: String,
    },
    Upstream(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RateLimitSpec {
    pub requests: u32,
    pub period: Duration,
    pub burst: u32,
    pub key: RateLimitKeySpec,
    pub scope: RateLimitScope,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum RateLimitKeySpec {
    ClientIp,
    /// Lower-cased header name.
    Header(String),
    /// Lower-cased header name.
    ApiKey(String),
    /// The consumer a `SecurityPolicy` authenticated; client IP without one.
    Consumer,
    /// A claim of the verified JSON Web Token; client IP without one.
    Claim(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MatchSpec {
    pub path: PathMatchSpec,
    pub method: Option<String>,
    /// Sorted by name then value; names lower-cased.
    pub headers: Vec<ValueMatchSpec>,
    /// Sorted by name then value.
    pub query_params: Vec<ValueMatchSpec>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PathMatchSpec {
    pub kind: PathMatchType,
    /// For `PathPrefix`, without a trailing `/` (except the root prefix `/` itself).
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ValueMatchSpec {
    pub name: String,
    pub kind: StringMatchType,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum FilterSpec {
    RequestHeaderModifier(HeaderModifierSpec),
    ResponseHeaderModifier(HeaderModifierSpec),
    UrlRewrite {
        hostname: Option<String>,
        path: Option<PathModifierSpec>,
    },
    RequestRedirect {
        scheme: Option<String>,
        hostname: Option<String>,
        path: Option<PathModifierSpec>,
        port: Option<u16>,
        status_code: u16,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HeaderModifierSpec {
    /// Names lower-cased, in the order written.
    pub set: Vec<(String, String)>,
    pub add: Vec<(String, String)>,
    pub remove: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum PathModifierSpec {
    ReplaceFullPath(String),
    ReplacePrefixMatch(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BackendSpec {
    pub upstream: String,
    pub weight: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RetrySpec {
    pub attempts: u32,
    /// Sorted, unique.
    pub retry_on: Vec<RetryOn>,
    /// Sorted, unique.
    pub status_codes: Vec<u16>,
    pub per_try_timeout: Option<Duration>,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    pub allow_non_idempotent: bool,
}

// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CertificateSpec {
    pub name: String,
    /// Lower-cased, sorted, unique.
    pub hostnames: Vec<String>,
    /// Served when no certificate matches the client's SNI name, or it sent none.
    pub is_default: bool,
    pub certificate: PemSourceSpec,
    pub private_key: PemSourceSpec,
    /// Clients of these host names present a certificate from this CA.
    pub client_validation: Option<ClientValidationSpec>,
    /// A DER OCSP response on each node, stapled to handshakes.
    pub ocsp_response_file: Option<String>,
    /// The `Strict-Transport-Security` value for these host names over HTTPS.
    pub hsts: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClientValidationSpec {
    pub ca_file: String,
    /// A client without a certificate is let in (one with a bad certificate never is).
    pub optional: bool,
}
