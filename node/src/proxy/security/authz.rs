//! Authorization rules: allow or deny by client address, consumer, method and what the
//! request's verified token says; the first rule whose every condition holds decides, else
//! the default action.

use std::net::IpAddr;
use std::str::FromStr;
use std::sync::Arc;

use http::Method;
use ipnet::IpNet;
use schemas::snapshot::{AuthorizationSpec, AuthzAction, ClaimValueType, JwtPrincipalSpec};
use serde_json::Value;

use super::jwt::Verified;

#[derive(Debug)]
pub struct Authz {
    default_allows: bool,
    rules: Vec<Rule>,
}

#[derive(Debug)]
struct Rule {
    name: Option<Arc<str>>,
    allows: bool,
    cidrs: Vec<IpNet>,
    consumers: Vec<String>,
    methods: Vec<Method>,
    jwt: Option<JwtPrincipalSpec>,
}

impl Authz {
    pub fn new(spec: &AuthorizationSpec) -> Self {
        let rules = spec
            .rules
            .iter()
            .map(|r| Rule {
                name: r.name.as_deref().map(Arc::from),
                allows: r.action == AuthzAction::Allow,
                // `schemas` checked every block and method.
                cidrs: r.client_cidrs.iter().filter_map(|c| IpNet::from_str(c).ok()).collect(),
                consumers: r.consumers.clone(),
                methods: r.methods.iter().filter_map(|m| Method::from_str(m).ok()).collect(),
                jwt: r.jwt.clone(),
            })
            .collect();
        Authz { default_allows: spec.default_action == AuthzAction::Allow, rules }
    }

    /// `None` when the request may pass; else `Some(name of the deciding rule, if any)`.
    pub fn denies(
        &self,
        client: IpAddr,
        consumer: Option<&str>,
        method: &Method,
        token: Option<&Verified>,
    ) -> Option<Option<Arc<str>>> {
        // An IPv4 client on a dual-stack socket arrives as ::ffff:a.b.c.d; rules are
        // written for the IPv4 address.
        let client = match client {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(client, IpAddr::V4),
            v4 => v4,
        };
        for r in &self.rules {
            let cidr = r.cidrs.is_empty() || r.cidrs.iter().any(|n| n.contains(&client));
            let who = r.consumers.is_empty() || consumer.is_some_and(|c| r.consumers.iter().any(|x| x == c));
            let what = r.methods.is_empty() || r.methods.contains(method);
            let says = r.jwt.as_ref().is_none_or(|j| token.is_some_and(|t| token_matches(j, t)));
            if cidr && who && what && says {
                return (!r.allows).then(|| r.name.clone());
            }
        }
        (!self.default_allows).then_some(None)
    }
}

/// The token is from the provider named (if one is), holds one of the values of every
/// claim listed and every scope listed.
fn token_matches(j: &JwtPrincipalSpec, t: &Verified) -> bool {
    if j.provider.as_deref().is_some_and(|p| p != &*t.provider) {
        return false;
    }
    let claims = j.claims.iter().all(|c| match (c.value_type, t.claim(&c.name)) {
        (ClaimValueType::String, Some(Value::String(s))) => c.values.iter().any(|v| v == s),
        (ClaimValueType::StringArray, Some(Value::Array(a))) => {
            a.iter().filter_map(Value::as_str).any(|s| c.values.iter().any(|v| v == s))
        }
        _ => false,
    });
    let scopes = t.scopes();
    claims && j.scopes.iter().all(|s| scopes.contains(&s.as_str()))
}

#[cfg(test)]
mod tests {
    use schemas::snapshot::AuthzRuleSpec;

    use super::*;

    fn rule(action: AuthzAction, cidrs: &[&str], consumers: &[&str], methods: &[&str]) -> AuthzRuleSpec {
        AuthzRuleSpec {
            name: Some("r".into()),
            action,
            client_cidrs: cidrs.iter().map(|s| s.to_string()).collect(),
            consumers: consumers.iter().map(|s| s.to_string()).collect(),
            methods: methods.iter().map(|s| s.to_string()).collect(),
            jwt: None,
        }
    }

    #[test]
    fn the_first_matching_rule_decides_and_every_condition_must_hold() {
        let a = Authz::new(&AuthorizationSpec {
            default_action: AuthzAction::Deny,
            rules: vec![
                rule(AuthzAction::Deny, &["10.0.9.0/24"], &[], &[]),
                rule(AuthzAction::Allow, &["10.0.0.0/8"], &[], &["GET"]),
                rule(AuthzAction::Allow, &[], &["ops"], &[]),
            ],
        });
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(a.denies(ip("10.1.2.3"), None, &Method::GET, None).is_none());
        assert!(a.denies(ip("::ffff:10.1.2.3"), None, &Method::GET, None).is_none(), "mapped IPv4 matches v4 blocks");
        assert!(a.denies(ip("10.1.2.3"), None, &Method::POST, None).is_some(), "method condition");
        assert!(a.denies(ip("10.0.9.1"), Some("ops"), &Method::GET, None).is_some(), "first match wins");
        assert!(a.denies(ip("192.0.2.1"), Some("ops"), &Method::DELETE, None).is_none());
        assert!(a.denies(ip("192.0.2.1"), Some("dev"), &Method::GET, None).is_some(), "default deny");
        assert!(a.denies(ip("192.0.2.1"), None, &Method::GET, None).is_some());
    }
}
