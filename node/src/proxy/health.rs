//! Active health checks, the state: each endpoint is taken out of rotation after
//! `unhealthyThreshold` failed probes in a row, and back in after `healthyThreshold` good
//! ones. Endpoints start healthy, so a new config serves at once. The probes themselves are
//! sent by `prober`.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use schemas::snapshot::ActiveHealthCheckSpec;

/// One endpoint's health, kept by the endpoint (so it survives a new endpoint set).
#[derive(Debug)]
pub struct HealthState {
    healthy: AtomicBool,
    /// Consecutive probe results that disagree with `healthy`.
    streak: AtomicU32,
    gauge: metrics::Gauge,
}

impl HealthState {
    pub fn new(upstream: &str, address: &str) -> Self {
        let gauge = metrics::gauge!("raftgate_endpoint_healthy", "upstream" => upstream.to_string(), "endpoint" => address.to_string());
        gauge.set(1.0);
        HealthState { healthy: AtomicBool::new(true), streak: AtomicU32::new(0), gauge }
    }

    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Counts one probe result; returns the new health when it changed.
    pub fn observe(&self, spec: &ActiveHealthCheckSpec, ok: bool) -> Option<bool> {
        let healthy = self.healthy.load(Ordering::Relaxed);
        if ok == healthy {
            self.streak.store(0, Ordering::Relaxed);
            return None;
        }
        let streak = self.streak.fetch_add(1, Ordering::Relaxed) + 1;
        let needed = if healthy { spec.unhealthy_threshold } else { spec.healthy_threshold };
        if streak < needed {
            return None;
        }
        self.streak.store(0, Ordering::Relaxed);
        self.healthy.store(ok, Ordering::Relaxed);
        self.gauge.set(if ok { 1.0 } else { 0.0 });
        Some(ok)
    }
}

#[cfg(test)]
mod tests {
    use schemas::Duration;

    use super::*;

    #[test]
    fn thresholds_take_endpoints_out_and_back() {
        let spec = ActiveHealthCheckSpec {
            path: "/h".into(),
            interval: Duration::from_millis(1_000),
            timeout: Duration::from_millis(100),
            healthy_threshold: 2,
            unhealthy_threshold: 3,
            expected_statuses: vec![200],
        };
        let h = HealthState::new("u", "a:1");
        assert_eq!(h.observe(&spec, false), None);
        assert_eq!(h.observe(&spec, true), None, "a good probe breaks the streak");
        assert_eq!(h.observe(&spec, false), None);
        assert_eq!(h.observe(&spec, false), None);
        assert_eq!(h.observe(&spec, false), Some(false));
        assert!(!h.is_healthy());
        assert_eq!(h.observe(&spec, true), None);
        assert_eq!(h.observe(&spec, true), Some(true));
        assert!(h.is_healthy());
    }
}
