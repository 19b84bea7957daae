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

/// An upstream's outlier detection: the policy, and the lock its ejection decisions take.
#[derive(Debug)]
pub struct Outlier {
    spec: PassiveHealthCheckSpec,
    /// Serialises ejection decisions, which must count the endpoints already out.
    decide: Mutex<()>,
}

/// One endpoint's record, kept by the endpoint (so it survives a new endpoint set).
#[derive(Debug)]
pub struct OutlierState {
    consecutive: AtomicU32,
    /// 0 when in; otherwise when the ejection ends.
    ejected_until_ms: AtomicU64,
    /// Recent ejections, and when the last one ended (for the decay).
    times: AtomicU32,
    returned_ms: AtomicU64,
    ejections: metrics::Counter,
}

impl OutlierState {
    pub fn new(upstream: &str, address: &str) -> Self {
        OutlierState {
            consecutive: AtomicU32::new(0),
            ejected_until_ms: AtomicU64::new(0),
            times: AtomicU32::new(0),
            returned_ms: AtomicU64::new(0),
            ejections: metrics::counter!("raftgate_outlier_ejections_total", "upstream" => upstream.to_string(), "endpoint" => address.to_string()),
        }
    }

    /// Whether the endpoint is ejected now.
    pub fn is_ejected(&self, now_ms: u64) -> bool {
        self.ejected_until_ms.load(Ordering::Relaxed) > now_ms
    }

    /// Milliseconds until the endpoint comes back; 0 when it is in.
    pub fn ejected_for_ms(&self, now_ms: u64) -> u64 {
        self.ejected_until_ms.load(Ordering::Relaxed).saturating_sub(now_ms)
    }

    pub fn success(&self) {
        // Reading first keeps the hot path free of writes to a shared cache line.
        if self.consecutive.load(Ordering::Relaxed) != 0 {
            self.consecutive.store(0, Ordering::Relaxed);
        }
    }
}

impl Outlier {
    pub fn new(spec: &PassiveHealthCheckSpec) -> Self {
        Self { spec: spec.clone(), decide: Mutex::new(()) }
    }

    /// Counts a failure of `ep`, one of the endpoints `all` (the upstream's current set);
    /// returns how long it ejected the endpoint for, when it did.
    pub fn failure<'a>(
        &self,
        ep: &OutlierState,
        all: impl Iterator<Item = &'a OutlierState> + Clone,
        now_ms: u64,
    ) -> Option<u64> {
        let n = ep.consecutive.fetch_add(1, Ordering::Relaxed) + 1;
        if n < self.spec.consecutive_failures || ep.is_ejected(now_ms) {
            return None;
        }
        let _guard = self.decide.lock().unwrap_or_else(|e| e.into_inner());
        let out = all.clone().filter(|o| o.is_ejected(now_ms)).count();
        let allowed = all.count() * self.spec.max_ejection_percent as usize / 100;
        if out >= allowed {
            return None;
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
        ep.ejections.increment(1);
        Some(ms)
    }
}

#[cfg(test)]
mod tests {
    use schemas::Duration;

    use super::*;

    fn outlier(n: usize, percent: u32) -> (Outlier, Vec<OutlierState>) {
        let spec = PassiveHealthCheckSpec {
            consecutive_failures: 2,
            base_ejection_time: Duration::from_millis(1_000),
            max_ejection_percent: percent,
        };
        (Outlier::new(&spec), (0..n).map(|i| OutlierState::new("u", &format!("10.0.0.{i}:80"))).collect())
    }

    #[test]
    fn ejects_after_consecutive_failures_for_growing_times() {
        let (o, eps) = outlier(2, 50);
        let e = &eps[0];
        assert!(o.failure(e, eps.iter(), 10).is_none());
        e.success();
        assert!(o.failure(e, eps.iter(), 11).is_none());
        assert_eq!(o.failure(e, eps.iter(), 12), Some(1_000));
        assert!(e.is_ejected(13) && !e.is_ejected(1_012));
        // Back in at 1012; failing again soon doubles the time.
        assert!(o.failure(e, eps.iter(), 1_100).is_none());
        assert_eq!(o.failure(e, eps.iter(), 1_101), Some(2_000));
        assert_eq!(e.ejected_for_ms(1_101), 2_000);
    }

    #[test]
    fn never_ejects_more_than_the_percentage() {
        let (o, eps) = outlier(4, 50);
        for e in &eps {
            o.failure(e, eps.iter(), 0);
            o.failure(e, eps.iter(), 0);
        }
        assert_eq!(eps.iter().filter(|e| e.is_ejected(1)).count(), 2);
        let (o, eps) = outlier(1, 50);
        o.failure(&eps[0], eps.iter(), 0);
        assert!(o.failure(&eps[0], eps.iter(), 0).is_none(), "half of one endpoint rounds down to none");
    }
}
