//! Snapshot tests of the tables people read (`cli/src/snapshots/`), from fixed inputs, and
//! the 80-column rule. Review changes with `cargo insta review` or by reading the diff.

use schemas::admin::*;

use crate::cluster::{members_view, render_members, render_status, status_view};
use crate::configs::{self, EndpointRow, HistoryRow};
use crate::output::WIDTH;

fn fits(text: &str) -> &str {
    for line in text.lines() {
        assert!(line.chars().count() <= usize::from(WIDTH), "wider than {WIDTH} columns: `{line}`");
    }
    text
}

const NOW: u64 = 1_795_700_000;

fn node(id: u64, role: Role, commit: &str, applied: u64) -> NodeStatus {
    NodeStatus {
        id,
        region: format!("eu-west-{id}"),
        version: "0.1.0".into(),
        started_at: NOW - 3600 * id - 125,
        role: role as i32,
        leader_id: Some(1),
        term: 4,
        applied_index: applied,
        config: Some(AppliedConfig {
            commit: commit.into(),
            hash: "9248d5203ee2c1f0aa3b2c1d4e5f60718293a4b5c6d7e8f90123456789abcdef".into(),
            log_index: applied,
            ..AppliedConfig::default()
        }),
        certificates: vec![cert("api", &["api.example.com", "*.api.example.com"], 'a', 80)],
        ..NodeStatus::default()
    }
}

/// A served certificate with `days` left, its fingerprint made of `fp`.
fn cert(name: &str, hosts: &[&str], fp: char, days: i64) -> CertificateState {
    CertificateState {
        name: name.into(),
        hostnames: hosts.iter().map(|h| h.to_string()).collect(),
        not_after: NOW as i64 + days * 86_400 + 3600,
        fingerprint: fp.to_string().repeat(64),
        loaded_at: NOW - 600,
        ..CertificateState::default()
    }
}

fn member(id: u64, voter: bool) -> Member {
    Member {
        id,
        raft_addr: format!("10.0.{id}.7:9800"),
        admin_addr: format!("10.0.{id}.7:9900"),
        region: format!("eu-west-{id}"),
        voter,
    }
}

fn cluster(unhealthy: bool) -> ClusterStatus {
    let sha = "4f1c2e9a7b3d5f60718293a4b5c6d7e8f9012345";
    let old = "0a1b2c3d4e5f60718293a4b5c6d7e8f901234567";
    let mut n3 = MemberStatus { member: Some(member(3, true)), reachable: true, lag: Some(0), ..Default::default() };
    if unhealthy {
        n3.reachable = false;
        n3.error = "10.0.3.7:9900: no answer within 2s".into();
    } else {
        n3.status = Some(node(3, Role::Follower, sha, 42));
    }
    let mut n2 = node(2, Role::Follower, if unhealthy { old } else { sha }, 40);
    if unhealthy {
        // Node 2 was renewed by hand; the others were not (yet).
        n2.certificates = vec![cert("api", &["api.example.com", "*.api.example.com"], 'b', 89)];
        n2.refusal = Some(Refusal {
            commit: "ffeeddccbbaa99887766554433221100ffeeddcc".into(),
            step: "validate".into(),
            errors: vec![
                "gateway/routes.yaml:12:19: error: unknown upstream `usres` (help: did you mean `users`?)".into()
            ],
            at: NOW,
        });
        n2.resilience = Some(Resilience {
            open_circuits: vec!["orders".into()],
            ejected_endpoints: 1,
            unhealthy_endpoints: 0,
            rate_limited: 42,
        });
    }
    ClusterStatus {
        leader_id: Some(1),
        term: 4,
        commit_index: 42,
        nodes: vec![
            MemberStatus {
                member: Some(member(1, true)),
                reachable: true,
                status: Some(node(1, Role::Leader, sha, 42)),
                lag: Some(0),
                ..Default::default()
            },
            MemberStatus {
                member: Some(member(2, true)),
                reachable: true,
                status: Some(n2),
                lag: Some(2),
                ..Default::default()
            },
            n3,
        ],
    }
}

#[test]
fn certificates_table() {
    use crate::certificates::{certificates_view, render};
    let mut a = node(1, Role::Leader, "4f1c", 42);
    let mut b = node(2, Role::Follower, "4f1c", 42);
    let mut c = node(3, Role::Follower, "4f1c", 42);
    b.certificates[0] = cert("api", &["api.example.com", "*.api.example.com"], 'b', 89);
    for n in [&mut a, &mut b, &mut c] {
        n.certificates.push(cert("legacy", &["old.example.com"], 'c', 9));
        n.certificates.push(CertificateState { default: true, ..cert("fallback", &[], 'd', 365) });
    }
    c.certificates[2].error = "certificate and private key do not match".into();
    c.certificates.push(CertificateState {
        error: "cannot read /etc/tls/new.pem: No such file or directory (os error 2)".into(),
        ..CertificateState { fingerprint: String::new(), not_after: 0, ..cert("new", &["new.example.com"], 'e', 0) }
    });
    let view = certificates_view(&[(1, &a), (2, &b), (3, &c)], NOW);
    assert_eq!(view.warnings.len(), 1, "{:?}", view.warnings);
    assert_eq!(view.problems.len(), 1, "{:?}", view.problems);
    assert_eq!(view.file_errors.len(), 2, "{:?}", view.file_errors);
    insta::assert_snapshot!("certificates", fits(&render(&view)));
    let ok = certificates_view(&[(1, &node(1, Role::Leader, "4f1c", 42))], NOW);
    assert!(ok.warnings.is_empty() && ok.problems.is_empty() && ok.file_errors.is_empty());
    assert_eq!(
        ok.summary().as_deref(),
        Some("certificates: 1; the first to expire is `api`, which expires in 80 day(s)")
    );
}

#[test]
fn status_tables() {
    let healthy = status_view(&cluster(false), NOW);
    assert!(healthy.healthy);
    insta::assert_snapshot!("status_healthy", fits(&render_status(&healthy)));
    let sick = status_view(&cluster(true), NOW);
    assert!(!sick.healthy);
    insta::assert_snapshot!("status_unhealthy", fits(&render_status(&sick)));
}

#[test]
fn members_table() {
    let m = Members {
        members: vec![member(1, true), member(2, true), member(3, false)],
        leader_id: Some(2),
        term: 7,
        membership_log_index: 12,
    };
    insta::assert_snapshot!("members", fits(&render_members(&members_view(&m))));
}

#[test]
fn history_table() {
    let rows = vec![
        HistoryRow {
            commit: "4f1c2e9a7b3d5f60718293a4b5c6d7e8f9012345".into(),
            hash: "9248d520".into(),
            author: "Ada Lovelace <ada@example.com>".into(),
            message: "Merge pull request #42 from platform/orders-canary\n\nShift 10% of orders to the canary".into(),
            log_index: 42,
            applied_at: NOW,
        },
        HistoryRow {
            commit: "dir-bc89764a55a6".into(),
            hash: "bc89764a".into(),
            author: String::new(),
            message: "local config directory".into(),
            log_index: 3,
            applied_at: NOW - 86_400,
        },
    ];
    insta::assert_snapshot!("history", fits(&configs::render_history(&rows)));
}

fn compile(text: &str) -> schemas::ConfigSnapshot {
    let files = vec![schemas::SourceFile { path: "gateway.yaml".into(), contents: text.as_bytes().to_vec() }];
    schemas::compile_tree(&files).unwrap_or_else(|d| panic!("{d:?}")).snapshot
}

const BEFORE: &str = r#"
kind: Upstream
name: users
endpoints: [{ address: "10.0.0.1:8080" }, { address: "10.0.0.2:8080" }]
---
kind: Upstream
name: legacy
endpoints: [{ address: "10.0.9.1:8080" }]
---
kind: Route
name: users-api
hostnames: [api.example.com, "*.api.example.com"]
rules:
  - name: reads
    matches: [{ path: { type: PathPrefix, value: /v1/users }, method: GET, headers: [{ name: x-canary, value: always }] }]
    backendRefs: [{ upstream: users, weight: 90 }, { upstream: legacy, weight: 10 }]
  - matches: [{ path: { type: Exact, value: /healthz } }]
    backendRefs: [{ upstream: users }]
---
kind: SecurityPolicy
name: partners
targetRefs: [{ name: users-api, sectionName: reads }]
apiKeyAuth: { consumers: [{ name: acme, sha256: 2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b }] }
cors: { allowOrigins: ["https://app.example.com"] }
"#;

#[test]
fn routes_and_upstreams_tables() {
    let s = compile(BEFORE);
    insta::assert_snapshot!("routes", fits(&configs::render_routes(&configs::route_rows(&s))));
    let rows: Vec<EndpointRow> = s
        .upstreams
        .iter()
        .flat_map(|u| {
            u.endpoints.iter().enumerate().map(|(i, e)| EndpointRow {
                upstream: u.name.clone(),
                load_balancer: "roundRobin".into(),
                address: e.address.clone(),
                weight: e.weight,
                in_flight: 3,
                health: if u.name == "users" { "healthy" } else { "unchecked" }.into(),
                ejected_for_ms: if u.name == "users" && i == 0 { 29_500 } else { 0 },
                circuit: if u.name == "users" { "closed" } else { "open" }.into(),
                circuit_retry_after_ms: if u.name == "users" { 0 } else { 12_000 },
                source: "static".into(),
                dns: None,
            })
        })
        .chain((2..4).map(|i| EndpointRow {
            upstream: "search".into(),
            load_balancer: "roundRobin".into(),
            address: format!("10.0.3.{i}:9200"),
            weight: 1,
            in_flight: 0,
            health: "unchecked".into(),
            ejected_for_ms: 0,
            circuit: "none".into(),
            circuit_retry_after_ms: 0,
            source: "dns".into(),
            dns: Some(configs::DnsRow {
                name: "search.internal".into(),
                result: "error".into(),
                error: "no answer within 5 s".into(),
                last_ok_ago_ms: 41_200,
                failures: 4,
            }),
        }))
        .collect();
    insta::assert_snapshot!("upstreams", fits(&configs::render_upstreams(&rows)));
}

#[test]
fn diff_table_and_fields() {
    let after = BEFORE
        .replace("weight: 90 }, { upstream: legacy, weight: 10 }", "weight: 100 }")
        .replace("kind: Upstream\nname: legacy\nendpoints: [{ address: \"10.0.9.1:8080\" }]\n---\n", "")
        + "---\nkind: Upstream\nname: orders\nendpoints: [{ address: \"10.0.1.1:8080\" }]\n";
    let d = configs::diff("main~1", "main", &compile(BEFORE), &compile(&after));
    assert_eq!(d.upstreams.added, ["orders"]);
    assert_eq!(d.upstreams.removed, ["legacy"]);
    assert_eq!(d.routes.changed.len(), 1);
    let paths: Vec<&str> = d.routes.changed[0].fields.iter().map(|f| f.path.as_str()).collect();
    assert!(paths.contains(&"rules[0].backends[0].weight"), "{paths:?}");
    assert!(paths.contains(&"rules[0].backends[1]"), "a removed backend: {paths:?}");
    insta::assert_snapshot!("diff", fits(&configs::render_diff(&d)));
    let same = configs::diff("a", "b", &compile(BEFORE), &compile(BEFORE));
    assert!(same.is_empty());
    assert_eq!(configs::render_diff(&same), "no changes between a and b\n");
}
