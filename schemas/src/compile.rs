//! Validation and compilation in one pass: each resource is checked field by field and, when
//! it is sound, turned into its canonical compiled form. Every problem becomes a
//! [`Diagnostic`] pointing at the offending value; nothing stops at the first one.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use crate::diag::{one_line, Diagnostic};
use crate::duration::Duration;
use crate::load::{Loaded, Resources};
use crate::model::*;
use crate::snapshot::*;
use crate::yaml::Seg;

/// Builds a path into a document: `at!["rules", 0, "matches"]`.
macro_rules! at {
    ($($s:expr),* $(,)?) => { &[$(Seg::from($s)),*][..] };
}

/// Generous bounds on list lengths: far above any real config, low enough that one
/// resource cannot make lookups or compiles pathological.
const MAX_HOSTNAMES: usize = 100;
const MAX_RULES: usize = 1_000;
const MAX_MATCHES: usize = 64;
const MAX_VALUE_MATCHES: usize = 16;
const MAX_FILTERS: usize = 16;
const MAX_BACKENDS: usize = 64;
const MAX_ENDPOINTS: usize = 1_000;
const MAX_ENDPOINT_WEIGHT: u32 = 1_000;
const MAX_BACKEND_WEIGHT: u32 = 1_000_000;
const MAX_REGEX_BYTES: usize = 1 << 20;
const MAX_BODY_LIMIT: u64 = 1 << 40;
const MAX_FALLBACK_BODY: usize = 64 * 1024;

/// Headers a filter may not touch: hop-by-hop and framing headers belong to the proxy, and
/// the upstream `Host` is changed with `urlRewrite.hostname`.
const PROTECTED_HEADERS: [&str; 9] = [
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

pub(crate) fn compile(res: &Resources, diags: &mut Vec<Diagnostic>) -> ConfigSnapshot {
    let mut snapshot = ConfigSnapshot::default();

    check_unique_names(&res.upstreams, |u| &u.name, "upstream", diags);
    check_unique_names(&res.routes, |r| &r.name, "route", diags);
    check_unique_names(&res.certificates, |c| &c.name, "certificate", diags);

    let upstream_names: BTreeSet<&str> = res.upstreams.iter().map(|u| u.value.name.as_str()).collect();

    for u in &res.upstreams {
        let mut d = Ctx { res: u, diags: &mut *diags, failed: false };
        let spec = d.upstream(&u.value);
        if !d.failed {
            snapshot.upstreams.push(spec);
        }
    }
    for r in &res.routes {
        let mut d = Ctx { res: r, diags: &mut *diags, failed: false };
        let spec = d.route(&r.value, &upstream_names);
        if !d.failed {
            snapshot.routes.push(spec);
        }
    }
    for c in &res.certificates {
        let mut d = Ctx { res: c, diags: &mut *diags, failed: false };
        let spec = d.certificate(&c.value);
        if !d.failed {
            snapshot.certificates.push(spec);
        }
    }
    check_identical_matches(res, diags);
    check_certificate_overlap(res, diags);

    snapshot.upstreams.sort_by(|a, b| a.name.cmp(&b.name));
    snapshot.routes.sort_by(|a, b| a.name.cmp(&b.name));
    snapshot.certificates.sort_by(|a, b| a.name.cmp(&b.name));
    snapshot
}

fn check_unique_names<T>(items: &[Loaded<T>], name: impl Fn(&T) -> &String, what: &str, diags: &mut Vec<Diagnostic>) {
    let mut seen: HashMap<&str, &Loaded<T>> = HashMap::new();
    for item in items {
        let n = name(&item.value);
        if let Some(first) = seen.get(n.as_str()) {
            let pos = first.root.locate(at!["name"]);
            diags.push(item.diag(
                at!["name"],
                format!("duplicate {what} name `{n}`: already defined at {}:{pos}", first.file),
                Some(format!("rename one of them; {what} names must be unique")),
            ));
        } else {
            seen.insert(n, item);
        }
    }
}

/// Two rules (in one route or in several) whose matches are identical for the same host
/// would make the winner depend on file order: refuse that.
fn check_identical_matches(res: &Resources, diags: &mut Vec<Diagnostic>) {
    let mut seen: HashMap<(String, MatchSpec), (String, crate::yaml::Pos, String)> = HashMap::new();
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

fn check_certificate_overlap(res: &Resources, diags: &mut Vec<Diagnostic>) {
    let mut seen: HashMap<String, (String, String)> = HashMap::new();
    for c in &res.certificates {
        for (i, h) in c.value.hostnames.iter().enumerate() {
            let h = h.to_ascii_lowercase();
            if let Some((name, file)) = seen.get(&h) {
                diags.push(c.diag(
                    at!["hostnames", i],
                    format!("host name `{h}` is already served by certificate `{name}` ({file})"),
                    Some("each SNI name must choose exactly one certificate; remove it from one of them".into()),
                ));
            } else {
                seen.insert(h, (c.value.name.clone(), c.file.clone()));
            }
        }
    }
}

fn default_match() -> MatchSpec {
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

/// The closest candidate by edit distance, if it is close enough to be a likely typo.
pub fn did_you_mean<'a>(written: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (levenshtein(&written.to_ascii_lowercase(), &c.to_ascii_lowercase()), c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            cur.push((prev[j] + usize::from(ca != *cb)).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

// ---------------------------------------------------------------------------------------

/// Checks one resource. `failed` records whether any problem was found, in which case the
/// partially compiled value is dropped.
struct Ctx<'a, T> {
    res: &'a Loaded<T>,
    diags: &'a mut Vec<Diagnostic>,
    failed: bool,
}

impl<T> Ctx<'_, T> {
    fn err(&mut self, path: &[Seg<'_>], message: impl Into<String>, help: impl Into<Option<String>>) {
        self.failed = true;
        self.diags.push(self.res.diag(path, message, help.into()));
    }

    fn name(&mut self, name: &str, what: &str) {
        if let Err(why) = valid_name(name) {
            self.err(at!["name"], format!("invalid {what} name `{name}`: {why}"), Some(
                "use lowercase letters, digits and `-`, starting and ending with a letter or digit, at most 63 characters"
                    .to_string(),
            ));
        }
    }

    fn hostname(&mut self, path: &[Seg<'_>], h: &str, allow_wildcard: bool) -> String {
        match valid_hostname(h, allow_wildcard) {
            Ok(h) => h,
            Err(why) => {
                self.err(path, format!("invalid host name `{h}`: {why}"), None);
                String::new()
            }
        }
    }

    fn hostnames(&mut self, hostnames: &[String]) -> Vec<String> {
        if hostnames.len() > MAX_HOSTNAMES {
            self.err(
                at!["hostnames"],
                format!("more than {MAX_HOSTNAMES} host names"),
                Some("split the resource".into()),
            );
        }
        let mut out: Vec<String> =
            hostnames.iter().enumerate().map(|(i, h)| self.hostname(at!["hostnames", i], h, true)).collect();
        out.sort();
        out.dedup();
        out
    }

    fn positive(&mut self, path: &[Seg<'_>], d: Duration, what: &str) -> Duration {
        if d.as_millis() == 0 {
            self.err(path, format!("{what} must be longer than 0s"), None);
        }
        d
    }

    fn range(&mut self, path: &[Seg<'_>], v: u32, lo: u32, hi: u32, what: &str) -> u32 {
        if v < lo || v > hi {
            self.err(path, format!("{what} is {v}; it must be between {lo} and {hi}"), None);
        }
        v
    }

    fn header_name(&mut self, path: &[Seg<'_>], name: &str) -> String {
        if http::HeaderName::from_str(name).is_err() {
            self.err(
                path,
                format!("`{name}` is not a valid HTTP header name"),
                Some("header names are letters, digits and !#$%&'*+-.^_`|~ with no spaces or colons".to_string()),
            );
        }
        name.to_ascii_lowercase()
    }

    fn header_value(&mut self, path: &[Seg<'_>], value: &str) {
        if http::HeaderValue::from_str(value).is_err() {
            self.err(path, "header value contains a control character or line break".to_string(), None);
        }
    }

    fn regex(&mut self, path: &[Seg<'_>], pattern: &str) {
        if let Err(e) = regex::RegexBuilder::new(&format!("^(?:{pattern})$")).size_limit(MAX_REGEX_BYTES).build() {
            let why = e.to_string();
            let why = why.lines().rev().find(|l| l.trim_start().starts_with("error:")).unwrap_or(&why);
            self.err(
                path,
                format!(
                    "invalid regular expression `{pattern}`: {}",
                    one_line(why.trim().trim_start_matches("error:"))
                ),
                Some("the syntax is that of the Rust regex crate (RE2-like, no look-around or back-references)".into()),
            );
        }
    }

    fn pem_source(&mut self, field: &str, src: &PemSource) -> PemSourceSpec {
        let looks_like_pem = |s: &Option<String>| s.as_deref().is_some_and(|v| v.contains("-----BEGIN"));
        if looks_like_pem(&src.file) || looks_like_pem(&src.env) {
            self.err(
                at![field],
                "PEM text is written in the config: keys and certificates never go into Git",
                Some("put the PEM on each node and reference it with `file: /path` or `env: VARIABLE`".to_string()),
            );
            return PemSourceSpec::File(String::new());
        }
        match (&src.file, &src.env) {
            (Some(f), None) => {
                if !f.starts_with('/') {
                    self.err(
                        at![field, "file"],
                        format!("`{f}` is not an absolute path"),
                        Some("write the absolute path of the PEM file as it is on every node".to_string()),
                    );
                }
                PemSourceSpec::File(f.clone())
            }
            (None, Some(e)) => {
                let ok = !e.is_empty()
                    && !e.starts_with(|c: char| c.is_ascii_digit())
                    && e.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
                if !ok {
                    self.err(
                        at![field, "env"],
                        format!("`{e}` is not an environment variable name"),
                        Some("use upper-case letters, digits and `_`, not starting with a digit".to_string()),
                    );
                }
                PemSourceSpec::Env(e.clone())
            }
            _ => {
                self.err(at![field], "give exactly one of `file` or `env`", None);
                PemSourceSpec::File(String::new())
            }
        }
    }
}

impl Ctx<'_, Upstream> {
    fn upstream(&mut self, u: &Upstream) -> UpstreamSpec {
        self.name(&u.name, "upstream");
        if u.endpoints.is_empty() {
            self.err(
                at!["endpoints"],
                "an upstream needs at least one endpoint",
                Some("add `endpoints: [{ address: host:port }]`".to_string()),
            );
        }
        if u.endpoints.len() > MAX_ENDPOINTS {
            self.err(at!["endpoints"], format!("more than {MAX_ENDPOINTS} endpoints"), None);
        }
        let mut seen: HashMap<String, usize> = HashMap::new();
        let mut endpoints = Vec::new();
        for (i, e) in u.endpoints.iter().enumerate() {
            let address = match valid_address(&e.address) {
                Ok(a) => a,
                Err(why) => {
                    self.err(
                        at!["endpoints", i, "address"],
                        format!("invalid address `{}`: {why}", e.address),
                        Some(
                            "write host:port, e.g. `10.0.0.5:8080`, `[2001:db8::1]:443` or `users.internal:80`"
                                .to_string(),
                        ),
                    );
                    continue;
                }
            };
            if let Some(first) = seen.get(&address) {
                self.err(
                    at!["endpoints", i, "address"],
                    format!("endpoint `{address}` is listed twice (first as endpoint {first})"),
                    Some("remove the duplicate; use `weight` to send it more traffic".to_string()),
                );
            }
            seen.insert(address.clone(), i);
            let weight = e.weight.unwrap_or(1);
            if weight == 0 {
                self.err(
                    at!["endpoints", i, "weight"],
                    "endpoint weight is 0",
                    Some("remove the endpoint to stop sending it traffic; weights are 1 to 1000".to_string()),
                );
            } else {
                self.range(at!["endpoints", i, "weight"], weight, 1, MAX_ENDPOINT_WEIGHT, "endpoint weight");
            }
            endpoints.push(EndpointSpec { address, weight });
        }
        endpoints.sort_by(|a, b| a.address.cmp(&b.address));

        let load_balancer = self.load_balancer(u.load_balancer.as_ref());
        let connect_timeout = match u.connect_timeout {
            Some(d) => self.positive(at!["connectTimeout"], d, "connectTimeout"),
            None => Duration::from_millis(5_000),
        };
        let tls = u.tls.as_ref().map(|t| {
            let sni = t.sni.as_ref().map(|s| self.hostname(at!["tls", "sni"], s, false));
            if let Some(ca) = &t.ca_file {
                if !ca.starts_with('/') {
                    self.err(at!["tls", "caFile"], format!("`{ca}` is not an absolute path"), None);
                }
            }
            UpstreamTlsSpec {
                sni,
                ca_file: t.ca_file.clone(),
                insecure_skip_verify: t.insecure_skip_verify.unwrap_or(false),
            }
        });
        let hc = u.health_check.as_ref();
        let active_health_check = hc.and_then(|h| h.active.as_ref()).map(|a| self.active_health(a));
        let passive_health_check = hc.and_then(|h| h.passive.as_ref()).map(|p| self.passive_health(p));
        let circuit_breaker = self.circuit_breaker(u.circuit_breaker.as_ref());
        UpstreamSpec {
            name: u.name.clone(),
            endpoints,
            load_balancer,
            protocol: u.protocol.unwrap_or(UpstreamProtocol::Http1),
            connect_timeout,
            tls,
            active_health_check,
            passive_health_check,
            circuit_breaker,
        }
    }

    fn load_balancer(&mut self, lb: Option<&LoadBalancer>) -> LoadBalancerSpec {
        let Some(lb) = lb else { return LoadBalancerSpec::RoundRobin };
        match (lb.policy, &lb.consistent_hash) {
            (LoadBalancerPolicy::ConsistentHash, None) => {
                self.err(
                    at!["loadBalancer"],
                    "policy `consistentHash` needs a `consistentHash` block",
                    Some(
                        "add `consistentHash: { header: x-user-id }` (or `cookie: NAME`, or `sourceIP: true`)"
                            .to_string(),
                    ),
                );
                LoadBalancerSpec::RoundRobin
            }
            (LoadBalancerPolicy::ConsistentHash, Some(h)) => {
                let set = [h.header.is_some(), h.cookie.is_some(), h.source_ip.is_some()];
                if set.iter().filter(|b| **b).count() != 1 {
                    self.err(
                        at!["loadBalancer", "consistentHash"],
                        "give exactly one of `header`, `cookie`, `sourceIP`",
                        None,
                    );
                    return LoadBalancerSpec::RoundRobin;
                }
                if let Some(name) = &h.header {
                    let n = self.header_name(at!["loadBalancer", "consistentHash", "header"], name);
                    LoadBalancerSpec::ConsistentHash(HashOn::Header(n))
                } else if let Some(c) = &h.cookie {
                    if c.is_empty() || !c.chars().all(|ch| ch.is_ascii_graphic() && !"()<>@,;:\\\"/[]?={}".contains(ch))
                    {
                        self.err(
                            at!["loadBalancer", "consistentHash", "cookie"],
                            format!("`{c}` is not a valid cookie name"),
                            None,
                        );
                    }
                    LoadBalancerSpec::ConsistentHash(HashOn::Cookie(c.clone()))
                } else {
                    if h.source_ip == Some(false) {
                        self.err(
                            at!["loadBalancer", "consistentHash", "sourceIP"],
                            "`sourceIP: false` hashes on nothing",
                            Some("write `sourceIP: true`, or hash on a header or cookie".to_string()),
                        );
                    }
                    LoadBalancerSpec::ConsistentHash(HashOn::SourceIp)
                }
            }
            (policy, Some(_)) => {
                self.err(
                    at!["loadBalancer", "consistentHash"],
                    format!("`consistentHash` is set but the policy is `{}`", policy_name(policy)),
                    Some("set `policy: consistentHash`, or remove the `consistentHash` block".to_string()),
                );
                LoadBalancerSpec::RoundRobin
            }
            (LoadBalancerPolicy::RoundRobin, None) => LoadBalancerSpec::RoundRobin,
            (LoadBalancerPolicy::LeastRequest, None) => LoadBalancerSpec::LeastRequest,
            (LoadBalancerPolicy::Random, None) => LoadBalancerSpec::Random,
        }
    }

    fn active_health(&mut self, a: &ActiveHealthCheck) -> ActiveHealthCheckSpec {
        let p = |f: &'static str| [Seg::Key("healthCheck"), Seg::Key("active"), Seg::Key(f)];
        if !a.path.starts_with('/') || a.path.contains(char::is_whitespace) {
            self.err(
                &p("path"),
                format!("health check path `{}` must start with `/` and contain no spaces", a.path),
                None,
            );
        }
        let interval = a.interval.unwrap_or(Duration::from_millis(10_000));
        let timeout = a.timeout.unwrap_or(Duration::from_millis(2_000).min(interval));
        if interval.as_millis() < 100 {
            self.err(
                &p("interval"),
                format!("interval `{interval}` is shorter than 100ms"),
                Some("every node probes every endpoint; a short interval multiplies into a heavy load".to_string()),
            );
        }
        self.positive(&p("timeout"), timeout, "timeout");
        if timeout > interval {
            self.err(&p("timeout"), format!("timeout `{timeout}` is longer than the interval `{interval}`"), None);
        }
        let healthy_threshold =
            self.range(&p("healthyThreshold"), a.healthy_threshold.unwrap_or(2), 1, 100, "healthyThreshold");
        let unhealthy_threshold =
            self.range(&p("unhealthyThreshold"), a.unhealthy_threshold.unwrap_or(3), 1, 100, "unhealthyThreshold");
        let mut expected_statuses = a.expected_statuses.clone().unwrap_or_else(|| vec![200]);
        for (i, s) in expected_statuses.iter().enumerate() {
            if !(100..=599).contains(s) {
                self.err(
                    &[Seg::Key("healthCheck"), Seg::Key("active"), Seg::Key("expectedStatuses"), Seg::Index(i)],
                    format!("{s} is not an HTTP status code (100 to 599)"),
                    None,
                );
            }
        }
        if expected_statuses.is_empty() {
            self.err(&p("expectedStatuses"), "expectedStatuses is empty: no probe could ever succeed", None);
        }
        expected_statuses.sort_unstable();
        expected_statuses.dedup();
        ActiveHealthCheckSpec {
            path: a.path.clone(),
            interval,
            timeout,
            healthy_threshold,
            unhealthy_threshold,
            expected_statuses,
        }
    }

    fn passive_health(&mut self, p: &PassiveHealthCheck) -> PassiveHealthCheckSpec {
        let at = |f: &'static str| [Seg::Key("healthCheck"), Seg::Key("passive"), Seg::Key(f)];
        let consecutive_failures =
            self.range(&at("consecutiveFailures"), p.consecutive_failures.unwrap_or(5), 1, 1000, "consecutiveFailures");
        let base_ejection_time = p.base_ejection_time.unwrap_or(Duration::from_millis(30_000));
        self.positive(&at("baseEjectionTime"), base_ejection_time, "baseEjectionTime");
        let max_ejection_percent =
            self.range(&at("maxEjectionPercent"), p.max_ejection_percent.unwrap_or(50), 0, 100, "maxEjectionPercent");
        PassiveHealthCheckSpec { consecutive_failures, base_ejection_time, max_ejection_percent }
    }

    fn circuit_breaker(&mut self, cb: Option<&CircuitBreaker>) -> CircuitBreakerSpec {
        let at = |f: &'static str| [Seg::Key("circuitBreaker"), Seg::Key(f)];
        let limit = |ctx: &mut Self, v: Option<u32>, f: &'static str, default: u32| {
            ctx.range(&at(f), v.unwrap_or(default), 1, 1_000_000, f)
        };
        let Some(cb) = cb else {
            return CircuitBreakerSpec {
                consecutive_failures: None,
                error_rate: None,
                open_for: Duration::from_millis(30_000),
                half_open_requests: 1,
                max_connections: 1024,
                max_pending_requests: 1024,
                max_parallel_requests: 1024,
                max_parallel_retries: 3,
                retry_budget: None,
            };
        };
        let error_rate = cb.error_rate.as_ref().map(|e| {
            let p = |f: &'static str| [Seg::Key("circuitBreaker"), Seg::Key("errorRate"), Seg::Key(f)];
            ErrorRateSpec {
                percent: self.range(&p("percent"), e.percent, 1, 100, "percent"),
                window: self.positive(&p("window"), e.window, "window"),
                minimum_requests: self.range(
                    &p("minimumRequests"),
                    e.minimum_requests.unwrap_or(20),
                    1,
                    1_000_000,
                    "minimumRequests",
                ),
            }
        });
        let consecutive_failures = match (cb.consecutive_failures, &error_rate) {
            (Some(n), _) => Some(self.range(&at("consecutiveFailures"), n, 1, 1_000_000, "consecutiveFailures")),
            (None, Some(_)) => None,
            (None, None) => Some(5),
        };
        let open_for = cb.open_for.unwrap_or(Duration::from_millis(30_000));
        self.positive(&at("openFor"), open_for, "openFor");
        CircuitBreakerSpec {
            consecutive_failures,
            error_rate,
            open_for,
            half_open_requests: self.range(
                &at("halfOpenRequests"),
                cb.half_open_requests.unwrap_or(1),
                1,
                1000,
                "halfOpenRequests",
            ),
            max_connections: limit(self, cb.max_connections, "maxConnections", 1024),
            max_pending_requests: limit(self, cb.max_pending_requests, "maxPendingRequests", 1024),
            max_parallel_requests: limit(self, cb.max_parallel_requests, "maxParallelRequests", 1024),
            max_parallel_retries: limit(self, cb.max_parallel_retries, "maxParallelRetries", 3),
            retry_budget: cb.retry_budget.as_ref().map(|b| {
                let p = |f: &'static str| [Seg::Key("circuitBreaker"), Seg::Key("retryBudget"), Seg::Key(f)];
                RetryBudgetSpec {
                    percent: self.range(&p("percent"), b.percent.unwrap_or(20), 1, 100, "percent"),
                    min_concurrency: self.range(
                        &p("minConcurrency"),
                        b.min_concurrency.unwrap_or(3),
                        0,
                        1_000_000,
                        "minConcurrency",
                    ),
                }
            }),
        }
    }
}

fn policy_name(p: LoadBalancerPolicy) -> &'static str {
    match p {
        LoadBalancerPolicy::RoundRobin => "roundRobin",
        LoadBalancerPolicy::LeastRequest => "leastRequest",
        LoadBalancerPolicy::Random => "random",
        LoadBalancerPolicy::ConsistentHash => "consistentHash",
    }
}

impl Ctx<'_, Route> {
    fn route(&mut self, r: &Route, upstreams: &BTreeSet<&str>) -> RouteSpec {
        self.name(&r.name, "route");
        let hostnames = self.hostnames(&r.hostnames);
        if r.rules.is_empty() {
            self.err(at!["rules"], "a route needs at least one rule", None);
        }
        if r.rules.len() > MAX_RULES {
            self.err(at!["rules"], format!("more than {MAX_RULES} rules"), Some("split the route".into()));
        }
        let rules = r.rules.iter().enumerate().map(|(i, rule)| self.rule(i, rule, upstreams)).collect();
        RouteSpec { name: r.name.clone(), hostnames, rules }
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
        for (fi, f) in rule.filters.iter().enumerate() {
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
        if redirect && (fallback.is_some() || rate_limit.is_some() || retry.is_some()) {
            self.err(
                at!["rules", ri],
                "a rule that answers with a RequestRedirect cannot have retry, fallback or rateLimit",
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
            retry,
            max_request_body_bytes: rule.max_request_body_bytes,
            fallback,
            rate_limit,
        }
    }

    fn match_(&mut self, ri: usize, mi: usize, m: &Match) -> MatchSpec {
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

    fn filter(&mut self, ri: usize, fi: usize, f: &Filter, matches: &[MatchSpec]) -> Option<FilterSpec> {
        let here = at!["rules", ri, "filters", fi];
        let given: Vec<&str> = [
            ("requestHeaderModifier", f.request_header_modifier.is_some()),
            ("responseHeaderModifier", f.response_header_modifier.is_some()),
            ("urlRewrite", f.url_rewrite.is_some()),
            ("requestRedirect", f.request_redirect.is_some()),
        ]
        .into_iter()
        .filter_map(|(n, set)| set.then_some(n))
        .collect();
        let wanted = match f.kind {
            FilterType::RequestHeaderModifier => "requestHeaderModifier",
            FilterType::ResponseHeaderModifier => "responseHeaderModifier",
            FilterType::UrlRewrite => "urlRewrite",
            FilterType::RequestRedirect => "requestRedirect",
        };
        if given != [wanted] {
            let extra: Vec<&str> = given.iter().copied().filter(|g| *g != wanted).collect();
            let msg = if extra.is_empty() {
                format!("filter of type {} has no `{wanted}` block", filter_name(f.kind))
            } else {
                format!("filter of type {} also sets `{}`", filter_name(f.kind), extra.join("`, `"))
            };
            self.err(here, msg, Some(format!("a filter has a `type` and exactly the matching block, here `{wanted}`")));
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

    fn protected(&mut self, path: &[Seg<'_>], name: &str) {
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

    fn fallback(&mut self, ri: usize, f: &Fallback, upstreams: &BTreeSet<&str>) -> FallbackSpec {
        let p = |f: &'static str| [Seg::Key("rules"), Seg::Index(ri), Seg::Key("fallback"), Seg::Key(f)];
        let base = [Seg::Key("rules"), Seg::Index(ri), Seg::Key("fallback")];
        match (f.status, &f.upstream) {
            (Some(_), Some(_)) | (None, None) => {
                self.err(
                    &base,
                    "a fallback needs exactly one of `status` (a static answer) or `upstream`",
                    Some("for example `fallback: { status: 503, body: \"try again later\" }`".to_string()),
                );
                FallbackSpec::Upstream(String::new())
            }
            (None, Some(name)) => {
                if !f.headers.is_empty() || f.body.is_some() {
                    self.err(&base, "`headers` and `body` only go with `status`, not with `upstream`", None);
                }
                if !upstreams.contains(name.as_str()) {
                    self.err(
                        &p("upstream"),
                        format!("unknown upstream `{name}`"),
                        Some(format!("define a `kind: Upstream` named `{name}` or fix the name")),
                    );
                }
                FallbackSpec::Upstream(name.clone())
            }
            (Some(status), None) => {
                self.range(&p("status"), u32::from(status), 100, 599, "fallback status");
                if f.headers.len() > MAX_VALUE_MATCHES {
                    self.err(&p("headers"), format!("more than {MAX_VALUE_MATCHES} headers"), None);
                }
                let headers = f
                    .headers
                    .iter()
                    .enumerate()
                    .map(|(i, h)| {
                        let here = [&p("headers")[..], &[Seg::Index(i)]].concat();
                        let name = self.header_name(&[&here[..], at!["name"]].concat(), &h.name);
                        self.header_value(&[&here[..], at!["value"]].concat(), &h.value);
                        (name, h.value.clone())
                    })
                    .collect();
                let body = f.body.clone().unwrap_or_default();
                if body.len() > MAX_FALLBACK_BODY {
                    self.err(
                        &p("body"),
                        format!("the fallback body is {} bytes; at most {MAX_FALLBACK_BODY} are allowed", body.len()),
                        None,
                    );
                }
                FallbackSpec::Static { status, headers, body }
            }
        }
    }

    fn rate_limit(&mut self, ri: usize, r: &RateLimit) -> RateLimitSpec {
        let p = |f: &'static str| [Seg::Key("rules"), Seg::Index(ri), Seg::Key("rateLimit"), Seg::Key(f)];
        let requests = self.range(&p("requests"), r.requests, 1, 1_000_000_000, "requests");
        let period = r.period.unwrap_or(Duration::from_millis(1_000));
        self.positive(&p("period"), period, "period");
        if period.as_millis() > 86_400_000 {
            self.err(&p("period"), format!("period `{period}` is longer than a day"), None);
        }
        let burst = self.range(&p("burst"), r.burst.unwrap_or(requests.max(1)), 1, 1_000_000_000, "burst");
        let key = match &r.key {
            None => RateLimitKeySpec::ClientIp,
            Some(k) => match (k.client_ip, &k.header, &k.api_key) {
                (Some(true), None, None) => RateLimitKeySpec::ClientIp,
                (None, Some(h), None) => RateLimitKeySpec::Header(self.header_name(&p("key"), h)),
                (None, None, Some(h)) => RateLimitKeySpec::ApiKey(self.header_name(&p("key"), h)),
                _ => {
                    self.err(
                        &p("key"),
                        "a rate-limit key is exactly one of `clientIP: true`, `header: NAME` or `apiKey: NAME`",
                        None,
                    );
                    RateLimitKeySpec::ClientIp
                }
            },
        };
        RateLimitSpec { requests, period, burst, key, scope: r.scope.unwrap_or(RateLimitScope::Node) }
    }

    fn retry(&mut self, ri: usize, r: &Retry, request_timeout: Option<Duration>) -> RetrySpec {
        let p = |f: &'static str| [Seg::Key("rules"), Seg::Index(ri), Seg::Key("retry"), Seg::Key(f)];
        let attempts = self.range(&p("attempts"), r.attempts, 1, 10, "attempts");
        let mut retry_on = r.retry_on.clone().unwrap_or_else(|| vec![RetryOn::ConnectFailure, RetryOn::Reset]);
        retry_on.sort();
        retry_on.dedup();
        let mut status_codes = r.status_codes.clone();
        status_codes.sort_unstable();
        status_codes.dedup();
        for (i, s) in r.status_codes.iter().enumerate() {
            if !(100..=599).contains(s) {
                self.err(
                    &[&p("statusCodes")[..], &[Seg::Index(i)]].concat(),
                    format!("{s} is not an HTTP status code"),
                    None,
                );
            }
        }
        let has_codes = retry_on.contains(&RetryOn::RetriableStatusCodes);
        if has_codes && status_codes.is_empty() {
            self.err(
                &p("retryOn"),
                "`retriableStatusCodes` is listed but `statusCodes` is empty",
                Some("add `statusCodes: [503]` (for example)".to_string()),
            );
        }
        if !has_codes && !status_codes.is_empty() {
            self.err(
                &p("statusCodes"),
                "`statusCodes` is set but `retryOn` lacks `retriableStatusCodes`",
                Some("add `retriableStatusCodes` to `retryOn`".to_string()),
            );
        }
        let per_try_timeout = r.per_try_timeout.map(|d| self.positive(&p("perTryTimeout"), d, "perTryTimeout"));
        if let (Some(t), Some(req)) = (per_try_timeout, request_timeout) {
            if t > req {
                self.err(
                    &p("perTryTimeout"),
                    format!("perTryTimeout `{t}` is longer than the request timeout `{req}`"),
                    None,
                );
            }
        }
        let base = r.backoff.as_ref().and_then(|b| b.base).unwrap_or(Duration::from_millis(25));
        let max = r
            .backoff
            .as_ref()
            .and_then(|b| b.max)
            .unwrap_or(Duration::from_millis(base.as_millis().saturating_mul(10)));
        let bp = [Seg::Key("rules"), Seg::Index(ri), Seg::Key("retry"), Seg::Key("backoff")];
        self.positive(&[&bp[..], at!["base"]].concat(), base, "backoff base");
        if max < base {
            self.err(
                &[&bp[..], at!["max"]].concat(),
                format!("backoff max `{max}` is shorter than base `{base}`"),
                None,
            );
        }
        RetrySpec {
            attempts,
            retry_on,
            status_codes,
            per_try_timeout,
            backoff_base: base,
            backoff_max: max,
            allow_non_idempotent: r.allow_non_idempotent.unwrap_or(false),
        }
    }
}

use std::collections::HashSet;

fn filter_name(k: FilterType) -> &'static str {
    match k {
        FilterType::RequestHeaderModifier => "RequestHeaderModifier",
        FilterType::ResponseHeaderModifier => "ResponseHeaderModifier",
        FilterType::UrlRewrite => "URLRewrite",
        FilterType::RequestRedirect => "RequestRedirect",
    }
}

impl Ctx<'_, Certificate> {
    fn certificate(&mut self, c: &Certificate) -> CertificateSpec {
        self.name(&c.name, "certificate");
        if c.hostnames.is_empty() {
            self.err(
                at!["hostnames"],
                "a certificate needs at least one host name",
                Some("list the SNI names it serves, e.g. `hostnames: [api.example.com]`".to_string()),
            );
        }
        let hostnames = self.hostnames(&c.hostnames);
        let certificate = self.pem_source("certificate", &c.certificate);
        let private_key = self.pem_source("privateKey", &c.private_key);
        CertificateSpec { name: c.name.clone(), hostnames, certificate, private_key }
    }
}

// ---------------------------------------------------------------------------------------
// Leaf checks, shared with other crates.

/// Resource names: DNS-label style, so they are safe in metrics labels, URLs and file names.
pub fn valid_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("it is empty");
    }
    if name.len() > 63 {
        return Err("it is longer than 63 characters");
    }
    if !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') {
        return Err("it contains a character other than a-z, 0-9 and `-`");
    }
    if name.starts_with('-') || name.ends_with('-') {
        return Err("it starts or ends with `-`");
    }
    Ok(())
}

/// A DNS host name, optionally with one leading `*.` label. Returns it lower-cased.
pub fn valid_hostname(h: &str, allow_wildcard: bool) -> Result<String, String> {
    let lower = h.to_ascii_lowercase();
    let rest = match lower.strip_prefix("*.") {
        Some(rest) if allow_wildcard => rest,
        Some(_) => return Err("a wildcard is not allowed here".into()),
        None => &lower,
    };
    if rest.is_empty() {
        return Err("it is empty".into());
    }
    if rest.parse::<IpAddr>().is_ok() {
        return Err("an IP address is not a host name; host names match the HTTP Host header".into());
    }
    if rest.contains(':') {
        return Err("host names carry no port".into());
    }
    if lower.len() > 253 {
        return Err("it is longer than 253 characters".into());
    }
    for label in rest.split('.') {
        if label.is_empty() {
            return Err("it has an empty label (two dots in a row, or a dot at an end)".into());
        }
        if label.len() > 63 {
            return Err("a label is longer than 63 characters".into());
        }
        if label == "*" {
            return Err("`*` is only allowed as the whole first label (`*.example.com`)".into());
        }
        if !label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            || label.starts_with('-')
            || label.ends_with('-')
        {
            return Err(format!("label `{label}` may only hold letters, digits and inner `-`"));
        }
    }
    Ok(lower)
}

/// `host:port` for an endpoint. Returns it in canonical form (lower-case host).
pub fn valid_address(a: &str) -> Result<String, String> {
    if let Ok(sa) = SocketAddr::from_str(a) {
        if sa.port() == 0 {
            return Err("port 0 is not a port".into());
        }
        return Ok(sa.to_string());
    }
    let Some((host, port)) = a.rsplit_once(':') else {
        return Err("it has no port".into());
    };
    if host.contains(':') && !host.starts_with('[') {
        return Err("an IPv6 address needs brackets, e.g. `[2001:db8::1]:80`".into());
    }
    let port: u16 = port.parse().map_err(|_| format!("`{port}` is not a port number (1 to 65535)"))?;
    if port == 0 {
        return Err("port 0 is not a port".into());
    }
    if host.parse::<IpAddr>().is_ok() {
        return Ok(format!("{host}:{port}"));
    }
    let host = valid_hostname(host, false).map_err(|e| format!("the host is not valid: {e}"))?;
    Ok(format!("{host}:{port}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        assert_eq!(valid_address("127.0.0.1:80").unwrap(), "127.0.0.1:80");
        assert_eq!(valid_address("[::1]:443").unwrap(), "[::1]:443");
        assert_eq!(valid_address("Users.Internal:8080").unwrap(), "users.internal:8080");
        for bad in ["127.0.0.1", "::1:80", "host:0", "host:99999", "host:http", "bad_host:80", ":80", "a..b:80"] {
            assert!(valid_address(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn hostnames() {
        assert_eq!(valid_hostname("API.Example.com", true).unwrap(), "api.example.com");
        assert!(valid_hostname("*.example.com", true).is_ok());
        assert!(valid_hostname("*.example.com", false).is_err());
        for bad in ["", "a.*.com", "*", "10.0.0.1", "a:80", "-a.com", "a_b.com", "a..com"] {
            assert!(valid_hostname(bad, true).is_err(), "{bad}");
        }
    }

    #[test]
    fn suggestions() {
        assert_eq!(did_you_mean("userz", ["users", "orders"]), Some("users"));
        assert_eq!(did_you_mean("Rout", ["Upstream", "Route", "Certificate"]), Some("Route"));
        assert_eq!(did_you_mean("zzzzzz", ["users"]), None);
    }
}
