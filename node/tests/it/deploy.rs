//! The files in deploy/, checked by the programs that will read them: systemd-analyze for
//! the unit, promtool for the alert rules (syntax, and their unit tests) and for the
//! Grafana dashboard's queries; and every raftgate metric they name against what a live
//! node exports, so a renamed metric cannot leave an alert that never fires.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::gitops::Repo;
use crate::harness::*;
use crate::nodes::*;

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().join("deploy")
}

fn installed(tool: &str) -> bool {
    Command::new("sh").args(["-c", &format!("command -v {tool}")]).output().is_ok_and(|o| o.status.success())
}

/// Runs `tool args`; returns (success, stdout + stderr).
fn run(tool: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(tool).args(args).output().unwrap_or_else(|e| panic!("{tool}: {e}"));
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[test]
fn the_systemd_unit_verifies_and_is_hardened() {
    if !installed("systemd-analyze") {
        return skip("systemd-analyze is not installed");
    }
    // The unit names /usr/local/bin/raftgated, which verify requires to exist: check a
    // copy that names the binary under test instead.
    let unit = std::fs::read_to_string(deploy().join("systemd/raftgated.service")).unwrap();
    assert!(unit.contains("ExecStart=/usr/local/bin/raftgated "), "the unit runs the installed binary");
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("raftgated.service");
    std::fs::write(&copy, unit.replace("/usr/local/bin/raftgated", env!("CARGO_BIN_EXE_raftgated"))).unwrap();
    let copy = copy.to_str().unwrap();

    let (ok, text) = run("systemd-analyze", &["verify", copy]);
    assert!(ok, "systemd-analyze verify:\n{text}");
    // verify exits 0 on values it ignores; any word from it is a mistake in the unit.
    assert!(text.trim().is_empty(), "systemd-analyze verify complained:\n{text}");

    let (_, text) = run("systemd-analyze", &["security", "--offline=yes", copy]);
    let level: f64 = text
        .lines()
        .find_map(|l| l.split_once("Overall exposure level for raftgated.service: "))
        .and_then(|(_, rest)| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{text}"));
    assert!(level <= 2.0, "exposure {level} (systemd calls up to 2.0 OK):\n{text}");
}

/// Every `raftgate_*` name in `text`, without histogram suffixes.
fn metric_names(text: &str, out: &mut std::collections::BTreeSet<String>) {
    let re = regex::Regex::new(r"raftgate_[a-z0-9_]+").unwrap();
    for m in re.find_iter(text) {
        let name = m.as_str();
        let name = ["_bucket", "_sum", "_count"].iter().find_map(|s| name.strip_suffix(s)).unwrap_or(name);
        out.insert(name.to_string());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn alert_rules_and_dashboard_queries_check_and_name_real_metrics() {
    if !installed("promtool") {
        return skip("promtool is not installed (`make deps` installs Debian's prometheus package)");
    }
    let rules = deploy().join("prometheus/alerts.yaml");
    let (ok, text) = run("promtool", &["check", "rules", rules.to_str().unwrap()]);
    assert!(ok, "promtool check rules:\n{text}");
    let (ok, text) =
        run("promtool", &["test", "rules", deploy().join("prometheus/alerts.test.yaml").to_str().unwrap()]);
    assert!(ok, "promtool test rules:\n{text}");

    // The dashboard's queries, as recording rules promtool parses (Grafana's
    // $__rate_interval becomes a fixed range).
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(deploy().join("grafana/raftgate.json")).unwrap()).unwrap();
    let mut exprs = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for t in panel["targets"].as_array().into_iter().flatten() {
            exprs.push(t["expr"].as_str().unwrap().replace("$__rate_interval", "5m"));
        }
    }
    assert!(exprs.len() >= 20, "{exprs:?}");
    let mut as_rules = String::from("groups:\n  - name: grafana\n    rules:\n");
    for (i, e) in exprs.iter().enumerate() {
        as_rules +=
            &format!("      - record: grafana:panel_{i}\n        expr: {}\n", serde_json::to_string(e).unwrap());
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("grafana-rules.yaml");
    std::fs::write(&file, as_rules).unwrap();
    let (ok, text) = run("promtool", &["check", "rules", file.to_str().unwrap()]);
    assert!(ok, "the dashboard's queries do not parse:\n{text}");

    // Every metric they name: exported by a live node (a one-node cluster syncing from Git,
    // after a request), or, for those registered when their event first happens (a retry,
    // a denial, a certificate), written in the node's source.
    let mut names = std::collections::BTreeSet::new();
    metric_names(&std::fs::read_to_string(&rules).unwrap(), &mut names);
    for e in &exprs {
        metric_names(e, &mut names);
    }
    let up = Upstream::start("up", Behaviour::Echo).await;
    let repo = Repo::init(&up, None);
    let c = TestCluster::from_git(&repo.url(), up, &[]).await;
    assert_eq!(get(&c.gw(1).url("/r0"), &[]).await.0, http::StatusCode::OK);
    let metrics = get(&format!("http://{}/metrics", c.gw(1).admin), &[]).await.2;
    let mut exported = std::collections::BTreeSet::new();
    metric_names(&metrics, &mut exported);
    let source = sources(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
    let unknown: Vec<&String> =
        names.iter().filter(|n| !exported.contains(*n) && !source.contains(&format!("\"{n}\""))).collect();
    assert!(unknown.is_empty(), "alerts or dashboard name metrics raftgated does not have: {unknown:?}");
    // The Raft gauges the alerts rest on are exported by every cluster node.
    for gauge in ["raftgate_raft_is_leader 1", "raftgate_raft_has_leader 1", "raftgate_config_refused 0"] {
        assert!(metrics.contains(gauge), "{gauge} missing from:\n{metrics}");
    }
}

/// Every Rust source under `dir`, concatenated.
fn sources(dir: &Path) -> String {
    let mut text = String::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            text += &sources(&path);
        } else if path.extension().is_some_and(|e| e == "rs") {
            text += &std::fs::read_to_string(&path).unwrap();
        }
    }
    text
}
