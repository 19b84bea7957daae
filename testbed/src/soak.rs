//! `testbed soak`: steady load for a long time with a config change every few seconds, to
//! show that nothing leaks and nothing fails: no failed request, memory flat after a
//! warm-up, file descriptors flat. A Markdown and JSON report go to the report directory.
//!
//! Memory is judged on each node's anonymous resident memory (`RssAnon`: its heaps,
//! everything it allocated), which is where a leak shows; total RSS is reported beside it
//! (it also counts the binary's pages, about 24 MiB of a node's ~41 MiB, shared between
//! the nodes of one machine).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::cluster::State;
use crate::ops;
use crate::scenario::{merge_announced, ms, running_names, wait_serving, Load};

/// What a soak run is asked to do.
#[derive(Debug, Clone)]
pub(crate) struct SoakOptions {
    pub duration: Duration,
    pub change_every: Duration,
    /// Memory and descriptors are compared with their values at the end of the warm-up.
    pub warmup: Duration,
    /// Requests per second to each node.
    pub rate: u32,
    pub report_dir: PathBuf,
    pub tls: bool,
    /// How much resident memory may grow after the warm-up, in percent.
    pub max_rss_growth_pct: f64,
    /// When the soak brings the testbed up: loopback even as root, and the port offset.
    pub loopback: bool,
    pub port_offset: u16,
    /// Raft snapshots every this many log entries, when the soak brings the testbed up, so
    /// that ten minutes see several snapshots and log purges (the default, 200, would
    /// give one).
    pub snapshot_every: Option<u64>,
}
/// How many more descriptors than at the end of the warm-up a node may hold at the end.
const MAX_FD_GROWTH: i64 = 16;
const SAMPLE_EVERY: Duration = Duration::from_secs(10);

/// One look at a node, from /proc.
#[derive(Debug, Clone, Copy, Default)]
struct Sample {
    /// Seconds since the soak began.
    t: f64,
    /// Resident memory in all, and its anonymous part (KiB).
    rss: u64,
    anon: u64,
    fds: i64,
}

fn sample(pid: u32, t: f64) -> Option<Sample> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib = |key: &str| -> Option<u64> {
        status.lines().find_map(|l| l.strip_prefix(key))?.split_whitespace().next()?.parse().ok()
    };
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as i64;
    Some(Sample { t, rss: kib("VmRSS:")?, anon: kib("RssAnon:")?, fds })
}

/// Runs the soak on the testbed in `dir` (bringing `topology` up if none is), returns
/// whether it passed.
pub(crate) fn run(dir: &Path, topology: &Path, opts: &SoakOptions) -> anyhow::Result<bool> {
    let up = ops::UpOptions {
        loopback: opts.loopback,
        quiet: true,
        port_offset: opts.port_offset,
        tls: opts.tls,
        snapshot_every: opts.snapshot_every,
    };
    ops::on_testbed(dir, topology, up, false, || soak(dir, opts))
}

fn soak(dir: &Path, opts: &SoakOptions) -> anyhow::Result<bool> {
    let state = State::load(dir)?;
    let pids: BTreeMap<String, u32> = state.nodes.iter().filter_map(|n| Some((n.name.clone(), n.pid?))).collect();
    anyhow::ensure!(pids.len() == state.nodes.len(), "some nodes of the testbed are not running");
    let load = Load::start_on(&state, "soak", &[], opts.rate)?;
    let started = Instant::now();
    let mut samples: BTreeMap<String, Vec<Sample>> = BTreeMap::new();
    let (mut merges, mut merge_errors, mut last_sha) = (0u32, Vec::new(), None);
    let (mut next_change, mut next_sample) = (Duration::ZERO, Duration::ZERO);
    while started.elapsed() < opts.duration {
        let now = started.elapsed();
        if now >= next_sample {
            for (name, pid) in &pids {
                if let Some(x) = sample(*pid, now.as_secs_f64()) {
                    samples.entry(name.clone()).or_default().push(x);
                }
            }
            next_sample += SAMPLE_EVERY;
        }
        if now >= next_change {
            match merge_announced(dir, false) {
                Ok(sha) => {
                    merges += 1;
                    last_sha = Some(sha);
                }
                Err(e) => merge_errors.push(format!("{:.0} s: {e:#}", now.as_secs_f64())),
            }
            next_change += opts.change_every;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    // Every node ends on the last change.
    let converged = match &last_sha {
        Some(sha) => wait_serving(&state, sha, &running_names(&state), Instant::now())
            .map(|t| t.values().map(|d| ms(*d)).fold(0.0, f64::max)),
        None => Err(anyhow::anyhow!("no change was merged")),
    };
    let load = load.stop()?;
    for (name, pid) in &pids {
        if let Some(x) = sample(*pid, started.elapsed().as_secs_f64()) {
            samples.entry(name.clone()).or_default().push(x);
        }
    }
    let (md, js, passed) = report(&state, opts, &pids, &samples, &load, merges, &merge_errors, &converged);
    crate::scenario::write_report(&opts.report_dir, &format!("soak-{}", state.topology.name), &md, &js)?;
    Ok(passed)
}

/// Per node: memory and descriptors at the end of the warm-up and at the end, growth, and
/// the verdict.
#[allow(clippy::too_many_arguments)]
fn report(
    state: &State,
    opts: &SoakOptions,
    pids: &BTreeMap<String, u32>,
    samples: &BTreeMap<String, Vec<Sample>>,
    load: &Value,
    merges: u32,
    merge_errors: &[String],
    converged: &anyhow::Result<f64>,
) -> (String, Value, bool) {
    let warm = opts.warmup.as_secs_f64();
    let mut rows = Vec::new();
    let mut nodes = serde_json::Map::new();
    let mut ok = merge_errors.is_empty() && converged.is_ok();
    let none = Vec::new();
    for name in pids.keys() {
        let s = samples.get(name).unwrap_or(&none);
        let base = s.iter().find(|x| x.t >= warm).or(s.last()).copied().unwrap_or_default();
        let end = s.last().copied().unwrap_or_default();
        let peak_rss = s.iter().filter(|x| x.t >= warm).map(|x| x.rss).max().unwrap_or(end.rss);
        let pct = |a: u64, b: u64| if a > 0 { (b as f64 - a as f64) * 100.0 / a as f64 } else { 0.0 };
        let (growth, rss_growth) = (pct(base.anon, end.anon), pct(base.rss, end.rss));
        let fd_growth = end.fds - base.fds;
        let failed = load["nodes"][name]["failed"].as_u64().unwrap_or(0);
        let served = load["nodes"][name]["ok"].as_u64().unwrap_or(0);
        // A node the load never reached, or that vanished from /proc, fails: silence is
        // not a pass.
        let seen = load["nodes"].get(name.as_str()).is_some() && served > 0 && s.len() >= 2;
        let node_ok = seen && failed == 0 && growth < opts.max_rss_growth_pct && fd_growth <= MAX_FD_GROWTH;
        ok &= node_ok;
        rows.push(format!(
            "| {name} | {served} | {failed} | {:.1} → {:.1} | {growth:+.1}% | {:.1} → {:.1} (peak {:.1}) | {rss_growth:+.1}% | {} → {} | {} |",
            base.anon as f64 / 1024.0,
            end.anon as f64 / 1024.0,
            base.rss as f64 / 1024.0,
            end.rss as f64 / 1024.0,
            peak_rss as f64 / 1024.0,
            base.fds,
            end.fds,
            if node_ok { "ok" } else { "FAIL" }
        ));
        nodes.insert(
            name.clone(),
            json!({
                "requests_ok": served, "requests_failed": failed,
                "anon_kib_after_warmup": base.anon, "anon_kib_end": end.anon, "anon_growth_pct": growth,
                "rss_kib_after_warmup": base.rss, "rss_kib_end": end.rss, "rss_kib_peak": peak_rss,
                "rss_growth_pct": rss_growth, "fds_after_warmup": base.fds, "fds_end": end.fds,
                "samples": s.iter().map(|x| json!([x.t, x.rss, x.anon, x.fds])).collect::<Vec<_>>(),
            }),
        );
    }
    let mut md = format!(
        "# Soak: {} minutes, a config change every {} s\n\n",
        opts.duration.as_secs() / 60,
        opts.change_every.as_secs()
    );
    md += &format!(
        "Topology `{}` ({} nodes, {}), {} requests/s to each node, {merges} changes merged and applied; memory and \
         descriptors compared with their values after a {} s warm-up. Pass: no failed request, anonymous resident \
         memory (the heaps: where a leak shows) growing under {}%, at most {MAX_FD_GROWTH} more descriptors. Total \
         RSS is shown beside it: it also counts pages of the binary touched for the first time (shared, reclaimable).\n\n",
        state.topology.name,
        state.nodes.len(),
        if state.tls { "mTLS" } else { "plaintext" },
        opts.rate,
        opts.warmup.as_secs(),
        opts.max_rss_growth_pct
    );
    md += &format!("**Verdict: {}**\n\n", if ok { "PASS" } else { "FAIL" });
    md += "| node | requests ok | failed | anonymous MiB (after warm-up → end) | growth | RSS MiB | RSS growth | fds | verdict |\n";
    md += "|---|---|---|---|---|---|---|---|---|\n";
    md += &rows.join("\n");
    md += "\n\n";
    match converged {
        Ok(ms) => md += &format!("Every node served the last change {ms:.0} ms after the run ended.\n"),
        Err(e) => md += &format!("Not every node reached the last change: {e:#}\n"),
    }
    for e in merge_errors {
        md += &format!("\n- merge failed at {e}");
    }
    let js = json!({
        "topology": state.topology.name, "tls": state.tls, "duration_s": opts.duration.as_secs(),
        "change_every_s": opts.change_every.as_secs(), "warmup_s": opts.warmup.as_secs(), "rate_per_node": opts.rate,
        "merges": merges, "merge_errors": merge_errors, "passed": ok, "nodes": nodes,
    });
    (md, js, ok)
}
