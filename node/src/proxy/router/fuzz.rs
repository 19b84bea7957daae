//! Differential fuzzing of the route table: random route sets and requests, looked up by
//! `RouteTable` and by `reference`, a matcher written for this test that scans every rule
//! and applies the documented precedence literally. Any difference is a bug in one of them.

use http::{HeaderMap, Method};
use regex::Regex;
use schemas::snapshot::{MatchSpec, PathMatchType, RouteSpec, StringMatchType, ValueMatchSpec};
use testkit::fuzz::{self, proptest::prelude::*};

use super::{RequestView, RouteTable};

/// A request as the test generates it.
#[derive(Debug, Clone)]
struct Req {
    host: &'static str,
    path: String,
    query: Option<&'static str>,
    method: &'static str,
    header: Option<&'static str>,
}

fn full_match(pattern: &str, s: &str) -> bool {
    thread_local! {
        static CACHE: std::cell::RefCell<std::collections::HashMap<String, Regex>> = Default::default();
    }
    CACHE.with(|c| {
        c.borrow_mut()
            .entry(pattern.to_string())
            .or_insert_with(|| Regex::new(&format!("^(?:{pattern})$")).unwrap())
            .is_match(s)
    })
}

fn value_ok(m: &ValueMatchSpec, got: Option<&str>) -> bool {
    got.is_some_and(|v| match m.kind {
        StringMatchType::Exact => v == m.value,
        StringMatchType::RegularExpression => full_match(&m.value, v),
    })
}

/// Whether the match's method, headers and query parameters accept the request.
fn conditions(m: &MatchSpec, req: &Req) -> bool {
    let method_ok = m.method.as_deref().is_none_or(|x| x == req.method);
    let headers_ok = m.headers.iter().all(|h| value_ok(h, (h.name == "x-v").then_some(req.header).flatten()));
    let params: Vec<(String, String)> = req
        .query
        .map(|q| form_urlencoded::parse(q.as_bytes()).map(|(k, v)| (k.into_owned(), v.into_owned())).collect())
        .unwrap_or_default();
    let query_ok =
        m.query_params.iter().all(|q| value_ok(q, params.iter().find(|(k, _)| *k == q.name).map(|(_, v)| v.as_str())));
    method_ok && headers_ok && query_ok
}

/// One candidate: (route, rule index, match index, match).
type Cand<'a> = (&'a RouteSpec, usize, usize, &'a MatchSpec);

/// The winner among candidates sharing one path: method first, then more header matches,
/// then more query matches, then route name, rule and match order.
fn best<'a>(mut group: Vec<Cand<'a>>, req: &Req) -> Option<Cand<'a>> {
    group.sort_by_key(|(r, ri, mi, m)| {
        (m.method.is_none(), usize::MAX - m.headers.len(), usize::MAX - m.query_params.len(), r.name.clone(), *ri, *mi)
    });
    group.into_iter().find(|(_, _, _, m)| conditions(m, req))
}

/// Exact paths, then regular expressions (longer patterns first, then the one written
/// first), then prefixes on segment boundaries (longer first).
fn pick<'a>(cands: &[Cand<'a>], req: &Req) -> Option<Cand<'a>> {
    let of_kind = |k: PathMatchType| cands.iter().filter(move |c| c.3.path.kind == k);
    let exact: Vec<Cand<'a>> = of_kind(PathMatchType::Exact).filter(|c| c.3.path.value == req.path).copied().collect();
    if let Some(c) = best(exact, req) {
        return Some(c);
    }
    let mut patterns: Vec<(&str, usize)> = Vec::new();
    for (i, c) in of_kind(PathMatchType::RegularExpression).enumerate() {
        if !patterns.iter().any(|(p, _)| *p == c.3.path.value) {
            patterns.push((&c.3.path.value, i));
        }
    }
    patterns.sort_by_key(|(p, first)| (usize::MAX - p.len(), *first));
    for (p, _) in patterns {
        if full_match(p, &req.path) {
            let group = of_kind(PathMatchType::RegularExpression).filter(|c| c.3.path.value == p).copied().collect();
            if let Some(c) = best(group, req) {
                return Some(c);
            }
        }
    }
    let trimmed = req.path.trim_end_matches('/');
    let covers =
        |p: &str| p == "/" || trimmed == p || trimmed.strip_prefix(p).is_some_and(|rest| rest.starts_with('/'));
    let mut prefixes: Vec<&str> = of_kind(PathMatchType::PathPrefix).map(|c| c.3.path.value.as_str()).collect();
    prefixes.sort_by_key(|p| (usize::MAX - if *p == "/" { 0 } else { p.len() }, *p));
    prefixes.dedup();
    for p in prefixes.into_iter().filter(|p| covers(p)) {
        let group = of_kind(PathMatchType::PathPrefix).filter(|c| c.3.path.value == p).copied().collect();
        if let Some(c) = best(group, req) {
            return Some(c);
        }
    }
    None
}

/// Which routes one host tier holds.
type Tier<'a> = Box<dyn Fn(&RouteSpec) -> bool + 'a>;

/// Host tiers in order: the exact name, wildcards from the longest suffix, then routes
/// without host names; the first tier with a matching rule wins.
fn reference<'a>(routes: &'a [RouteSpec], req: &Req) -> Option<Cand<'a>> {
    let mut tiers: Vec<Tier<'_>> = vec![Box::new(|r| r.hostnames.iter().any(|h| h == req.host))];
    let mut rest = req.host;
    while let Some(dot) = rest.find('.') {
        rest = &rest[dot + 1..];
        let wildcard = format!("*.{rest}");
        tiers.push(Box::new(move |r| r.hostnames.contains(&wildcard)));
    }
    tiers.push(Box::new(|r| r.hostnames.is_empty()));
    for tier in tiers {
        let cands: Vec<Cand<'a>> = routes
            .iter()
            .filter(|r| tier(r))
            .flat_map(|r| {
                r.rules
                    .iter()
                    .enumerate()
                    .flat_map(move |(ri, rule)| rule.matches.iter().enumerate().map(move |(mi, m)| (r, ri, mi, m)))
            })
            .collect();
        if let Some(c) = pick(&cands, req) {
            return Some(c);
        }
    }
    None
}

const HOSTS: &[&[&str]] = &[&[], &["a.example.com"], &["*.example.com"], &["b.a.example.com", "*.a.example.com"]];
const PLAIN: &[&str] = &["/", "/a", "/a/b", "/b", "/a/b/c", "/ab"];
const REGEX: &[&str] = &["/a/.*", "/[ab]+", "/a/b", "/.*", "/b/[0-9]+"];

/// One match as indexes: (path kind 0..3, path, method 0..3, header 0..3, query 0..2).
type MatchGen = (usize, usize, usize, usize, usize);

const METHODS: [&str; 3] = ["", ", method: GET", ", method: POST"];
const HEADERS: [&str; 3] = [
    "",
    ", headers: [{ name: x-v, value: \"1\" }]",
    ", headers: [{ name: x-v, type: RegularExpression, value: \"[12]\" }]",
];
const QUERIES: [&str; 2] = ["", ", queryParams: [{ name: v, value: \"1\" }]"];

fn render((kind, path, method, header, query): MatchGen) -> String {
    let p = match kind {
        0 => format!("{{ type: Exact, value: \"{}\" }}", PLAIN[path % PLAIN.len()]),
        1 => format!("{{ value: \"{}\" }}", PLAIN[path % PLAIN.len()]),
        _ => format!("{{ type: RegularExpression, value: \"{}\" }}", REGEX[path % REGEX.len()]),
    };
    format!("{{ path: {p}{}{}{} }}", METHODS[method], HEADERS[header], QUERIES[query])
}

/// Routes as YAML. Matches identical to an earlier one for a shared host name are left
/// out (the compiler refuses such sets), so nearly every generated set compiles.
fn routes_yaml() -> impl Strategy<Value = String> {
    let a_match = (0..3usize, 0..6usize, 0..3usize, 0..3usize, 0..2usize);
    let rule = prop::collection::vec(a_match, 0..3);
    let route = (0..HOSTS.len(), prop::collection::vec(rule, 1..4));
    prop::collection::vec(route, 1..6).prop_map(|routes| {
        let mut seen = std::collections::HashSet::new();
        let mut out = String::from("kind: Upstream\nname: u\nendpoints: [{ address: 127.0.0.1:1 }]\n");
        for (i, (h, rules)) in routes.into_iter().enumerate() {
            let hosts: Vec<&str> = if HOSTS[h].is_empty() { vec![""] } else { HOSTS[h].to_vec() };
            let mut body = String::new();
            for rule in rules {
                // No matches means `PathPrefix /` with no conditions.
                let wanted = if rule.is_empty() { vec![None] } else { rule.into_iter().map(Some).collect() };
                let mut kept = Vec::new();
                for m in wanted {
                    let key = m.map(|(k, p, me, he, q)| {
                        (k, if k == 2 { p % REGEX.len() } else { p % PLAIN.len() }, me, he, q)
                    });
                    let key = key.unwrap_or((1, 0, 0, 0, 0));
                    if hosts.iter().all(|h| seen.insert((h.to_string(), key))) {
                        kept.push(m);
                    }
                }
                match kept.as_slice() {
                    [] => continue,
                    [None] => body += "  - backendRefs: [{ upstream: u }]\n",
                    ms => {
                        let ms: Vec<String> = ms.iter().map(|m| render(m.unwrap_or((1, 0, 0, 0, 0)))).collect();
                        body += &format!("  - matches: [{}]\n    backendRefs: [{{ upstream: u }}]\n", ms.join(", "));
                    }
                }
            }
            if body.is_empty() {
                continue;
            }
            out += &format!("---\nkind: Route\nname: r{i}\n");
            if !HOSTS[h].is_empty() {
                out += &format!(
                    "hostnames: [{}]\n",
                    HOSTS[h].iter().map(|h| format!("\"{h}\"")).collect::<Vec<_>>().join(", ")
                );
            }
            out += "rules:\n";
            out += &body;
        }
        out
    })
}

fn requests() -> impl Strategy<Value = Vec<Req>> {
    let host = prop_oneof![
        Just("a.example.com"),
        Just("b.a.example.com"),
        Just("c.a.example.com"),
        Just("x.org"),
        Just("example.com")
    ];
    let segment = prop_oneof![Just("a"), Just("b"), Just("c"), Just("ab"), Just("7"), Just("")];
    let path = prop::collection::vec(segment, 0..5).prop_map(|s| format!("/{}", s.join("/")));
    let query = prop_oneof![Just(None), Just(Some("v=1")), Just(Some("v=2&v=1")), Just(Some("x=1"))];
    let method = prop_oneof![Just("GET"), Just("POST"), Just("PUT")];
    let header = prop_oneof![Just(None), Just(Some("1")), Just(Some("2")), Just(Some("3"))];
    let req = (host, path, query, method, header).prop_map(|(host, path, query, method, header)| Req {
        host,
        path,
        query,
        method,
        header,
    });
    prop::collection::vec(req, 1..16)
}

#[test]
fn fuzz_router_against_the_reference() {
    fuzz::run("router", file!(), (routes_yaml(), requests()), |(yaml, reqs)| {
        let files = vec![schemas::SourceFile { path: "r.yaml".into(), contents: yaml.into_bytes() }];
        let compiled = match schemas::compile_tree(&files) {
            Ok(c) => c,
            Err(d) => {
                prop_assert!(
                    false,
                    "the generated routes do not compile: {d:#?}\n{}",
                    String::from_utf8_lossy(&files[0].contents)
                );
                unreachable!()
            }
        };
        let routes = &compiled.snapshot.routes;
        let table = RouteTable::build(routes, |r, _, i| format!("{}#{}", r.name, i)).expect("compiled configs build");
        for req in &reqs {
            let mut headers = HeaderMap::new();
            if let Some(v) = req.header {
                headers.insert("x-v", v.parse().unwrap());
            }
            let method = Method::from_bytes(req.method.as_bytes()).unwrap();
            let view =
                RequestView { host: req.host, path: &req.path, query: req.query, method: &method, headers: &headers };
            let got = table.lookup(&view).map(|m| (m.rule.to_string(), m.path_kind, m.matched_path.to_string()));
            let want = reference(routes, req)
                .map(|(r, ri, _, m)| (format!("{}#{ri}", r.name), m.path.kind, m.path.value.clone()));
            prop_assert_eq!(got, want, "{:?}", req);
        }
        Ok(())
    });
}
