//! The testbed with network namespaces and the WAN emulator (root and /dev/net/tun only;
//! skipped with a message elsewhere): latency as configured, a partitioned region keeps
//! serving while the majority applies a merge, it converges after healing, and `down`
//! leaves no namespace, route or process behind.

mod common;

use common::{ok, testbed};
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// `raftgate` inside the control namespace (node addresses exist only there), with the
/// context file `up` wrote (TLS with the operator certificate).
fn raftgate(state: &Path, args: &[&str]) -> Output {
    Command::new("ip")
        .args(["netns", "exec", "rgt-ctl"])
        .arg(testkit::binary("raftgate"))
        .env("RAFTGATE_CONFIG", state.join("raftgate-config.yaml"))
        .env_remove("RAFTGATE_CONTEXT")
        .args(args)
        .output()
        .unwrap()
}

fn skip_reason() -> Option<&'static str> {
    if !nix_is_root() {
        return Some("not root");
    }
    if !Path::new("/dev/net/tun").exists() {
        return Some("/dev/net/tun is missing");
    }
    None
}

fn nix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(2) == Some("0")))
        .unwrap_or(false)
}

/// The testbed's namespaces and addresses are machine-wide: one netns test at a time.
static NETNS: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn skip(why: &str) {
    let msg = format!("testbed netns test: needs root and /dev/net/tun ({why})");
    eprintln!("SKIPPED: {msg}");
    if let Some(log) = std::env::var_os("RAFTGATE_SKIP_LOG") {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().append(true).open(log).unwrap();
        writeln!(f, "{msg}").unwrap();
    }
}

/// No testbed namespace is left behind.
fn assert_no_namespaces() {
    let netns =
        String::from_utf8_lossy(&Command::new("ip").args(["netns", "list"]).output().unwrap().stdout).into_owned();
    assert!(!netns.contains("rgt-"), "namespaces left: {netns}");
}

/// The JSON report a run wrote into `reports`.
fn report_json(reports: &Path) -> serde_json::Value {
    let json = std::fs::read_dir(reports)
        .unwrap()
        .flatten()
        .find(|e| e.path().extension().is_some_and(|x| x == "json"))
        .unwrap();
    serde_json::from_slice(&std::fs::read(json.path()).unwrap()).unwrap()
}

fn serving(state: &Path, admin: &str) -> Option<String> {
    let out = raftgate(state, &["--admin", admin, "--timeout", "2s", "-o", "json", "config", "history"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    v[0]["commit"].as_str().map(str::to_string)
}

#[test]
fn regions_with_latency_partitions_and_a_clean_teardown() {
    if let Some(why) = skip_reason() {
        return skip(why);
    }
    let _one = NETNS.lock().unwrap_or_else(|e| e.into_inner());
    let work = tempfile::tempdir().unwrap();
    let state = work.path().join("state");
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/config").canonicalize().unwrap();
    let topo = work.path().join("two.yaml");
    std::fs::write(
        &topo,
        format!(
            "name: two\nconfig: {}\nregions:\n  - {{ name: a, nodes: 2, rtt: 1ms }}\n  - {{ name: b, nodes: 1, rtt: 1ms }}\nlinks:\n  - {{ between: [a, b], rtt: 60ms }}\n",
            config.display()
        ),
    )
    .unwrap();
    let text = ok(testbed(&state, &["up", topo.to_str().unwrap()]));
    assert!(text.contains("network namespaces behind the WAN emulator, mTLS"), "{text}");

    // Round trips as configured (with slack for a busy machine), and changed at runtime.
    let rtt = |a: &str, b: &str| ok(testbed(&state, &["rtt", a, b])).trim().parse::<f64>().unwrap();
    let near = rtt("a-1", "a-2");
    let far = rtt("a-1", "b-1");
    assert!(near < 20.0, "a-1 -> a-2: {near} ms");
    assert!((60.0..100.0).contains(&far), "a-1 -> b-1: {far} ms");
    ok(testbed(&state, &["latency", "a", "b", "120ms"]));
    let farther = rtt("a-2", "b-1");
    assert!((120.0..160.0).contains(&farther), "a-2 -> b-1 after the change: {farther} ms");

    // Region b cut off: it keeps serving (no failed requests); the majority applies a merge.
    let before = serving(&state, "10.77.2.3:9900").expect("b-1 serves");
    ok(testbed(&state, &["partition", "a", "b"]));
    let sha = ok(testbed(&state, &["merge", "--webhook"])).trim().to_string();
    ok(raftgate(&state, &["--admin", "10.77.1.1:9900", "rollout", "wait", &sha, "--quorum", "--timeout", "30s"]));
    let load = ok(testbed(&state, &["load", "--duration", "2s", "--rate", "10"]));
    assert!(load.contains(", 0 failed"), "{load}");
    assert_eq!(serving(&state, "10.77.2.3:9900").as_deref(), Some(before.as_str()), "the minority keeps its config");

    // Healed: the minority converges.
    ok(testbed(&state, &["heal"]));
    let started = Instant::now();
    while serving(&state, "10.77.2.3:9900").as_deref() != Some(sha.as_str()) {
        assert!(started.elapsed() < Duration::from_secs(60), "b-1 never caught up after the heal");
        std::thread::sleep(Duration::from_millis(200));
    }

    ok(testbed(&state, &["down"]));
    assert_no_namespaces();
    let routes = String::from_utf8_lossy(&Command::new("ip").arg("route").output().unwrap().stdout).into_owned();
    assert!(!routes.contains("10.77."), "routes left: {routes}");
    let links =
        String::from_utf8_lossy(&Command::new("ip").args(["-br", "link"]).output().unwrap().stdout).into_owned();
    assert!(!links.contains("wan0"), "devices left: {links}");
    assert!(!state.exists());
}

/// The short CI version of `make testbed`: every scenario, one merge per mode, on a small
/// two-region topology; every verdict must be PASS and the report must hold the figures.
#[test]
fn every_scenario_passes_on_a_small_topology() {
    if let Some(why) = skip_reason() {
        return skip(why);
    }
    let _one = NETNS.lock().unwrap_or_else(|e| e.into_inner());
    let work = tempfile::tempdir().unwrap();
    let state = work.path().join("state");
    let reports = work.path().join("reports");
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/config").canonicalize().unwrap();
    let topo = work.path().join("small.yaml");
    std::fs::write(
        &topo,
        format!(
            "name: small\nconfig: {}\nregions:\n  - {{ name: a, nodes: 2, rtt: 1ms }}\n  - {{ name: b, nodes: 1, rtt: 1ms }}\nlinks:\n  - {{ between: [a, b], rtt: 40ms }}\n",
            config.display()
        ),
    )
    .unwrap();
    let out = testbed(
        &state,
        &[
            "run",
            "all",
            "--topology",
            topo.to_str().unwrap(),
            "--iterations",
            "1",
            "--report-dir",
            reports.to_str().unwrap(),
        ],
    );
    let text = ok(out);
    for scenario in [
        "merge-latency",
        "leader-failover",
        "partition",
        "scale",
        "invalid-commit",
        "cert-rotation",
        "upstream-failure",
    ] {
        assert!(text.contains(&format!("| {scenario} | PASS |")), "{scenario} did not pass:\n{text}");
    }
    let v = report_json(&reports);
    assert_eq!(v["tls"], true, "the report says TLS was on: {v}");
    assert!(text.contains("TLS: on"), "{text}");
    assert!(v["scenarios"][0]["figures"]["webhook"]["all"]["p50_ms"].as_f64().unwrap() > 0.0, "{v}");
    assert!(v["scenarios"][1]["figures"]["failover_ms"].as_f64().unwrap() > 0.0, "{v}");
    // Every node moved to a reissued certificate under load, the leader kept its term.
    let r = &v["scenarios"][5];
    assert_eq!(r["scenario"], "cert-rotation", "{r}");
    assert_eq!(r["figures"]["nodes"], 3, "{r}");
    assert_eq!(r["figures"]["term_before"], r["figures"]["term_after"], "{r}");
    // Region b's upstreams failed: its node degraded to the fallback, region a's did not.
    let f = &v["scenarios"][6]["figures"];
    assert_eq!(f["region"], "b", "{f}");
    assert!(f["breaker_open_ms"]["b-1"].as_f64().unwrap() > 0.0, "{f}");
    assert!(f["requests"]["b-1"]["fallback"].as_u64().unwrap() > 0, "{f}");
    assert_eq!(f["requests"]["a-1"]["fallback"], 0, "{f}");
    assert!(!state.exists(), "the run took its testbed down");
    assert_no_namespaces();
}

/// The CI minute of `make chaos`: a seeded schedule of kills, leader kills mid-rollout,
/// partitions, cut-off nodes, latency spikes and Git outages on three-regions (seven nodes)
/// under load, with merges (some invalid) every few seconds; the checker must pass every
/// rule. `RAFTGATE_CHAOS_SEED` replays another schedule.
#[test]
fn a_minute_of_chaos_passes_the_checker() {
    if let Some(why) = skip_reason() {
        return skip(why);
    }
    let _one = NETNS.lock().unwrap_or_else(|e| e.into_inner());
    let work = tempfile::tempdir().unwrap();
    let state = work.path().join("state");
    let reports = work.path().join("reports");
    let topo = Path::new(env!("CARGO_MANIFEST_DIR")).join("topologies/three-regions.yaml");
    let seed = std::env::var("RAFTGATE_CHAOS_SEED").unwrap_or_else(|_| CHAOS_SEED.to_string());
    let out = testbed(
        &state,
        &[
            "chaos",
            "--topology",
            topo.to_str().unwrap(),
            "--duration",
            "60s",
            "--seed",
            &seed,
            "--report-dir",
            reports.to_str().unwrap(),
        ],
    );
    let text = ok(out);
    assert!(text.contains("**Verdict: PASS**"), "{text}");
    let v = report_json(&reports);
    assert_eq!(v["checks"].as_array().unwrap().len(), 8, "{}", v["checks"]);
    // The faults happened (the default seed draws each kind within the minute), and the
    // histories the checker judged were read from every node.
    let counts = &v["counts"];
    if seed == CHAOS_SEED.to_string() {
        for kind in [
            "merges",
            "invalid merges",
            "node kills",
            "leader kills during a rollout",
            "region partitions",
            "latency spikes",
        ] {
            assert!(counts[kind].as_u64().unwrap_or(0) > 0, "no {kind}: {counts}");
        }
        assert!(
            counts["Git server hangs"].as_u64().unwrap_or(0) + counts["Git server kills"].as_u64().unwrap_or(0) > 0,
            "{counts}"
        );
    }
    assert!(!state.exists(), "the run took its testbed down");
    assert_no_namespaces();
}

/// A seed whose first minute draws every kind of fault (see `chaos::schedule`).
const CHAOS_SEED: u64 = 3;
