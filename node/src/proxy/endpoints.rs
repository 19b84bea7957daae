//! An upstream's endpoints as one immutable set: the static ones of its spec plus those DNS
//! found (`dns`). When DNS answers change, a new set replaces the old one atomically (an
//! `ArcSwap` in `Upstream`), without a Raft entry or a config swap. The endpoints that stay
//! keep their state (in-flight count, health, outlier record, session id) because the new
//! set holds the same `Arc<Endpoint>`. A request holds the endpoint it picked, so a removed
//! endpoint drains: requests in flight on it finish, new ones go elsewhere.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use http::uri::Authority;
use schemas::snapshot::{DnsSpec, UpstreamSpec};

use super::balancer::{Balancer, PickContext};
use super::health::HealthState;
use super::outlier::OutlierState;

/// One endpoint and the state that follows it from set to set.
#[derive(Debug)]
pub struct Endpoint {
    /// `host:port` as the spec writes it, or `ip:port` when DNS found it.
    pub address: String,
    pub authority: Authority,
    /// Found in DNS rather than listed in the spec.
    pub from_dns: bool,
    in_flight: AtomicUsize,
    /// Present when the upstream has active health checks.
    pub health: Option<HealthState>,
    /// Present when the upstream has outlier detection.
    pub outlier: Option<OutlierState>,
    /// The id sessions name this endpoint by (`session`), made when first needed.
    pub session_id: OnceLock<u64>,
}

impl Endpoint {
    fn new(spec: &UpstreamSpec, entry: &Entry) -> anyhow::Result<Self> {
        let authority = entry
            .address
            .parse::<Authority>()
            .map_err(|e| anyhow::anyhow!("upstream `{}`: endpoint `{}`: {e}", spec.name, entry.address))?;
        Ok(Endpoint {
            authority,
            from_dns: entry.from_dns,
            in_flight: AtomicUsize::new(0),
            health: spec.active_health_check.as_ref().map(|_| HealthState::new(&spec.name, &entry.address)),
            outlier: spec.passive_health_check.as_ref().map(|_| OutlierState::new(&spec.name, &entry.address)),
            session_id: OnceLock::new(),
            address: entry.address.clone(),
        })
    }

    /// Requests in flight on this endpoint.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Whether the endpoint may get traffic: healthy and not ejected.
    pub fn available(&self, now_ms: u64) -> bool {
        self.health.as_ref().is_none_or(HealthState::is_healthy)
            && self.outlier.as_ref().is_none_or(|o| !o.is_ejected(now_ms))
    }

    /// Counts a request in flight here until the guard drops.
    pub fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }
}

/// What a set is made of: one line per endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub address: String,
    pub weight: u32,
    pub from_dns: bool,
}

/// The endpoints an upstream balances over at one moment.
#[derive(Debug)]
pub struct EndpointSet {
    pub list: Vec<Arc<Endpoint>>,
    pub weights: Vec<u32>,
    balancer: Balancer,
}

impl EndpointSet {
    /// The set of `entries` (unique addresses), reusing the endpoints of `previous` that
    /// stay, with their state.
    pub fn build(spec: &UpstreamSpec, mut entries: Vec<Entry>, previous: Option<&EndpointSet>) -> anyhow::Result<Self> {
        entries.sort_by(|a, b| a.address.cmp(&b.address));
        let before: std::collections::HashMap<(&str, bool), &Arc<Endpoint>> =
            previous.iter().flat_map(|p| p.list.iter()).map(|x| ((x.address.as_str(), x.from_dns), x)).collect();
        let mut list = Vec::with_capacity(entries.len());
        for e in &entries {
            list.push(match before.get(&(e.address.as_str(), e.from_dns)) {
                Some(x) => (*x).clone(),
                None => Arc::new(Endpoint::new(spec, e)?),
            });
        }
        let named: Vec<(&str, u32)> = entries.iter().map(|e| (e.address.as_str(), e.weight)).collect();
        Ok(EndpointSet {
            balancer: Balancer::new(&spec.load_balancer, &named),
            weights: entries.iter().map(|e| e.weight).collect(),
            list,
        })
    }

    /// What the set is made of, in address order.
    pub fn entries(&self) -> Vec<Entry> {
        self.list
            .iter()
            .zip(&self.weights)
            .map(|(e, w)| Entry { address: e.address.clone(), weight: *w, from_dns: e.from_dns })
            .collect()
    }

    /// The balancer's choice; the set is not empty.
    pub fn choose(&self, ctx: &PickContext<'_>) -> &Arc<Endpoint> {
        &self.list[self.balancer.pick(&self.weights, |i| self.list[i].in_flight(), ctx)]
    }

    /// A weighted draw among `candidates` (indexes into the set).
    pub fn weighted_choice(&self, candidates: &[usize]) -> Option<&Arc<Endpoint>> {
        let total: u64 = candidates.iter().map(|j| u64::from(self.weights[*j])).sum();
        let mut r = fastrand::u64(..total.max(1));
        for j in candidates {
            let w = u64::from(self.weights[*j]);
            if r < w {
                return Some(&self.list[*j]);
            }
            r -= w;
        }
        candidates.last().map(|j| &self.list[*j])
    }
}

/// Marks one request in flight on an endpoint until dropped.
#[derive(Debug)]
pub struct InFlight(Arc<Endpoint>);

impl InFlight {
    pub fn endpoint(&self) -> &Arc<Endpoint> {
        &self.0
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// An upstream's DNS source: the spec and how its resolutions went.
#[derive(Debug)]
pub struct DnsState {
    pub spec: DnsSpec,
    status: Mutex<DnsStatus>,
    /// True once the first resolution finished (well or not): requests that found the set
    /// still empty wait for it.
    settled: tokio::sync::watch::Sender<bool>,
    pub gauge: metrics::Gauge,
}

/// How the last resolutions went, for the admin API.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DnsStatus {
    /// `pending` (not resolved yet), `ok`, `error` or `empty` (no usable records).
    pub result: &'static str,
    /// Why the last resolution failed; empty after a good one.
    pub error: String,
    /// When the last good resolution was; `None` before the first.
    pub last_ok: Option<std::time::Instant>,
    /// Resolutions that failed in a row.
    pub failures: u32,
}

impl DnsState {
    pub fn new(upstream: &str, spec: &DnsSpec) -> Self {
        DnsState {
            spec: spec.clone(),
            status: Mutex::new(DnsStatus { result: "pending", ..DnsStatus::default() }),
            settled: tokio::sync::watch::Sender::new(false),
            gauge: metrics::gauge!("raftgate_dns_endpoints", "upstream" => upstream.to_string()),
        }
    }

    pub fn status(&self) -> DnsStatus {
        self.status.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Records how a resolution went and releases the requests waiting for the first one.
    pub fn record(&self, update: impl FnOnce(&mut DnsStatus)) {
        update(&mut self.status.lock().unwrap_or_else(|e| e.into_inner()));
        self.settled.send_replace(true);
    }

    /// Waits until the first resolution finished, at most `limit`.
    pub async fn settled(&self, limit: std::time::Duration) {
        let mut rx = self.settled.subscribe();
        let _ = tokio::time::timeout(limit, rx.wait_for(|s| *s)).await;
    }
}
