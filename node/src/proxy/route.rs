//! Phase `route`: the host and path as routing sees them, and the rule that serves the
//! request.

use std::borrow::Cow;
use std::sync::Arc;

use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode, Uri};
use hyper::body::Incoming;
use schemas::snapshot::PathMatchType;

use super::body::full;
use super::context::{Downstream, RequestCtx, Stop};
use super::error::ProxyError;
use super::path::{self, Clean, EscapedSlashes, PathError};
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

/// Host names longer than DNS allows are refused before any lookup.
const MAX_HOST_BYTES: usize = 253;

/// Finds the rule for `req`; records it in `ctx.rule`. A path with escaped slashes may be
/// answered with a redirect to its canonical form (`EscapedSlashes::Redirect`).
pub fn route<'a>(
    rt: &'a Runtime,
    down: &'a Downstream,
    req: &Request<Incoming>,
    escaped: EscapedSlashes,
    ctx: &mut RequestCtx,
) -> Result<Routed<'a>, Stop> {
    if down.host_headers > 1 {
        return Err(ProxyError::BadRequest("more than one Host header").into());
    }
    let (host, _port) = request_host(&down.uri, down.host_header.as_ref())?;
    if down.conn.https {
        // Before the rule lookup: a 404 over HTTPS carries HSTS too.
        ctx.hsts = rt.certs.hsts(&host);
        // A host that requires client certificates is reached only on a connection made
        // for it: another name's handshake checked no certificate (or another CA's).
        if rt.certs.misdirected(&host, down.conn.sni.as_deref()) {
            return Err(ProxyError::Misdirected { host: host.to_string() }.into());
        }
    }
    let query = down.uri.query();
    let path = match path::clean(down.uri.path(), escaped) {
        Ok(Clean::Path(p)) => p,
        Ok(Clean::Redirect(to)) => return Err(Stop::Answer(Box::new(redirect(&to, query)?))),
        Err(PathError::TooLong) => return Err(ProxyError::UriTooLong { limit: path::MAX_PATH_BYTES }.into()),
        Err(PathError::Bad(why)) => return Err(ProxyError::BadRequest(why).into()),
    };
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

/// A 308 to the same request with its path made canonical.
fn redirect(path: &str, query: Option<&str>) -> Result<Response<super::body::RespBody>, ProxyError> {
    let location = match query {
        Some(q) => format!("{path}?{q}"),
        None => path.to_string(),
    };
    // Only ever a path on this host: `//host` would send the client elsewhere.
    if location.starts_with("//") {
        return Err(ProxyError::BadRequest("the request target cannot be redirected"));
    }
    let location = HeaderValue::from_str(&location)
        .map_err(|_| ProxyError::BadRequest("the request target cannot be redirected"))?;
    let mut resp = Response::new(full(bytes::Bytes::new()));
    *resp.status_mut() = StatusCode::PERMANENT_REDIRECT;
    resp.headers_mut().insert(header::LOCATION, location);
    Ok(resp)
}

/// The request's host, lower-case and without port, and the port if one was given. The
/// request target's authority (absolute form, HTTP/2's `:authority`) wins; a Host header
/// naming another host is refused, so the host that was routed is the one the upstream
/// is told.
fn request_host<'a>(
    uri: &'a Uri,
    host_header: Option<&'a HeaderValue>,
) -> Result<(Cow<'a, str>, Option<u16>), ProxyError> {
    let header = match host_header {
        Some(v) => Some(split_host(v.to_str().map_err(|_| ProxyError::BadRequest("invalid Host header"))?)?),
        None => None,
    };
    let Some(authority) = uri.authority() else { return header.ok_or(ProxyError::MissingHost) };
    let (host, port) = split_host(authority.as_str())?;
    if let Some((h, p)) = &header {
        let ports_differ = matches!((p, port), (Some(a), Some(b)) if *a != b);
        if *h != host || ports_differ {
            return Err(ProxyError::BadRequest("the Host header and the request target name different hosts"));
        }
    }
    Ok((host, port))
}

/// `host[:port]` or `[v6]:port`, checked, lower-cased, without a trailing dot.
fn split_host(raw: &str) -> Result<(Cow<'_, str>, Option<u16>), ProxyError> {
    let (host, port) = match raw.rfind(':') {
        Some(i) if !raw[i..].contains(']') => {
            let port =
                raw[i + 1..].parse::<u16>().map_err(|_| ProxyError::BadRequest("invalid port in Host header"))?;
            (&raw[..i], Some(port))
        }
        _ => (raw, None),
    };
    let host = host.trim_end_matches('.');
    // Only what a host name or an IP literal is made of: the host is written into redirects
    // (`Location`) and upstream headers, where `evil.com#.site.test` or `a?b` would change
    // what the URL points at.
    let literal = host.strip_prefix('[').and_then(|h| h.strip_suffix(']'));
    let valid = match literal {
        Some(ip) => !ip.is_empty() && ip.bytes().all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.'),
        None => host.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_'),
    };
    if host.is_empty() || !valid {
        return Err(ProxyError::BadRequest("invalid Host header"));
    }
    if host.len() > MAX_HOST_BYTES {
        return Err(ProxyError::BadRequest("the host name is longer than 253 bytes"));
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
        // The request target's authority and a Host header must name one host.
        check("http://a.example.com/x", Some("A.example.com"), Ok(("a.example.com", None)));
        check("http://a.example.com:8080/x", Some("a.example.com"), Ok(("a.example.com", Some(8080))));
        check("http://a.example.com/x", None, Ok(("a.example.com", None)));
        check("http://a.example.com/x", Some("b.example.com"), Err("bad_request"));
        check("http://a.example.com:8080/x", Some("a.example.com:9090"), Err("bad_request"));
        check("/a", Some(&format!("{}.com", "a".repeat(250))), Err("bad_request"));
        check("/a", None, Err("missing_host"));
        check("/a", Some("host:port"), Err("bad_request"));
        check("/a", Some("user@host"), Err("bad_request"));
        check("/a", Some(""), Err("bad_request"));
        // Nothing that would change a URL built from the host (redirects, Location).
        for bad in ["evil.com#.site.test", "a?b", "a%2eb", "a\\b", "a\"b", "[::1x]", "[]", "a b"] {
            if let Ok(v) = HeaderValue::from_str(bad) {
                let uri: Uri = "/a".parse().unwrap();
                let got = request_host(&uri, Some(&v)).map(|(h, p)| (h.into_owned(), p));
                assert!(got.is_err(), "{bad}: {got:?}");
            }
        }
        check("/a", Some("under_score.example.com"), Ok(("under_score.example.com", None)));
        check("/a", Some("10.0.0.5:8443"), Ok(("10.0.0.5", Some(8443))));
    }
}
