//! CORS (the Fetch standard's protocol, with Gateway API's fields): preflights are answered
//! here, never forwarded; other requests from an allowed origin get the `Access-Control-*`
//! headers on their answer, whoever makes it (so a page can read a 401 too). A request from
//! an origin not allowed is still forwarded, without those headers: the browser then keeps
//! the answer from the page, which is what CORS protects.
//!
//! The allowed origin is always echoed rather than `*`, with `Vary: Origin`, which is what
//! credentials require and is correct without them.

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use schemas::snapshot::CorsSpec;

use super::super::body::{full, RespBody};

#[derive(Debug)]
pub struct Cors {
    origins: Vec<Origin>,
    any_method: bool,
    methods: HeaderValue,
    method_list: Vec<Method>,
    any_header: bool,
    headers: Vec<String>,
    expose: Option<HeaderValue>,
    max_age: HeaderValue,
    credentials: bool,
}

/// What the response filter adds to the answer of an allowed cross-origin request.
#[derive(Debug, Clone)]
pub struct CorsReply {
    origin: HeaderValue,
    expose: Option<HeaderValue>,
    credentials: bool,
}

/// What CORS makes of a request.
#[derive(Debug)]
pub enum Verdict {
    /// No `Origin`: not a cross-origin request.
    NotCors,
    /// Forwarded; the answer gets these headers when the origin is allowed, and
    /// `Vary: Origin` either way.
    Forward(Option<CorsReply>),
    /// A preflight answered here.
    Preflight(Box<Response<RespBody>>),
    /// A preflight for an origin, method or header that is not allowed.
    Refused,
}

#[derive(Debug)]
enum Origin {
    Any,
    Exact(String),
    /// `scheme://*.rest`: any non-empty host labels before `.rest`.
    Suffix {
        scheme: String,
        rest: String,
    },
}

impl Cors {
    pub fn new(spec: &CorsSpec) -> Self {
        let origins = spec
            .allow_origins
            .iter()
            .map(|o| match o.split_once("://*.") {
                _ if o == "*" => Origin::Any,
                Some((scheme, rest)) => Origin::Suffix { scheme: format!("{scheme}://"), rest: format!(".{rest}") },
                None => Origin::Exact(o.clone()),
            })
            .collect();
        let any_method = spec.allow_methods.iter().any(|m| m == "*");
        let join = |v: &[String]| HeaderValue::from_str(&v.join(", ")).unwrap_or(HeaderValue::from_static(""));
        Cors {
            origins,
            any_method,
            methods: join(&spec.allow_methods),
            method_list: spec.allow_methods.iter().filter_map(|m| m.parse().ok()).collect(),
            any_header: spec.allow_headers.iter().any(|h| h == "*"),
            headers: spec.allow_headers.clone(),
            expose: (!spec.expose_headers.is_empty()).then(|| join(&spec.expose_headers)),
            max_age: HeaderValue::from(spec.max_age.as_millis() / 1000),
            credentials: spec.allow_credentials,
        }
    }

    fn allows_origin(&self, origin: &str) -> bool {
        let origin = origin.to_ascii_lowercase();
        self.origins.iter().any(|o| match o {
            Origin::Any => origin != "null",
            Origin::Exact(e) => *e == origin,
            Origin::Suffix { scheme, rest } => origin.strip_prefix(scheme.as_str()).is_some_and(|host| {
                host.strip_suffix(rest.as_str()).is_some_and(|labels| {
                    !labels.is_empty() && labels.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
                })
            }),
        })
    }

    /// Answers a preflight, or says what the answer of a cross-origin request must carry.
    pub fn check<B>(&self, req: &Request<B>) -> Verdict {
        let Some(origin) = req.headers().get(header::ORIGIN) else { return Verdict::NotCors };
        let allowed = origin.to_str().is_ok_and(|o| self.allows_origin(o));
        let preflight =
            req.method() == Method::OPTIONS && req.headers().contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
        if !preflight {
            return Verdict::Forward(allowed.then(|| CorsReply {
                origin: origin.clone(),
                expose: self.expose.clone(),
                credentials: self.credentials,
            }));
        }
        let method = req.headers().get(header::ACCESS_CONTROL_REQUEST_METHOD);
        let method_ok = method
            .and_then(|m| Method::from_bytes(m.as_bytes()).ok())
            .is_some_and(|m| self.any_method || self.method_list.contains(&m));
        let asked = req.headers().get(header::ACCESS_CONTROL_REQUEST_HEADERS);
        let headers_ok = self.any_header
            || asked.and_then(|v| v.to_str().ok()).is_none_or(|list| {
                list.split(',')
                    .map(str::trim)
                    .filter(|h| !h.is_empty())
                    .all(|h| self.headers.iter().any(|a| a.eq_ignore_ascii_case(h)))
            });
        if !(allowed && method_ok && headers_ok) {
            return Verdict::Refused;
        }
        let mut resp = Response::new(full(Bytes::new()));
        *resp.status_mut() = StatusCode::NO_CONTENT;
        let h: &mut HeaderMap = resp.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        h.insert(header::VARY, HeaderValue::from_static("Origin"));
        // With credentials a `*` would be taken literally by the browser: name what was asked.
        let methods = match (self.any_method, method) {
            (true, Some(m)) => m.clone(),
            _ => self.methods.clone(),
        };
        h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, methods);
        if let Some(asked) = asked {
            h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, asked.clone());
        }
        h.insert(header::ACCESS_CONTROL_MAX_AGE, self.max_age.clone());
        if self.credentials {
            h.insert(header::ACCESS_CONTROL_ALLOW_CREDENTIALS, HeaderValue::from_static("true"));
        }
        Verdict::Preflight(Box::new(resp))
    }
}

/// Adds the CORS headers the request earned to its answer (phase `response_filter`).
pub fn set_headers(h: &mut HeaderMap, reply: Option<&CorsReply>, vary: bool) {
    if vary {
        h.append(header::VARY, HeaderValue::from_static("Origin"));
    }
    let Some(r) = reply else { return };
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, r.origin.clone());
    if r.credentials {
        h.insert(header::ACCESS_CONTROL_ALLOW_CREDENTIALS, HeaderValue::from_static("true"));
    }
    if let Some(e) = &r.expose {
        h.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, e.clone());
    }
}

#[cfg(test)]
mod tests {
    use schemas::Duration;

    use super::*;

    fn cors(origins: &[&str], methods: &[&str], headers: &[&str], credentials: bool) -> Cors {
        Cors::new(&CorsSpec {
            allow_origins: origins.iter().map(|s| s.to_string()).collect(),
            allow_methods: methods.iter().map(|s| s.to_string()).collect(),
            allow_headers: headers.iter().map(|s| s.to_string()).collect(),
            expose_headers: vec!["x-total".into()],
            max_age: Duration::from_millis(600_000),
            allow_credentials: credentials,
        })
    }

    fn preflight(origin: &str, method: &str, headers: Option<&str>) -> Request<()> {
        let mut b = Request::builder()
            .method("OPTIONS")
            .header("origin", origin)
            .header("access-control-request-method", method);
        if let Some(h) = headers {
            b = b.header("access-control-request-headers", h);
        }
        b.body(()).unwrap()
    }

    fn answer(c: &Cors, req: &Request<()>) -> Result<Response<RespBody>, &'static str> {
        match c.check(req) {
            Verdict::Preflight(r) => Ok(*r),
            Verdict::Refused => Err("cors_refused"),
            _ => Err("forwarded"),
        }
    }

    #[test]
    fn origins_match_exactly_or_by_wildcard_labels() {
        let c = cors(&["https://app.example.com", "https://*.example.org"], &["GET"], &[], false);
        assert!(c.allows_origin("https://app.example.com"));
        assert!(c.allows_origin("HTTPS://APP.example.com"));
        assert!(c.allows_origin("https://a.b.example.org"));
        for no in [
            "http://app.example.com",
            "https://example.org",
            "https://evil.com/.example.org",
            "https://x.example.org:8443",
            "null",
        ] {
            assert!(!c.allows_origin(no), "{no}");
        }
        assert!(cors(&["*"], &["GET"], &[], false).allows_origin("https://anything"));
        assert!(!cors(&["*"], &["GET"], &[], false).allows_origin("null"));
    }

    #[test]
    fn preflights_are_answered_or_refused_here() {
        let c = cors(&["https://app.example.com"], &["GET", "PUT"], &["content-type", "x-api-key"], true);
        let r = answer(&c, &preflight("https://app.example.com", "PUT", Some("Content-Type, X-Api-Key"))).unwrap();
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
        let h = r.headers();
        assert_eq!(h["access-control-allow-origin"], "https://app.example.com");
        assert_eq!(h["access-control-allow-methods"], "GET, PUT");
        assert_eq!(h["access-control-allow-headers"], "Content-Type, X-Api-Key");
        assert_eq!(h["access-control-max-age"], "600");
        assert_eq!(h["access-control-allow-credentials"], "true");
        assert_eq!(answer(&c, &preflight("https://evil.example", "GET", None)).unwrap_err(), "cors_refused");
        assert_eq!(answer(&c, &preflight("https://app.example.com", "DELETE", None)).unwrap_err(), "cors_refused");
        assert_eq!(
            answer(&c, &preflight("https://app.example.com", "GET", Some("x-other"))).unwrap_err(),
            "cors_refused"
        );
        // `*` methods with credentials: the method asked for is named, not `*`.
        let c = cors(&["*"], &["*"], &["*"], true);
        let r = answer(&c, &preflight("https://a.test", "PATCH", None)).unwrap();
        assert_eq!(r.headers()["access-control-allow-methods"], "PATCH");
        assert_eq!(r.headers()["access-control-allow-origin"], "https://a.test");
    }

    #[test]
    fn simple_requests_pass_and_earn_headers_only_from_allowed_origins() {
        let c = cors(&["https://app.example.com"], &["GET"], &[], false);
        let req = Request::builder().header("origin", "https://app.example.com").body(()).unwrap();
        let Verdict::Forward(reply) = c.check(&req) else { panic!("forwarded") };
        let mut h = HeaderMap::new();
        set_headers(&mut h, reply.as_ref(), true);
        assert_eq!(
            (h["access-control-allow-origin"].to_str().unwrap(), h["vary"].to_str().unwrap()),
            ("https://app.example.com", "Origin")
        );
        assert_eq!(h["access-control-expose-headers"], "x-total");
        assert!(!h.contains_key("access-control-allow-credentials"));
        let req = Request::builder().header("origin", "https://evil.example").body(()).unwrap();
        assert!(matches!(c.check(&req), Verdict::Forward(None)), "forwarded, without CORS headers");
        assert!(matches!(c.check(&Request::new(())), Verdict::NotCors));
    }
}
