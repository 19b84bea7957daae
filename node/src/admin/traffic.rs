//! The dashboard's traffic charts, from the node's own metrics: every few seconds the node
//! renders its Prometheus registry (which also folds histogram samples into buckets, the
//! upkeep the exporter needs anyway), and keeps, per route and for the whole node, the
//! request rate, the share of 5xx answers and the p99 latency of the interval. Ten minutes
//! are kept in memory; no Prometheus server is needed to see what a node is doing.
//!
//! Only `raftgate_requests_total` and `raftgate_request_duration_seconds` are parsed, and
//! only routes that served requests have them (handles are registered on first use), so a
//! node with 100,000 quiet routes pays for the few busy ones.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use metrics_exporter_prometheus::PrometheusHandle;
use schemas::admin::{RouteTraffic, Traffic, TrafficSample};
use tokio::sync::watch;

/// Seconds between samples.
pub const INTERVAL: Duration = Duration::from_secs(5);
/// Samples kept: ten minutes.
const KEEP: usize = 120;
/// Routes kept per sample, busiest first.
const TOP_ROUTES: usize = 12;

const REQUESTS: &str = "raftgate_requests_total";
const LATENCY: &str = "raftgate_request_duration_seconds";

/// The last minutes of samples, oldest first.
#[derive(Debug, Default)]
pub struct TrafficLog {
    samples: Mutex<VecDeque<TrafficSample>>,
}

impl TrafficLog {
    pub fn traffic(&self) -> Traffic {
        let samples = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        Traffic { interval_seconds: INTERVAL.as_secs() as u32, samples: samples.iter().cloned().collect() }
    }

    fn push(&self, sample: TrafficSample) {
        let mut samples = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        if samples.len() == KEEP {
            samples.pop_front();
        }
        samples.push_back(sample);
    }
}

/// Cumulative counts of one route at one moment.
#[derive(Debug, Default, Clone, PartialEq)]
struct Totals {
    requests: f64,
    errors: f64,
    /// Cumulative histogram buckets: (upper bound in seconds, count), ascending.
    buckets: Vec<(f64, f64)>,
}

/// Every route's totals at one moment, by route name ("" for requests no route matched).
type Reading = HashMap<String, Totals>;

/// Reads the two metric families out of a Prometheus text rendering.
fn read(text: &str) -> Reading {
    // Only the lines of the two families go to the parser: the rest of the registry can be
    // large, and is not needed here.
    let lines = text
        .lines()
        .filter(|l| {
            let name = l.strip_prefix("# TYPE ").unwrap_or(l);
            name.starts_with(REQUESTS) || name.starts_with(LATENCY)
        })
        .map(|l| Ok(l.to_string()));
    let mut reading = Reading::new();
    let Ok(scrape) = prometheus_parse::Scrape::parse(lines) else { return reading };
    for s in scrape.samples {
        let route = s.labels.get("route").unwrap_or("").to_string();
        match (s.metric.as_str(), s.value) {
            (REQUESTS, prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Untyped(v)) => {
                let t = reading.entry(route).or_default();
                t.requests += v;
                if s.labels.get("class") == Some("5xx") {
                    t.errors += v;
                }
            }
            (LATENCY, prometheus_parse::Value::Histogram(counts)) => {
                let t = reading.entry(route).or_default();
                t.buckets = counts.iter().map(|c| (c.less_than, c.count)).collect();
                t.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
            }
            _ => {}
        }
    }
    reading
}

/// What happened between two readings `secs` apart.
fn sample(before: &Reading, now: &Reading, secs: f64, at: u64) -> TrafficSample {
    let mut total = Totals::default();
    let mut routes: Vec<(String, Totals)> = Vec::new();
    for (route, t) in now {
        let prev = before.get(route);
        let delta = |f: fn(&Totals) -> f64| (f(t) - prev.map_or(0.0, f)).max(0.0);
        let buckets: Vec<(f64, f64)> = t
            .buckets
            .iter()
            .map(|(le, c)| {
                let was = prev.and_then(|p| p.buckets.iter().find(|(l, _)| l == le)).map_or(0.0, |(_, c)| *c);
                (*le, (c - was).max(0.0))
            })
            .collect();
        let d = Totals { requests: delta(|t| t.requests), errors: delta(|t| t.errors), buckets };
        total.requests += d.requests;
        total.errors += d.errors;
        for (le, c) in &d.buckets {
            match total.buckets.iter_mut().find(|(l, _)| l == le) {
                Some(b) => b.1 += c,
                None => total.buckets.push((*le, *c)),
            }
        }
        if d.requests > 0.0 && !route.is_empty() {
            routes.push((route.clone(), d));
        }
    }
    total.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    routes.sort_by(|a, b| b.1.requests.total_cmp(&a.1.requests).then_with(|| a.0.cmp(&b.0)));
    routes.truncate(TOP_ROUTES);
    let traffic = |route: String, d: &Totals| RouteTraffic {
        route,
        requests_per_second: d.requests / secs,
        error_ratio: if d.requests > 0.0 { d.errors / d.requests } else { 0.0 },
        p99_ms: quantile(0.99, &d.buckets) * 1000.0,
    };
    TrafficSample {
        at,
        total: Some(traffic(String::new(), &total)),
        routes: routes.iter().map(|(r, d)| traffic(r.clone(), d)).collect(),
    }
}

/// The `q` quantile of cumulative buckets, interpolated linearly within the bucket it
/// falls in (Prometheus' `histogram_quantile`); the highest finite bound when it falls in
/// `+Inf`; 0 without observations.
fn quantile(q: f64, buckets: &[(f64, f64)]) -> f64 {
    let Some(&(_, count)) = buckets.last() else { return 0.0 };
    if count <= 0.0 {
        return 0.0;
    }
    let rank = q * count;
    let mut lower = (0.0, 0.0);
    for &(le, c) in buckets {
        if c >= rank {
            if le.is_infinite() {
                return lower.0;
            }
            let within = if c > lower.1 { (rank - lower.1) / (c - lower.1) } else { 1.0 };
            return lower.0 + (le - lower.0) * within;
        }
        lower = (le, c);
    }
    lower.0
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// Samples the registry every [`INTERVAL`] until shutdown.
pub async fn run(handle: PrometheusHandle, log: Arc<TrafficLog>, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut before: Option<(Reading, std::time::Instant)> = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        let h = handle.clone();
        // Rendering and parsing are CPU work: off the request path's worker threads.
        let Ok(reading) = tokio::task::spawn_blocking(move || read(&h.render())).await else { continue };
        let taken = std::time::Instant::now();
        if let Some((prev, at)) = &before {
            let secs = taken.duration_since(*at).as_secs_f64().max(0.001);
            log.push(sample(prev, &reading, secs, now_ms()));
        }
        before = Some((reading, taken));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BEFORE: &str = r#"# TYPE raftgate_requests_total counter
raftgate_requests_total{route="a",upstream="u",class="2xx"} 100
raftgate_requests_total{route="a",upstream="u",class="5xx"} 0
# TYPE raftgate_request_duration_seconds histogram
raftgate_request_duration_seconds_bucket{route="a",le="0.001"} 50
raftgate_request_duration_seconds_bucket{route="a",le="0.01"} 100
raftgate_request_duration_seconds_bucket{route="a",le="+Inf"} 100
raftgate_request_duration_seconds_sum{route="a"} 0.5
raftgate_request_duration_seconds_count{route="a"} 100
# TYPE raftgate_other_total counter
raftgate_other_total 7
"#;

    const AFTER: &str = r#"# TYPE raftgate_requests_total counter
raftgate_requests_total{route="a",upstream="u",class="2xx"} 280
raftgate_requests_total{route="a",upstream="u",class="5xx"} 20
raftgate_requests_total{route="b",upstream="u",class="2xx"} 10
raftgate_requests_total{route="",upstream="",class="4xx"} 10
# TYPE raftgate_request_duration_seconds histogram
raftgate_request_duration_seconds_bucket{route="a",le="0.001"} 50
raftgate_request_duration_seconds_bucket{route="a",le="0.01"} 250
raftgate_request_duration_seconds_bucket{route="a",le="+Inf"} 300
raftgate_request_duration_seconds_bucket{route="b",le="0.001"} 10
raftgate_request_duration_seconds_bucket{route="b",le="0.01"} 10
raftgate_request_duration_seconds_bucket{route="b",le="+Inf"} 10
"#;

    #[test]
    fn a_sample_is_the_difference_of_two_readings() {
        let (before, after) = (read(BEFORE), read(AFTER));
        assert_eq!(before["a"].requests, 100.0);
        assert_eq!(after["a"].errors, 20.0);
        let s = sample(&before, &after, 10.0, 1);
        // Busiest first; the unrouted requests count in the total only.
        let names: Vec<&str> = s.routes.iter().map(|r| r.route.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        let a = &s.routes[0];
        assert_eq!(a.requests_per_second, 20.0);
        assert_eq!(a.error_ratio, 0.1);
        // 200 new observations: 150 in (1 ms, 10 ms], 50 above 10 ms. Rank 198 is past the
        // last finite bucket: the estimate is that bound, as histogram_quantile says.
        assert_eq!(a.p99_ms, 10.0);
        let total = s.total.unwrap();
        assert_eq!(total.requests_per_second, 22.0);
        assert!((total.error_ratio - 20.0 / 220.0).abs() < 1e-9);
    }

    #[test]
    fn quantiles_interpolate_within_a_bucket() {
        let close = |a: f64, b: f64| (a - b).abs() < 1e-12;
        assert_eq!(quantile(0.99, &[]), 0.0);
        assert!(close(quantile(0.5, &[(0.001, 0.0), (0.01, 100.0), (f64::INFINITY, 100.0)]), 0.0055));
        assert!(close(quantile(0.99, &[(0.001, 100.0), (0.01, 100.0), (f64::INFINITY, 100.0)]), 0.00099));
    }
}
