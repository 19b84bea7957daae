//! Phase `route`: the host and path as routing sees them, and the rule that serves the
//! request.

use std::borrow::Cow;
use std::sync::Arc;

use http::header::HeaderValue;
use http::{Request, Uri};
use hyper::body::Incoming;
use schemas::snapshot::PathMatchType;

use super::context::{Downstream, RequestCtx};
use super::error::ProxyError;
use super::filters;
use super::router::RequestView;
use super::runtime::{RuleRuntime, Runtime};

/// A routed request: what the later phases need to know about the match.
#[derive(Debug)]
pub struct Routed<'a> {
    pub rule: &'a Arc<RuleRuntime>,
    /// Lower-case, without port.
    pub host: Cow<'a, str>,
    /// With dot segments resolved.
    pub path: Cow<'a, str>,
    pub query: Option<&'a str>,
    pub path_kind: PathMatchType,
    /// The exact path or prefix that matched, for prefix rewrites.
    pub matched_path: &'a str,
}

/// Finds the rule for `req`; records it in `ctx.rule`.
pub fn route<'a>(
    rt: &'a Runtime,
    down: &'a Downstream,
    req: &Request<Incoming>,
    ctx: &mut RequestCtx,
) -> Result<Routed<'a>, ProxyError> {
    let (host, _port) = request_host(&down.uri, down.host_header.as_ref())?;
    let path = filters::normalize_path(down.uri.path()).map_err(ProxyError::BadRequest)?;
    let query = down.uri.query();
    let view = RequestView { host: &host, path: &path, query, method: req.method(), headers: req.headers() };
    let matched = rt
        .router
        .lookup(&view)
        .ok_or_else(|| ProxyError::NoRoute { host: host.to_string(), path: path.to_string() })?;
    ctx.rule = Some(matched.rule.clone());
    Ok(Routed {
        rule: matched.rule,
        host,
        path,
        query,
        path_kind: matched.path_kind,
        matched_path: matched.matched_path,
    })
}

/// The request's host, lower-case and without port, and the port if one was given.
fn request_host<'a>(
    uri: &'a Uri,
    host_header: Option<&'a HeaderValue>,
) -> Result<(Cow<'a, str>, Option<u16>), ProxyError> {
    let raw = match uri.authority() {
        Some(a) => a.as_str(),
        None => {
            let v = host_header.ok_or(ProxyError::MissingHost)?;
            v.to_str().map_err(|_| ProxyError::BadRequest("invalid Host header"))?
        }
    };
    // `host[:port]` or `[v6]:port`; the port must be digits.
    let (host, port) = match raw.rfind(':') {
        Some(i) if !raw[i..].contains(']') => {
            let port =
                raw[i + 1..].parse::<u16>().map_err(|_| ProxyError::BadRequest("invalid port in Host header"))?;
            (&raw[..i], Some(port))
        }
        _ => (raw, None),
    };
    let host = host.trim_end_matches('.');
    if host.is_empty() || host.bytes().any(|b| b.is_ascii_whitespace() || b == b'/' || b == b'@') {
        return Err(ProxyError::BadRequest("invalid Host header"));
    }
    Ok(if host.bytes().any(|b| b.is_ascii_uppercase()) {
        (Cow::Owned(host.to_ascii_lowercase()), port)
    } else {
        (Cow::Borrowed(host), port)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_comes_from_the_authority_or_the_host_header() {
        let check = |uri: &str, host: Option<&str>, want: Result<(&str, Option<u16>), &str>| {
            let uri: Uri = uri.parse().unwrap();
            let header = host.map(|h| HeaderValue::from_str(h).unwrap());
            let got = request_host(&uri, header.as_ref());
            match (got, want) {
                (Ok((h, p)), Ok((wh, wp))) => assert_eq!((h.as_ref(), p), (wh, wp), "{uri} {host:?}"),
                (Err(e), Err(code)) => assert_eq!(e.code(), code, "{uri} {host:?}"),
                (got, want) => panic!("{uri} {host:?}: got {got:?}, want {want:?}"),
            }
        };
        check("/a", Some("api.example.com"), Ok(("api.example.com", None)));
        check("/a", Some("API.Example.COM:8080"), Ok(("api.example.com", Some(8080))));
        check("/a", Some("example.com."), Ok(("example.com", None)));
        check("/a", Some("[::1]:443"), Ok(("[::1]", Some(443))));
        check("/a", Some("[::1]"), Ok(("[::1]", None)));
        // HTTP/2's :authority (an absolute URI) wins over a Host header.
        check("http://a.example.com/x", Some("b.example.com"), Ok(("a.example.com", None)));
        check("/a", None, Err("missing_host"));
        check("/a", Some("host:port"), Err("bad_request"));
        check("/a", Some("user@host"), Err("bad_request"));
        check("/a", Some(""), Err("bad_request"));
    }
}
