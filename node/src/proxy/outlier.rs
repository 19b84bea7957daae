//! Outlier detection (passive health): an endpoint that fails `consecutiveFailures` real
//! requests in a row is ejected, gets no traffic for a while, then comes back on its own.
//!
//! The ejection time is `baseEjectionTime` × how many times the endpoint was ejected
//! recently (capped at five minutes, or the base if that is longer), so a flapping endpoint
//! stays out longer each time; the count decays by one for every `baseEjectionTime` the
//! endpoint stays in. At most `maxEjectionPercent` of the endpoints (rounded down) are out
//! at once: detection never empties a pool by itself.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Mutex;

use schemas::snapshot::PassiveHealthCheckSpec;

const MAX_EJECTION_MS: u64 = 300_000;

#[derive(Debug)]
pub struct Outlier {
    spec: PassiveHealthCheckSpec,
    endpoints: Vec<Endpoint>,
    /// Serialises ejection decisions, which must count the endpoints already out.
    decide: Mutex<()>,
    ejections: Vec<metrics::Counter>,
}

#[derive(Debug, Default)]
struct Endpoint {
    consecutive: AtomicU32,
    /// 0 when in; otherwise when the ejection ends.
    ejected_until_ms: AtomicU64,
    /// Recent ejections, and when the last one ended (for the decay).
    times: AtomicU32,
    returned_ms: AtomicU64,
}

impl Outlier {
    pub fn new(upstream: &str, addresses: &[String], spec: &PassiveHealthCheckSpec) -> Self {
        Self {
            spec: spec.clone(),
            endpoints: addresses.iter().map(|_| Endpoint::default()).collect(),
            decide: Mutex::new(()),
            ejections: addresses
                .iter()
                .map(|a| {
                    metrics::counter!("raftgate_outlier_ejections_total", "upstream" => upstream.to_string(), "endpoint" => a.clone())
                })
                .collect(),
        }
    }

    /// Whether endpoint `i` is ejected now.
    pub fn is_ejected(&self, i: usize, now_ms: u64) -> bool {
        self.endpoints[i].ejected_until_ms.load(Ordering::Relaxed) > now_ms
    }

    /// Milliseconds until endpoint `i` comes back; 0 when it is in.
    pub fn ejected_for_ms(&self, i: usize, now_ms: u64) -> u64 {
        self.endpoints[i].ejected_until_ms.load(Ordering::Relaxed).saturating_sub(now_ms)
    }

    pub fn success(&self, i: usize) {
        // Reading first keeps the hot path free of writes to a shared cache line.
        if self.endpoints[i].consecutive.load(Ordering::Relaxed) != 0 {
            self.endpoints[i].consecutive.store(0, Ordering::Relaxed);
        }
    }

    /// Counts a failure; returns true when it ejected the endpoint.
    pub fn failure(&self, i: usize, now_ms: u64) -> bool {
        let ep = &self.endpoints[i];
        let n = ep.consecutive.fetch_add(1, Ordering::Relaxed) + 1;
        if n < self.spec.consecutive_failures || self.is_ejected(i, now_ms) {
            return false;
        }
        let _guard = self.decide.lock().unwrap_or_else(|e| e.into_inner());
        let out = (0..self.endpoints.len()).filter(|j| self.is_ejected(*j, now_ms)).count();
        let allowed = self.endpoints.len() * self.spec.max_ejection_percent as usize / 100;
        if out >= allowed {
            return false;
        }
        let base = self.spec.base_ejection_time.as_millis();
        // Decay: one step per base interval spent back in since the last ejection.
        let returned = ep.returned_ms.load(Ordering::Relaxed);
        let mut times = ep.times.load(Ordering::Relaxed);
        if returned != 0 && now_ms > returned {
            times = times.saturating_sub(((now_ms - returned) / base.max(1)) as u32);
        }
        times += 1;
        let ms = base.saturating_mul(u64::from(times)).min(MAX_EJECTION_MS.max(base));
        ep.times.store(times, Ordering::Relaxed);
        ep.returned_ms.store(now_ms + ms, Ordering::Relaxed);
        ep.ejected_until_ms.store(now_ms + ms, Ordering::Relaxed);
        ep.consecutive.store(0, Ordering::Relaxed);
        self.ejections[i].increment(1);
        tracing::warn!(endpoint = i, failures = n, ejected_for_ms = ms, "outlier detection ejected an endpoint");
        true
    }
}

#[cfg(test)]
mod tests {
    use schemas::Duration;

    use super::*;

    fn outlier(n: usize, percent: u32) -> Outlier {
        let addrs: Vec<String> = (0..n).map(|i| format!("10.0.0.{i}:80")).collect();
        let spec = PassiveHealthCheckSpec {
            consecutive_failures: 2,
            base_ejection_time: Duration::from_millis(1_000),
            max_ejection_percent: percent,
        };
        Outlier::new("u", &addrs, &spec)
    }

    #[test]
    fn ejects_after_consecutive_failures_for_growing_times() {
        let o = outlier(2, 50);
        assert!(!o.failure(0, 10));
        o.success(0);
        assert!(!o.failure(0, 11));
        assert!(o.failure(0, 12));
        assert!(o.is_ejected(0, 13) && !o.is_ejected(0, 1_012));
        // Back in at 1012; failing again soon doubles the time.
        assert!(!o.failure(0, 1_100));
        assert!(o.failure(0, 1_101));
        assert_eq!(o.ejected_for_ms(0, 1_101), 2_000);
    }

    #[test]
    fn never_ejects_more_than_the_percentage() {
        let o = outlier(4, 50);
        for i in 0..4 {
            o.failure(i, 0);
            o.failure(i, 0);
        }
        assert_eq!((0..4).filter(|i| o.is_ejected(*i, 1)).count(), 2);
        let o = outlier(1, 50);
        o.failure(0, 0);
        assert!(!o.failure(0, 0), "half of one endpoint rounds down to none");
    }
}
