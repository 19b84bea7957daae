//! A rule's traffic policies beyond forwarding: request mirroring, session persistence,
//! response caching and compression.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::duration::Duration;

/// Gateway API's `RequestMirror` filter: a copy of each selected request goes to another
/// upstream, whose answer is discarded; the client's answer never waits for it. A rule may
/// have several. The copy's `Host` gets `-shadow` appended (as Envoy does), so the mirror
/// can tell shadow traffic apart.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct RequestMirror {
    /// Where the copies go.
    pub backend_ref: MirrorRef,
    /// Share of requests mirrored, 0 to 100. Default (without `fraction`): 100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<u32>,
    /// Share of requests mirrored as `numerator / denominator` (default denominator 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fraction: Option<Fraction>,
    /// Requests with a larger body (or one of unknown length) are not mirrored, and
    /// counted. Default: 65536; at most 16 MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_body_bytes: Option<u64>,
    /// Copies in flight to this mirror at once, per node; more are dropped, and counted.
    /// Default: 100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_in_flight: Option<u32>,
    /// A copy the mirror has not answered in this time is abandoned. Default: `10s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct MirrorRef {
    /// Name of an `Upstream`.
    pub upstream: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct Fraction {
    pub numerator: u32,
    /// Default: 100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub denominator: Option<u32>,
}

/// Compress upstream answers for clients that accept it (`Accept-Encoding`), streaming.
/// Answers that are already encoded, carry `Cache-Control: no-transform`, are partial
/// (206), have no body, or whose type or size does not qualify pass unchanged.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct Compression {
    /// The codings offered, most preferred first (the order breaks ties between codings
    /// the client accepts with the same q-value): `zstd`, `br`, `gzip`. Default: all
    /// three, in that order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encodings: Option<Vec<ContentCoding>>,
    /// Answers declaring a smaller `Content-Length` are sent as they are. Default: 1024.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_bytes: Option<u64>,
    /// Media types compressed (`text/html`, or `text/*` for a whole type); parameters
    /// such as `charset` are ignored. Default: text, JSON, JavaScript, XML, SVG, WASM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_types: Option<Vec<String>>,
}

/// A content coding (RFC 9110 §8.4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
pub enum ContentCoding {
    #[serde(rename = "zstd")]
    Zstd,
    #[serde(rename = "br")]
    Brotli,
    #[serde(rename = "gzip")]
    Gzip,
}

impl ContentCoding {
    /// The token in `Accept-Encoding` and `Content-Encoding`.
    pub fn token(self) -> &'static str {
        match self {
            ContentCoding::Zstd => "zstd",
            ContentCoding::Brotli => "br",
            ContentCoding::Gzip => "gzip",
        }
    }
}

/// Gateway API's `sessionPersistence`: a client that comes back with its session reaches
/// the same endpoint while that endpoint is available.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct SessionPersistence {
    /// The cookie's or header's name. Default: `raftgate-session`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_name: Option<String>,
    /// `Cookie` (default: the gateway sets it) or `Header` (the gateway sends it on each
    /// answer; the client sends it back).
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<PersistenceType>,
    /// A session ends this long after it began. Default: never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub absolute_timeout: Option<Duration>,
    /// A session ends after this long without a request. Default: never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cookie_config: Option<CookieConfig>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum PersistenceType {
    Cookie,
    Header,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct CookieConfig {
    /// `Session` (default: the browser forgets the cookie when it closes) or `Permanent`
    /// (kept until `absoluteTimeout`, which it needs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifetime_type: Option<CookieLifetime>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub(crate) enum CookieLifetime {
    Session,
    Permanent,
}

/// An RFC 9111 shared cache for the rule's `GET` and `HEAD` answers, in each node's memory
/// (bounded by the node's `--cache-max-bytes`). The upstream's `Cache-Control`, `Expires`
/// and `Vary` decide what is stored and for how long.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct Cache {
    /// How long an answer is fresh when the upstream says nothing (no `max-age`,
    /// `s-maxage` or `Expires`), for the statuses RFC 9111 lets a cache store that way
    /// (200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501). Default: such answers are
    /// not stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_ttl: Option<Duration>,
    /// Larger answers pass through without being stored. Default: 1048576; at most 64 MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_object_bytes: Option<u64>,
    /// What tells two requests apart besides method, host and path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<CacheKey>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct CacheKey {
    /// The query string is part of the key. Default: true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<bool>,
    /// Request headers whose values are part of the key (at most 8).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<String>,
}
