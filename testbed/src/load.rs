//! `testbed load`: steady requests through every node, counting failures per node. In
//! netns mode it runs inside the control namespace, so requests cross the WAN emulator.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use serde::Serialize;

use crate::repo::{PROBE_HOST, PROBE_PATH};

#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct NodeLoad {
    pub(crate) ok: u64,
    pub(crate) failed: u64,
    /// Answers the route's fallback gave (`x-raftgate-fallback`): degraded, not failed.
    pub(crate) fallback: u64,
    /// The first few failures, for the report.
    pub(crate) errors: Vec<String>,
    /// Failed requests per second they were sent in (Unix seconds), so a checker can tell
    /// failures while a node was faulted from failures while it was not.
    pub(crate) failed_by_second: BTreeMap<u64, u64>,
    /// Response times (median, 99th percentile), in milliseconds.
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
}

/// Where the load goes: a host name and path served by every node.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub(crate) host: String,
    pub(crate) path: String,
}

impl Default for Target {
    fn default() -> Self {
        Target { host: PROBE_HOST.to_string(), path: PROBE_PATH.to_string() }
    }
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct LoadReport {
    pub(crate) seconds: f64,
    pub(crate) rate_per_node: u32,
    pub(crate) nodes: BTreeMap<String, NodeLoad>,
}

impl LoadReport {
    pub(crate) fn failed(&self) -> u64 {
        self.nodes.values().map(|n| n.failed).sum()
    }

    pub(crate) fn ok(&self) -> u64 {
        self.nodes.values().map(|n| n.ok).sum()
    }

    pub(crate) fn print(&self) {
        println!("{:<14} {:>8} {:>8}  FIRST ERROR", "NODE", "OK", "FAILED");
        for (name, n) in &self.nodes {
            println!("{:<14} {:>8} {:>8}  {}", name, n.ok, n.failed, n.errors.first().map_or("", String::as_str));
        }
        println!("{} requests in {:.1}s, {} failed", self.ok() + self.failed(), self.seconds, self.failed());
    }
}

/// Sends `rate` requests per second to each `(name, http address)` for `duration`, or
/// until `stop` is set.
pub(crate) async fn run(
    targets: Vec<(String, String)>,
    duration: Duration,
    rate: u32,
    target: Target,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> LoadReport {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .build_http::<Empty<Bytes>>();
    let started = std::time::Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (name, addr) in targets {
        let client = client.clone();
        let stop = stop.clone();
        let target = target.clone();
        tasks.spawn(async move {
            let mut tally = NodeLoad::default();
            let mut times = Vec::new();
            let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(rate.max(1))));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let url = format!("http://{addr}{}", target.path);
            while started.elapsed() < duration && !stop.load(std::sync::atomic::Ordering::Relaxed) {
                tick.tick().await;
                let req = http::Request::get(&url)
                    .header("host", target.host.as_str())
                    .body(Empty::new())
                    .expect("valid request");
                let sent = std::time::Instant::now();
                let sent_at = std::time::SystemTime::now();
                let outcome = tokio::time::timeout(Duration::from_secs(5), async {
                    let resp = client.request(req).await.map_err(|e| format!("{e}"))?;
                    let status = resp.status();
                    let fallback = resp.headers().contains_key("x-raftgate-fallback");
                    resp.into_body().collect().await.map_err(|e| format!("{e}"))?;
                    if status.is_success() {
                        Ok(false)
                    } else if fallback {
                        Ok(true)
                    } else {
                        Err(format!("status {status}"))
                    }
                })
                .await
                .unwrap_or_else(|_| Err("timeout after 5s".into()));
                times.push(sent.elapsed().as_secs_f64() * 1000.0);
                match outcome {
                    Ok(false) => tally.ok += 1,
                    Ok(true) => tally.fallback += 1,
                    Err(e) => {
                        tally.failed += 1;
                        *tally.failed_by_second.entry(unix_seconds(sent_at)).or_default() += 1;
                        if tally.errors.len() < 3 {
                            tally.errors.push(e);
                        }
                    }
                }
            }
            times.sort_by(f64::total_cmp);
            let pick = |p: f64| times.get(((times.len() as f64 * p).ceil() as usize).saturating_sub(1)).copied();
            tally.p50_ms = (pick(0.5).unwrap_or(0.0) * 10.0).round() / 10.0;
            tally.p99_ms = (pick(0.99).unwrap_or(0.0) * 10.0).round() / 10.0;
            (name, tally)
        });
    }
    let mut nodes = BTreeMap::new();
    while let Some(Ok((name, tally))) = tasks.join_next().await {
        nodes.insert(name, tally);
    }
    LoadReport { seconds: started.elapsed().as_secs_f64(), rate_per_node: rate, nodes }
}

fn unix_seconds(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}
