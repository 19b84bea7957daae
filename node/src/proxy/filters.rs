//! Request and response transformations: hop-by-hop headers, the standard proxy headers,
//! the rule's header modifiers and URL rewrites (compiled once per config into
//! `RuleFilters`).

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use schemas::snapshot::{FilterSpec, HeaderModifierSpec, PathMatchType, PathModifierSpec};

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
    // Most requests carry none of them: one pass over the names (cheap comparisons) saves
    // a hash lookup per hop-by-hop name.
    if !headers.keys().any(|n| n == header::TE || HOP_BY_HOP.contains(n)) {
        return;
    }
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

/// A header value made from an owned string, without copying it again.
pub fn owned_value(s: String) -> Option<HeaderValue> {
    HeaderValue::from_maybe_shared(bytes::Bytes::from(s)).ok()
}

/// Removes `names` when one scan of the header names finds any of them: most requests
/// carry none, and removing is a hash lookup per name.
pub fn remove_present(headers: &mut HeaderMap, names: &[&HeaderName]) {
    if headers.keys().any(|n| names.contains(&n)) {
        for n in names {
            headers.remove(*n);
        }
    }
}

/// `X-Forwarded-For` (appended), `X-Forwarded-Proto` and `X-Forwarded-Host` (replaced),
/// and `Via` (appended).
/// `peer` sent the request (the TCP peer, or the PROXY protocol's source: its address as a
/// header value); `peer_trusted` says it is one of `--trusted-proxies`.
pub fn add_proxy_headers(
    headers: &mut HeaderMap,
    peer: &HeaderValue,
    peer_trusted: bool,
    https: bool,
    host: &str,
    version: http::Version,
) {
    static XFF: HeaderName = HeaderName::from_static("x-forwarded-for");
    static XFP: HeaderName = HeaderName::from_static("x-forwarded-proto");
    static XFH: HeaderName = HeaderName::from_static("x-forwarded-host");
    // A trusted proxy's chain is extended with its own address; anyone else's is replaced:
    // a client's own `X-Forwarded-*` is never passed on as if a proxy had written it.
    let prev: Vec<&str> =
        if peer_trusted { headers.get_all(&XFF).iter().filter_map(|v| v.to_str().ok()).collect() } else { Vec::new() };
    let xff = if prev.is_empty() {
        Some(peer.clone())
    } else {
        let ip = peer.to_str().unwrap_or_default();
        owned_value(format!("{}, {ip}", prev.join(", ")))
    };
    if let Some(v) = xff {
        headers.insert(XFF.clone(), v);
    }
    if !peer_trusted {
        // Other spellings of the same claims, which an upstream might read instead.
        static REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
        remove_present(headers, &[&header::FORWARDED, &REAL_IP]);
    }
    if !(peer_trusted && headers.contains_key(&XFP)) {
        headers.insert(XFP.clone(), HeaderValue::from_static(if https { "https" } else { "http" }));
    }
    // The host that was routed, whatever the client claimed: an upstream building URLs
    // from a client-sent X-Forwarded-Host would let any client pick them.
    match HeaderValue::from_str(host) {
        Ok(v) => headers.insert(XFH.clone(), v),
        Err(_) => headers.remove(&XFH),
    };
    let via = match version {
        http::Version::HTTP_2 => "2 raftgate",
        http::Version::HTTP_10 => "1.0 raftgate",
        _ => "1.1 raftgate",
    };
    let via = match headers.get(header::VIA).and_then(|v| v.to_str().ok()) {
        Some(prev) => owned_value(format!("{prev}, {via}")),
        None => Some(HeaderValue::from_static(via)),
    };
    if let Some(v) = via {
        headers.insert(header::VIA, v);
    }
}

/// Header names and values from a config, parsed. `schemas` validated every one; one that
/// still does not parse is left out.
pub fn header_pairs(list: &[(String, String)]) -> Vec<(HeaderName, HeaderValue)> {
    list.iter()
        .filter_map(|(n, v)| Some((HeaderName::from_bytes(n.as_bytes()).ok()?, HeaderValue::from_str(v).ok()?)))
        .collect()
}

/// A header modifier with its names and values parsed once, when the config is compiled.
#[derive(Debug, Default)]
pub struct HeaderOps {
    set: Vec<(HeaderName, HeaderValue)>,
    add: Vec<(HeaderName, HeaderValue)>,
    remove: Vec<HeaderName>,
}

impl HeaderOps {
    fn compile(m: &HeaderModifierSpec) -> Self {
        Self {
            set: header_pairs(&m.set),
            add: header_pairs(&m.add),
            remove: m.remove.iter().filter_map(|n| HeaderName::from_bytes(n.as_bytes()).ok()).collect(),
        }
    }

    pub fn apply(&self, headers: &mut HeaderMap) {
        for (n, v) in &self.set {
            headers.insert(n.clone(), v.clone());
        }
        for (n, v) in &self.add {
            headers.append(n.clone(), v.clone());
        }
        for n in &self.remove {
            headers.remove(n);
        }
    }
}

/// A rule's filters, compiled. `schemas` allows each kind once per rule, and never a
/// redirect together with a rewrite.
#[derive(Debug, Default)]
pub struct RuleFilters {
    pub request_headers: Option<HeaderOps>,
    pub response_headers: Option<HeaderOps>,
    /// `URLRewrite`: the upstream's Host.
    pub rewrite_host: Option<HeaderValue>,
    /// `URLRewrite`: the upstream's path.
    pub rewrite_path: Option<PathModifierSpec>,
    /// `RequestRedirect`: the rule answers with a redirect.
    pub redirect: Option<FilterSpec>,
}

impl RuleFilters {
    pub fn compile(filters: &[FilterSpec]) -> Self {
        let mut out = Self::default();
        for f in filters {
            match f {
                FilterSpec::RequestHeaderModifier(m) => out.request_headers = Some(HeaderOps::compile(m)),
                FilterSpec::ResponseHeaderModifier(m) => out.response_headers = Some(HeaderOps::compile(m)),
                FilterSpec::UrlRewrite { hostname, path } => {
                    out.rewrite_host = hostname.as_deref().and_then(|h| HeaderValue::from_str(h).ok());
                    out.rewrite_path.clone_from(path);
                }
                FilterSpec::RequestRedirect { .. } => out.redirect = Some(f.clone()),
            }
        }
        out
    }

    /// The request-side filters: header modifiers, then the rewritten path if any.
    pub fn request(
        &self,
        headers: &mut HeaderMap,
        path: &str,
        matched_kind: PathMatchType,
        matched_path: &str,
    ) -> Option<String> {
        if let Some(ops) = &self.request_headers {
            ops.apply(headers);
        }
        self.rewrite_path.as_ref().map(|m| modify_path(m, path, matched_kind, matched_path))
    }

    /// The response-side filters, on an upstream's answer.
    pub fn response(&self, headers: &mut HeaderMap) {
        if let Some(ops) = &self.response_headers {
            ops.apply(headers);
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
    fn rule_filters_are_compiled_once_and_applied_in_order() {
        let modifier = |set: &[(&str, &str)], add: &[(&str, &str)], remove: &[&str]| HeaderModifierSpec {
            set: set.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect(),
            add: add.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect(),
            remove: remove.iter().map(|n| n.to_string()).collect(),
        };
        let f = RuleFilters::compile(&[
            FilterSpec::RequestHeaderModifier(modifier(&[("x-set", "1")], &[("x-add", "2")], &["x-gone"])),
            FilterSpec::ResponseHeaderModifier(modifier(&[("x-resp", "yes")], &[], &["server"])),
            FilterSpec::UrlRewrite {
                hostname: Some("internal.example".into()),
                path: Some(PathModifierSpec::ReplacePrefixMatch("/v2".into())),
            },
        ]);
        assert!(f.redirect.is_none());
        assert_eq!(f.rewrite_host.as_ref().unwrap(), "internal.example");

        let mut h = HeaderMap::new();
        h.insert("x-set", "0".parse().unwrap());
        h.insert("x-add", "1".parse().unwrap());
        h.insert("x-gone", "1".parse().unwrap());
        let path = f.request(&mut h, "/v1/users", PathMatchType::PathPrefix, "/v1");
        assert_eq!(path.as_deref(), Some("/v2/users"));
        assert_eq!(h["x-set"], "1");
        assert_eq!(h.get_all("x-add").iter().map(|v| v.to_str().unwrap()).collect::<Vec<_>>(), ["1", "2"]);
        assert!(!h.contains_key("x-gone"));

        let mut r = HeaderMap::new();
        r.insert("server", "upstream".parse().unwrap());
        f.response(&mut r);
        assert_eq!(r["x-resp"], "yes");
        assert!(!r.contains_key("server"));

        // No filters: nothing changes, no path is rewritten.
        let none = RuleFilters::compile(&[]);
        let mut h = HeaderMap::new();
        assert_eq!(none.request(&mut h, "/a", PathMatchType::PathPrefix, "/"), None);
        assert!(h.is_empty());
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
