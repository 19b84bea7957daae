//! Routes and their rules: rule names, the combination of matches, filters and backends,
//! timeouts and body limits, and the backendRefs that must name defined upstreams.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use crate::diag::did_you_mean;
use crate::model::{FilterType, HttpsRedirect, Route, Rule};
use crate::snapshot::{BackendSpec, HttpsRedirectSpec, MatchSpec, MirrorSpec, RouteSpec, RuleSpec};
use crate::yaml::at;

use super::ctx::Ctx;
use super::filters::filter_name;
use super::limits::{MAX_BACKENDS, MAX_BACKEND_WEIGHT, MAX_BODY_LIMIT, MAX_FILTERS, MAX_MATCHES, MAX_RULES};
use super::matches::default_match;
use super::names::valid_name;

impl Ctx<'_, Route> {
    pub(super) fn route(&mut self, r: &Route, upstreams: &BTreeSet<&str>) -> RouteSpec {
        self.name(&r.name, "route");
        let hostnames = self.hostnames(&r.hostnames);
        if r.rules.is_empty() {
            self.err(at!["rules"], "a route needs at least one rule", None);
        }
        if r.rules.len() > MAX_RULES {
            self.err(at!["rules"], format!("more than {MAX_RULES} rules"), Some("split the route".into()));
        }
        let rules = r.rules.iter().enumerate().map(|(i, rule)| self.rule(i, rule, upstreams)).collect();
        let https_redirect = match &r.https_redirect {
            None | Some(HttpsRedirect::On(false)) => None,
            Some(HttpsRedirect::On(true)) => Some(HttpsRedirectSpec { port: None, status_code: 308 }),
            Some(HttpsRedirect::With(w)) => {
                let status_code = w.status_code.unwrap_or(308);
                if ![301, 302, 303, 307, 308].contains(&status_code) {
                    self.err(
                        at!["httpsRedirect", "statusCode"],
                        format!("{status_code} is not a redirect status"),
                        Some("use 301, 302, 303, 307 or 308 (308 keeps the method and body)".into()),
                    );
                }
                if w.port == Some(0) {
                    self.err(at!["httpsRedirect", "port"], "port 0 cannot be reached", None);
                }
                Some(HttpsRedirectSpec { port: w.port.filter(|p| *p != 443), status_code })
            }
        };
        RouteSpec { name: r.name.clone(), hostnames, rules, https_redirect }
    }

    fn rule(&mut self, ri: usize, rule: &Rule, upstreams: &BTreeSet<&str>) -> RuleSpec {
        if let Some(n) = &rule.name {
            if valid_name(n).is_err() {
                self.err(
                    at!["rules", ri, "name"],
                    format!("invalid rule name `{n}`"),
                    Some("use lowercase letters, digits and `-`, at most 63 characters".to_string()),
                );
            }
        }
        if rule.matches.len() > MAX_MATCHES {
            self.err(at!["rules", ri, "matches"], format!("more than {MAX_MATCHES} matches"), None);
        }
        let mut matches: Vec<MatchSpec> =
            rule.matches.iter().enumerate().map(|(mi, m)| self.match_(ri, mi, m)).collect();
        if matches.is_empty() {
            matches.push(default_match());
        }
        let mut seen = HashSet::new();
        for (mi, m) in matches.iter().enumerate() {
            if !seen.insert(m) && !rule.matches.is_empty() {
                self.err(
                    at!["rules", ri, "matches", mi],
                    "this match repeats an earlier match of the same rule",
                    Some("remove it".to_string()),
                );
            }
        }

        if rule.filters.len() > MAX_FILTERS {
            self.err(at!["rules", ri, "filters"], format!("more than {MAX_FILTERS} filters"), None);
        }
        let mut kinds_seen: BTreeMap<&'static str, usize> = BTreeMap::new();
        let mut filters = Vec::new();
        let mut mirrors: Vec<MirrorSpec> = Vec::new();
        for (fi, f) in rule.filters.iter().enumerate() {
            if f.kind == FilterType::RequestMirror {
                // Several mirrors per rule are allowed, one per upstream.
                let Some(m) = self.mirror(ri, fi, f, upstreams) else { continue };
                if mirrors.iter().any(|o| o.upstream == m.upstream) {
                    self.err(
                        at!["rules", ri, "filters", fi, "requestMirror", "backendRef", "upstream"],
                        format!("upstream `{}` is already a mirror of this rule", m.upstream),
                        Some("mirror to each upstream once; raise its `percent` instead".to_string()),
                    );
                }
                mirrors.push(m);
                continue;
            }
            if let Some(spec) = self.filter(ri, fi, f, &matches) {
                let kind = filter_name(f.kind);
                if let Some(first) = kinds_seen.insert(kind, fi) {
                    self.err(
                        at!["rules", ri, "filters", fi, "type"],
                        format!("a second {kind} filter (the first is filter {first})"),
                        Some("merge them into one".to_string()),
                    );
                }
                filters.push(spec);
            }
        }
        let redirect = kinds_seen.contains_key("RequestRedirect");
        if redirect && kinds_seen.contains_key("URLRewrite") {
            self.err(
                at!["rules", ri, "filters"],
                "RequestRedirect and URLRewrite cannot be combined in one rule",
                None,
            );
        }

        let backends = self.backends(ri, rule, upstreams, redirect);

        let t = rule.timeouts.as_ref();
        let request_timeout = t
            .and_then(|t| t.request)
            .map(|d| self.positive(at!["rules", ri, "timeouts", "request"], d, "request timeout"));
        let backend_request_timeout = t
            .and_then(|t| t.backend_request)
            .map(|d| self.positive(at!["rules", ri, "timeouts", "backendRequest"], d, "backendRequest timeout"));
        if let (Some(req), Some(be)) = (request_timeout, backend_request_timeout) {
            if be > req {
                self.err(
                    at!["rules", ri, "timeouts", "backendRequest"],
                    format!("backendRequest `{be}` is longer than the request timeout `{req}`"),
                    Some("the request timeout bounds every attempt; make backendRequest shorter".to_string()),
                );
            }
        }
        let retry = rule.retry.as_ref().map(|r| self.retry(ri, r, request_timeout));
        if let Some(limit) = rule.max_request_body_bytes {
            if limit == 0 || limit > MAX_BODY_LIMIT {
                self.err(
                    at!["rules", ri, "maxRequestBodyBytes"],
                    format!("maxRequestBodyBytes is {limit}; it must be between 1 and {MAX_BODY_LIMIT} (1 TiB)"),
                    None,
                );
            }
        }
        let fallback = rule.fallback.as_ref().map(|f| self.fallback(ri, f, upstreams));
        let rate_limit = rule.rate_limit.as_ref().map(|r| self.rate_limit(ri, r));
        let compression = rule.compression.as_ref().map(|c| self.compression(ri, c));
        let session = rule.session_persistence.as_ref().map(|s| self.session_persistence(ri, s));
        let cache = rule.cache.as_ref().map(|c| self.cache(ri, c));
        let policies = fallback.is_some() || rate_limit.is_some() || retry.is_some() || compression.is_some();
        if redirect && (policies || session.is_some() || cache.is_some() || !mirrors.is_empty()) {
            self.err(
                at!["rules", ri],
                "a rule that answers with a RequestRedirect cannot have retry, fallback, rateLimit, cache, compression, sessionPersistence or a RequestMirror",
                Some("move them to a rule with backendRefs".to_string()),
            );
        }
        RuleSpec {
            name: rule.name.clone(),
            matches,
            filters,
            backends,
            request_timeout,
            backend_request_timeout,
            retry: retry.map(Box::new),
            max_request_body_bytes: rule.max_request_body_bytes,
            fallback: fallback.map(Box::new),
            rate_limit: rate_limit.map(Box::new),
            mirrors: {
                mirrors.sort_by(|a, b| a.upstream.cmp(&b.upstream));
                mirrors
            },
            cache: cache.map(Box::new),
            compression: compression.map(Box::new),
            session_persistence: session.map(Box::new),
            security: None,
        }
    }

    fn backends(&mut self, ri: usize, rule: &Rule, upstreams: &BTreeSet<&str>, redirect: bool) -> Vec<BackendSpec> {
        if redirect {
            if !rule.backend_refs.is_empty() {
                self.err(
                    at!["rules", ri, "backendRefs"],
                    "a rule with a RequestRedirect filter cannot have backendRefs",
                    Some("the redirect answers the request; remove backendRefs or the redirect".to_string()),
                );
            }
            return Vec::new();
        }
        if rule.backend_refs.is_empty() {
            self.err(
                at!["rules", ri],
                "rule has no backendRefs",
                Some("add `backendRefs: [{ upstream: NAME }]`, or a RequestRedirect filter".to_string()),
            );
            return Vec::new();
        }
        if rule.backend_refs.len() > MAX_BACKENDS {
            self.err(at!["rules", ri, "backendRefs"], format!("more than {MAX_BACKENDS} backendRefs"), None);
        }
        let mut out: Vec<BackendSpec> = Vec::new();
        for (bi, b) in rule.backend_refs.iter().enumerate() {
            let here = at!["rules", ri, "backendRefs", bi];
            if !upstreams.contains(b.upstream.as_str()) {
                let hint = match did_you_mean(&b.upstream, upstreams.iter().copied()) {
                    Some(s) => format!("did you mean `{s}`? "),
                    None => String::new(),
                };
                let known = if upstreams.is_empty() {
                    "no upstreams are defined".to_string()
                } else {
                    format!("defined upstreams: {}", upstreams.iter().take(10).copied().collect::<Vec<_>>().join(", "))
                };
                self.err(
                    &[here, at!["upstream"]].concat(),
                    format!("unknown upstream `{}`", b.upstream),
                    Some(format!("{hint}define a `kind: Upstream` named `{}` or fix the name ({known})", b.upstream)),
                );
            }
            if out.iter().any(|o| o.upstream == b.upstream) {
                self.err(
                    &[here, at!["upstream"]].concat(),
                    format!("upstream `{}` is listed twice", b.upstream),
                    Some("list it once and add the weights together".to_string()),
                );
            }
            let weight = b.weight.unwrap_or(1);
            if weight > MAX_BACKEND_WEIGHT {
                self.err(
                    &[here, at!["weight"]].concat(),
                    format!("weight {weight} is above {MAX_BACKEND_WEIGHT}"),
                    None,
                );
            }
            out.push(BackendSpec { upstream: b.upstream.clone(), weight });
        }
        if out.iter().all(|b| b.weight == 0) {
            self.err(
                at!["rules", ri, "backendRefs"],
                "the backendRefs' weights add up to 0, so no request could be routed",
                Some(
                    "give at least one backendRef a weight above 0 (weights are proportional, not percentages)"
                        .to_string(),
                ),
            );
        }
        out
    }
}
