//! Compiled security policies: every default filled in, names lower-cased, lists whose
//! order carries no meaning sorted. Authorization rules keep their order (first match wins).

use serde::{Deserialize, Serialize};

use super::source::PemSourceSpec;
use crate::duration::Duration;
pub use crate::model::{AuthzAction, ClaimValueType};

/// The header that carries the authenticated consumer upstream unless a policy names
/// another (a token's `sub` always goes in it).
pub const CONSUMER_HEADER: &str = "x-raftgate-consumer";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecurityPolicySpec {
    pub name: String,
    pub cors: Option<CorsSpec>,
    pub api_key_auth: Option<ApiKeyAuthSpec>,
    pub basic_auth: Option<BasicAuthSpec>,
    pub authorization: Option<AuthorizationSpec>,
    pub jwt: Option<JwtSpec>,
    pub ext_auth: Option<ExtAuthSpec>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExtAuthSpec {
    pub url: String,
    /// Lower-cased, sorted, unique.
    pub headers_to_ext_auth: Vec<String>,
    /// Lower-cased, sorted, unique.
    pub headers_to_backend: Vec<String>,
    pub timeout: Duration,
    pub fail_open: bool,
}

impl SecurityPolicySpec {
    /// Does a request need credentials to pass?
    pub fn authenticates(&self) -> bool {
        self.api_key_auth.is_some() || self.basic_auth.is_some() || self.jwt.is_some()
    }

    /// The request headers that carry the verified identity upstream: whatever a client
    /// sends in them is removed.
    pub fn identity_headers(&self) -> impl Iterator<Item = &str> {
        let a = self.api_key_auth.as_ref().map(|a| a.forward_header.as_str());
        let b = self.basic_auth.as_ref().map(|b| b.forward_header.as_str());
        let claims = self.jwt.iter().flat_map(|j| j.providers.iter()).flat_map(|p| p.claim_to_headers.iter());
        let ext = self.ext_auth.iter().flat_map(|e| e.headers_to_backend.iter().map(String::as_str));
        let token = self.jwt.as_ref().map(|_| CONSUMER_HEADER);
        a.into_iter().chain(b).chain(claims.map(|(h, _)| h.as_str())).chain(ext).chain(token)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CorsSpec {
    /// Lower-cased, sorted, unique; `*` alone means any origin.
    pub allow_origins: Vec<String>,
    /// Upper-case, sorted, unique; `*` means any.
    pub allow_methods: Vec<String>,
    /// Lower-cased, sorted, unique; `*` means any.
    pub allow_headers: Vec<String>,
    /// Lower-cased, sorted, unique.
    pub expose_headers: Vec<String>,
    pub max_age: Duration,
    pub allow_credentials: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeyAuthSpec {
    /// In the order written.
    pub extract_from: Vec<KeySourceSpec>,
    /// Sorted by name.
    pub consumers: Vec<ApiKeyConsumerSpec>,
    pub consumers_file: Option<String>,
    /// Lower-cased.
    pub forward_header: String,
    pub sanitize: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum KeySourceSpec {
    /// Lower-cased.
    Header(String),
    Query(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeyConsumerSpec {
    pub name: String,
    /// Lower-case hex.
    pub sha256: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JwtSpec {
    /// In the order written: a token is tried against the providers in turn.
    pub providers: Vec<JwtProviderSpec>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JwtProviderSpec {
    pub name: String,
    pub issuer: Option<String>,
    /// Sorted, unique.
    pub audiences: Vec<String>,
    pub remote_jwks: Option<RemoteJwksSpec>,
    pub local_jwks: Option<String>,
    /// A file or environment variable of each node, as a certificate's PEM sources are.
    pub hmac_secret: Option<PemSourceSpec>,
    /// In the order written; never empty.
    pub extract_from: Vec<TokenSourceSpec>,
    /// `(lower-cased header, claim)`, in the order written.
    pub claim_to_headers: Vec<(String, String)>,
    pub clock_skew: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RemoteJwksSpec {
    pub uri: String,
    pub cache_duration: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum TokenSourceSpec {
    /// Lower-cased name, and the prefix before the token (may be empty).
    Header(String, String),
    Cookie(String),
    Param(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BasicAuthSpec {
    /// `(user, bcrypt hash)`, sorted by user.
    pub users: Vec<(String, String)>,
    pub htpasswd_file: Option<String>,
    pub realm: String,
    /// Lower-cased.
    pub forward_header: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuthorizationSpec {
    pub default_action: AuthzAction,
    /// In the order written.
    pub rules: Vec<AuthzRuleSpec>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuthzRuleSpec {
    pub name: Option<String>,
    pub action: AuthzAction,
    /// Canonical `address/prefix`, sorted, unique; empty: any client.
    pub client_cidrs: Vec<String>,
    /// Sorted, unique; empty: any consumer (or none).
    pub consumers: Vec<String>,
    /// Sorted, unique; empty: any method.
    pub methods: Vec<String>,
    pub jwt: Option<JwtPrincipalSpec>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JwtPrincipalSpec {
    pub provider: Option<String>,
    /// In the order written.
    pub claims: Vec<JwtClaimSpec>,
    /// Sorted, unique.
    pub scopes: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JwtClaimSpec {
    pub name: String,
    pub value_type: ClaimValueType,
    /// Sorted, unique.
    pub values: Vec<String>,
}

/// bcrypt costs accepted: below 4 the crate refuses, above 12 one check takes over 200 ms
/// and a few clients with wrong passwords would keep a core busy.
pub const BCRYPT_COSTS: std::ops::RangeInclusive<u32> = 4..=12;

/// `user:$2y$NN$...` with a well-formed bcrypt hash.
pub fn parse_htpasswd_line(line: &str) -> Result<(String, String), String> {
    let (user, hash) = line.split_once(':').ok_or("an htpasswd line is `user:hash`")?;
    if user.is_empty() || user.len() > 255 || user.chars().any(|c| c.is_control()) {
        return Err("the user name is empty, too long or has control characters".into());
    }
    let hash = hash.trim_end();
    let parts: Vec<&str> = hash.split('$').collect();
    let bcrypt = parts.len() == 4 && parts[0].is_empty() && matches!(parts[1], "2a" | "2b" | "2y");
    if !bcrypt {
        let what = if hash.starts_with("$apr1$") {
            "an Apache MD5 hash"
        } else if hash.starts_with("{SHA}") {
            "a SHA-1 hash"
        } else if hash.starts_with('$') {
            "a hash of a kind raftgate does not accept"
        } else {
            "not a hash (a password in clear, or crypt())"
        };
        return Err(format!("the entry of `{user}` is {what}; only bcrypt is accepted"));
    }
    let cost: u32 = parts[2].parse().map_err(|_| format!("`{}` is not a bcrypt cost", parts[2]))?;
    if !BCRYPT_COSTS.contains(&cost) {
        return Err(format!("bcrypt cost {cost} is outside {}..={}", BCRYPT_COSTS.start(), BCRYPT_COSTS.end()));
    }
    let body_ok = parts[3].len() == 53 && parts[3].bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'/');
    if !body_ok {
        return Err(format!("the bcrypt hash of `{user}` is malformed"));
    }
    Ok((user.to_string(), hash.to_string()))
}
