//! `kind: SecurityPolicy`: who may call the routes it targets, in the vocabulary of Envoy
//! Gateway's `SecurityPolicy` (`targetRefs`, `cors`, `apiKeyAuth`, `basicAuth`,
//! `authorization`). Credentials are only ever written as hashes.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::duration::Duration;

kind_tag!(
    /// Always `SecurityPolicy`.
    SecurityPolicyKind,
    "SecurityPolicy"
);
kind_tag!(
    /// Always `Route`.
    TargetKind,
    "Route"
);

/// Authentication, authorization and CORS for the routes (or rules) it targets. A policy
/// that targets a rule (`sectionName`) replaces one that targets the rule's whole route.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct SecurityPolicy {
    pub kind: SecurityPolicyKind,
    /// Unique among security policies.
    pub name: String,
    /// The routes this policy guards (at least one).
    pub target_refs: Vec<TargetRef>,
    /// Answer CORS preflights at the gateway and add the CORS headers to answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cors: Option<Cors>,
    /// Require an API key, mapped to a named consumer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_auth: Option<ApiKeyAuth>,
    /// Require a JSON Web Token signed by one of the providers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt: Option<Jwt>,
    /// Require HTTP basic authentication against bcrypt htpasswd entries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub basic_auth: Option<BasicAuth>,
    /// Ask an external HTTP service whether the request may pass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ext_auth: Option<ExtAuth>,
    /// Allow or deny by client address, consumer and method; first matching rule wins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization: Option<Authorization>,
}

/// A route, or one named rule of it.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct TargetRef {
    /// `Route` (the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<TargetKind>,
    /// The name of a `kind: Route`.
    pub name: String,
    /// The name of one rule of that route; absent: every rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub section_name: Option<String>,
}

/// Cross-origin resource sharing, with the fields of Gateway API's CORS filter.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct Cors {
    /// Origins allowed, as `scheme://host[:port]`; `*` alone allows any origin, and a `*` in
    /// the host stands for one or more labels (`https://*.example.com`).
    pub allow_origins: Vec<String>,
    /// Methods a preflight may ask for; `*` allows any. Default: `GET, HEAD, POST`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_methods: Option<Vec<String>>,
    /// Request headers a preflight may ask for; `*` allows any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_headers: Vec<String>,
    /// Response headers the browser lets the page read.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expose_headers: Vec<String>,
    /// How long a browser may cache a preflight answer. Default: `5s`, as browsers assume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<Duration>,
    /// Let the page send cookies and `Authorization` and read the answer. Default: false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_credentials: Option<bool>,
}

/// API keys: each consumer has a key, of which only the SHA-256 is written.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct ApiKeyAuth {
    /// Where the key is read, in order. Default: `[{ header: x-api-key }]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extract_from: Option<Vec<KeySource>>,
    /// Consumers and the SHA-256 of their keys.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub consumers: Vec<ApiKeyConsumer>,
    /// Absolute path of a file on each node with more consumers, one `name sha256-hex` per
    /// line (`#` starts a comment).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumers_file: Option<String>,
    /// Request header that carries the consumer's name upstream. Default:
    /// `x-raftgate-consumer`. Whatever a client sends in it is dropped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forward_consumer_header: Option<String>,
    /// Remove the key from the request before it goes upstream. Default: true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sanitize: Option<bool>,
}

/// Exactly one of the fields.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct KeySource {
    /// A request header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    /// A query parameter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct ApiKeyConsumer {
    /// The consumer's name: sent upstream, logged, used by authorization and rate limits.
    pub name: String,
    /// SHA-256 of the key, 64 hex digits (`printf %s "$KEY" | sha256sum`). Keys must be
    /// random and long (at least 128 bits); the key itself never goes into Git.
    pub sha256: String,
}

/// JSON Web Token authentication: a token verified by one of the providers passes.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct Jwt {
    /// At least one.
    pub providers: Vec<JwtProvider>,
}

/// Who issues tokens, and where their keys are.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct JwtProvider {
    /// Names the provider in authorization rules, metrics and logs.
    pub name: String,
    /// The `iss` a token must carry. Absent: any issuer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// A token's `aud` must name one of these. Absent: any audience.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub audiences: Vec<String>,
    /// A JWKS fetched by each node in the background: `https://`, or `http://` to a
    /// loopback address only.
    #[serde(default, rename = "remoteJWKS", skip_serializing_if = "Option::is_none")]
    pub remote_jwks: Option<RemoteJwks>,
    /// A JWKS file on each node.
    #[serde(default, rename = "localJWKS", skip_serializing_if = "Option::is_none")]
    pub local_jwks: Option<LocalJwks>,
    /// The secret of HS256/384/512 tokens, from a file or the environment of each node;
    /// never written in the config.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hmac_secret: Option<SecretSource>,
    /// Where the token is read, in order. Default: `Authorization: Bearer`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extract_from: Option<TokenSources>,
    /// Claims copied into request headers for the upstream.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub claim_to_headers: Vec<ClaimToHeader>,
    /// Tolerance for `exp` and `nbf` against this node's clock, at most `5m`. Default: `30s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock_skew: Option<Duration>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct RemoteJwks {
    pub uri: String,
    /// How often the key set is fetched again. Default: `5m`; at least `10s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_duration: Option<Duration>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct LocalJwks {
    /// Absolute path of a JWKS (JSON) file on each node.
    pub file: String,
}

/// Exactly one of `file` or `env`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct SecretSource {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct TokenSources {
    /// Headers, with the text before the token (`Bearer `).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<TokenHeader>,
    /// Cookie names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cookies: Vec<String>,
    /// Query parameter names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub params: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct TokenHeader {
    pub name: String,
    /// Text before the token, compared without regard to case. Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_prefix: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct ClaimToHeader {
    pub header: String,
    /// A claim name; `a.b` reads `b` inside the object claim `a`.
    pub claim: String,
}

/// External authorization (Envoy Gateway's `extAuth`): the request's method, path, host and
/// chosen headers go to an HTTP service; a 2xx lets it through, anything else is the answer.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct ExtAuth {
    pub http: ExtAuthHttp,
    /// Request headers sent to the service. Default: `[authorization, cookie]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers_to_ext_auth: Option<Vec<String>>,
    /// How long to wait for the service. Default: `2s`; at most `30s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    /// Let requests through when the service cannot be asked (down, timed out, a 5xx).
    /// Default: false (refused with 503).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fail_open: Option<bool>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct ExtAuthHttp {
    /// `http://` or `https://` URL of the service; the request's path and query are
    /// appended to its path.
    pub url: String,
    /// Headers of the service's 2xx answer copied onto the request for the upstream
    /// (client-sent copies are removed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers_to_backend: Vec<String>,
}

/// HTTP basic authentication.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct BasicAuth {
    /// htpasswd lines `user:$2y$...` with bcrypt hashes (`htpasswd -nB user`), cost 4–12.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub htpasswd: Vec<String>,
    /// Absolute path of an htpasswd file (bcrypt entries) on each node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub htpasswd_file: Option<String>,
    /// The realm named in `WWW-Authenticate`. Default: the route's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub realm: Option<String>,
    /// Request header that carries the user name upstream. Default: `x-raftgate-consumer`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forward_username_header: Option<String>,
}

/// Authorization rules, tried in order.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct Authorization {
    /// What happens when no rule matches: `Allow` or `Deny` (the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_action: Option<AuthzAction>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<AuthzRule>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum AuthzAction {
    Allow,
    Deny,
}

/// Matches when every condition given holds.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct AuthzRule {
    /// Shown in metrics and logs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub action: AuthzAction,
    /// Who is calling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal: Option<Principal>,
    /// What they do.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<Operation>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct Principal {
    /// The client's address is in one of these blocks (`10.0.0.0/8`, `2001:db8::/32`, or one
    /// address). The client is the real one when the node trusts the proxies in front.
    #[serde(default, rename = "clientCIDRs", skip_serializing_if = "Vec::is_empty")]
    pub client_cidrs: Vec<String>,
    /// The consumer authenticated by `apiKeyAuth` or `basicAuth` (or a token's `sub`) is
    /// one of these.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub consumers: Vec<String>,
    /// The request's JSON Web Token says so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt: Option<JwtPrincipal>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct JwtPrincipal {
    /// The token came from this provider. Absent: any of the policy's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// Every claim listed must hold one of its values.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub claims: Vec<JwtClaim>,
    /// Every scope listed must be in the token's `scope` (space-separated) or `scp` claim.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct JwtClaim {
    /// A claim name; `a.b` reads `b` inside the object claim `a`.
    pub name: String,
    /// `String` (default): the claim equals one of `values`. `StringArray`: the claim is a
    /// list holding at least one of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_type: Option<ClaimValueType>,
    pub values: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ClaimValueType {
    String,
    StringArray,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct Operation {
    /// Upper-case methods.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
}
