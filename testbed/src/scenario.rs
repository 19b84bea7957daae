//! `testbed run`: the measured scenarios. Each one runs under steady load through every
//! node, ends with a verdict and figures, and goes into a Markdown and JSON report.
//!
//! Times are measured from the moment the testbed acts (a merge, a kill, a heal) to the
//! moment `raftgate status` (polled every 100 ms) shows the outcome, so they carry up to
//! ~100 ms of polling granularity plus one status round trip.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;
use serde_json::{json, Value};

use crate::cluster::State;
use crate::net::{self, Mode};
use crate::ops;
use crate::process::{self, bin};

const SCENARIOS: [&str; 7] = [
    "merge-latency",
    "leader-failover",
    "partition",
    "scale",
    "invalid-commit",
    "cert-rotation",
    // Last: the example config's outlier detection keeps the failed region's endpoints
    // ejected for a while after its upstreams return.
    "upstream-failure",
];
/// How long any outcome may take before the scenario fails.
const LIMIT: Duration = Duration::from_secs(90);

#[derive(Debug, Serialize)]
struct Outcome {
    scenario: String,
    passed: bool,
    summary: String,
    figures: Value,
    /// Failed requests per node during the scenario, and the nodes allowed to fail (killed).
    load: Value,
    allowed_failures: Vec<String>,
}

/// How `testbed run` runs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RunOptions {
    /// Merges per mode in merge-latency.
    pub(crate) iterations: usize,
    /// Leave a testbed this run brought up running afterwards.
    pub(crate) keep: bool,
    /// Bring the testbed up with mTLS (a testbed already up keeps its own setting).
    pub(crate) tls: bool,
}

/// Runs `which` (one scenario or `all`), bringing `topology` up first when nothing is up.
pub(crate) fn run_all(
    dir: &Path,
    which: &str,
    topology: &Path,
    report_dir: &Path,
    opts: RunOptions,
) -> anyhow::Result<bool> {
    let RunOptions { iterations, keep, tls } = opts;
    let names: Vec<&str> = if which == "all" {
        SCENARIOS.to_vec()
    } else if SCENARIOS.contains(&which) {
        vec![which]
    } else {
        anyhow::bail!("no scenario `{which}`: choose one of {} or all", SCENARIOS.join(", "));
    };
    let started_here = State::load(dir).is_err();
    if started_here {
        ops::up(
            topology,
            dir,
            ops::UpOptions { loopback: false, quiet: true, port_offset: 0, tls, snapshot_every: None },
        )?;
    }
    let mut outcomes = Vec::new();
    for name in names {
        eprintln!("testbed: scenario {name}...");
        let outcome = match run_one(dir, name, iterations) {
            Ok(o) => o,
            Err(e) => Outcome {
                scenario: name.to_string(),
                passed: false,
                summary: format!("could not run: {e:#}"),
                figures: Value::Null,
                load: Value::Null,
                allowed_failures: Vec::new(),
            },
        };
        eprintln!("testbed: {name}: {} — {}", if outcome.passed { "PASS" } else { "FAIL" }, outcome.summary);
        outcomes.push(outcome);
    }
    let state = State::load(dir)?;
    let (md, js) = report(&state, &outcomes, iterations);
    write_report(report_dir, &state.topology.name, &md, &js)?;
    if started_here && !keep {
        ops::down(dir, true)?;
    }
    Ok(outcomes.iter().all(|o| o.passed))
}

/// Writes a report as `<dir>/<stamp>-<name>.md` and `.json`, and prints the Markdown.
pub(crate) fn write_report(dir: &Path, name: &str, md: &str, js: &Value) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let stamp = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string().replace([':', '-'], "");
    let base = dir.join(format!("{stamp}-{name}"));
    std::fs::write(base.with_extension("md"), md)?;
    std::fs::write(base.with_extension("json"), serde_json::to_vec_pretty(js)?)?;
    println!("{md}");
    println!("report: {} and .json", base.with_extension("md").display());
    Ok(())
}

/// Why a scenario cannot mean anything on this testbed, if it cannot.
fn skip_reason(state: &State, name: &str) -> Option<&'static str> {
    match name {
        "cert-rotation" if !state.tls => Some("skipped: this testbed runs plaintext"),
        "upstream-failure" if state.mode != Mode::Netns => {
            Some("skipped: on loopback all nodes share one set of upstreams, so no region can lose its own")
        }
        _ => None,
    }
}

fn run_one(dir: &Path, name: &str, iterations: usize) -> anyhow::Result<Outcome> {
    if let Some(why) = skip_reason(&State::load(dir)?, name) {
        return Ok(Outcome {
            scenario: name.to_string(),
            passed: true,
            summary: why.to_string(),
            figures: json!({ "skipped": true }),
            load: Value::Null,
            allowed_failures: Vec::new(),
        });
    }
    let load = Load::start(&State::load(dir)?)?;
    let result = match name {
        "merge-latency" => merge_latency(dir, iterations.max(1)),
        "leader-failover" => leader_failover(dir),
        "partition" => partition(dir),
        "scale" => scale(dir),
        "invalid-commit" => invalid_commit(dir),
        "upstream-failure" => upstream_failure(dir),
        "cert-rotation" => cert_rotation(dir),
        _ => unreachable!("checked by run_all"),
    };
    let load = load.stop()?;
    // Whatever happened, the next scenario starts from a healed network.
    let state = State::load(dir)?;
    if state.mode == Mode::Netns {
        net::heal(dir, None)?;
    }
    let (passed, summary, figures, allowed) = result?;
    // Nodes whose upstreams are healthy and that were not killed must see no failure.
    let mut unexpected = Vec::new();
    if let Some(nodes) = load["nodes"].as_object() {
        for (node, tally) in nodes {
            let failed = tally["failed"].as_u64().unwrap_or(0);
            if failed > 0 && !allowed.contains(node) {
                unexpected.push(format!("{node}: {failed} failed ({})", tally["errors"][0].as_str().unwrap_or("")));
            }
        }
    }
    let summary = if unexpected.is_empty() {
        summary
    } else {
        format!("{summary}; unexpected failed requests: {}", unexpected.join(", "))
    };
    Ok(Outcome {
        scenario: name.to_string(),
        passed: passed && unexpected.is_empty(),
        summary,
        figures,
        load,
        allowed_failures: allowed,
    })
}

type Result4 = anyhow::Result<(bool, String, Value, Vec<String>)>;

// ---------------------------------------------------------------------------------------
// Observing the cluster

/// `raftgate -o json status` through a running node (whatever its exit code).
fn status(state: &State) -> Option<Value> {
    let out = state.raftgate(&["-o", "json", "--timeout", "3s", "status"]).ok()?;
    serde_json::from_slice(&out.stdout).ok()
}

/// The commit a node serves, asked of the node itself.
fn node_commit(state: &State, admin: &str) -> Option<String> {
    let out = state.raftgate_at(admin, &["--timeout", "2s", "-o", "json", "config", "history"]).ok()?;
    let v: Value = serde_json::from_slice(&out.stdout).ok()?;
    v[0]["commit"].as_str().map(str::to_string)
}

/// Waits until each of `nodes` (names) serves `sha`; returns the time each took.
pub(crate) fn wait_serving(
    state: &State,
    sha: &str,
    nodes: &[String],
    started: Instant,
) -> anyhow::Result<BTreeMap<String, Duration>> {
    let mut done = BTreeMap::new();
    while done.len() < nodes.len() {
        anyhow::ensure!(
            started.elapsed() < LIMIT,
            "{} never served {}: still waiting for {:?}",
            nodes.len() - done.len(),
            &sha[..12.min(sha.len())],
            nodes.iter().filter(|n| !done.contains_key(*n)).collect::<Vec<_>>()
        );
        let pending: Vec<&String> = nodes.iter().filter(|n| !done.contains_key(*n)).collect();
        for n in pending {
            let node = state.node(n)?;
            if node_commit(state, &node.admin).as_deref() == Some(sha) {
                done.insert(n.clone(), started.elapsed());
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(done)
}

/// Merges a change and announces it by webhook, retrying the webhook while the cluster
/// has no reachable leader (right after a kill or a partition); polling would pick the
/// change up anyway.
pub(crate) fn merge_announced(dir: &Path, invalid: bool) -> anyhow::Result<String> {
    let sha = ops::merge(dir, false, invalid)?;
    let started = Instant::now();
    while started.elapsed() < LIMIT {
        let state = State::load(dir)?;
        if ops::notify(&state).is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(sha)
}

pub(crate) fn running_names(state: &State) -> Vec<String> {
    ops::running(state).iter().map(|n| n.name.clone()).collect()
}

pub(crate) fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 10_000.0).round() / 10.0
}

/// Nearest-rank percentile.
pub(crate) fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

// ---------------------------------------------------------------------------------------
// Load in the background

pub(crate) struct Load {
    child: Child,
    out: PathBuf,
}

impl Load {
    /// 10 requests per second to every node, on the probe route.
    fn start(state: &State) -> anyhow::Result<Load> {
        Self::start_on(state, "probe", &[], 10)
    }

    /// `rate` requests per second to every node; `target`: extra `--host`/`--path` args.
    pub(crate) fn start_on(state: &State, label: &str, target: &[&str], rate: u32) -> anyhow::Result<Load> {
        let out = state.dir.join(format!("load-{label}-{}.json", std::process::id()));
        let _ = std::fs::remove_file(&out);
        let child = state
            .net()
            .command(None, &bin("testbed"))
            .arg("--state")
            .arg(&state.dir)
            .args(["load", "--duration", "1h", "--rate", &rate.to_string()])
            .args(target)
            .arg("--json-out")
            .arg(&out)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .context("starting the load generator")?;
        Ok(Load { child, out })
    }

    pub(crate) fn stop(mut self) -> anyhow::Result<Value> {
        // SIGTERM: the generator stops and writes its report.
        process::stop(self.child.id(), Duration::from_secs(10));
        let _ = self.child.wait();
        let text = std::fs::read_to_string(&self.out).context("the load generator wrote no report")?;
        let _ = std::fs::remove_file(&self.out);
        Ok(serde_json::from_str(&text)?)
    }
}

// ---------------------------------------------------------------------------------------
// The scenarios

/// Scenario 1: merge → time until each node serves the commit, per region, by webhook and by poll.
fn merge_latency(dir: &Path, iterations: usize) -> Result4 {
    let mut figures = serde_json::Map::new();
    for (mode, webhook) in [("webhook", true), ("polling", false)] {
        let mut per_region: BTreeMap<String, Vec<f64>> = BTreeMap::new();
        let mut all = Vec::new();
        for _ in 0..iterations {
            let state = State::load(dir)?;
            let nodes = running_names(&state);
            let started = Instant::now();
            let sha = if webhook { merge_announced(dir, false)? } else { ops::merge(dir, false, false)? };
            for (node, took) in wait_serving(&state, &sha, &nodes, started)? {
                let region = state.node(&node)?.region.clone();
                per_region.entry(region).or_default().push(ms(took));
                all.push(ms(took));
            }
        }
        let mut table = serde_json::Map::new();
        for (region, mut v) in per_region {
            v.sort_by(f64::total_cmp);
            table.insert(
                region,
                json!({ "p50_ms": percentile(&v, 50.0), "p99_ms": percentile(&v, 99.0), "samples": v.len() }),
            );
        }
        all.sort_by(f64::total_cmp);
        table.insert(
            "all".into(),
            json!({ "p50_ms": percentile(&all, 50.0), "p99_ms": percentile(&all, 99.0), "samples": all.len() }),
        );
        figures.insert(mode.into(), Value::Object(table));
    }
    let summary = format!(
        "{iterations} merges per mode reached every node; p99 webhook {} ms, polling {} ms",
        figures["webhook"]["all"]["p99_ms"], figures["polling"]["all"]["p99_ms"]
    );
    Ok((true, summary, Value::Object(figures), Vec::new()))
}

/// Scenario 2: the leader killed during a rollout → failover time and convergence.
fn leader_failover(dir: &Path) -> Result4 {
    let state = State::load(dir)?;
    let leader = status(&state).and_then(|s| s["leader"].as_u64()).context("no leader to kill")?;
    let leader_name = state.node(&leader.to_string())?.name.clone();
    let started = Instant::now();
    let sha = merge_announced(dir, false)?;
    ops::kill(dir, &leader_name)?;
    let killed_at = started.elapsed();
    let state = State::load(dir)?;
    let new_leader = loop {
        if let Some(l) = status(&state).and_then(|s| s["leader"].as_u64()).filter(|l| *l != leader) {
            break l;
        }
        anyhow::ensure!(started.elapsed() < LIMIT, "no new leader after {}s", LIMIT.as_secs());
        std::thread::sleep(Duration::from_millis(100));
    };
    let failover = started.elapsed() - killed_at;
    let converged = wait_serving(&state, &sha, &running_names(&state), started)?;
    let restart = ops::start(dir, &leader_name)?;
    let state = State::load(dir)?;
    let back = Instant::now();
    wait_serving(&state, &sha, std::slice::from_ref(&leader_name), back)?;
    let converge_ms = converged.values().map(|d| ms(*d)).fold(0.0, f64::max);
    let figures = json!({
        "killed": leader_name,
        "new_leader": new_leader,
        "failover_ms": ms(failover),
        "all_survivors_serve_ms": converge_ms,
        "restarted_node_ready_ms": ms(restart),
        "restarted_node_serves_commit_ms": ms(back.elapsed()),
    });
    let summary = format!(
        "leader {leader_name} killed mid-rollout: node {new_leader} led after {} ms; every survivor served the commit after {converge_ms} ms",
        ms(failover)
    );
    Ok((true, summary, figures, vec![leader_name]))
}

/// Scenario 3: a region partitioned away keeps serving; the majority applies a merge; the
/// minority converges after healing.
fn partition(dir: &Path) -> Result4 {
    let state = State::load(dir)?;
    if state.mode != Mode::Netns {
        return Ok((
            true,
            "skipped: partitions need network namespaces (root and /dev/net/tun)".into(),
            Value::Null,
            Vec::new(),
        ));
    }
    let total = state.nodes.len();
    let minority = state
        .topology
        .regions
        .iter()
        .filter(|r| state.nodes.iter().filter(|n| n.region == r.name).count() * 2 < total)
        .min_by_key(|r| state.nodes.iter().filter(|n| n.region == r.name).count())
        .map(|r| r.name.clone())
        .context("no region is a minority")?;
    let cut: Vec<String> = state.nodes.iter().filter(|n| n.region == minority).map(|n| n.name.clone()).collect();
    let rest: Vec<String> = state.nodes.iter().filter(|n| n.region != minority).map(|n| n.name.clone()).collect();
    let before: BTreeMap<String, Option<String>> =
        cut.iter().map(|n| (n.clone(), node_commit(&state, &state.node(n).expect("listed").admin))).collect();
    for r in state.topology.regions.iter().filter(|r| r.name != minority) {
        net::partition(dir, &minority, &r.name)?;
    }
    let started = Instant::now();
    let sha = merge_announced(dir, false)?;
    let majority = wait_serving(&state, &sha, &rest, started)?;
    // Give the minority every chance to (wrongly) change, then check it did not.
    std::thread::sleep(Duration::from_secs(3));
    let kept: Vec<bool> =
        cut.iter().map(|n| node_commit(&state, &state.node(n).expect("listed").admin) == before[n]).collect();
    let healed = Instant::now();
    net::heal(dir, None)?;
    let converged = wait_serving(&state, &sha, &cut, healed)?;
    let all_kept = kept.iter().all(|k| *k);
    let figures = json!({
        "minority": minority,
        "majority_serves_ms": majority.values().map(|d| ms(*d)).fold(0.0, f64::max),
        "minority_kept_its_config": all_kept,
        "minority_converges_after_heal_ms": converged.values().map(|d| ms(*d)).fold(0.0, f64::max),
    });
    let summary = format!(
        "{minority} cut off: it kept serving its config ({}), the majority applied the merge in {} ms, {minority} caught up {} ms after the heal",
        if all_kept { "yes" } else { "NO" },
        figures["majority_serves_ms"],
        figures["minority_converges_after_heal_ms"]
    );
    Ok((all_kept, summary, figures, Vec::new()))
}

/// Scenario 4: a region scaled up by three nodes under load → time until each new node serves.
fn scale(dir: &Path) -> Result4 {
    let state = State::load(dir)?;
    let region = state
        .topology
        .regions
        .iter()
        .min_by_key(|r| state.nodes.iter().filter(|n| n.region == r.name).count())
        .map(|r| r.name.clone())
        .context("no region")?;
    let from = state.nodes.iter().filter(|n| n.region == region).count();
    let to = from + 3;
    let timings = ops::scale(dir, &region, to)?;
    let joined: BTreeMap<String, f64> = timings.iter().map(|(n, d)| (n.clone(), ms(*d))).collect();
    let back = ops::scale(dir, &region, from)?;
    let figures =
        json!({ "region": region, "from": from, "to": to, "serves_current_config_ms": joined, "removed": back.len() });
    let worst = joined.values().copied().fold(0.0, f64::max);
    let summary = format!(
        "{region} scaled {from} → {to}: every new node served the current config within {worst} ms; scaled back"
    );
    Ok((true, summary, figures, back.into_iter().map(|(n, _)| n).collect()))
}

/// Scenario 5: an invalid commit → refused on every node, traffic unaffected; the next good one applies.
fn invalid_commit(dir: &Path) -> Result4 {
    let state = State::load(dir)?;
    let nodes = running_names(&state);
    let serving_before: Vec<Option<String>> =
        nodes.iter().map(|n| node_commit(&state, &state.node(n).expect("listed").admin)).collect();
    let started = Instant::now();
    let bad = merge_announced(dir, true)?;
    let refused_after = loop {
        let s = status(&state).unwrap_or_default();
        let everywhere =
            s["nodes"].as_array().is_some_and(|ns| !ns.is_empty() && ns.iter().all(|n| n["refused"] == bad.as_str()));
        if everywhere {
            break started.elapsed();
        }
        anyhow::ensure!(started.elapsed() < LIMIT, "the invalid commit was not shown refused on every node");
        std::thread::sleep(Duration::from_millis(100));
    };
    let unchanged = nodes
        .iter()
        .zip(&serving_before)
        .all(|(n, before)| node_commit(&state, &state.node(n).expect("listed").admin) == *before);
    let fixed_at = Instant::now();
    let good = merge_announced(dir, false)?;
    let fixed = wait_serving(&state, &good, &nodes, fixed_at)?;
    let figures = json!({
        "refused_everywhere_ms": ms(refused_after),
        "configs_unchanged": unchanged,
        "fix_served_everywhere_ms": fixed.values().map(|d| ms(*d)).fold(0.0, f64::max),
    });
    let summary = format!(
        "invalid commit refused on every node after {} ms, configs unchanged: {}; the fix applied everywhere in {} ms",
        ms(refused_after),
        if unchanged { "yes" } else { "NO" },
        figures["fix_served_everywhere_ms"]
    );
    Ok((unchanged, summary, figures, Vec::new()))
}

/// The route and upstream `upstream-failure` adds: the demo endpoints every node's
/// namespace serves, with the resilience policies of `examples/config` tightened so the
/// scenario runs in seconds.
const RESILIENCE_FILE: &str = "testbed-resilience.yaml";
const RESILIENCE_HOST: &str = "resilience.testbed";
const RESILIENCE_CONFIG: &str = r#"# Added by `testbed run upstream-failure`.
kind: Upstream
name: testbed-resilience
endpoints: [{ address: "127.0.0.1:9001" }, { address: "127.0.0.1:9002" }]
connectTimeout: 500ms
healthCheck:
  active: { path: /healthz, interval: 1s, timeout: 500ms, unhealthyThreshold: 2, healthyThreshold: 2 }
  passive: { consecutiveFailures: 3, baseEjectionTime: 5s, maxEjectionPercent: 50 }
circuitBreaker: { consecutiveFailures: 5, openFor: 2s, halfOpenRequests: 1, retryBudget: { percent: 20, minConcurrency: 3 } }
---
kind: Route
name: testbed-resilience
hostnames: [resilience.testbed]
rules:
  - backendRefs: [{ upstream: testbed-resilience }]
    timeouts: { request: 2s }
    retry: { attempts: 2, retryOn: [connectFailure, gatewayError] }
    fallback:
      status: 503
      headers: [{ name: x-testbed, value: degraded }]
      body: "this region's upstream is down: degraded answer\n"
"#;

/// The live state of upstream `name` on the node with admin address `admin`.
fn upstream_state(state: &State, admin: &str, name: &str) -> Option<Value> {
    let out = state.raftgate_at(admin, &["--timeout", "2s", "-o", "json", "upstreams"]).ok()?;
    let rows: Value = serde_json::from_slice(&out.stdout).ok()?;
    let mine: Vec<Value> = rows.as_array()?.iter().filter(|r| r["upstream"] == name).cloned().collect();
    (!mine.is_empty()).then_some(Value::Array(mine))
}

/// Polls every node of `nodes` until `done` holds for its upstream rows; returns the time each took.
fn wait_upstreams(
    state: &State,
    nodes: &[String],
    started: Instant,
    what: &str,
    done: impl Fn(&[Value]) -> bool,
) -> anyhow::Result<BTreeMap<String, f64>> {
    let mut out = BTreeMap::new();
    while out.len() < nodes.len() {
        anyhow::ensure!(
            started.elapsed() < LIMIT,
            "{what}: still waiting for {:?}",
            nodes.iter().filter(|n| !out.contains_key(*n)).collect::<Vec<_>>()
        );
        for n in nodes.iter().filter(|n| !out.contains_key(*n)).cloned().collect::<Vec<_>>() {
            let admin = state.node(&n)?.admin.clone();
            if upstream_state(state, &admin, "testbed-resilience").and_then(|v| v.as_array().map(|a| done(a)))
                == Some(true)
            {
                out.insert(n, ms(started.elapsed()));
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(out)
}

/// Scenario 7: every upstream of one region fails under load. Its nodes open their circuit
/// breakers and answer with the route's fallback at once, health checks take the
/// endpoints out; the other regions see nothing; when the upstreams come back, the
/// breakers close through half-open and traffic flows again.
fn upstream_failure(dir: &Path) -> Result4 {
    let state = State::load(dir)?;
    let region = state.topology.regions.last().map(|r| r.name.clone()).context("no region")?;
    let hit: Vec<String> = ops::running(&state).iter().filter(|n| n.region == region).map(|n| n.name.clone()).collect();
    let rest: Vec<String> =
        ops::running(&state).iter().filter(|n| n.region != region).map(|n| n.name.clone()).collect();
    anyhow::ensure!(!hit.is_empty() && !rest.is_empty(), "the topology needs a second region");

    // The policies arrive like any change: a commit, replicated to every node.
    let sha = state.repo().commit_file(RESILIENCE_FILE, Some(RESILIENCE_CONFIG), "Add the resilience probe route")?;
    let _ = ops::notify(&state);
    let everyone: Vec<String> = hit.iter().chain(&rest).cloned().collect();
    wait_serving(&state, &sha, &everyone, Instant::now())?;
    let load = Load::start_on(&state, "resilience", &["--host", RESILIENCE_HOST, "--path", "/"], 20)?;
    std::thread::sleep(Duration::from_secs(3));

    // Kill the demo upstreams in every namespace of the region.
    let killed = Instant::now();
    {
        let mut st = State::load(dir)?;
        for n in st.nodes.iter_mut().filter(|n| hit.contains(&n.name)) {
            if let Some(pid) = n.upstreams_pid.take() {
                process::stop(pid, Duration::from_secs(5));
            }
        }
        st.save()?;
    }
    let opened = wait_upstreams(&state, &hit, killed, "breakers open", |rows| {
        rows.iter().any(|r| r["circuit"] == "open" || r["circuit"] == "half-open")
    })?;
    let unhealthy = wait_upstreams(&state, &hit, killed, "endpoints unhealthy", |rows| {
        rows.iter().all(|r| r["health"] == "unhealthy")
    })?;
    // Degraded for a while, then the upstreams come back.
    std::thread::sleep(Duration::from_secs(5));
    let restarted = Instant::now();
    {
        let mut st = State::load(dir)?;
        let fresh = State::load(dir)?;
        for n in st.nodes.iter_mut().filter(|n| hit.contains(&n.name)) {
            fresh.start_upstreams(n)?;
        }
        st.save()?;
    }
    let recovered = wait_upstreams(&state, &hit, restarted, "breakers closed and endpoints healthy", |rows| {
        rows.iter().all(|r| r["circuit"] == "closed" && r["health"] == "healthy")
    })?;
    std::thread::sleep(Duration::from_secs(2));
    let report = load.stop()?;

    // Clean up: the route goes as it came.
    let sha = state.repo().commit_file(RESILIENCE_FILE, None, "Remove the resilience probe route")?;
    let _ = ops::notify(&state);
    wait_serving(&state, &sha, &everyone, Instant::now())?;

    let tally = |n: &str, k: &str| report["nodes"][n][k].as_u64().unwrap_or(0);
    let failed: u64 = everyone.iter().map(|n| tally(n, "failed")).sum();
    let degraded_elsewhere: u64 = rest.iter().map(|n| tally(n, "fallback")).sum();
    let degraded_here: u64 = hit.iter().map(|n| tally(n, "fallback")).sum();
    let ok_here: u64 = hit.iter().map(|n| tally(n, "ok")).sum();
    let max = |m: &BTreeMap<String, f64>| m.values().copied().fold(0.0, f64::max);
    let per_node: BTreeMap<&String, Value> = everyone
        .iter()
        .map(|n| {
            let t = &report["nodes"][n];
            (n, json!({ "ok": t["ok"], "fallback": t["fallback"], "failed": t["failed"], "p99_ms": t["p99_ms"] }))
        })
        .collect();
    let figures = json!({
        "region": region,
        "breaker_open_ms": opened,
        "endpoints_unhealthy_ms": unhealthy,
        "recovered_ms": recovered,
        "requests": per_node,
    });
    let passed = failed == 0 && degraded_elsewhere == 0 && degraded_here > 0 && ok_here > 0;
    let summary = format!(
        "{region}'s upstreams killed: its breakers opened within {} ms and health checks took the endpoints out within {} ms; {degraded_here} requests there got the fallback, {failed} failed, other regions saw {degraded_elsewhere} degraded; upstreams back → breakers closed within {} ms",
        max(&opened),
        max(&unhealthy),
        max(&recovered)
    );
    // The probe route of the region's nodes has no fallback: its failures are expected.
    Ok((passed, summary, figures, hit))
}

// ---------------------------------------------------------------------------------------
// The report

/// A node's current certificate expiry, as it exports it (`raftgate_tls_cert_not_after_seconds`).
fn cert_not_after(state: &State, admin: &str) -> Option<i64> {
    let url = state.admin_url(admin, "/metrics");
    let (status, text) = crate::http::request(&state.net(), state.tls_dir().as_deref(), "GET", &url, &[], b"").ok()?;
    (status == 200).then_some(())?;
    text.lines()
        .find_map(|l| l.strip_prefix("raftgate_tls_cert_not_after_seconds "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as i64)
}

/// Scenario 6: every node's certificate reissued while the load runs: no request fails, the
/// leader and term stay, and every node moves to its new certificate without a restart.
fn cert_rotation(dir: &Path) -> Result4 {
    let state = State::load(dir)?;
    let before = status(&state).context("no cluster status before the rotation")?;
    let (leader, term) = (before["leader"].as_u64(), before["term"].as_u64());
    let certs_dir = crate::certs::dir(&state.dir);
    let started = Instant::now();
    let mut waiting = Vec::new();
    for node in state.nodes.iter().filter(|n| n.pid.is_some_and(process::alive)) {
        let expiry = crate::certs::reissue_node(&certs_dir, node.id, &node.ip)?;
        waiting.push((node.name.clone(), node.admin.clone(), expiry));
    }
    let mut took = serde_json::Map::new();
    for (name, admin, expiry) in &waiting {
        while cert_not_after(&state, admin) != Some(*expiry) {
            anyhow::ensure!(
                started.elapsed() < LIMIT,
                "{name} still uses its old certificate after {}s",
                LIMIT.as_secs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        took.insert(name.clone(), json!(ms(started.elapsed())));
    }
    let all_rotated = started.elapsed();
    // Keep the load on the new material for a while before judging.
    std::thread::sleep(Duration::from_secs(5));
    let after = status(&state).context("no cluster status after the rotation")?;
    let kept = after["leader"].as_u64() == leader && after["term"].as_u64() == term;
    let figures = json!({
        "nodes": waiting.len(),
        "all_rotated_ms": ms(all_rotated),
        "rotated_ms": took,
        "leader_before": leader,
        "leader_after": after["leader"],
        "term_before": term,
        "term_after": after["term"],
    });
    let summary = format!(
        "{} node certificates reissued under load: all in use after {} ms without a restart; leader and term {}",
        waiting.len(),
        ms(all_rotated),
        if kept { "unchanged" } else { "CHANGED" }
    );
    Ok((kept, summary, figures, Vec::new()))
}

fn report(state: &State, outcomes: &[Outcome], iterations: usize) -> (String, Value) {
    let mode = match state.mode {
        Mode::Netns => "network namespaces, WAN emulator",
        Mode::Loopback => "loopback, no latency",
    };
    // Raft and every admin call (the status polls behind each figure) run over it.
    let transport = if state.tls { "mTLS" } else { "plaintext" };
    let when = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    let mut md = format!(
        "# testbed report: `{}` ({} nodes, {mode}, {transport})\n\n{when}; raft profile `{}`; {iterations} merges per mode.\n\nTLS: {} (Raft between the nodes and the admin API{}).\n\n",
        state.topology.name,
        state.nodes.len(),
        state.raft_profile,
        if state.tls { "on" } else { "off" },
        if state.tls { ", with client certificates" } else { " in the clear" },
    );
    md += "| scenario | verdict | summary |\n|---|---|---|\n";
    for o in outcomes {
        md += &format!(
            "| {} | {} | {} |\n",
            o.scenario,
            if o.passed { "PASS" } else { "FAIL" },
            o.summary.replace('|', "/")
        );
    }
    for o in outcomes {
        md += &format!("\n## {}\n\n", o.scenario);
        if let Some(map) = o.figures.as_object() {
            for (k, v) in map {
                md += &format!("- {k}: `{v}`\n");
            }
        }
        if let Some(nodes) = o.load["nodes"].as_object() {
            let failed: Vec<String> = nodes
                .iter()
                .filter(|(_, t)| t["failed"].as_u64().unwrap_or(0) > 0)
                .map(|(n, t)| format!("{n} {}", t["failed"]))
                .collect();
            let ok: u64 = nodes.values().map(|t| t["ok"].as_u64().unwrap_or(0)).sum();
            md += &format!(
                "- load: {ok} requests answered; failed: {}{}\n",
                if failed.is_empty() { "none".into() } else { failed.join(", ") },
                if o.allowed_failures.is_empty() {
                    String::new()
                } else {
                    format!(" (allowed: {})", o.allowed_failures.join(", "))
                }
            );
        }
    }
    let js = json!({
        "topology": state.topology.name,
        "nodes": state.nodes.len(),
        "mode": mode,
        "raft_profile": state.raft_profile,
        "tls": state.tls,
        "transport": transport,
        "at": when,
        "iterations": iterations,
        "scenarios": outcomes,
    });
    (md, js)
}
