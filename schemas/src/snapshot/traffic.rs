use serde::{Deserialize, Serialize};

use crate::duration::Duration;
pub use crate::model::{ContentCoding, PersistenceType};

/// A copy of a rule's requests for another upstream (`RequestMirror`), defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MirrorSpec {
    pub upstream: String,
    /// Mirrored: `numerator / denominator` of the requests (`numerator <= denominator`,
    /// `denominator > 0`).
    pub numerator: u32,
    pub denominator: u32,
    pub max_body_bytes: u64,
    pub max_in_flight: u32,
    pub timeout: Duration,
}

/// A rule's response compression, defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CompressionSpec {
    /// Most preferred first; unique, never empty.
    pub encodings: Vec<ContentCoding>,
    pub min_bytes: u64,
    /// Lower-cased media types (`type/subtype`, or `type/*`); sorted, unique.
    pub content_types: Vec<String>,
}

/// The media types compressed when a rule's `compression` names none: the text formats
/// that shrink well (images, audio, video and archives are compressed already).
pub const DEFAULT_COMPRESSED_TYPES: [&str; 9] = [
    "application/javascript",
    "application/json",
    "application/manifest+json",
    "application/wasm",
    "application/xml",
    "image/svg+xml",
    "text/*",
    "application/problem+json",
    "application/x-ndjson",
];

/// A rule's session persistence, defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionPersistenceSpec {
    /// The cookie's name as written, or the header's in lower case.
    pub name: String,
    pub kind: PersistenceType,
    pub absolute_timeout: Option<Duration>,
    pub idle_timeout: Option<Duration>,
    /// The cookie carries `Max-Age` (the time left of `absolute_timeout`).
    pub permanent: bool,
}

/// A rule's response cache, defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CacheSpec {
    pub default_ttl: Option<Duration>,
    pub max_object_bytes: u64,
    pub key_query: bool,
    /// Lower-cased, sorted, unique.
    pub key_headers: Vec<String>,
}
