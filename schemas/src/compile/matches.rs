//! Request matches: validation of one match, its canonical form (used both to compile it
//! and to compare matches), and the check that no two rules match the same requests.

use std::collections::{HashMap, HashSet};

use crate::diag::Diagnostic;
use crate::load::Resources;
use crate::model::{Match, PathMatchType, Route, StringMatchType};
use crate::snapshot::{MatchSpec, PathMatchSpec, ValueMatchSpec};
use crate::yaml::{at, Pos, Seg};

use super::ctx::Ctx;
use super::limits::MAX_VALUE_MATCHES;

impl Ctx<'_, Route> {
    pub(super) fn match_(&mut self, ri: usize, mi: usize, m: &Match) -> MatchSpec {
        if let Some(p) = &m.path {
            let kind = p.kind.unwrap_or(PathMatchType::PathPrefix);
            let path = at!["rules", ri, "matches", mi, "path", "value"];
            match kind {
                PathMatchType::RegularExpression => self.regex(path, &p.value),
                _ => {
                    if !p.value.starts_with('/') {
                        self.err(path, format!("path `{}` must start with `/`", p.value), None);
                    } else if p.value.contains(|c: char| c.is_whitespace() || c == '?' || c == '#' || c.is_control()) {
                        self.err(
                            path,
                            format!("path `{}` contains a space, `?` or `#`", p.value),
                            Some("match query parameters with `queryParams`".to_string()),
                        );
                    }
                }
            }
        }
        if let Some(method) = &m.method {
            let ok = !method.is_empty() && method.len() <= 20 && method.chars().all(|c| c.is_ascii_uppercase());
            if !ok {
                let help = if method.chars().any(|c| c.is_ascii_lowercase()) {
                    format!("methods are upper case: write `{}`", method.to_ascii_uppercase())
                } else {
                    "write an HTTP method such as GET, POST, PUT, DELETE".to_string()
                };
                self.err(
                    at!["rules", ri, "matches", mi, "method"],
                    format!("`{method}` is not an HTTP method"),
                    Some(help),
                );
            }
        }
        for (field, list) in [
            ("headers", m.headers.iter().map(|h| (h.kind, &h.name, &h.value)).collect::<Vec<_>>()),
            ("queryParams", m.query_params.iter().map(|q| (q.kind, &q.name, &q.value)).collect()),
        ] {
            if list.len() > MAX_VALUE_MATCHES {
                self.err(
                    at!["rules", ri, "matches", mi, field],
                    format!("more than {MAX_VALUE_MATCHES} {field}"),
                    None,
                );
            }
            let mut names = HashSet::new();
            for (i, (kind, name, value)) in list.into_iter().enumerate() {
                let here = at!["rules", ri, "matches", mi, field, i];
                if field == "headers" {
                    self.header_name(&[here, at!["name"]].concat(), name);
                } else if name.is_empty() || name.contains(['&', '=', '#', ' ']) {
                    self.err(
                        &[here, at!["name"]].concat(),
                        format!("`{name}` is not a valid query parameter name"),
                        None,
                    );
                }
                let key = if field == "headers" { name.to_ascii_lowercase() } else { name.clone() };
                if !names.insert(key) {
                    self.err(
                        &[here, at!["name"]].concat(),
                        format!("`{name}` is matched twice in one match"),
                        Some("a match is a conjunction: use a RegularExpression to allow several values".to_string()),
                    );
                }
                if kind == Some(StringMatchType::RegularExpression) {
                    self.regex(&[here, at!["value"]].concat(), value);
                }
            }
        }
        quiet_match(m).unwrap_or_else(default_match)
    }
}

/// Two rules (in one route or in several) whose matches are identical for the same host
/// would make the winner depend on file order: refuse that.
pub(super) fn check_identical_matches(res: &Resources, diags: &mut Vec<Diagnostic>) {
    let mut seen: HashMap<(String, MatchSpec), (String, Pos, String)> = HashMap::new();
    for r in &res.routes {
        let mut hosts: Vec<String> = r.value.hostnames.iter().map(|h| h.to_ascii_lowercase()).collect();
        hosts.sort();
        hosts.dedup();
        if hosts.is_empty() {
            hosts.push(String::new());
        }
        for (ri, rule) in r.value.rules.iter().enumerate() {
            let matches: Vec<(usize, MatchSpec)> = if rule.matches.is_empty() {
                vec![(usize::MAX, default_match())]
            } else {
                rule.matches.iter().enumerate().filter_map(|(mi, m)| Some((mi, quiet_match(m)?))).collect()
            };
            for (mi, m) in matches {
                for host in &hosts {
                    let key = (host.clone(), m.clone());
                    let path: &[Seg<'_>] =
                        if mi == usize::MAX { at!["rules", ri] } else { at!["rules", ri, "matches", mi] };
                    if let Some((file, pos, route)) = seen.get(&key) {
                        let on = if host.is_empty() { "any host".to_string() } else { format!("host `{host}`") };
                        diags.push(r.diag(
                            path,
                            format!("this match is identical to one in route `{route}` at {file}:{pos} for {on}"),
                            Some("make the matches differ (path, method, headers or query), or remove one".into()),
                        ));
                    } else {
                        seen.insert(key, (r.file.clone(), r.root.locate(path), r.value.name.clone()));
                    }
                }
            }
        }
    }
}

/// The router matches the path patterns of one host name in one `RegexSet`; each pattern
/// fits alone, but together they may not. Checked here so that such a config is refused,
/// not applied with some of its routes missing.
pub(super) fn check_regex_sets(res: &Resources, diags: &mut Vec<Diagnostic>) {
    // Host name (empty: routes without host names) → distinct patterns, and where the
    // first one is written.
    let mut sets: HashMap<String, (Vec<&str>, usize, Vec<Seg<'_>>)> = HashMap::new();
    for (idx, r) in res.routes.iter().enumerate() {
        let mut hosts: Vec<String> = r.value.hostnames.iter().map(|h| h.to_ascii_lowercase()).collect();
        if hosts.is_empty() {
            hosts.push(String::new());
        }
        for (ri, rule) in r.value.rules.iter().enumerate() {
            for (mi, m) in rule.matches.iter().enumerate() {
                let Some(p) = m.path.as_ref().filter(|p| p.kind == Some(PathMatchType::RegularExpression)) else {
                    continue;
                };
                for host in &hosts {
                    let (list, _, _) = sets.entry(host.clone()).or_insert_with(|| {
                        (Vec::new(), idx, at!["rules", ri, "matches", mi, "path", "value"].to_vec())
                    });
                    if !list.contains(&p.value.as_str()) {
                        list.push(&p.value);
                    }
                }
            }
        }
    }
    let mut hosts: Vec<_> = sets.into_iter().collect();
    hosts.sort_by(|a, b| a.0.cmp(&b.0));
    for (host, (patterns, idx, path)) in hosts {
        // Patterns that do not compile alone were reported where they are written.
        let valid: Vec<&str> = patterns.into_iter().filter(|p| crate::patterns::value_regex(p).is_ok()).collect();
        if let Err(e) = crate::patterns::path_regex_set(&valid) {
            let on = if host.is_empty() { "routes without host names".to_string() } else { format!("host `{host}`") };
            diags.push(res.routes[idx].diag(
                &path,
                format!(
                    "the {} RegularExpression paths of {on} cannot be matched together: {}",
                    valid.len(),
                    crate::patterns::reason(&e)
                ),
                Some(format!(
                    "the patterns of one host name are compiled together, up to {} MiB; use fewer or simpler \
                     patterns (PathPrefix and Exact paths cost nothing here)",
                    crate::patterns::MAX_REGEX_SET_BYTES >> 20
                )),
            ));
        }
    }
}

pub(super) fn default_match() -> MatchSpec {
    MatchSpec {
        path: PathMatchSpec { kind: PathMatchType::PathPrefix, value: "/".into() },
        method: None,
        headers: Vec::new(),
        query_params: Vec::new(),
    }
}

/// The canonical form of a match, used to compare matches; `None` when it is invalid (that
/// is reported elsewhere).
fn quiet_match(m: &Match) -> Option<MatchSpec> {
    let path = match &m.path {
        None => default_match().path,
        Some(p) => {
            let kind = p.kind.unwrap_or(PathMatchType::PathPrefix);
            let value = if kind == PathMatchType::PathPrefix { trim_prefix(&p.value) } else { p.value.clone() };
            PathMatchSpec { kind, value }
        }
    };
    let value_matches = |v: &[(String, Option<StringMatchType>, String)], lower: bool| {
        let mut out: Vec<ValueMatchSpec> = v
            .iter()
            .map(|(n, k, val)| ValueMatchSpec {
                name: if lower { n.to_ascii_lowercase() } else { n.clone() },
                kind: k.unwrap_or(StringMatchType::Exact),
                value: val.clone(),
            })
            .collect();
        out.sort();
        out
    };
    let headers: Vec<_> = m.headers.iter().map(|h| (h.name.clone(), h.kind, h.value.clone())).collect();
    let query: Vec<_> = m.query_params.iter().map(|q| (q.name.clone(), q.kind, q.value.clone())).collect();
    Some(MatchSpec {
        path,
        method: m.method.clone(),
        headers: value_matches(&headers, true),
        query_params: value_matches(&query, false),
    })
}

fn trim_prefix(v: &str) -> String {
    let t = v.trim_end_matches('/');
    if t.is_empty() {
        "/".into()
    } else {
        t.into()
    }
}
