//! The compiled route table: from (host, path, method, headers, query) to one rule, without
//! scanning every route.
//!
//! Hosts are looked up in hash maps (exact names, then wildcard suffixes from the longest,
//! then routes without host names), so the cost does not grow with the number of hosts.
//! Within a host, paths are looked up the same way: exact paths in a map, prefixes by
//! walking the request path's segment boundaries from the longest (a handful of map
//! lookups), regular expressions through one `RegexSet`. Only the few rules sharing the
//! winning path are then checked for method, headers and query parameters.
//!
//! Precedence, following the Gateway API: the most specific host name first (exact, then the
//! longest wildcard, then any host), falling through to the next when no rule matches;
//! within a host, `Exact` paths, then regular expressions (longer patterns first), then
//! prefixes (longer first); for one path, rules with a method first, then more header
//! matches, then more query matches, then route name and rule order.

use std::collections::HashMap;

/// The router's maps hash every request's host and path prefixes: foldhash, several times
/// faster than SipHash on short keys. Their keys come from the config, never from
/// requests, so the flooding SipHash guards against cannot happen here (and foldhash is
/// seeded per process all the same).
type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;
use std::sync::Arc;

use http::{HeaderMap, Method};
use regex::{Regex, RegexSet};
use schemas::snapshot::{MatchSpec, PathMatchType, RouteSpec, StringMatchType, ValueMatchSpec};

/// One match of one rule, as the table stores it. A match of a route with several host
/// names is built once and cloned into each host's bucket (clones share the regexes).
#[derive(Debug)]
struct Candidate<R> {
    rule: Arc<R>,
    method: Option<Method>,
    headers: Vec<ValueMatcher>,
    query: Vec<ValueMatcher>,
    /// The matched prefix (for `ReplacePrefixMatch`), or the exact path.
    path: Arc<str>,
    kind: PathMatchType,
    /// Sort key among candidates for one path: lower wins. Ties between routes go to the
    /// route whose name sorts first; a snapshot lists routes by name, so its index there
    /// orders them the same way.
    rank: (u8, usize, usize, usize, usize, usize),
}

// By hand: `derive` would ask `R: Clone`, and only the `Arc` is cloned.
impl<R> Clone for Candidate<R> {
    fn clone(&self) -> Self {
        Candidate {
            rule: self.rule.clone(),
            method: self.method.clone(),
            headers: self.headers.clone(),
            query: self.query.clone(),
            path: self.path.clone(),
            kind: self.kind,
            rank: self.rank,
        }
    }
}

#[derive(Debug, Clone)]
struct ValueMatcher {
    name: String,
    value: ValueMatch,
}

#[derive(Debug, Clone)]
enum ValueMatch {
    Exact(String),
    Regex(Regex),
}

impl ValueMatch {
    fn matches(&self, v: &str) -> bool {
        match self {
            ValueMatch::Exact(e) => e == v,
            ValueMatch::Regex(r) => r.is_match(v),
        }
    }
}

#[derive(Debug)]
struct HostBucket<R> {
    // Keyed by the candidates' own `path`: one allocation per path, not two.
    exact: Map<Arc<str>, Vec<Candidate<R>>>,
    prefix: Map<Arc<str>, Vec<Candidate<R>>>,
    /// The distinct lengths of the prefixes other than `/`, longest first: a lookup hashes
    /// the request path only at those lengths, so its cost is linear in the path's length
    /// whatever the client sends.
    prefix_lens: Vec<usize>,
    regex_set: Option<RegexSet>,
    /// Candidates per pattern, in the order of `regex_set`.
    regex: Vec<Vec<Candidate<R>>>,
    /// Pattern indexes in precedence order.
    regex_order: Vec<usize>,
}

impl<R> Default for HostBucket<R> {
    fn default() -> Self {
        Self {
            exact: Map::default(),
            prefix: Map::default(),
            prefix_lens: Vec::new(),
            regex_set: None,
            regex: Vec::new(),
            regex_order: Vec::new(),
        }
    }
}

/// The route table for one config snapshot. `R` is what a rule compiles to (the proxy's
/// `RuleRuntime`); the table only stores and returns it.
#[derive(Debug)]
pub struct RouteTable<R> {
    exact_hosts: Map<String, HostBucket<R>>,
    /// Keyed by the suffix after `*.`.
    wildcard_hosts: Map<String, HostBucket<R>>,
    any_host: HostBucket<R>,
    rules: usize,
}

/// What a lookup found.
#[derive(Debug)]
pub struct Matched<'a, R> {
    pub rule: &'a Arc<R>,
    pub path_kind: PathMatchType,
    /// The exact path or prefix that matched (normalised, without trailing `/`).
    pub matched_path: &'a str,
}

/// The parts of a request that routing looks at.
#[derive(Debug)]
pub struct RequestView<'a> {
    /// Lower-case, without port.
    pub host: &'a str,
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub method: &'a Method,
    pub headers: &'a HeaderMap,
}

impl<R> RouteTable<R> {
    /// Builds the table. `compile_rule(route, route_name, rule_index)` turns one rule into
    /// `R` (`route_name`: the route's name, one allocation shared by its rules and
    /// candidates); rules of one route are compiled once and shared by all their matches
    /// and host names. Fails
    /// when a regular expression does not build here, which `schemas` rules out for the
    /// configs it compiled: a config is served whole or not at all.
    pub fn build(
        routes: &[RouteSpec],
        mut compile_rule: impl FnMut(&RouteSpec, &Arc<str>, usize) -> R,
    ) -> Result<Self, String> {
        let mut table = RouteTable {
            exact_hosts: Map::default(),
            wildcard_hosts: Map::default(),
            any_host: HostBucket::default(),
            rules: 0,
        };
        // Regex patterns per bucket are collected first, then compiled into one set.
        let mut pending: HashMap<Option<String>, Vec<(String, Candidate<R>)>> = HashMap::new();
        debug_assert!(routes.windows(2).all(|w| w[0].name < w[1].name), "a snapshot lists routes by name");
        for (i, route) in routes.iter().enumerate() {
            let route_name: Arc<str> = Arc::from(route.name.as_str());
            for (ri, rule) in route.rules.iter().enumerate() {
                table.rules += 1;
                let compiled = Arc::new(compile_rule(route, &route_name, ri));
                for (mi, m) in rule.matches.iter().enumerate() {
                    let cand =
                        candidate(&compiled, m, (i, ri, mi)).map_err(|e| format!("route `{}`: {e}", route.name))?;
                    // No host names: one candidate for any host.
                    let any = route.hostnames.is_empty().then_some(None);
                    let hosts = any.into_iter().chain(route.hostnames.iter().map(|h| Some(h.as_str())));
                    let last = route.hostnames.len().saturating_sub(1);
                    let mut cand = Some(cand);
                    for (hi, host) in hosts.enumerate() {
                        // The last host takes the candidate itself; the others a clone.
                        let c = if hi == last { cand.take() } else { cand.clone() };
                        let c = c.expect("one candidate per host, the original last");
                        let list = match m.path.kind {
                            PathMatchType::RegularExpression => {
                                pending.entry(host.map(str::to_string)).or_default().push((m.path.value.clone(), c));
                                continue;
                            }
                            // Most paths have one candidate: room for exactly one, so the
                            // lists need no shrinking (a copy) once the table is built.
                            PathMatchType::Exact => table.bucket(host).exact.entry(c.path.clone()),
                            PathMatchType::PathPrefix => table.bucket(host).prefix.entry(c.path.clone()),
                        };
                        list.or_insert_with(|| Vec::with_capacity(1)).push(c);
                    }
                }
            }
        }
        for (host, patterns) in pending {
            table.bucket(host.as_deref()).add_patterns(host.as_deref(), patterns)?;
        }
        table.for_each_bucket(|b| {
            for list in b.exact.values_mut().chain(b.prefix.values_mut()).chain(b.regex.iter_mut()) {
                list.sort_by_key(|x| x.rank);
                // A list that grew past its first candidate has room for four.
                list.shrink_to_fit();
            }
            b.exact.shrink_to_fit();
            b.prefix.shrink_to_fit();
            let mut lens: Vec<usize> = b.prefix.keys().filter(|k| &***k != "/").map(|k| k.len()).collect();
            lens.sort_unstable_by(|a, b| b.cmp(a));
            lens.dedup();
            b.prefix_lens = lens;
        });
        Ok(table)
    }

    fn bucket(&mut self, host: Option<&str>) -> &mut HostBucket<R> {
        let (map, key) = match host {
            None => return &mut self.any_host,
            Some(h) => match h.strip_prefix("*.") {
                Some(suffix) => (&mut self.wildcard_hosts, suffix),
                None => (&mut self.exact_hosts, h),
            },
        };
        // Most calls find the bucket: allocate the key only for a new host.
        if !map.contains_key(key) {
            map.insert(key.to_string(), HostBucket::default());
        }
        map.get_mut(key).expect("inserted above")
    }

    fn for_each_bucket(&mut self, mut f: impl FnMut(&mut HostBucket<R>)) {
        self.exact_hosts.values_mut().for_each(&mut f);
        self.wildcard_hosts.values_mut().for_each(&mut f);
        f(&mut self.any_host);
    }

    /// Number of rules in the table.
    pub fn rule_count(&self) -> usize {
        self.rules
    }

    /// The rule that serves this request, if any.
    pub fn lookup<'a>(&'a self, req: &RequestView<'_>) -> Option<Matched<'a, R>> {
        let mut query_cache: Option<Vec<(String, String)>> = None;
        if let Some(b) = self.exact_hosts.get(req.host) {
            if let Some(m) = b.lookup(req, &mut query_cache) {
                return Some(m);
            }
        }
        if !self.wildcard_hosts.is_empty() {
            // `*.example.com` serves `a.example.com` and `a.b.example.com`, never
            // `example.com`; the longest suffix is tried first.
            let mut rest = req.host;
            while let Some(dot) = rest.find('.') {
                rest = &rest[dot + 1..];
                if let Some(b) = self.wildcard_hosts.get(rest) {
                    if let Some(m) = b.lookup(req, &mut query_cache) {
                        return Some(m);
                    }
                }
            }
        }
        self.any_host.lookup(req, &mut query_cache)
    }
}

impl<R> HostBucket<R> {
    /// Compiles the bucket's regular-expression paths into one set, candidates grouped by
    /// pattern, longer patterns first. `host`: for the error message.
    fn add_patterns(&mut self, host: Option<&str>, patterns: Vec<(String, Candidate<R>)>) -> Result<(), String> {
        let mut by_pattern: Vec<(String, Vec<Candidate<R>>)> = Vec::new();
        for (p, c) in patterns {
            match by_pattern.iter_mut().find(|(q, _)| *q == p) {
                Some((_, list)) => list.push(c),
                None => by_pattern.push((p, vec![c])),
            }
        }
        let patterns: Vec<&str> = by_pattern.iter().map(|(p, _)| p.as_str()).collect();
        let set = schemas::patterns::path_regex_set(&patterns).map_err(|e| {
            format!(
                "the path patterns of {} do not build together: {}",
                host.unwrap_or("routes without host names"),
                schemas::patterns::reason(&e)
            )
        })?;
        self.regex_set = Some(set);
        let mut order: Vec<usize> = (0..by_pattern.len()).collect();
        order.sort_by(|a, b| by_pattern[*b].0.len().cmp(&by_pattern[*a].0.len()).then(a.cmp(b)));
        self.regex_order = order;
        self.regex = by_pattern.into_iter().map(|(_, c)| c).collect();
        Ok(())
    }

    fn lookup<'a>(&'a self, req: &RequestView<'_>, q: &mut Option<Vec<(String, String)>>) -> Option<Matched<'a, R>> {
        if let Some(list) = self.exact.get(req.path) {
            if let Some(m) = first_match(list, req, q) {
                return Some(m);
            }
        }
        if let Some(set) = &self.regex_set {
            let hits = set.matches(req.path);
            if hits.matched_any() {
                for &i in &self.regex_order {
                    if hits.matched(i) {
                        if let Some(m) = first_match(&self.regex[i], req, q) {
                            return Some(m);
                        }
                    }
                }
            }
        }
        if !self.prefix.is_empty() {
            // Whole-segment prefixes: for `/a/b/c`, `/a/b/c`, `/a/b`, `/a` and `/`, each
            // tried only when some prefix of that length exists.
            let trimmed = req.path.trim_end_matches('/');
            for &len in &self.prefix_lens {
                let at_boundary = len == trimmed.len() || (len < trimmed.len() && trimmed.as_bytes()[len] == b'/');
                if !at_boundary {
                    continue;
                }
                if let Some(m) = self.prefix.get(&trimmed[..len]).and_then(|list| first_match(list, req, q)) {
                    return Some(m);
                }
            }
            if let Some(m) = self.prefix.get("/").and_then(|list| first_match(list, req, q)) {
                return Some(m);
            }
        }
        None
    }
}

fn first_match<'a, R>(
    list: &'a [Candidate<R>],
    req: &RequestView<'_>,
    query_cache: &mut Option<Vec<(String, String)>>,
) -> Option<Matched<'a, R>> {
    for c in list {
        if let Some(m) = &c.method {
            if m != req.method {
                continue;
            }
        }
        let headers_ok = c.headers.iter().all(|h| {
            req.headers.get(h.name.as_str()).and_then(|v| v.to_str().ok()).is_some_and(|v| h.value.matches(v))
        });
        if !headers_ok {
            continue;
        }
        if !c.query.is_empty() {
            let params = query_cache.get_or_insert_with(|| parse_query(req.query));
            // The first occurrence of a parameter is the one that counts, as in the Gateway API.
            let ok = c
                .query
                .iter()
                .all(|qm| params.iter().find(|(k, _)| *k == qm.name).is_some_and(|(_, v)| qm.value.matches(v)));
            if !ok {
                continue;
            }
        }
        return Some(Matched { rule: &c.rule, path_kind: c.kind, matched_path: &c.path });
    }
    None
}

fn parse_query(q: Option<&str>) -> Vec<(String, String)> {
    q.map(|q| form_urlencoded::parse(q.as_bytes()).map(|(k, v)| (k.into_owned(), v.into_owned())).collect())
        .unwrap_or_default()
}

/// `at`: where the match is, as (route index in the snapshot, rule index, match index).
fn candidate<R>(rule: &Arc<R>, m: &MatchSpec, at: (usize, usize, usize)) -> Result<Candidate<R>, String> {
    let matchers = |list: &[ValueMatchSpec]| -> Result<Vec<ValueMatcher>, String> {
        list.iter()
            .map(|v| {
                let value = match v.kind {
                    StringMatchType::Exact => ValueMatch::Exact(v.value.clone()),
                    StringMatchType::RegularExpression => ValueMatch::Regex(
                        schemas::patterns::value_regex(&v.value)
                            .map_err(|e| format!("`{}`: {}", v.value, schemas::patterns::reason(&e)))?,
                    ),
                };
                Ok(ValueMatcher { name: v.name.clone(), value })
            })
            .collect()
    };
    Ok(Candidate {
        rule: rule.clone(),
        method: m.method.as_deref().and_then(|s| Method::from_bytes(s.as_bytes()).ok()),
        headers: matchers(&m.headers)?,
        query: matchers(&m.query_params)?,
        path: Arc::from(m.path.value.as_str()),
        kind: m.path.kind,
        rank: (
            u8::from(m.method.is_none()),
            usize::MAX - m.headers.len(),
            usize::MAX - m.query_params.len(),
            at.0,
            at.1,
            at.2,
        ),
    })
}

#[cfg(test)]
mod fuzz;

#[cfg(test)]
mod tests {
    use super::*;

    fn table(yaml: &str) -> RouteTable<String> {
        let mut tree = vec![schemas::SourceFile {
            path: "u.yaml".into(),
            contents: b"kind: Upstream\nname: u\nendpoints: [{ address: 127.0.0.1:1 }]\n".to_vec(),
        }];
        tree.push(schemas::SourceFile { path: "r.yaml".into(), contents: yaml.as_bytes().to_vec() });
        let c = schemas::compile_tree(&tree).unwrap_or_else(|d| panic!("{d:#?}"));
        RouteTable::build(&c.snapshot.routes, |r, _, i| format!("{}#{}", r.name, i)).unwrap()
    }

    fn check(
        t: &RouteTable<String>,
        host: &str,
        method: &str,
        path_q: &str,
        headers: &[(&str, &str)],
        want: Option<&str>,
    ) {
        let (path, query) = match path_q.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (path_q, None),
        };
        let mut h = HeaderMap::new();
        for (k, v) in headers {
            h.insert(http::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
        }
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let got = t.lookup(&RequestView { host, path, query, method: &method, headers: &h }).map(|m| m.rule.as_str());
        assert_eq!(got, want, "{method} {host}{path_q} {headers:?}");
    }

    const ROUTES: &str = r#"
kind: Route
name: a
hostnames: [api.example.com]
rules:
  - matches: [{ path: { type: Exact, value: /v1/users } }]
    backendRefs: [{ upstream: u }]
  - matches: [{ path: { value: /v1 } }]
    backendRefs: [{ upstream: u }]
  - matches: [{ path: { value: /v1/users } }]
    backendRefs: [{ upstream: u }]
  - matches: [{ path: { value: /v1/users }, method: POST }]
    backendRefs: [{ upstream: u }]
  - matches: [{ path: { value: /v1/users }, headers: [{ name: x-canary, value: "yes" }] }]
    backendRefs: [{ upstream: u }]
  - matches: [{ path: { value: /v1/users }, queryParams: [{ name: v, type: RegularExpression, value: "[0-9]+" }] }]
    backendRefs: [{ upstream: u }]
  - matches: [{ path: { type: RegularExpression, value: "/v1/users/[0-9]+/avatar" } }]
    backendRefs: [{ upstream: u }]
---
kind: Route
name: b
hostnames: ["*.example.com"]
rules:
  - matches: [{ path: { value: / } }]
    backendRefs: [{ upstream: u }]
---
kind: Route
name: c
rules:
  - matches: [{ path: { value: /fallback } }]
    backendRefs: [{ upstream: u }]
"#;

    #[test]
    fn gateway_api_precedence() {
        let t = table(ROUTES);
        let h = "api.example.com";
        check(&t, h, "GET", "/v1/users", &[], Some("a#0")); // exact beats prefix
        check(&t, h, "GET", "/v1/users/", &[], Some("a#2")); // exact is exact; prefix ignores the slash
        check(&t, h, "GET", "/v1/users/7", &[], Some("a#2")); // longer prefix first
        check(&t, h, "GET", "/v1/usersx", &[], Some("a#1")); // prefixes match whole segments
        check(&t, h, "POST", "/v1/users/7", &[], Some("a#3")); // method beats headers
        check(&t, h, "GET", "/v1/users/7", &[("x-canary", "yes")], Some("a#4")); // headers
        check(&t, h, "GET", "/v1/users/7", &[("x-canary", "no")], Some("a#2"));
        check(&t, h, "GET", "/v1/users/7?a=1&v=12", &[], Some("a#5")); // query
        check(&t, h, "GET", "/v1/users/7?v=x", &[], Some("a#2"));
        check(&t, h, "GET", "/v1/users/7/avatar", &[], Some("a#6")); // regex beats prefix
        check(&t, h, "GET", "/v2", &[], Some("b#0")); // falls through to the wildcard host
        check(&t, "x.y.example.com", "GET", "/", &[], Some("b#0"));
        check(&t, "example.com", "GET", "/", &[], None); // wildcard needs a label
        check(&t, "other.org", "GET", "/fallback/x", &[], Some("c#0")); // any host
        check(&t, "other.org", "GET", "/", &[], None);
    }

    #[test]
    fn lookup_does_not_scan() {
        // 10,000 routes on 10,000 hosts: the lookup touches one host bucket.
        let mut yaml = String::new();
        for i in 0..10_000 {
            yaml.push_str(&format!(
                "---\nkind: Route\nname: r{i}\nhostnames: [h{i}.example.com]\nrules:\n  - matches: [{{ path: {{ value: /p{i} }} }}]\n    backendRefs: [{{ upstream: u }}]\n"
            ));
        }
        let t = table(&yaml);
        assert_eq!(t.rule_count(), 10_000);
        check(&t, "h9999.example.com", "GET", "/p9999/x", &[], Some("r9999#0"));
        check(&t, "h9999.example.com", "GET", "/p1", &[], None);
    }
}
