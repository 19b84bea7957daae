//! The compiled runtime of one config snapshot, and the engine that swaps it atomically.
//!
//! `Runtime::build` runs off the request path: it compiles the route table, reuses the
//! `Upstream`s whose definition did not change (so their connection pools and balancer
//! state carry over) and loads certificates. The engine publishes it with one pointer swap;
//! a request loads the current runtime once and finishes on it, whatever happens after.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;
use metrics::{Counter, Histogram};
use schemas::snapshot::{FilterSpec, RouteSpec};
use schemas::{ConfigSnapshot, ContentHash, Duration};

use super::router::RouteTable;
use super::tls::CertStore;
use super::upstream::Upstream;

/// Where a config came from, for status and metrics.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ConfigOrigin {
    /// Git commit, when the config came from Git.
    pub commit: Option<String>,
    /// A directory or repository, for humans.
    pub source: String,
}

#[derive(Debug)]
pub struct Runtime {
    pub snapshot: Arc<ConfigSnapshot>,
    pub hash: ContentHash,
    pub origin: ConfigOrigin,
    pub loaded_at: SystemTime,
    pub router: RouteTable<RuleRuntime>,
    pub upstreams: HashMap<String, Arc<Upstream>>,
}

/// One rule, ready to serve.
#[derive(Debug)]
pub struct RuleRuntime {
    pub route: Arc<str>,
    pub rule: usize,
    pub backends: Vec<Backend>,
    pub total_weight: u64,
    pub filters: Vec<FilterSpec>,
    /// The redirect filter, when the rule answers with a redirect.
    pub redirect: Option<FilterSpec>,
    pub request_timeout: Option<Duration>,
    pub backend_timeout: Option<Duration>,
    /// Overrides the node's request body limit.
    pub max_body_bytes: Option<u64>,
    pub latency: Histogram,
}

#[derive(Debug)]
pub struct Backend {
    pub upstream: Arc<Upstream>,
    pub weight: u32,
    /// `raftgate_requests_total` for this route and upstream, by status class 1xx..5xx.
    pub requests: [Counter; 5],
}

impl RuleRuntime {
    /// Picks a backend in proportion to the weights; returns its index.
    pub fn pick_backend(&self) -> Option<usize> {
        if self.total_weight == 0 {
            return None;
        }
        if self.backends.len() == 1 {
            return Some(0);
        }
        let mut r = fastrand::u64(..self.total_weight);
        for (i, b) in self.backends.iter().enumerate() {
            let w = u64::from(b.weight);
            if r < w {
                return Some(i);
            }
            r -= w;
        }
        Some(self.backends.len() - 1)
    }
}

pub fn status_counters(route: &str, upstream: &str) -> [Counter; 5] {
    ["1xx", "2xx", "3xx", "4xx", "5xx"].map(|class| {
        metrics::counter!(
            "raftgate_requests_total",
            "route" => route.to_string(),
            "upstream" => upstream.to_string(),
            "class" => class
        )
    })
}

impl Runtime {
    /// Compiles a snapshot, reusing unchanged upstreams from `previous`. Certificates are
    /// loaded only when `tls` is set (the node has a TLS listener).
    pub fn build(
        snapshot: Arc<ConfigSnapshot>,
        origin: ConfigOrigin,
        previous: Option<&Runtime>,
        roots: &Arc<rustls::RootCertStore>,
        tls: bool,
    ) -> anyhow::Result<(Self, CertStore)> {
        let mut upstreams = HashMap::new();
        for spec in &snapshot.upstreams {
            let reused = previous.and_then(|p| p.upstreams.get(&spec.name)).filter(|u| u.spec == *spec);
            let up = match reused {
                Some(u) => u.clone(),
                None => Arc::new(Upstream::new(spec.clone(), roots)?),
            };
            upstreams.insert(spec.name.clone(), up);
        }
        let router = RouteTable::build(&snapshot.routes, |route: &RouteSpec, ri| {
            let rule = &route.rules[ri];
            let backends: Vec<Backend> = rule
                .backends
                .iter()
                .filter_map(|b| {
                    // `schemas` guarantees every reference resolves.
                    let upstream = upstreams.get(&b.upstream)?.clone();
                    Some(Backend { upstream, weight: b.weight, requests: status_counters(&route.name, &b.upstream) })
                })
                .collect();
            RuleRuntime {
                route: Arc::from(route.name.as_str()),
                rule: ri,
                total_weight: backends.iter().map(|b| u64::from(b.weight)).sum(),
                backends,
                redirect: rule.filters.iter().find(|f| matches!(f, FilterSpec::RequestRedirect { .. })).cloned(),
                filters: rule.filters.clone(),
                request_timeout: rule.request_timeout,
                backend_timeout: rule.backend_request_timeout,
                max_body_bytes: rule.max_request_body_bytes,
                latency: metrics::histogram!("raftgate_request_duration_seconds", "route" => route.name.clone()),
            }
        });
        let certs = if tls { CertStore::load(&snapshot.certificates) } else { CertStore::default() };
        let hash = snapshot.content_hash();
        Ok((Runtime { snapshot, hash, origin, loaded_at: SystemTime::now(), router, upstreams }, certs))
    }
}

/// Holds the current runtime. Readers never wait: `current()` is one atomic load.
#[derive(Debug)]
pub struct Engine {
    current: ArcSwap<Runtime>,
    pub certs: Arc<ArcSwap<CertStore>>,
    roots: Arc<rustls::RootCertStore>,
    tls: bool,
    loaded: std::sync::atomic::AtomicBool,
    swap_lock: tokio::sync::Mutex<()>,
}

impl Engine {
    /// An engine serving an empty config (every request gets 404) until the first swap.
    /// `tls`: the node terminates TLS, so certificates must be loaded.
    pub fn new(roots: Arc<rustls::RootCertStore>, tls: bool) -> anyhow::Result<Self> {
        let snapshot = Arc::new(ConfigSnapshot::default());
        let (rt, certs) = Runtime::build(snapshot, ConfigOrigin::default(), None, &roots, tls)?;
        Ok(Self {
            current: ArcSwap::from_pointee(rt),
            certs: Arc::new(ArcSwap::from_pointee(certs)),
            roots,
            tls,
            loaded: false.into(),
            swap_lock: tokio::sync::Mutex::new(()),
        })
    }

    pub fn current(&self) -> Arc<Runtime> {
        self.current.load_full()
    }

    /// True once a config has been applied.
    pub fn is_loaded(&self) -> bool {
        self.loaded.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Compiles `snapshot` off the request path and swaps it in. On failure the current
    /// config stays. Swaps are serialised so two producers cannot interleave.
    pub async fn apply(&self, snapshot: Arc<ConfigSnapshot>, origin: ConfigOrigin) -> anyhow::Result<ContentHash> {
        let _guard = self.swap_lock.lock().await;
        let previous = self.current();
        let roots = self.roots.clone();
        let tls = self.tls;
        let (rt, certs) =
            tokio::task::spawn_blocking(move || Runtime::build(snapshot, origin, Some(&previous), &roots, tls))
                .await
                .map_err(|e| anyhow::anyhow!("config compile panicked: {e}"))??;
        let hash = rt.hash;
        let routes = rt.router.rule_count();
        let commit = rt.origin.commit.clone().unwrap_or_default();
        self.certs.store(Arc::new(certs));
        let old = self.current.swap(Arc::new(rt));
        if self.is_loaded() {
            // An info metric: only the current config's series is 1.
            let old_commit = old.origin.commit.clone().unwrap_or_default();
            metrics::gauge!("raftgate_config_info", "hash" => old.hash.to_string(), "commit" => old_commit).set(0.0);
        }
        self.loaded.store(true, std::sync::atomic::Ordering::Release);
        metrics::counter!("raftgate_config_swaps_total").increment(1);
        metrics::gauge!("raftgate_config_info", "hash" => hash.to_string(), "commit" => commit).set(1.0);
        tracing::info!(hash = %hash.short(), rules = routes, "config applied");
        Ok(hash)
    }
}
