//! Security policies: each field checked where it is written, the targets resolved to
//! rules, and the check that no rule is guarded by two policies at once.

use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;

use ipnet::IpNet;

use crate::diag::{did_you_mean, Diagnostic};
use crate::duration::Duration;
use crate::load::{Loaded, Resources};
use crate::model::{ApiKeyAuth, Authorization, AuthzAction, BasicAuth, Cors, ExtAuth, SecurityPolicy};
use crate::snapshot::{
    parse_htpasswd_line, ApiKeyAuthSpec, ApiKeyConsumerSpec, AuthorizationSpec, AuthzRuleSpec, BasicAuthSpec,
    ConfigSnapshot, CorsSpec, ExtAuthSpec, JwtSpec, KeySourceSpec, RateLimitKeySpec, SecurityPolicySpec,
};
use crate::yaml::{at, Seg};

use super::ctx::Ctx;
use super::filters::PROTECTED_HEADERS;
use super::names::valid_name;

const MAX_TARGETS: usize = 100;
const MAX_LIST: usize = 1_000;
const MAX_AUTHZ_RULES: usize = 256;
use crate::snapshot::CONSUMER_HEADER as DEFAULT_CONSUMER_HEADER;

/// A policy's targets: `(route, Some(rule index))` for a rule, `(route, None)` for a route.
pub(super) type Targets = Vec<(String, Option<usize>)>;

impl Ctx<'_, SecurityPolicy> {
    pub(super) fn security_policy(&mut self, p: &SecurityPolicy, routes: &Resources) -> (SecurityPolicySpec, Targets) {
        self.name(&p.name, "security policy");
        let targets = self.targets(p, routes);
        if p.cors.is_none()
            && p.api_key_auth.is_none()
            && p.basic_auth.is_none()
            && p.jwt.is_none()
            && p.ext_auth.is_none()
            && p.authorization.is_none()
        {
            self.err(
                at!["name"],
                "this security policy sets nothing",
                Some(
                    "add at least one of `cors`, `jwt`, `apiKeyAuth`, `basicAuth`, `extAuth`, `authorization`"
                        .to_string(),
                ),
            );
        }
        let cors = p.cors.as_ref().map(|c| self.cors(c));
        let api_key_auth = p.api_key_auth.as_ref().map(|a| self.api_key_auth(a));
        let basic_auth = p.basic_auth.as_ref().map(|b| self.basic_auth(b, &p.name));
        if let (Some(a), Some(b)) = (&api_key_auth, &basic_auth) {
            if a.forward_header == b.forward_header {
                // Both would write the one header; which consumer won would be an accident.
                self.err(
                    at!["basicAuth", "forwardUsernameHeader"],
                    format!("`apiKeyAuth` and `basicAuth` both forward the consumer in `{}`", b.forward_header),
                    Some("give `basicAuth.forwardUsernameHeader` another header name".to_string()),
                );
            }
        }
        let jwt = p.jwt.as_ref().map(|j| self.jwt(j));
        let authenticates = api_key_auth.is_some() || basic_auth.is_some() || jwt.is_some();
        let authorization = p.authorization.as_ref().map(|a| self.authorization(a, authenticates, jwt.as_ref()));
        let ext_auth = p.ext_auth.as_ref().map(|e| self.ext_auth(e));
        let spec =
            SecurityPolicySpec { name: p.name.clone(), cors, api_key_auth, basic_auth, authorization, jwt, ext_auth };
        (spec, targets)
    }

    fn targets(&mut self, p: &SecurityPolicy, res: &Resources) -> Targets {
        if p.target_refs.is_empty() {
            self.err(
                at!["targetRefs"],
                "a security policy needs at least one target",
                Some("add `targetRefs: [{ kind: Route, name: ROUTE }]`".to_string()),
            );
        }
        if p.target_refs.len() > MAX_TARGETS {
            self.err(at!["targetRefs"], format!("more than {MAX_TARGETS} targets"), Some("split the policy".into()));
        }
        let mut out = Targets::new();
        for (i, t) in p.target_refs.iter().enumerate() {
            let Some(route) = res.routes.iter().find(|r| r.value.name == t.name) else {
                let hint = did_you_mean(&t.name, res.routes.iter().map(|r| r.value.name.as_str())).map_or_else(
                    || format!("define a `kind: Route` named `{}` or fix the name", t.name),
                    |s| format!("did you mean `{s}`?"),
                );
                self.err(at!["targetRefs", i, "name"], format!("unknown route `{}`", t.name), Some(hint));
                continue;
            };
            let rule = match &t.section_name {
                None => None,
                Some(section) => {
                    let names = || route.value.rules.iter().filter_map(|r| r.name.as_deref());
                    match route.value.rules.iter().position(|r| r.name.as_deref() == Some(section.as_str())) {
                        Some(ri) => Some(ri),
                        None => {
                            let named: Vec<&str> = names().collect();
                            let help = if named.is_empty() {
                                "name the rule in the route (`rules[].name`) or target the whole route".to_string()
                            } else {
                                format!("its rules are named {}", named.join(", "))
                            };
                            self.err(
                                at!["targetRefs", i, "sectionName"],
                                format!("route `{}` has no rule named `{section}`", t.name),
                                Some(help),
                            );
                            continue;
                        }
                    }
                }
            };
            if out.iter().any(|(r, s)| *r == t.name && *s == rule) {
                self.err(at!["targetRefs", i], "this target repeats an earlier one", Some("remove it".into()));
            }
            out.push((t.name.clone(), rule));
        }
        out
    }

    fn cors(&mut self, c: &Cors) -> CorsSpec {
        let p = |f: &'static str| [Seg::Key("cors"), Seg::Key(f)];
        if c.allow_origins.is_empty() {
            self.err(
                &p("allowOrigins"),
                "no origin is allowed",
                Some("list origins such as `https://app.example.com`".into()),
            );
        }
        let mut allow_origins = Vec::new();
        for (i, o) in c.allow_origins.iter().enumerate() {
            match origin_pattern(o) {
                Ok(o) => allow_origins.push(o),
                Err(why) => self.err(
                    &[&p("allowOrigins")[..], &[Seg::Index(i)]].concat(),
                    format!("invalid origin `{o}`: {why}"),
                    Some("write `scheme://host[:port]` (no path), `https://*.example.com`, or `*` alone".into()),
                ),
            }
        }
        let methods = c.allow_methods.clone().unwrap_or_else(|| vec!["GET".into(), "HEAD".into(), "POST".into()]);
        let mut allow_methods = Vec::new();
        for (i, m) in methods.iter().enumerate() {
            if m != "*" && (http::Method::from_str(m).is_err() || m.chars().any(|c| c.is_ascii_lowercase())) {
                self.err(
                    &[&p("allowMethods")[..], &[Seg::Index(i)]].concat(),
                    format!("`{m}` is not an upper-case HTTP method"),
                    None,
                );
            }
            allow_methods.push(m.clone());
        }
        let allow_headers = self.header_list(&p("allowHeaders"), &c.allow_headers);
        let expose_headers = self.header_list(&p("exposeHeaders"), &c.expose_headers);
        let max_age = c.max_age.unwrap_or(Duration::from_millis(5_000));
        if max_age.as_millis() > 86_400_000 {
            self.err(&p("maxAge"), format!("maxAge `{max_age}` is longer than a day"), None);
        }
        let allow_credentials = c.allow_credentials.unwrap_or(false);
        if allow_credentials && c.allow_origins.iter().any(|o| o == "*") {
            self.err(
                &p("allowOrigins"),
                "`*` with `allowCredentials: true` would let every site read answers made with the user's cookies",
                Some("list the origins that may send credentials".into()),
            );
        }
        if allow_credentials && c.expose_headers.iter().any(|h| h == "*") {
            self.err(
                &p("exposeHeaders"),
                "`*` exposes nothing to a page that sends credentials (the Fetch standard takes it literally)",
                Some("list the headers to expose".into()),
            );
        }
        for list in [&mut allow_origins, &mut allow_methods] {
            list.sort();
            list.dedup();
        }
        CorsSpec { allow_origins, allow_methods, allow_headers, expose_headers, max_age, allow_credentials }
    }

    fn header_list(&mut self, path: &[Seg<'_>], names: &[String]) -> Vec<String> {
        if names.len() > MAX_LIST {
            self.err(path, format!("more than {MAX_LIST} entries"), None);
        }
        let mut out: Vec<String> = names
            .iter()
            .enumerate()
            .map(|(i, n)| if n == "*" { n.clone() } else { self.header_name(&[path, &[Seg::Index(i)]].concat(), n) })
            .collect();
        out.sort();
        out.dedup();
        out
    }

    pub(super) fn forward_header(&mut self, path: &[Seg<'_>], name: Option<&String>) -> String {
        let Some(name) = name else { return DEFAULT_CONSUMER_HEADER.to_string() };
        let name = self.header_name(path, name);
        if PROTECTED_HEADERS.contains(&name.as_str()) || name == "authorization" || name == "x-request-id" {
            self.err(
                path,
                format!("header `{name}` cannot carry the consumer"),
                Some(format!("use a header of its own, such as `{DEFAULT_CONSUMER_HEADER}`")),
            );
        }
        name
    }

    fn api_key_auth(&mut self, a: &ApiKeyAuth) -> ApiKeyAuthSpec {
        let p = |f: &'static str| [Seg::Key("apiKeyAuth"), Seg::Key(f)];
        let sources = a.extract_from.clone().unwrap_or_default();
        let mut extract_from = Vec::new();
        if a.extract_from.as_ref().is_some_and(Vec::is_empty) {
            self.err(&p("extractFrom"), "no place to read the key from", Some("add `{ header: x-api-key }`".into()));
        }
        for (i, s) in sources.iter().enumerate() {
            let here = [&p("extractFrom")[..], &[Seg::Index(i)]].concat();
            match (&s.header, &s.query) {
                (Some(h), None) => extract_from.push(KeySourceSpec::Header(self.header_name(&here, h))),
                (None, Some(q)) if !q.is_empty() && !q.contains(['&', '=', '#', ' ']) => {
                    extract_from.push(KeySourceSpec::Query(q.clone()));
                }
                (None, Some(q)) => self.err(&here, format!("`{q}` is not a query parameter name"), None),
                _ => self.err(&here, "a key source is exactly one of `header: NAME` or `query: NAME`", None),
            }
        }
        if a.extract_from.is_none() {
            extract_from.push(KeySourceSpec::Header("x-api-key".into()));
        }
        if a.consumers.is_empty() && a.consumers_file.is_none() {
            self.err(
                at!["apiKeyAuth"],
                "no consumers: nobody could ever pass",
                Some("list `consumers: [{ name, sha256 }]` or name a `consumersFile` on the nodes".into()),
            );
        }
        if a.consumers.len() > MAX_LIST * 10 {
            self.err(
                &p("consumers"),
                format!("more than {} consumers inline", MAX_LIST * 10),
                Some("keep large key sets in a `consumersFile` on the nodes".into()),
            );
        }
        let mut names = BTreeMap::new();
        let mut hashes = BTreeMap::new();
        let mut consumers = Vec::new();
        for (i, c) in a.consumers.iter().enumerate() {
            let here = [&p("consumers")[..], &[Seg::Index(i)]].concat();
            if valid_name(&c.name).is_err() {
                self.err(
                    &[&here[..], at!["name"]].concat(),
                    format!("invalid consumer name `{}`", c.name),
                    Some("use lowercase letters, digits and `-`, at most 63 characters".into()),
                );
            }
            if let Some(first) = names.insert(c.name.clone(), i) {
                self.err(
                    &[&here[..], at!["name"]].concat(),
                    format!("consumer `{}` is also consumer {first}", c.name),
                    None,
                );
            }
            let sha = c.sha256.to_ascii_lowercase();
            if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
                self.err(
                    &[&here[..], at!["sha256"]].concat(),
                    "not a SHA-256: 64 hex digits are expected",
                    Some("write the hash of the key (`printf %s \"$KEY\" | sha256sum`), never the key itself".into()),
                );
            } else if let Some(first) = hashes.insert(sha.clone(), i) {
                self.err(
                    &[&here[..], at!["sha256"]].concat(),
                    format!("consumer {first} has the same key"),
                    Some("give every consumer a key of its own".into()),
                );
            }
            consumers.push(ApiKeyConsumerSpec { name: c.name.clone(), sha256: sha });
        }
        consumers.sort_by(|a, b| a.name.cmp(&b.name));
        let consumers_file = a.consumers_file.as_ref().map(|f| self.absolute_path(&p("consumersFile"), f));
        let forward_header = self.forward_header(&p("forwardConsumerHeader"), a.forward_consumer_header.as_ref());
        ApiKeyAuthSpec { extract_from, consumers, consumers_file, forward_header, sanitize: a.sanitize.unwrap_or(true) }
    }

    fn basic_auth(&mut self, b: &BasicAuth, policy: &str) -> BasicAuthSpec {
        let p = |f: &'static str| [Seg::Key("basicAuth"), Seg::Key(f)];
        if b.htpasswd.is_empty() && b.htpasswd_file.is_none() {
            self.err(
                at!["basicAuth"],
                "no users: nobody could ever pass",
                Some("list `htpasswd` lines (`htpasswd -nbB user password`) or name an `htpasswdFile`".into()),
            );
        }
        let mut users: Vec<(String, String)> = Vec::new();
        for (i, line) in b.htpasswd.iter().enumerate() {
            let here = [&p("htpasswd")[..], &[Seg::Index(i)]].concat();
            match parse_htpasswd_line(line) {
                Ok((user, hash)) => {
                    if users.iter().any(|(u, _)| *u == user) {
                        self.err(&here, format!("user `{user}` is listed twice"), None);
                    }
                    users.push((user, hash));
                }
                Err(why) => self.err(
                    &here,
                    why,
                    Some(
                        "write `user:$2y$...` as printed by `htpasswd -nbB user password` (bcrypt, cost 4 to 12)"
                            .into(),
                    ),
                ),
            }
        }
        users.sort();
        let htpasswd_file = b.htpasswd_file.as_ref().map(|f| self.absolute_path(&p("htpasswdFile"), f));
        let realm = b.realm.clone().unwrap_or_else(|| policy.to_string());
        if realm.is_empty()
            || realm.len() > 128
            || !realm.bytes().all(|c| (0x20..0x7f).contains(&c) && c != b'"' && c != b'\\')
        {
            self.err(&p("realm"), "a realm is 1 to 128 printable ASCII characters without `\"` or `\\`", None);
        }
        let forward_header = self.forward_header(&p("forwardUsernameHeader"), b.forward_username_header.as_ref());
        BasicAuthSpec { users, htpasswd_file, realm, forward_header }
    }

    fn authorization(&mut self, a: &Authorization, authenticates: bool, jwt: Option<&JwtSpec>) -> AuthorizationSpec {
        if a.rules.len() > MAX_AUTHZ_RULES {
            self.err(at!["authorization", "rules"], format!("more than {MAX_AUTHZ_RULES} rules"), None);
        }
        let mut rules = Vec::new();
        for (i, r) in a.rules.iter().enumerate() {
            let here = |f: &'static str| [Seg::Key("authorization"), Seg::Key("rules"), Seg::Index(i), Seg::Key(f)];
            if let Some(n) = &r.name {
                if valid_name(n).is_err() {
                    self.err(&here("name"), format!("invalid rule name `{n}`"), None);
                }
            }
            let principal = r.principal.clone().unwrap_or_default();
            let mut client_cidrs = Vec::new();
            for (ci, c) in principal.client_cidrs.iter().enumerate() {
                let path = [&here("principal")[..], at!["clientCIDRs", ci]].concat();
                match cidr(c) {
                    Ok(c) => client_cidrs.push(c),
                    Err(why) => self.err(&path, why, None),
                }
            }
            if !principal.consumers.is_empty() && !authenticates {
                self.err(
                    &[&here("principal")[..], at!["consumers"]].concat(),
                    "a consumer condition needs `apiKeyAuth`, `basicAuth` or `jwt` in the same policy",
                    Some("without authentication there is never a consumer to match".into()),
                );
            }
            let mut consumers = principal.consumers.clone();
            let mut methods = r.operation.as_ref().map(|o| o.methods.clone()).unwrap_or_default();
            for (mi, m) in methods.iter().enumerate() {
                if http::Method::from_str(m).is_err() || m.chars().any(|c| c.is_ascii_lowercase()) {
                    self.err(
                        &[&here("operation")[..], at!["methods", mi]].concat(),
                        format!("`{m}` is not an upper-case HTTP method"),
                        None,
                    );
                }
            }
            for list in [&mut client_cidrs, &mut consumers, &mut methods] {
                list.sort();
                list.dedup();
            }
            let jwt_rule = principal
                .jwt
                .as_ref()
                .map(|j| self.jwt_principal(&[&here("principal")[..], at!["jwt"]].concat(), j, jwt));
            rules.push(AuthzRuleSpec {
                name: r.name.clone(),
                action: r.action,
                client_cidrs,
                consumers,
                methods,
                jwt: jwt_rule,
            });
        }
        AuthorizationSpec { default_action: a.default_action.unwrap_or(AuthzAction::Deny), rules }
    }

    fn ext_auth(&mut self, e: &ExtAuth) -> ExtAuthSpec {
        let p = |f: &'static str| [Seg::Key("extAuth"), Seg::Key(f)];
        let url_ok = e.http.url.parse::<http::Uri>().ok().is_some_and(|u| {
            matches!(u.scheme_str(), Some("http" | "https"))
                && u.host().is_some_and(|h| !h.is_empty())
                && u.query().is_none()
        });
        if !url_ok {
            self.err(
                at!["extAuth", "http", "url"],
                format!("`{}` is not an http:// or https:// URL without a query", e.http.url),
                Some("for example `http://authz.internal:8080/check`".into()),
            );
        }
        let to_auth = e.headers_to_ext_auth.clone().unwrap_or_else(|| vec!["authorization".into(), "cookie".into()]);
        let headers_to_ext_auth = self.header_list(&p("headersToExtAuth"), &to_auth);
        let mut headers_to_backend = Vec::new();
        for (i, h) in e.http.headers_to_backend.iter().enumerate() {
            headers_to_backend.push(self.forward_header(at!["extAuth", "http", "headersToBackend", i], Some(h)));
        }
        headers_to_backend.sort();
        headers_to_backend.dedup();
        let timeout = e.timeout.unwrap_or(Duration::from_millis(2_000));
        self.positive(&p("timeout"), timeout, "timeout");
        if timeout.as_millis() > 30_000 {
            self.err(&p("timeout"), format!("timeout `{timeout}` is over 30s"), None);
        }
        ExtAuthSpec {
            url: e.http.url.clone(),
            headers_to_ext_auth,
            headers_to_backend,
            timeout,
            fail_open: e.fail_open.unwrap_or(false),
        }
    }

    pub(super) fn absolute_path(&mut self, path: &[Seg<'_>], f: &str) -> String {
        if !f.starts_with('/') {
            self.err(
                path,
                format!("`{f}` is not an absolute path"),
                Some("write the absolute path of the file as it is on every node".to_string()),
            );
        }
        f.to_string()
    }
}

/// `*`, or `scheme://host[:port]` lower-cased, where the host may start with `*.`.
fn origin_pattern(o: &str) -> Result<String, String> {
    if o == "*" {
        return Ok(o.to_string());
    }
    let o = o.to_ascii_lowercase();
    let (scheme, rest) = o.split_once("://").ok_or("no scheme")?;
    if !matches!(scheme, "http" | "https") && !scheme.chars().all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c)) {
        return Err(format!("`{scheme}` is not a scheme"));
    }
    if rest.contains(['/', '?', '#', '@']) {
        return Err("an origin has no path, query or user".into());
    }
    let host = match rest.rsplit_once(':') {
        Some((h, port)) if !h.ends_with(']') || h.starts_with('[') => {
            if port.parse::<u16>().is_err() {
                return Err(format!("`{port}` is not a port"));
            }
            h
        }
        _ => rest,
    };
    let bare = host.strip_prefix("*.").unwrap_or(host);
    if bare.is_empty() || bare.contains('*') {
        return Err("a `*` may only stand for the first labels of the host (`*.example.com`)".into());
    }
    Ok(o)
}

/// A block in canonical form; a single address is a /32 or /128.
fn cidr(c: &str) -> Result<String, String> {
    if let Ok(ip) = std::net::IpAddr::from_str(c) {
        return Ok(IpNet::from(ip).to_string());
    }
    let net = IpNet::from_str(c).map_err(|_| format!("`{c}` is not a CIDR block (`10.0.0.0/8`) or an address"))?;
    if net.trunc() != net {
        return Err(format!("`{c}` has host bits set; the block is `{}`", net.trunc()));
    }
    Ok(net.to_string())
}

/// No two policies guard the same rule the same way: two on one route, or two on one rule.
pub(super) fn check_policy_targets(
    policies: &[Loaded<SecurityPolicy>],
    targets: &[Targets],
    diags: &mut Vec<Diagnostic>,
) -> HashMap<(String, Option<usize>), String> {
    let mut owner: HashMap<(String, Option<usize>), String> = HashMap::new();
    for (p, ts) in policies.iter().zip(targets) {
        for (i, t) in ts.iter().enumerate() {
            if let Some(first) = owner.get(t) {
                if *first != p.value.name {
                    let what = match t.1 {
                        None => format!("route `{}`", t.0),
                        Some(_) => format!(
                            "rule `{}` of route `{}`",
                            p.value.target_refs[i].section_name.as_deref().unwrap_or(""),
                            t.0
                        ),
                    };
                    diags.push(p.diag(
                        at!["targetRefs", i],
                        format!("{what} is already guarded by security policy `{first}`"),
                        Some("merge the two policies, or target a rule of its own with `sectionName`".into()),
                    ));
                }
                continue;
            }
            owner.insert(t.clone(), p.value.name.clone());
        }
    }
    owner
}

/// A rate limit keyed by consumer needs a policy that authenticates one.
pub(super) fn check_consumer_keys(res: &Resources, snapshot: &ConfigSnapshot, diags: &mut Vec<Diagnostic>) {
    // Only rate-limited rules are looked at, and the route's source is searched for only to
    // report a problem: this runs for every route of configs with 100,000 of them.
    for route in snapshot.routes.iter().filter(|r| r.rules.iter().any(|rule| rule.rate_limit.is_some())) {
        for (ri, rule) in route.rules.iter().enumerate() {
            let Some(key) = rule.rate_limit.as_ref().map(|r| &r.key) else { continue };
            let policy =
                || rule.security.as_ref().and_then(|n| snapshot.security_policies.iter().find(|p| p.name == *n));
            let problem = match key {
                RateLimitKeySpec::Claim(_) if policy().is_none_or(|p| p.jwt.is_none()) => (
                    "this rate limit is keyed by a token claim, but no security policy with `jwt` guards this rule",
                    "target the rule with a SecurityPolicy that has `jwt`",
                ),
                RateLimitKeySpec::Consumer if !policy().is_some_and(SecurityPolicySpec::authenticates) => (
                    "this rate limit is keyed by consumer, but no security policy authenticates this rule",
                    "target the rule with a SecurityPolicy that has `apiKeyAuth` or `basicAuth`",
                ),
                _ => continue,
            };
            let Some(loaded) = res.routes.iter().find(|r| r.value.name == route.name) else { continue };
            diags.push(loaded.diag(at!["rules", ri, "rateLimit", "key"], problem.0, Some(problem.1.into())));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_checked_and_lower_cased() {
        assert_eq!(origin_pattern("https://App.Example.com").unwrap(), "https://app.example.com");
        assert_eq!(origin_pattern("http://localhost:8080").unwrap(), "http://localhost:8080");
        assert_eq!(origin_pattern("https://*.example.com").unwrap(), "https://*.example.com");
        assert_eq!(origin_pattern("*").unwrap(), "*");
        for bad in ["example.com", "https://example.com/", "https://a.*.com", "https://*", "https://x:99999"] {
            assert!(origin_pattern(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn cidrs_are_canonical_and_host_bits_are_refused() {
        assert_eq!(cidr("10.0.0.0/8").unwrap(), "10.0.0.0/8");
        assert_eq!(cidr("192.0.2.7").unwrap(), "192.0.2.7/32");
        assert_eq!(cidr("2001:db8::/32").unwrap(), "2001:db8::/32");
        assert!(cidr("10.0.0.1/8").unwrap_err().contains("10.0.0.0/8"));
        assert!(cidr("10.0.0.0/33").is_err());
        assert!(cidr("ten/8").is_err());
    }

    #[test]
    fn only_bcrypt_htpasswd_lines_pass() {
        let htpasswd_line = parse_htpasswd_line;
        let good = "alice:$2y$05$c4WoMPo3SXsafkva.HHa6uXQZWr7oboPiC2bT/r7q1BB8I2s0BRqC";
        assert_eq!(htpasswd_line(good).unwrap().0, "alice");
        assert!(htpasswd_line("bob:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=").unwrap_err().contains("SHA-1"));
        assert!(htpasswd_line("bob:$apr1$x$y").unwrap_err().contains("MD5"));
        assert!(htpasswd_line("bob:secret").unwrap_err().contains("clear"));
        assert!(htpasswd_line("bob:$2y$15$c4WoMPo3SXsafkva.HHa6uXQZWr7oboPiC2bT/r7q1BB8I2s0BRqC")
            .unwrap_err()
            .contains("cost"));
        assert!(htpasswd_line("$2y$05$c4WoMPo3SXsafkva").is_err());
    }
}
