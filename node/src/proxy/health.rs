//! Active health checks, the state: each endpoint is taken out of rotation after
//! `unhealthyThreshold` failed probes in a row, and back in after `healthyThreshold` good
//! ones. Endpoints start healthy, so a new config serves at once. The probes themselves are
//! sent by `prober`.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use schemas::snapshot::ActiveHealthCheckSpec;

#[derive(Debug)]
pub struct Health {
    pub spec: ActiveHealthCheckSpec,
    endpoints: Vec<EndpointHealth>,
}

#[derive(Debug)]
struct EndpointHealth {
    healthy: AtomicBool,
    /// Consecutive probe results that disagree with `healthy`.
    streak: AtomicU32,
    gauge: metrics::Gauge,
}

impl Health {
    pub fn new(upstream: &str, addresses: &[String], spec: &ActiveHealthCheckSpec) -> Self {
        let endpoints = addresses
            .iter()
            .map(|a| {
                let gauge = metrics::gauge!("raftgate_endpoint_healthy", "upstream" => upstream.to_string(), "endpoint" => a.clone());
                gauge.set(1.0);
                EndpointHealth { healthy: AtomicBool::new(true), streak: AtomicU32::new(0), gauge }
            })
            .collect();
        Self { spec: spec.clone(), endpoints }
    }

    pub fn is_healthy(&self, i: usize) -> bool {
        self.endpoints[i].healthy.load(Ordering::Relaxed)
    }

    /// Counts one probe result; returns the new health when it changed.
    pub fn observe(&self, i: usize, ok: bool) -> Option<bool> {
        let ep = &self.endpoints[i];
        let healthy = ep.healthy.load(Ordering::Relaxed);
        if ok == healthy {
            ep.streak.store(0, Ordering::Relaxed);
            return None;
        }
        let streak = ep.streak.fetch_add(1, Ordering::Relaxed) + 1;
        let needed = if healthy { self.spec.unhealthy_threshold } else { self.spec.healthy_threshold };
        if streak < needed {
            return None;
        }
        ep.streak.store(0, Ordering::Relaxed);
        ep.healthy.store(ok, Ordering::Relaxed);
        ep.gauge.set(if ok { 1.0 } else { 0.0 });
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
        let h = Health::new("u", &["a:1".to_string()], &spec);
        assert_eq!(h.observe(0, false), None);
        assert_eq!(h.observe(0, true), None, "a good probe breaks the streak");
        assert_eq!(h.observe(0, false), None);
        assert_eq!(h.observe(0, false), None);
        assert_eq!(h.observe(0, false), Some(false));
        assert!(!h.is_healthy(0));
        assert_eq!(h.observe(0, true), None);
        assert_eq!(h.observe(0, true), Some(true));
        assert!(h.is_healthy(0));
    }
}
