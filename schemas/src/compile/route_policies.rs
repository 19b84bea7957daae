//! A rule's request policies: the fallback answer, rate limiting, retries and response
//! compression.

use std::collections::BTreeSet;

use crate::duration::Duration;
use crate::model::{
    Cache, Compression, ContentCoding, CookieLifetime, Fallback, PersistenceType, RateLimit, RateLimitScope, Retry,
    RetryOn, Route, SessionPersistence,
};
use crate::snapshot::{
    CacheSpec, CompressionSpec, FallbackSpec, RateLimitKeySpec, RateLimitSpec, RetrySpec, SessionPersistenceSpec,
    DEFAULT_COMPRESSED_TYPES,
};
use crate::yaml::{at, Seg};

use super::ctx::Ctx;
use super::limits::{MAX_FALLBACK_BODY, MAX_VALUE_MATCHES};

/// Media types a `compression` may list.
const MAX_CONTENT_TYPES: usize = 64;

impl Ctx<'_, Route> {
    pub(super) fn cache(&mut self, ri: usize, c: &Cache) -> CacheSpec {
        let p = |f: &'static str| [Seg::Key("rules"), Seg::Index(ri), Seg::Key("cache"), Seg::Key(f)];
        let default_ttl = c.default_ttl.map(|d| self.positive(&p("defaultTtl"), d, "defaultTtl"));
        let max_object_bytes = c.max_object_bytes.unwrap_or(1 << 20);
        if max_object_bytes == 0 || max_object_bytes > 64 << 20 {
            self.err(
                &p("maxObjectBytes"),
                format!("maxObjectBytes is {max_object_bytes}; it must be between 1 and 67108864 (64 MiB)"),
                None,
            );
        }
        let key = c.key.clone().unwrap_or_default();
        if key.headers.len() > 8 {
            self.err(&[&p("key")[..], at!["headers"]].concat(), "more than 8 key headers", None);
        }
        let mut key_headers: Vec<String> = key
            .headers
            .iter()
            .enumerate()
            .map(|(i, h)| {
                let here = [&p("key")[..], at!["headers"], &[Seg::Index(i)]].concat();
                let n = self.header_name(&here, h);
                if n == "authorization" || n == "cookie" {
                    self.err(
                        &here,
                        format!("`{n}` in the cache key would store an answer per credential"),
                        Some("answers to requests with credentials are private; let the upstream say `Cache-Control: public` instead".to_string()),
                    );
                }
                n
            })
            .collect();
        key_headers.sort();
        key_headers.dedup();
        CacheSpec { default_ttl, max_object_bytes, key_query: key.query.unwrap_or(true), key_headers }
    }

    pub(super) fn session_persistence(&mut self, ri: usize, s: &SessionPersistence) -> SessionPersistenceSpec {
        let p = |f: &'static str| [Seg::Key("rules"), Seg::Index(ri), Seg::Key("sessionPersistence"), Seg::Key(f)];
        let kind = s.kind.unwrap_or(PersistenceType::Cookie);
        let name = s.session_name.clone().unwrap_or_else(|| "raftgate-session".to_string());
        let name = match kind {
            PersistenceType::Cookie => {
                // RFC 6265: a cookie name is a token.
                let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
                if name.is_empty() || name.len() > 64 || !name.bytes().all(token) {
                    self.err(
                        &p("sessionName"),
                        format!("`{name}` is not a cookie name"),
                        Some("use 1 to 64 letters, digits and `-`, `_`, `.`".to_string()),
                    );
                }
                name
            }
            PersistenceType::Header => {
                let n = self.header_name(&p("sessionName"), &name);
                if ["cookie", "set-cookie", "authorization"].contains(&n.as_str()) {
                    self.err(&p("sessionName"), format!("`{n}` cannot carry a session"), None);
                } else {
                    self.protected(&p("sessionName"), &n);
                }
                n
            }
        };
        let absolute_timeout = s.absolute_timeout.map(|d| self.positive(&p("absoluteTimeout"), d, "absoluteTimeout"));
        let idle_timeout = s.idle_timeout.map(|d| self.positive(&p("idleTimeout"), d, "idleTimeout"));
        let permanent = s.cookie_config.as_ref().and_then(|c| c.lifetime_type) == Some(CookieLifetime::Permanent);
        if s.cookie_config.is_some() && kind == PersistenceType::Header {
            self.err(&p("cookieConfig"), "`cookieConfig` is for `type: Cookie` only", None);
        }
        if permanent && absolute_timeout.is_none() {
            self.err(
                &p("cookieConfig"),
                "a `Permanent` cookie needs `absoluteTimeout`, which sets how long it is kept",
                Some("add `absoluteTimeout: 24h` (for example), or use `lifetimeType: Session`".to_string()),
            );
        }
        SessionPersistenceSpec { name, kind, absolute_timeout, idle_timeout, permanent }
    }

    pub(super) fn compression(&mut self, ri: usize, c: &Compression) -> CompressionSpec {
        let p = |f: &'static str| [Seg::Key("rules"), Seg::Index(ri), Seg::Key("compression"), Seg::Key(f)];
        let default = [ContentCoding::Zstd, ContentCoding::Brotli, ContentCoding::Gzip];
        let mut encodings = Vec::new();
        for (i, e) in c.encodings.as_deref().unwrap_or(&default).iter().enumerate() {
            if encodings.contains(e) {
                self.err(
                    &[&p("encodings")[..], &[Seg::Index(i)]].concat(),
                    format!("`{}` is listed twice", e.token()),
                    Some("list each coding once, most preferred first".to_string()),
                );
            } else {
                encodings.push(*e);
            }
        }
        if encodings.is_empty() {
            self.err(
                &p("encodings"),
                "`encodings` is empty",
                Some("name at least one of `zstd`, `br`, `gzip`, or leave `encodings` out for all three".to_string()),
            );
        }
        let min_bytes = c.min_bytes.unwrap_or(1024);
        if min_bytes > 1 << 30 {
            self.err(&p("minBytes"), format!("minBytes is {min_bytes}; at most 1 GiB (1073741824)"), None);
        }
        let mut content_types: Vec<String> = match &c.content_types {
            None => DEFAULT_COMPRESSED_TYPES.iter().map(|t| t.to_string()).collect(),
            Some(list) => {
                if list.len() > MAX_CONTENT_TYPES {
                    self.err(&p("contentTypes"), format!("more than {MAX_CONTENT_TYPES} media types"), None);
                }
                for (i, t) in list.iter().enumerate() {
                    if !media_range(t) {
                        self.err(
                            &[&p("contentTypes")[..], &[Seg::Index(i)]].concat(),
                            format!("`{t}` is not a media type"),
                            Some(
                                "write `type/subtype` (`application/json`) or `type/*` (`text/*`), without parameters"
                                    .to_string(),
                            ),
                        );
                    }
                }
                list.iter().map(|t| t.to_ascii_lowercase()).collect()
            }
        };
        content_types.sort();
        content_types.dedup();
        CompressionSpec { encodings, min_bytes, content_types }
    }

    pub(super) fn fallback(&mut self, ri: usize, f: &Fallback, upstreams: &BTreeSet<&str>) -> FallbackSpec {
        let p = |f: &'static str| [Seg::Key("rules"), Seg::Index(ri), Seg::Key("fallback"), Seg::Key(f)];
        let base = [Seg::Key("rules"), Seg::Index(ri), Seg::Key("fallback")];
        match (f.status, &f.upstream) {
            (Some(_), Some(_)) | (None, None) => {
                self.err(
                    &base,
                    "a fallback needs exactly one of `status` (a static answer) or `upstream`",
                    Some("for example `fallback: { status: 503, body: \"try again later\" }`".to_string()),
                );
                FallbackSpec::Upstream(String::new())
            }
            (None, Some(name)) => {
                if !f.headers.is_empty() || f.body.is_some() {
                    self.err(&base, "`headers` and `body` only go with `status`, not with `upstream`", None);
                }
                if !upstreams.contains(name.as_str()) {
                    self.err(
                        &p("upstream"),
                        format!("unknown upstream `{name}`"),
                        Some(format!("define a `kind: Upstream` named `{name}` or fix the name")),
                    );
                }
                FallbackSpec::Upstream(name.clone())
            }
            (Some(status), None) => {
                self.range(&p("status"), u32::from(status), 100, 599, "fallback status");
                if f.headers.len() > MAX_VALUE_MATCHES {
                    self.err(&p("headers"), format!("more than {MAX_VALUE_MATCHES} headers"), None);
                }
                let headers = f
                    .headers
                    .iter()
                    .enumerate()
                    .map(|(i, h)| {
                        let here = [&p("headers")[..], &[Seg::Index(i)]].concat();
                        let name = self.header_name(&[&here[..], at!["name"]].concat(), &h.name);
                        self.header_value(&[&here[..], at!["value"]].concat(), &h.value);
                        (name, h.value.clone())
                    })
                    .collect();
                let body = f.body.clone().unwrap_or_default();
                if body.len() > MAX_FALLBACK_BODY {
                    self.err(
                        &p("body"),
                        format!("the fallback body is {} bytes; at most {MAX_FALLBACK_BODY} are allowed", body.len()),
                        None,
                    );
                }
                FallbackSpec::Static { status, headers, body }
            }
        }
    }

    pub(super) fn rate_limit(&mut self, ri: usize, r: &RateLimit) -> RateLimitSpec {
        let p = |f: &'static str| [Seg::Key("rules"), Seg::Index(ri), Seg::Key("rateLimit"), Seg::Key(f)];
        let requests = self.range(&p("requests"), r.requests, 1, 1_000_000_000, "requests");
        let period = r.period.unwrap_or(Duration::from_millis(1_000));
        self.positive(&p("period"), period, "period");
        if period.as_millis() > 86_400_000 {
            self.err(&p("period"), format!("period `{period}` is longer than a day"), None);
        }
        let burst = self.range(&p("burst"), r.burst.unwrap_or(requests.max(1)), 1, 1_000_000_000, "burst");
        let key = match &r.key {
            None => RateLimitKeySpec::ClientIp,
            Some(k) => match (k.client_ip, &k.header, &k.api_key, k.consumer, &k.claim) {
                (Some(true), None, None, None, None) => RateLimitKeySpec::ClientIp,
                (None, Some(h), None, None, None) => RateLimitKeySpec::Header(self.header_name(&p("key"), h)),
                (None, None, Some(h), None, None) => RateLimitKeySpec::ApiKey(self.header_name(&p("key"), h)),
                (None, None, None, Some(true), None) => RateLimitKeySpec::Consumer,
                (None, None, None, None, Some(c)) if !c.is_empty() => RateLimitKeySpec::Claim(c.clone()),
                _ => {
                    self.err(
                        &p("key"),
                        "a rate-limit key is exactly one of `clientIP: true`, `header: NAME`, `apiKey: NAME`, `consumer: true` or `claim: NAME`",
                        None,
                    );
                    RateLimitKeySpec::ClientIp
                }
            },
        };
        RateLimitSpec { requests, period, burst, key, scope: r.scope.unwrap_or(RateLimitScope::Node) }
    }

    pub(super) fn retry(&mut self, ri: usize, r: &Retry, request_timeout: Option<Duration>) -> RetrySpec {
        let p = |f: &'static str| [Seg::Key("rules"), Seg::Index(ri), Seg::Key("retry"), Seg::Key(f)];
        let attempts = self.range(&p("attempts"), r.attempts, 1, 10, "attempts");
        let mut retry_on = r.retry_on.clone().unwrap_or_else(|| vec![RetryOn::ConnectFailure, RetryOn::Reset]);
        retry_on.sort();
        retry_on.dedup();
        let mut status_codes = r.status_codes.clone();
        status_codes.sort_unstable();
        status_codes.dedup();
        for (i, s) in r.status_codes.iter().enumerate() {
            if !(100..=599).contains(s) {
                self.err(
                    &[&p("statusCodes")[..], &[Seg::Index(i)]].concat(),
                    format!("{s} is not an HTTP status code"),
                    None,
                );
            }
        }
        let has_codes = retry_on.contains(&RetryOn::RetriableStatusCodes);
        if has_codes && status_codes.is_empty() {
            self.err(
                &p("retryOn"),
                "`retriableStatusCodes` is listed but `statusCodes` is empty",
                Some("add `statusCodes: [503]` (for example)".to_string()),
            );
        }
        if !has_codes && !status_codes.is_empty() {
            self.err(
                &p("statusCodes"),
                "`statusCodes` is set but `retryOn` lacks `retriableStatusCodes`",
                Some("add `retriableStatusCodes` to `retryOn`".to_string()),
            );
        }
        let per_try_timeout = r.per_try_timeout.map(|d| self.positive(&p("perTryTimeout"), d, "perTryTimeout"));
        if let (Some(t), Some(req)) = (per_try_timeout, request_timeout) {
            if t > req {
                self.err(
                    &p("perTryTimeout"),
                    format!("perTryTimeout `{t}` is longer than the request timeout `{req}`"),
                    None,
                );
            }
        }
        let base = r.backoff.as_ref().and_then(|b| b.base).unwrap_or(Duration::from_millis(25));
        let max = r
            .backoff
            .as_ref()
            .and_then(|b| b.max)
            .unwrap_or(Duration::from_millis(base.as_millis().saturating_mul(10)));
        let bp = [Seg::Key("rules"), Seg::Index(ri), Seg::Key("retry"), Seg::Key("backoff")];
        self.positive(&[&bp[..], at!["base"]].concat(), base, "backoff base");
        if max < base {
            self.err(
                &[&bp[..], at!["max"]].concat(),
                format!("backoff max `{max}` is shorter than base `{base}`"),
                None,
            );
        }
        RetrySpec {
            attempts,
            retry_on,
            status_codes,
            per_try_timeout,
            backoff_base: base,
            backoff_max: max,
            allow_non_idempotent: r.allow_non_idempotent.unwrap_or(false),
        }
    }
}

/// `type/subtype` or `type/*` in RFC 9110 token characters (or `*/*`).
fn media_range(t: &str) -> bool {
    let token =
        |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    match t.split_once('/') {
        Some(("*", "*")) => true,
        Some((ty, "*")) => ty != "*" && token(ty) && !ty.contains('*'),
        Some((ty, sub)) => token(ty) && token(sub) && !ty.contains('*') && !sub.contains('*'),
        None => false,
    }
}
