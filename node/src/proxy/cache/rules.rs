//! What RFC 9111 says about one response and one request: `Cache-Control` directives,
//! whether a shared cache may store the answer, and for how long it is fresh. Pure
//! functions of the headers, so every rule is tested here without a server.

use std::time::{Duration, SystemTime};

use http::header::{self, HeaderMap};
use http::StatusCode;

/// The `Cache-Control` directives a shared cache acts on. Qualified forms
/// (`private="set-cookie"`, `no-cache="x"`) are taken as their unqualified, stricter form.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Directives {
    pub max_age: Option<u64>,
    pub s_maxage: Option<u64>,
    pub no_store: bool,
    pub no_cache: bool,
    pub private: bool,
    pub public: bool,
    pub must_revalidate: bool,
    pub stale_while_revalidate: Option<u64>,
    pub stale_if_error: Option<u64>,
}

impl Directives {
    pub fn parse(headers: &HeaderMap) -> Self {
        let mut d = Directives::default();
        for v in headers.get_all(header::CACHE_CONTROL).iter().filter_map(|v| v.to_str().ok()) {
            for item in v.split(',') {
                let (name, arg) = match item.split_once('=') {
                    Some((n, a)) => (n.trim(), Some(a.trim().trim_matches('"'))),
                    None => (item.trim(), None),
                };
                // A delta-seconds that does not parse makes the directive count as 0
                // (RFC 9111 §1.2.2 asks for the stricter reading).
                let secs = || Some(arg.and_then(|a| a.parse::<u64>().ok()).unwrap_or(0));
                match name.to_ascii_lowercase().as_str() {
                    "max-age" => d.max_age = d.max_age.min(secs()).or(secs()),
                    "s-maxage" => d.s_maxage = d.s_maxage.min(secs()).or(secs()),
                    "no-store" => d.no_store = true,
                    "no-cache" => d.no_cache = true,
                    "private" => d.private = true,
                    "public" => d.public = true,
                    "must-revalidate" | "proxy-revalidate" => d.must_revalidate = true,
                    "stale-while-revalidate" => d.stale_while_revalidate = secs(),
                    "stale-if-error" => d.stale_if_error = secs(),
                    _ => {}
                }
            }
        }
        d
    }
}

/// Statuses a cache may store without explicit freshness (RFC 9110 §15.1 "heuristically
/// cacheable"), given a `defaultTtl`.
pub fn heuristic(status: StatusCode) -> bool {
    matches!(status.as_u16(), 200 | 203 | 204 | 300 | 301 | 308 | 404 | 405 | 410 | 414 | 501)
}

/// Statuses this cache stores at all.
fn understood(status: StatusCode) -> bool {
    heuristic(status) || matches!(status.as_u16(), 302 | 303 | 307)
}

/// Why an answer is not stored (`None`: it may be).
pub fn not_storable(status: StatusCode, h: &HeaderMap, d: &Directives, request_auth: bool) -> Option<&'static str> {
    if !understood(status) {
        return Some("status");
    }
    if d.no_store {
        return Some("no-store");
    }
    if d.private {
        return Some("private");
    }
    // Cookies are per client: storing one would hand it to everybody.
    if h.contains_key(header::SET_COOKIE) {
        return Some("set-cookie");
    }
    if h.get_all(header::VARY).iter().any(|v| v.to_str().is_ok_and(|v| v.split(',').any(|t| t.trim() == "*"))) {
        return Some("vary-star");
    }
    // §3.5: an answer to a request with credentials is shared only when it says so.
    if request_auth && !(d.public || d.s_maxage.is_some() || d.must_revalidate) {
        return Some("authorization");
    }
    None
}

/// The freshness lifetime (§4.2.1): `s-maxage`, else `max-age`, else `Expires` − `Date`,
/// else `default_ttl` for a heuristically cacheable status; `None`: no lifetime at all
/// (not stored, unless it can be revalidated).
pub fn lifetime(status: StatusCode, h: &HeaderMap, d: &Directives, default_ttl: Option<Duration>) -> Option<Duration> {
    if let Some(s) = d.s_maxage.or(d.max_age) {
        return Some(Duration::from_secs(s));
    }
    if let Some(expires) = h.get(header::EXPIRES) {
        // An invalid `Expires` (such as "0") means already expired.
        let Some(expires) = expires.to_str().ok().and_then(|v| httpdate::parse_http_date(v).ok()) else {
            return Some(Duration::ZERO);
        };
        let date = h
            .get(header::DATE)
            .and_then(|v| httpdate::parse_http_date(v.to_str().ok()?).ok())
            .unwrap_or_else(SystemTime::now);
        return Some(expires.duration_since(date).unwrap_or(Duration::ZERO));
    }
    if heuristic(status) {
        return default_ttl;
    }
    None
}

/// The `Age` the upstream reported (§5.1), in seconds.
pub fn initial_age(h: &HeaderMap) -> u64 {
    h.get(header::AGE).and_then(|v| v.to_str().ok()?.trim().parse().ok()).unwrap_or(0)
}

/// What a request asks of the cache (§5.2.1): `no-cache` or `max-age=0` want the upstream
/// asked; `no-store` wants the answer not stored.
#[derive(Debug, Default, Clone, Copy)]
pub struct Asks {
    pub revalidate: bool,
    pub no_store: bool,
}

pub fn request_asks(h: &HeaderMap) -> Asks {
    let d = Directives::parse(h);
    let pragma_no_cache = h.get(header::PRAGMA).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"no-cache"))
        && !h.contains_key(header::CACHE_CONTROL);
    Asks { revalidate: d.no_cache || d.max_age == Some(0) || pragma_no_cache, no_store: d.no_store }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn directives_parse_as_a_shared_cache_reads_them() {
        let d = Directives::parse(&headers(&[
            ("cache-control", "public, max-age=60, S-MAXAGE=\"120\""),
            ("cache-control", "stale-while-revalidate=30, stale-if-error=600, must-revalidate"),
        ]));
        assert_eq!(
            d,
            Directives {
                max_age: Some(60),
                s_maxage: Some(120),
                public: true,
                must_revalidate: true,
                stale_while_revalidate: Some(30),
                stale_if_error: Some(600),
                ..Directives::default()
            }
        );
        let d = Directives::parse(&headers(&[("cache-control", "max-age=abc, private=\"x\", no-cache")]));
        assert_eq!((d.max_age, d.private, d.no_cache), (Some(0), true, true));
        assert_eq!(Directives::parse(&headers(&[("cache-control", "max-age=10, max-age=5")])).max_age, Some(5));
    }

    #[test]
    fn storability_and_lifetime() {
        let ok = StatusCode::OK;
        let d = |cc: &str| Directives::parse(&headers(&[("cache-control", cc)]));
        assert_eq!(not_storable(ok, &HeaderMap::new(), &d("max-age=5"), false), None);
        assert_eq!(not_storable(ok, &HeaderMap::new(), &d("no-store"), false), Some("no-store"));
        assert_eq!(not_storable(ok, &HeaderMap::new(), &d("private"), false), Some("private"));
        assert_eq!(not_storable(StatusCode::CREATED, &HeaderMap::new(), &d("max-age=5"), false), Some("status"));
        assert_eq!(not_storable(ok, &headers(&[("set-cookie", "a=b")]), &d("max-age=5"), false), Some("set-cookie"));
        assert_eq!(not_storable(ok, &headers(&[("vary", "accept, *")]), &d(""), false), Some("vary-star"));
        assert_eq!(not_storable(ok, &HeaderMap::new(), &d("max-age=5"), true), Some("authorization"));
        for allows in ["public", "s-maxage=5", "must-revalidate, max-age=5"] {
            assert_eq!(not_storable(ok, &HeaderMap::new(), &d(allows), true), None, "{allows}");
        }

        let ttl = Some(Duration::from_secs(30));
        let none = HeaderMap::new();
        assert_eq!(lifetime(ok, &none, &d("max-age=5, s-maxage=9"), ttl), Some(Duration::from_secs(9)));
        assert_eq!(lifetime(ok, &none, &d("max-age=5"), ttl), Some(Duration::from_secs(5)));
        assert_eq!(lifetime(ok, &none, &d(""), ttl), ttl, "the rule's default when the upstream says nothing");
        assert_eq!(lifetime(StatusCode::FOUND, &none, &d(""), ttl), None, "302 needs explicit freshness");
        let expires =
            headers(&[("date", "Sun, 06 Nov 1994 08:49:37 GMT"), ("expires", "Sun, 06 Nov 1994 08:50:37 GMT")]);
        assert_eq!(lifetime(ok, &expires, &d(""), ttl), Some(Duration::from_secs(60)));
        assert_eq!(lifetime(ok, &headers(&[("expires", "0")]), &d(""), ttl), Some(Duration::ZERO));
        assert_eq!(initial_age(&headers(&[("age", "17")])), 17);
    }

    #[test]
    fn what_requests_ask() {
        let a = request_asks(&headers(&[("cache-control", "no-cache")]));
        assert!(a.revalidate && !a.no_store);
        assert!(request_asks(&headers(&[("cache-control", "max-age=0")])).revalidate);
        assert!(request_asks(&headers(&[("pragma", "no-cache")])).revalidate);
        assert!(request_asks(&headers(&[("cache-control", "no-store")])).no_store);
        assert!(!request_asks(&HeaderMap::new()).revalidate);
    }
}
