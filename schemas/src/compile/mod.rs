//! Validation and compilation in one pass: each resource is checked field by field and, when
//! it is sound, turned into its canonical compiled form. Every problem becomes a
//! [`Diagnostic`] pointing at the offending value; nothing stops at the first one.
//!
//! This file holds the entry point and the order of the passes; each resource kind is
//! checked in its own file, on the shared `ctx::Ctx`.

mod certificate;
mod ctx;
mod filters;
mod jwt;
mod limits;
mod matches;
mod names;
mod route;
mod route_policies;
mod security;
mod tls_policy;
mod upstream;

use std::collections::BTreeSet;

use crate::diag::Diagnostic;
use crate::load::Resources;
use crate::snapshot::ConfigSnapshot;

use certificate::check_certificate_overlap;
use ctx::Ctx;
use matches::{check_identical_matches, check_regex_sets};
use names::check_unique_names;

pub(crate) fn compile(res: &Resources, policy: &crate::policy::Policy, diags: &mut Vec<Diagnostic>) -> ConfigSnapshot {
    let mut snapshot = ConfigSnapshot::default();

    check_unique_names(&res.upstreams, |u| &u.name, "upstream", diags);
    check_unique_names(&res.routes, |r| &r.name, "route", diags);
    check_unique_names(&res.certificates, |c| &c.name, "certificate", diags);
    check_unique_names(&res.security_policies, |p| &p.name, "security policy", diags);

    let upstream_names: BTreeSet<&str> = res.upstreams.iter().map(|u| u.value.name.as_str()).collect();

    for u in &res.upstreams {
        let mut d = Ctx { res: u, diags: &mut *diags, failed: false };
        let spec = d.upstream(&u.value, policy);
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
    let mut targets = Vec::new();
    for p in &res.security_policies {
        let mut d = Ctx { res: p, diags: &mut *diags, failed: false };
        let (spec, t) = d.security_policy(&p.value, res);
        targets.push(t);
        if !d.failed {
            snapshot.security_policies.push(spec);
        }
    }
    // Every policy is checked; a second one is an error of its own (below).
    for (i, p) in res.tls_policies.iter().enumerate() {
        let mut d = Ctx { res: p, diags: &mut *diags, failed: false };
        let spec = d.tls_policy(&p.value);
        if !d.failed && i == 0 {
            snapshot.tls_policy = spec;
        }
    }
    tls_policy::check_single_policy(res, diags);
    let owners = security::check_policy_targets(&res.security_policies, &targets, diags);
    for route in &mut snapshot.routes {
        for (ri, rule) in route.rules.iter_mut().enumerate() {
            let by_rule = owners.get(&(route.name.clone(), Some(ri)));
            rule.security = by_rule.or_else(|| owners.get(&(route.name.clone(), None))).cloned();
        }
    }
    security::check_consumer_keys(res, &snapshot, diags);
    check_identical_matches(res, diags);
    check_regex_sets(res, diags);
    check_certificate_overlap(res, diags);

    snapshot.upstreams.sort_by(|a, b| a.name.cmp(&b.name));
    snapshot.routes.sort_by(|a, b| a.name.cmp(&b.name));
    snapshot.certificates.sort_by(|a, b| a.name.cmp(&b.name));
    snapshot.security_policies.sort_by(|a, b| a.name.cmp(&b.name));
    snapshot
}
