//! Rule filters: header modifiers, URL rewrites and redirects, and the headers no filter
//! may touch.

use std::collections::{BTreeSet, HashMap};

use crate::duration::Duration;
use crate::model::{
    Filter, FilterType, HeaderModifier, HeaderValue, PathMatchType, PathModifier, PathModifierType, Route,
};
use crate::snapshot::{FilterSpec, HeaderModifierSpec, MatchSpec, MirrorSpec, PathModifierSpec};
use crate::yaml::{at, Seg};

use super::ctx::Ctx;
use super::limits::MAX_MIRROR_BODY;

/// Headers a filter may not touch: hop-by-hop and framing headers belong to the proxy, and
/// the upstream `Host` is changed with `urlRewrite.hostname`.
pub(super) const PROTECTED_HEADERS: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "content-length",
    "host",
];

impl Ctx<'_, Route> {
    /// Whether the filter has exactly the block its `type` names (reported when not).
    fn filter_block(&mut self, ri: usize, fi: usize, f: &Filter) -> bool {
        let here = at!["rules", ri, "filters", fi];
        let given: Vec<&str> = [
            ("requestHeaderModifier", f.request_header_modifier.is_some()),
            ("responseHeaderModifier", f.response_header_modifier.is_some()),
            ("urlRewrite", f.url_rewrite.is_some()),
            ("requestRedirect", f.request_redirect.is_some()),
            ("requestMirror", f.request_mirror.is_some()),
        ]
        .into_iter()
        .filter_map(|(n, set)| set.then_some(n))
        .collect();
        let wanted = match f.kind {
            FilterType::RequestHeaderModifier => "requestHeaderModifier",
            FilterType::ResponseHeaderModifier => "responseHeaderModifier",
            FilterType::UrlRewrite => "urlRewrite",
            FilterType::RequestRedirect => "requestRedirect",
            FilterType::RequestMirror => "requestMirror",
        };
        if given != [wanted] {
            let extra: Vec<&str> = given.iter().copied().filter(|g| *g != wanted).collect();
            let msg = if extra.is_empty() {
                format!("filter of type {} has no `{wanted}` block", filter_name(f.kind))
            } else {
                format!("filter of type {} also sets `{}`", filter_name(f.kind), extra.join("`, `"))
            };
            self.err(here, msg, Some(format!("a filter has a `type` and exactly the matching block, here `{wanted}`")));
            return false;
        }
        true
    }

    /// A `RequestMirror` filter, which becomes one of the rule's mirrors.
    pub(super) fn mirror(
        &mut self,
        ri: usize,
        fi: usize,
        f: &Filter,
        upstreams: &BTreeSet<&str>,
    ) -> Option<MirrorSpec> {
        if !self.filter_block(ri, fi, f) {
            return None;
        }
        let m = f.request_mirror.as_ref()?;
        let base = [Seg::Key("rules"), Seg::Index(ri), Seg::Key("filters"), Seg::Index(fi), Seg::Key("requestMirror")];
        let p = |k: &'static str| [&base[..], &[Seg::Key(k)]].concat();
        let upstream = &m.backend_ref.upstream;
        if !upstreams.contains(upstream.as_str()) {
            self.err(
                &[&p("backendRef")[..], at!["upstream"]].concat(),
                format!("unknown upstream `{upstream}`"),
                Some(format!("define a `kind: Upstream` named `{upstream}` or fix the name")),
            );
        }
        let (numerator, denominator) = match (m.percent, &m.fraction) {
            (Some(_), Some(_)) => {
                self.err(&base, "give `percent` or `fraction`, not both", None);
                (0, 100)
            }
            (Some(pc), None) => (self.range(&p("percent"), pc, 0, 100, "percent"), 100),
            (None, Some(fr)) => {
                let d = fr.denominator.unwrap_or(100);
                if d == 0 {
                    self.err(&[&p("fraction")[..], at!["denominator"]].concat(), "the denominator is 0", None);
                }
                if fr.numerator > d {
                    self.err(
                        &[&p("fraction")[..], at!["numerator"]].concat(),
                        format!("the numerator {} is larger than the denominator {d}", fr.numerator),
                        Some("a fraction mirrors at most every request".to_string()),
                    );
                }
                (fr.numerator, d.max(1))
            }
            (None, None) => (100, 100),
        };
        let max_body_bytes = m.max_body_bytes.unwrap_or(64 * 1024);
        if max_body_bytes > MAX_MIRROR_BODY {
            self.err(
                &p("maxBodyBytes"),
                format!("maxBodyBytes is {max_body_bytes}; at most {MAX_MIRROR_BODY} (16 MiB), since each copy is held in memory"),
                None,
            );
        }
        let max_in_flight = self.range(&p("maxInFlight"), m.max_in_flight.unwrap_or(100), 1, 100_000, "maxInFlight");
        let timeout = self.positive(&p("timeout"), m.timeout.unwrap_or(Duration::from_millis(10_000)), "timeout");
        Some(MirrorSpec { upstream: upstream.clone(), numerator, denominator, max_body_bytes, max_in_flight, timeout })
    }

    pub(super) fn filter(&mut self, ri: usize, fi: usize, f: &Filter, matches: &[MatchSpec]) -> Option<FilterSpec> {
        let here = at!["rules", ri, "filters", fi];
        if !self.filter_block(ri, fi, f) {
            return None;
        }
        Some(match f.kind {
            FilterType::RequestHeaderModifier => {
                FilterSpec::RequestHeaderModifier(self.header_modifier(
                    &[here, at!["requestHeaderModifier"]].concat(),
                    f.request_header_modifier.as_ref()?,
                ))
            }
            FilterType::ResponseHeaderModifier => FilterSpec::ResponseHeaderModifier(self.header_modifier(
                &[here, at!["responseHeaderModifier"]].concat(),
                f.response_header_modifier.as_ref()?,
            )),
            FilterType::UrlRewrite => {
                let rw = f.url_rewrite.as_ref()?;
                let base = [here, at!["urlRewrite"]].concat();
                let hostname =
                    rw.hostname.as_ref().map(|h| self.hostname(&[&base[..], at!["hostname"]].concat(), h, false));
                let path = rw.path.as_ref().map(|p| self.path_modifier(&[&base[..], at!["path"]].concat(), p, matches));
                if hostname.is_none() && path.is_none() {
                    self.err(&base, "URLRewrite changes nothing: give `hostname`, `path` or both", None);
                }
                FilterSpec::UrlRewrite { hostname, path }
            }
            FilterType::RequestRedirect => {
                let rd = f.request_redirect.as_ref()?;
                let base = [here, at!["requestRedirect"]].concat();
                if let Some(s) = &rd.scheme {
                    if s != "http" && s != "https" {
                        self.err(
                            &[&base[..], at!["scheme"]].concat(),
                            format!("scheme `{s}` is neither `http` nor `https`"),
                            None,
                        );
                    }
                }
                let hostname =
                    rd.hostname.as_ref().map(|h| self.hostname(&[&base[..], at!["hostname"]].concat(), h, false));
                let path = rd.path.as_ref().map(|p| self.path_modifier(&[&base[..], at!["path"]].concat(), p, matches));
                if rd.port == Some(0) {
                    self.err(&[&base[..], at!["port"]].concat(), "port 0 is not a valid port", None);
                }
                let status_code = rd.status_code.unwrap_or(302);
                if ![301, 302, 303, 307, 308].contains(&status_code) {
                    self.err(
                        &[&base[..], at!["statusCode"]].concat(),
                        format!("redirect status {status_code} is not 301, 302, 303, 307 or 308"),
                        None,
                    );
                }
                FilterSpec::RequestRedirect { scheme: rd.scheme.clone(), hostname, path, port: rd.port, status_code }
            }
            // Compiled by `mirror` into the rule's mirrors, never a filter of its own.
            FilterType::RequestMirror => return None,
        })
    }

    fn header_modifier(&mut self, base: &[Seg<'_>], m: &HeaderModifier) -> HeaderModifierSpec {
        if m.set.is_empty() && m.add.is_empty() && m.remove.is_empty() {
            self.err(base, "header modifier changes nothing: give `set`, `add` or `remove`", None);
        }
        let mut touched: HashMap<String, &'static str> = HashMap::new();
        let mut pairs = |ctx: &mut Self, list: &[HeaderValue], field: &'static str| -> Vec<(String, String)> {
            list.iter()
                .enumerate()
                .map(|(i, hv)| {
                    let p = [base, &[Seg::Key(field), Seg::Index(i)]].concat();
                    let name = ctx.header_name(&[&p[..], at!["name"]].concat(), &hv.name);
                    ctx.header_value(&[&p[..], at!["value"]].concat(), &hv.value);
                    ctx.protected(&[&p[..], at!["name"]].concat(), &name);
                    if let Some(other) = touched.insert(name.clone(), field) {
                        if field == "set" || other == "set" {
                            ctx.err(
                                &[&p[..], at!["name"]].concat(),
                                format!("header `{name}` is changed twice by one modifier"),
                                None,
                            );
                        }
                    }
                    (name, hv.value.clone())
                })
                .collect()
        };
        let set = pairs(self, &m.set, "set");
        let add = pairs(self, &m.add, "add");
        let mut remove = Vec::new();
        for (i, n) in m.remove.iter().enumerate() {
            let p = [base, &[Seg::Key("remove"), Seg::Index(i)]].concat();
            let name = self.header_name(&p, n);
            self.protected(&p, &name);
            if touched.contains_key(&name) {
                self.err(&p, format!("header `{name}` is both set or added and removed"), None);
            }
            remove.push(name);
        }
        HeaderModifierSpec { set, add, remove }
    }

    pub(super) fn protected(&mut self, path: &[Seg<'_>], name: &str) {
        if PROTECTED_HEADERS.contains(&name) {
            let help = if name == "host" {
                "use a URLRewrite filter with `hostname` to change the upstream Host"
            } else {
                "hop-by-hop and framing headers are managed by the proxy"
            };
            self.err(path, format!("header `{name}` cannot be modified by a filter"), Some(help.to_string()));
        }
    }

    fn path_modifier(&mut self, base: &[Seg<'_>], p: &PathModifier, matches: &[MatchSpec]) -> PathModifierSpec {
        let check = |ctx: &mut Self, field: &'static str, v: &Option<String>| -> String {
            match v {
                Some(v) if v.starts_with('/') => v.clone(),
                Some(v) => {
                    ctx.err(&[base, &[Seg::Key(field)]].concat(), format!("`{v}` must start with `/`"), None);
                    v.clone()
                }
                None => {
                    ctx.err(base, format!("path modifier of this type needs `{field}`"), None);
                    String::new()
                }
            }
        };
        match p.kind {
            PathModifierType::ReplaceFullPath => {
                if p.replace_prefix_match.is_some() {
                    self.err(
                        &[base, at!["replacePrefixMatch"]].concat(),
                        "`replacePrefixMatch` is set with type ReplaceFullPath",
                        None,
                    );
                }
                PathModifierSpec::ReplaceFullPath(check(self, "replaceFullPath", &p.replace_full_path))
            }
            PathModifierType::ReplacePrefixMatch => {
                if p.replace_full_path.is_some() {
                    self.err(
                        &[base, at!["replaceFullPath"]].concat(),
                        "`replaceFullPath` is set with type ReplacePrefixMatch",
                        None,
                    );
                }
                if matches.iter().any(|m| m.path.kind != PathMatchType::PathPrefix) {
                    self.err(
                        base,
                        "ReplacePrefixMatch needs every match of the rule to be a PathPrefix match",
                        Some("use ReplaceFullPath, or change the matches to PathPrefix".to_string()),
                    );
                }
                PathModifierSpec::ReplacePrefixMatch(check(self, "replacePrefixMatch", &p.replace_prefix_match))
            }
        }
    }
}

pub(super) fn filter_name(k: FilterType) -> &'static str {
    match k {
        FilterType::RequestHeaderModifier => "RequestHeaderModifier",
        FilterType::ResponseHeaderModifier => "ResponseHeaderModifier",
        FilterType::UrlRewrite => "URLRewrite",
        FilterType::RequestRedirect => "RequestRedirect",
        FilterType::RequestMirror => "RequestMirror",
    }
}
