//! The resources users write in their config repository, exactly as written.
//!
//! These types mirror the YAML one to one (camelCase keys, optional fields left as
//! `Option`), reject unknown fields, and carry the doc comments that become descriptions in
//! the published JSON Schema. Defaults are filled in later, by `compile`, so that the
//! compiled snapshot does not depend on whether a default was written out or left implicit.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::duration::Duration;

macro_rules! kind_tag {
    ($(#[$doc:meta])* $name:ident, $text:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
        pub(crate) enum $name {
            #[serde(rename = $text)]
            $name,
        }
    };
}

kind_tag!(
    /// Always `Upstream`.
    UpstreamKind,
    "Upstream"
);
kind_tag!(
    /// Always `Route`.
    RouteKind,
    "Route"
);
kind_tag!(
    /// Always `Certificate`.
    CertificateKind,
    "Certificate"
);

mod security;
mod tls;
mod traffic;
pub(crate) use security::*;
pub use security::{AuthzAction, ClaimValueType};
pub(crate) use tls::*;
pub(crate) use traffic::{Cache, Compression, CookieLifetime, RequestMirror, SessionPersistence};
pub use traffic::{ContentCoding, PersistenceType};

/// Any one resource document. Used to generate the JSON Schema for resource files; the
/// loader picks the concrete type from `kind` before decoding.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
// Only used to describe the schema, never held in memory in bulk.
#[allow(clippy::large_enum_variant)]
#[serde(untagged)]
#[schemars(title = "raftgate resource")]
pub(crate) enum ResourceDocument {
    Upstream(Upstream),
    Route(Route),
    Certificate(Certificate),
    SecurityPolicy(SecurityPolicy),
    TlsPolicy(TlsPolicy),
}

// ---------------------------------------------------------------------------------------
// Upstream

/// A pool of endpoints that routes send traffic to, with how to balance, check and protect
/// them.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct Upstream {
    pub kind: UpstreamKind,
    /// Unique among upstreams: lowercase letters, digits and `-`, at most 63 characters.
    pub name: String,
    /// The servers of this pool. At least one, unless `dns` finds them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<Endpoint>,
    /// Endpoints found in DNS and kept current by every node on its own (A, AAAA or SRV
    /// records), besides any static `endpoints`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<Dns>,
    /// How requests are spread over the endpoints. Default: `roundRobin`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancer: Option<LoadBalancer>,
    /// HTTP version spoken to the endpoints: `http1` (default) or `http2` (required for gRPC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<UpstreamProtocol>,
    /// How long to wait for a TCP (and TLS) connection to an endpoint. Default: `5s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_timeout: Option<Duration>,
    /// Connect to the endpoints over TLS. Absent: plaintext.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<UpstreamTls>,
    /// Active probes and passive outlier detection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheck>,
    /// Stop sending to a failing upstream for a while, and cap concurrency towards it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub circuit_breaker: Option<CircuitBreaker>,
}

/// One server of an upstream.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct Endpoint {
    /// `host:port`, where host is an IPv4 address, a bracketed IPv6 address (`[::1]:80`) or a
    /// DNS name.
    pub address: String,
    /// Relative share of traffic, 1 to 1000. Default: 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
}

/// Where an upstream's endpoints come from in DNS.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct Dns {
    /// The name to resolve, as written (search domains are not applied): `users.internal`
    /// for A/AAAA, `_http._tcp.users.internal` for SRV.
    pub name: String,
    /// The endpoints' port. Required for `A` and `AAAA`; not allowed for `SRV`, whose
    /// records carry it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// `A` (default), `AAAA` or `SRV`.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub record_type: Option<DnsRecordType>,
    /// The longest time between two resolutions; shorter when the records' TTL is (never
    /// under 1s). Default: `10s`; at most `1h`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh: Option<Duration>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum DnsRecordType {
    A,
    #[allow(clippy::upper_case_acronyms)]
    AAAA,
    #[allow(clippy::upper_case_acronyms)]
    SRV,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct LoadBalancer {
    /// `roundRobin` (smooth weighted), `leastRequest` (power of two choices), `random`, or
    /// `consistentHash` (needs `consistentHash`).
    pub policy: LoadBalancerPolicy,
    /// What to hash on when `policy` is `consistentHash`: exactly one of `header`, `cookie`,
    /// `sourceIP`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consistent_hash: Option<ConsistentHash>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) enum LoadBalancerPolicy {
    RoundRobin,
    LeastRequest,
    Random,
    ConsistentHash,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct ConsistentHash {
    /// Hash the value of this request header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    /// Hash the value of this cookie.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cookie: Option<String>,
    /// Hash the client's IP address.
    #[serde(default, rename = "sourceIP", skip_serializing_if = "Option::is_none")]
    pub source_ip: Option<bool>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum UpstreamProtocol {
    Http1,
    Http2,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct UpstreamTls {
    /// Server name sent in the TLS handshake and checked against the certificate. Default:
    /// the endpoint's host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sni: Option<String>,
    /// PEM file on each node with the CA certificates to trust. Default: the system roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
    /// Skip certificate verification. Only for testing; never in production.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insecure_skip_verify: Option<bool>,
    /// The certificate and key raftgate presents to endpoints that require client
    /// certificates (mTLS), from files or the environment of each node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_certificate: Option<ClientCertificate>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct ClientCertificate {
    /// Where each node finds the PEM certificate chain.
    pub certificate: PemSource,
    /// Where each node finds the PEM private key.
    pub private_key: PemSource,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct HealthCheck {
    /// Probe every endpoint periodically.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active: Option<ActiveHealthCheck>,
    /// Eject endpoints that fail real requests (outlier detection).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passive: Option<PassiveHealthCheck>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct ActiveHealthCheck {
    /// HTTP path probed with GET, starting with `/`.
    pub path: String,
    /// Time between probes of one endpoint, per node. Default: `10s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<Duration>,
    /// A probe slower than this fails. Default: `2s`; must be shorter than `interval`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    /// Consecutive successes that bring an unhealthy endpoint back. Default: 2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthy_threshold: Option<u32>,
    /// Consecutive failures that take an endpoint out. Default: 3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unhealthy_threshold: Option<u32>,
    /// Status codes that count as healthy. Default: `[200]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_statuses: Option<Vec<u16>>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct PassiveHealthCheck {
    /// Consecutive 5xx or connection failures that eject an endpoint. Default: 5.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_failures: Option<u32>,
    /// First ejection time; each repeated ejection multiplies it. Default: `30s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_ejection_time: Option<Duration>,
    /// Never eject more than this percentage of the endpoints (rounded down). Default: 50.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ejection_percent: Option<u32>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct CircuitBreaker {
    /// Open after this many consecutive 5xx or gateway errors. Default: 5.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_failures: Option<u32>,
    /// Also open when the error rate over a window passes a threshold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_rate: Option<ErrorRate>,
    /// How long an open breaker answers without touching the upstream. Default: `30s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_for: Option<Duration>,
    /// Probe requests let through while half-open. Default: 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub half_open_requests: Option<u32>,
    /// Most connections open to the whole upstream. Default: 1024.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<u32>,
    /// Most requests waiting for a connection. Default: 1024.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_pending_requests: Option<u32>,
    /// Most requests in flight. Default: 1024.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_parallel_requests: Option<u32>,
    /// Most retries in flight towards the upstream. Default: 3. Replaced by `retryBudget`
    /// when that is given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_parallel_retries: Option<u32>,
    /// Retries in flight may be at most this share of the requests in flight (with a floor),
    /// so a failing upstream never sees a retry storm. Replaces `maxParallelRetries`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_budget: Option<RetryBudget>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct RetryBudget {
    /// Retries in flight as a percentage (1–100) of the requests in flight. Default: 20.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<u32>,
    /// Retries always allowed in flight, however few requests are. Default: 3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_concurrency: Option<u32>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct ErrorRate {
    /// Open when at least this percentage (1–100) of requests in the window failed.
    pub percent: u32,
    /// Length of the sliding window.
    pub window: Duration,
    /// Below this many requests in the window the rate is not trusted. Default: 20.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minimum_requests: Option<u32>,
}

// ---------------------------------------------------------------------------------------
// Route

/// Which requests go where, in Gateway API HTTPRoute terms.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct Route {
    pub kind: RouteKind,
    /// Unique among routes: lowercase letters, digits and `-`, at most 63 characters.
    pub name: String,
    /// Host names this route serves: exact (`api.example.com`) or one leading wildcard
    /// label (`*.example.com`). Empty or absent: every host.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hostnames: Vec<String>,
    /// The rules, tried by Gateway API precedence (exact path over prefix, longer prefix
    /// first, more matches first, then order).
    pub rules: Vec<Rule>,
    /// Plain-HTTP requests to this route are redirected to HTTPS (`true`, or the port and
    /// status to use); HTTPS requests are served by the rules.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub https_redirect: Option<HttpsRedirect>,
}

/// `true` for the defaults (port 443, status 308), or the settings.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(untagged)]
pub(crate) enum HttpsRedirect {
    On(bool),
    With(HttpsRedirectSettings),
}

// By hand rather than `untagged`, so a mistyped field gets its own error and help.
impl<'de> Deserialize<'de> for HttpsRedirect {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = HttpsRedirect;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("`true`, or `{ port, statusCode }`")
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<HttpsRedirect, E> {
                Ok(HttpsRedirect::On(v))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<HttpsRedirect, A::Error> {
                HttpsRedirectSettings::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(HttpsRedirect::With)
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct HttpsRedirectSettings {
    /// The port in the `Location` (left out when 443). Default: 443.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// 301, 302, 303, 307 or 308 (default: 308, which keeps the method and body).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_code: Option<u16>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct Rule {
    /// Optional name, shown in metrics and logs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// A request matches the rule if it matches any of these. Absent: `PathPrefix /`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub matches: Vec<Match>,
    /// Changes applied to the request or response, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<Filter>,
    /// Upstreams to send matching requests to, split by weight. Required unless a
    /// `RequestRedirect` filter answers the request.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backend_refs: Vec<BackendRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<Timeouts>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<Retry>,
    /// Largest request body this rule accepts, in bytes (larger gets 413). Default: the
    /// node's `--max-body-bytes`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_request_body_bytes: Option<u64>,
    /// What to answer when no endpoint is available, the breaker is open or the upstream
    /// failed (a 502, 503 or 504 from the gateway or the upstream).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<Fallback>,
    /// Token buckets that cap how fast clients may call this rule (429 beyond).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
    /// Compress upstream answers for clients that accept it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compression: Option<Compression>,
    /// Store answers and serve them again while they are fresh (RFC 9111).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<Cache>,
    /// Keep a client on one endpoint (cookie or header).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_persistence: Option<SessionPersistence>,
}

/// Exactly one of `status` (a static answer) or `upstream`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct Fallback {
    /// Answer with this status (100–599), `headers` and `body`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Response headers of the static answer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<HeaderValue>,
    /// Body of the static answer, at most 64 KiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// Send the request to this upstream instead (once, through its own breaker).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct RateLimit {
    /// Requests allowed per `period` for each key.
    pub requests: u32,
    /// Default: `1s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period: Option<Duration>,
    /// Requests a key may make at once after being idle. Default: `requests`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
    /// Who gets a bucket of their own. Default: `{ clientIP: true }`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<RateLimitKey>,
    /// `node` (default): each node allows `requests`. `cluster`: the whole fleet does; each
    /// node allows `requests` divided by the number of nodes in the cluster, and adjusts when
    /// the cluster grows or shrinks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<RateLimitScope>,
}

/// Exactly one of the fields.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct RateLimitKey {
    /// One bucket per client IP address.
    #[serde(default, rename = "clientIP", skip_serializing_if = "Option::is_none")]
    pub client_ip: Option<bool>,
    /// One bucket per value of this request header; requests without it share one bucket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    /// One bucket per API key read from this request header. Keys are held only as hashes;
    /// requests without a key are limited per client IP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
    /// One bucket per consumer authenticated by the route's `SecurityPolicy`; requests
    /// without one are limited per client IP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumer: Option<bool>,
    /// One bucket per value of this claim of the request's verified JSON Web Token
    /// (`sub`, `client_id`); requests without it are limited per client IP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum RateLimitScope {
    Node,
    Cluster,
}

/// All conditions given in one match must hold.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct Match {
    /// Default: `{ type: PathPrefix, value: / }`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathMatch>,
    /// HTTP method, upper case (`GET`, `POST`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// Request headers that must match.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<HeaderMatch>,
    /// Query parameters that must match.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub query_params: Vec<QueryParamMatch>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct PathMatch {
    /// `Exact`, `PathPrefix` (default; matches whole segments) or `RegularExpression`.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<PathMatchType>,
    /// The path, starting with `/`, or a regular expression matched against the whole path.
    pub value: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema)]
pub enum PathMatchType {
    Exact,
    PathPrefix,
    RegularExpression,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema)]
pub enum StringMatchType {
    Exact,
    RegularExpression,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct HeaderMatch {
    /// `Exact` (default) or `RegularExpression` (whole value).
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<StringMatchType>,
    /// Header name, case-insensitive.
    pub name: String,
    pub value: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct QueryParamMatch {
    /// `Exact` (default) or `RegularExpression` (whole value).
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<StringMatchType>,
    /// Parameter name, case-sensitive.
    pub name: String,
    pub value: String,
}

/// One filter; `type` says which of the other fields configures it.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct Filter {
    #[serde(rename = "type")]
    pub kind: FilterType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_header_modifier: Option<HeaderModifier>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_header_modifier: Option<HeaderModifier>,
    #[serde(default, rename = "urlRewrite", skip_serializing_if = "Option::is_none")]
    pub url_rewrite: Option<UrlRewrite>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_redirect: Option<RequestRedirect>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_mirror: Option<RequestMirror>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub(crate) enum FilterType {
    RequestHeaderModifier,
    ResponseHeaderModifier,
    #[serde(rename = "URLRewrite")]
    UrlRewrite,
    RequestRedirect,
    RequestMirror,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct HeaderModifier {
    /// Headers to set, replacing any existing value.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub set: Vec<HeaderValue>,
    /// Headers to add, keeping existing values.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub add: Vec<HeaderValue>,
    /// Header names to remove.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct HeaderValue {
    pub name: String,
    pub value: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct UrlRewrite {
    /// Replace the `Host` header sent upstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathModifier>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct PathModifier {
    /// `ReplaceFullPath` or `ReplacePrefixMatch` (only with a `PathPrefix` match).
    #[serde(rename = "type")]
    pub kind: PathModifierType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replace_full_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replace_prefix_match: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub(crate) enum PathModifierType {
    ReplaceFullPath,
    ReplacePrefixMatch,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct RequestRedirect {
    /// `http` or `https`. Default: the request's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
    /// Default: the request's host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathModifier>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// 301, 302 (default), 303, 307 or 308.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_code: Option<u16>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct BackendRef {
    /// Name of an `Upstream`.
    pub upstream: String,
    /// Share of this rule's traffic, proportional to the sum of the weights (not a
    /// percentage). 0 to 1,000,000; default 1. At least one weight must be non-zero.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct Timeouts {
    /// Whole request, from the first byte received to the last byte of the response head.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<Duration>,
    /// One attempt against an upstream. Must not exceed `request`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_request: Option<Duration>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct Retry {
    /// Total attempts including the first, 1 to 10.
    pub attempts: u32,
    /// When to retry: `connectFailure`, `reset`, `5xx`, `gatewayError`, `retriableStatusCodes`.
    /// Default: `[connectFailure, reset]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_on: Option<Vec<RetryOn>>,
    /// Status codes retried with `retriableStatusCodes`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub status_codes: Vec<u16>,
    /// Time limit of each attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_try_timeout: Option<Duration>,
    /// Exponential backoff with jitter between attempts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<Backoff>,
    /// Retry methods that are not idempotent (`POST`, `PATCH`). Default: false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_non_idempotent: Option<bool>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
pub enum RetryOn {
    #[serde(rename = "connectFailure")]
    ConnectFailure,
    #[serde(rename = "reset")]
    Reset,
    #[serde(rename = "5xx")]
    FiveXx,
    #[serde(rename = "gatewayError")]
    GatewayError,
    #[serde(rename = "retriableStatusCodes")]
    RetriableStatusCodes,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct Backoff {
    /// First backoff interval. Default: `25ms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<Duration>,
    /// Largest backoff interval. Default: 10 × `base`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<Duration>,
}

// ---------------------------------------------------------------------------------------
// Certificate

/// A TLS certificate served to clients whose SNI matches `hostnames`. Only the location of
/// the PEM files is in Git; the private key never is.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct Certificate {
    pub kind: CertificateKind,
    /// Unique among certificates.
    pub name: String,
    /// SNI names served with this certificate: exact or `*.` wildcard. May be empty on
    /// the default certificate.
    #[serde(default)]
    pub hostnames: Vec<String>,
    /// Served to clients that send no SNI name, or one no certificate lists (at most one
    /// certificate may be the default). Without a default, such clients are refused.
    #[serde(default, rename = "default", skip_serializing_if = "Option::is_none")]
    pub is_default: Option<bool>,
    /// Where each node finds the PEM certificate chain.
    pub certificate: PemSource,
    /// Where each node finds the PEM private key.
    pub private_key: PemSource,
    /// Require clients of these host names to present a certificate signed by a CA
    /// (Gateway API frontend client-certificate validation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_validation: Option<ClientValidation>,
    /// `Strict-Transport-Security` on every answer sent over HTTPS to these host names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hsts: Option<Hsts>,
    /// Absolute path of a DER OCSP response for this certificate on each node, stapled to
    /// handshakes; refreshed by the operator's tooling, re-read when it changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ocsp_response_file: Option<String>,
}

/// HTTP Strict Transport Security (RFC 6797): browsers use only HTTPS for the host for
/// `maxAge`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct Hsts {
    /// How long browsers remember it, in seconds (a year: 31536000); 0 tells them to
    /// forget it.
    pub max_age_seconds: u64,
    /// Also for every subdomain. Default: false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_sub_domains: Option<bool>,
    /// Ask to be in browsers' preload lists (needs a `maxAgeSeconds` of a year or more and
    /// `includeSubDomains`). Default: false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preload: Option<bool>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct ClientValidation {
    /// Absolute path of a PEM CA bundle on each node.
    pub ca_file: String,
    /// Let clients without a certificate in (their requests carry no client identity);
    /// a certificate that does not verify is refused either way. Default: false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optional: Option<bool>,
}

/// Exactly one of `file` or `env`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct PemSource {
    /// Absolute path of a PEM file on each node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// Name of an environment variable of raftgated holding the PEM text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<String>,
}
