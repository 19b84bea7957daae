//! Request and response transformations: hop-by-hop headers, the standard proxy headers,
//! the route's header modifiers, URL rewrites and redirects.

use std::borrow::Cow;
use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Response, StatusCode};
use schemas::snapshot::{FilterSpec, HeaderModifierSpec, PathMatchType, PathModifierSpec};

use super::body::{full, RespBody};

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1); never
/// forwarded. `te` is handled apart: `te: trailers` must reach gRPC upstreams.
const HOP_BY_HOP: [HeaderName; 6] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Removes hop-by-hop headers, including any named in `Connection`. When `keep_upgrade`
/// is set (a WebSocket or other upgrade is being proxied), `Upgrade` and
/// `Connection: upgrade` are kept so the upstream sees the handshake.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .filter(|n| !(keep_upgrade && n == header::UPGRADE))
        .collect();
    for n in named {
        headers.remove(n);
    }
    let upgrade = if keep_upgrade { headers.get(header::UPGRADE).cloned() } else { None };
    for n in &HOP_BY_HOP {
        headers.remove(n);
    }
    if let Some(te) = headers.get(header::TE) {
        if !te.as_bytes().eq_ignore_ascii_case(b"trailers") {
            headers.remove(header::TE);
        }
    }
    if let Some(u) = upgrade {
        headers.insert(header::UPGRADE, u);
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// `X-Forwarded-For` (appended), `X-Forwarded-Proto`, `X-Forwarded-Host` and `Via`.
pub fn add_proxy_headers(headers: &mut HeaderMap, client: IpAddr, https: bool, host: &str, version: http::Version) {
    static XFF: HeaderName = HeaderName::from_static("x-forwarded-for");
    static XFP: HeaderName = HeaderName::from_static("x-forwarded-proto");
    static XFH: HeaderName = HeaderName::from_static("x-forwarded-host");
    let ip = client.to_string();
    let xff = match headers.get(&XFF).and_then(|v| v.to_str().ok()) {
        Some(prev) if !prev.is_empty() => format!("{prev}, {ip}"),
        _ => ip,
    };
    if let Ok(v) = HeaderValue::from_str(&xff) {
        headers.insert(XFF.clone(), v);
    }
    headers.insert(XFP.clone(), HeaderValue::from_static(if https { "https" } else { "http" }));
    if !headers.contains_key(&XFH) {
        if let Ok(v) = HeaderValue::from_str(host) {
            headers.insert(XFH.clone(), v);
        }
    }
    let via = match version {
        http::Version::HTTP_2 => "2 raftgate",
        http::Version::HTTP_10 => "1.0 raftgate",
        _ => "1.1 raftgate",
    };
    let via = match headers.get(header::VIA).and_then(|v| v.to_str().ok()) {
        Some(prev) => Cow::Owned(format!("{prev}, {via}")),
        None => Cow::Borrowed(via),
    };
    if let Ok(v) = HeaderValue::from_str(&via) {
        headers.insert(header::VIA, v);
    }
}

pub fn apply_header_modifier(headers: &mut HeaderMap, m: &HeaderModifierSpec) {
    for (name, value) in &m.set {
        if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(value)) {
            headers.insert(n, v);
        }
    }
    for (name, value) in &m.add {
        if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(value)) {
            headers.append(n, v);
        }
    }
    for name in &m.remove {
        headers.remove(name.as_str());
    }
}

/// Applies the request-side filters of a rule. Returns the new path (if rewritten) and the
/// new upstream Host (if rewritten).
pub fn apply_request_filters(
    filters: &[FilterSpec],
    headers: &mut HeaderMap,
    path: &str,
    matched_kind: PathMatchType,
    matched_path: &str,
) -> (Option<String>, Option<String>) {
    let mut new_path = None;
    let mut new_host = None;
    for f in filters {
        match f {
            FilterSpec::RequestHeaderModifier(m) => apply_header_modifier(headers, m),
            FilterSpec::UrlRewrite { hostname, path: modifier } => {
                new_host.clone_from(hostname);
                if let Some(m) = modifier {
                    new_path = Some(modify_path(m, path, matched_kind, matched_path));
                }
            }
            FilterSpec::ResponseHeaderModifier(_) | FilterSpec::RequestRedirect { .. } => {}
        }
    }
    (new_path, new_host)
}

pub fn apply_response_filters(filters: &[FilterSpec], headers: &mut HeaderMap) {
    for f in filters {
        if let FilterSpec::ResponseHeaderModifier(m) = f {
            apply_header_modifier(headers, m);
        }
    }
}

/// Gateway API path modification. `ReplacePrefixMatch` swaps the matched prefix for the
/// replacement on a segment boundary: prefix `/v0/orders` → `/v1` turns `/v0/orders/5`
/// into `/v1/5`, and replacement `/` turns it into `/5`.
pub fn modify_path(m: &PathModifierSpec, path: &str, kind: PathMatchType, matched: &str) -> String {
    match m {
        PathModifierSpec::ReplaceFullPath(p) => p.clone(),
        PathModifierSpec::ReplacePrefixMatch(replacement) => {
            if kind != PathMatchType::PathPrefix {
                return replacement.clone();
            }
            let rest = if matched == "/" { path } else { path.get(matched.len()..).unwrap_or("") };
            let base = replacement.trim_end_matches('/');
            if rest.is_empty() || rest == "/" {
                let out = format!("{base}{rest}");
                if out.is_empty() {
                    "/".into()
                } else {
                    out
                }
            } else if rest.starts_with('/') {
                format!("{base}{rest}")
            } else {
                format!("{base}/{rest}")
            }
        }
    }
}

/// The redirect response for a `RequestRedirect` filter.
#[derive(Debug)]
pub struct RedirectParts<'a> {
    pub https: bool,
    pub host: &'a str,
    /// The port of the listener the request came in on.
    pub port: Option<u16>,
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub matched_kind: PathMatchType,
    pub matched_path: &'a str,
}

pub fn redirect(filter: &FilterSpec, req: &RedirectParts<'_>) -> Option<Response<RespBody>> {
    let FilterSpec::RequestRedirect { scheme, hostname, path, port, status_code } = filter else { return None };
    let req_scheme = if req.https { "https" } else { "http" };
    let host = hostname.as_deref().unwrap_or(req.host);
    // Gateway API: with a scheme given, the scheme's well-known port; otherwise the
    // listener's port. Well-known ports are left out of the URL.
    let port = port.or(if scheme.is_some() { None } else { req.port });
    let scheme = scheme.as_deref().unwrap_or(req_scheme);
    let default_port = if scheme == "https" { 443 } else { 80 };
    let port = port.filter(|p| *p != default_port);
    let new_path = match path {
        Some(m) => modify_path(m, req.path, req.matched_kind, req.matched_path),
        None => req.path.to_string(),
    };
    let mut location = format!("{scheme}://{host}");
    if let Some(p) = port {
        location.push_str(&format!(":{p}"));
    }
    location.push_str(&new_path);
    if let Some(q) = req.query {
        location.push('?');
        location.push_str(q);
    }
    let mut resp = Response::new(full(bytes::Bytes::new()));
    *resp.status_mut() = StatusCode::from_u16(*status_code).unwrap_or(StatusCode::FOUND);
    resp.headers_mut().insert(header::LOCATION, HeaderValue::from_str(&location).ok()?);
    Some(resp)
}

/// Resolves `.` and `..` segments (RFC 3986 §5.2.4) so that routing sees the path the
/// upstream will see. Percent-encoded dots in a dot segment are refused: they are a classic
/// way to slip past prefix-based routing.
pub fn normalize_path(path: &str) -> Result<Cow<'_, str>, &'static str> {
    if !path.starts_with('/') {
        return Err("the request path must start with `/`");
    }
    let suspicious = path.split('/').any(|seg| {
        seg == "." || seg == ".." || {
            let lower = seg.to_ascii_lowercase();
            lower.contains("%2e") && lower.replace("%2e", ".").chars().all(|c| c == '.')
        }
    });
    if !suspicious {
        return Ok(Cow::Borrowed(path));
    }
    let mut out: Vec<&str> = Vec::new();
    let segs: Vec<&str> = path[1..].split('/').collect();
    let last = segs.len() - 1;
    for (i, seg) in segs.iter().enumerate() {
        let lower = seg.to_ascii_lowercase();
        if lower.contains("%2e") && lower.replace("%2e", ".").chars().all(|c| c == '.') {
            return Err("encoded dot segments are not allowed in the path");
        }
        match *seg {
            "." => {
                if i == last {
                    out.push("");
                }
            }
            ".." => {
                out.pop();
                if i == last {
                    out.push("");
                }
            }
            s => out.push(s),
        }
    }
    Ok(Cow::Owned(format!("/{}", out.join("/"))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_replacement() {
        let m = PathModifierSpec::ReplacePrefixMatch("/v1".into());
        let k = PathMatchType::PathPrefix;
        assert_eq!(modify_path(&m, "/v0/orders/5", k, "/v0/orders"), "/v1/5");
        assert_eq!(modify_path(&m, "/v0/orders", k, "/v0/orders"), "/v1");
        assert_eq!(modify_path(&m, "/v0/orders/", k, "/v0/orders"), "/v1/");
        let root = PathModifierSpec::ReplacePrefixMatch("/".into());
        assert_eq!(modify_path(&root, "/v0/orders/5", k, "/v0/orders"), "/5");
        assert_eq!(modify_path(&root, "/v0/orders", k, "/v0/orders"), "/");
        assert_eq!(modify_path(&m, "/x", k, "/"), "/v1/x");
    }

    #[test]
    fn dot_segments() {
        assert_eq!(normalize_path("/a/b").unwrap(), "/a/b");
        assert_eq!(normalize_path("/a/../b").unwrap(), "/b");
        assert_eq!(normalize_path("/a/./b/..").unwrap(), "/a/");
        assert_eq!(normalize_path("/../../etc").unwrap(), "/etc");
        assert!(normalize_path("/a/%2e%2E/admin").is_err());
        assert!(normalize_path("a").is_err());
    }

    #[test]
    fn hop_by_hop_headers_go() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, "close, x-secret".parse().unwrap());
        h.insert("x-secret", "1".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert(header::TE, "gzip".parse().unwrap());
        h.insert("x-kept", "1".parse().unwrap());
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 1, "{h:?}");
        let mut g = HeaderMap::new();
        g.insert(header::TE, "trailers".parse().unwrap());
        strip_hop_by_hop(&mut g, false);
        assert!(g.contains_key(header::TE));
    }
}
