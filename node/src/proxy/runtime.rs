//! The compiled runtime of one config snapshot, and the engine that swaps it atomically.
//!
//! `Runtime::build` runs off the request path: it compiles the route table, reuses the
//! `Upstream`s whose definition did not change (so their connection pools and balancer
//! state carry over) and loads certificates. The engine publishes it with one pointer swap;
//! a request loads the current runtime once and finishes on it, whatever happens after.

use std::collections::HashMap;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{HeaderName, HeaderValue, StatusCode};
use metrics::{Counter, Histogram};
use schemas::snapshot::{CacheSpec, FallbackSpec, HttpsRedirectSpec, RetrySpec, RouteSpec};
use schemas::{ConfigSnapshot, ContentHash, Duration};

use super::breaker::Phase;
use super::certs::CertStore;
use super::clock;
use super::compress::Compressor;
use super::filters::{header_pairs, RuleFilters};
use super::mirror::Mirror;
use super::prober;
use super::ratelimit::bucket::RateLimiter;
use super::router::RouteTable;
use super::security::policy::Security;
use super::session::Persistence;
use super::tls::{Sessions, TlsBuild};
use super::upstream::Upstream;

/// Where a config came from, for status and metrics.
/// How long building one config on a node may take (certificates read and parsed,
/// regular expressions compiled, pools set up) before it is abandoned.
pub const APPLY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// `raftgate_config_info{hash,commit} 1` for the config `rt` is, in the Prometheus text
/// format. Written by the `/metrics` handler itself rather than kept in the metrics
/// registry, which never forgets a series: one per config ever applied grew a node's
/// memory by about 20 KiB per change (the soak found it).
pub fn config_info(rt: &Runtime) -> String {
    let commit: String = rt
        .origin
        .commit
        .as_deref()
        .unwrap_or("")
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || "-_./".contains(*c))
        .collect();
    format!(
        "# HELP raftgate_config_info The config this node serves (always 1).\n# TYPE raftgate_config_info gauge\nraftgate_config_info{{hash=\"{}\",commit=\"{commit}\"}} 1\n",
        rt.hash
    )
}

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
    /// Rate limiters by (route, rule index): reused by the next config when the route did
    /// not change, so the buckets survive the swap.
    pub limiters: HashMap<(Arc<str>, usize), Arc<RateLimiter>>,
    /// The certificates of this config, published with its routes in the same swap so a
    /// TLS handshake never sees one config's certificates with another's routes.
    pub certs: CertStore,
    /// `raftgate_requests_total` for requests no route matched, by status class.
    pub unrouted: [Counter; 5],
}

/// A rule's fallback, resolved.
#[derive(Debug)]
pub enum Fallback {
    Static(Box<StaticAnswer>),
    Upstream(Arc<Upstream>),
}

/// A static fallback answer, built when the config is compiled.
#[derive(Debug)]
pub struct StaticAnswer {
    pub status: StatusCode,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: Bytes,
}

/// The filters of every rule that has none.
static NO_FILTERS: OnceLock<Arc<RuleFilters>> = OnceLock::new();

/// One rule, ready to serve.
#[derive(Debug)]
pub struct RuleRuntime {
    pub route: Arc<str>,
    pub rule: usize,
    pub backends: Vec<Backend>,
    pub total_weight: u64,
    /// Shared by every rule without filters (most rules): one empty set, not one each.
    pub filters: Arc<RuleFilters>,
    pub request_timeout: Option<Duration>,
    pub backend_timeout: Option<Duration>,
    /// Overrides the node's request body limit.
    pub max_body_bytes: Option<u64>,
    pub retry: Option<Box<RetrySpec>>,
    pub fallback: Option<Fallback>,
    pub rate_limit: Option<Arc<RateLimiter>>,
    /// Where copies of the rule's requests go (`RequestMirror`); empty for most rules.
    pub mirrors: Box<[Mirror]>,
    /// The rule's response cache policy (`cache`).
    pub cache: Option<Box<CacheSpec>>,
    /// Which endpoint a returning client gets (`sessionPersistence`).
    pub session: Option<Box<Persistence>>,
    /// How the rule's answers are compressed, when they are.
    pub compression: Option<Box<Compressor>>,
    /// The rule's `SecurityPolicy`, shared with every rule it guards.
    pub security: Option<Arc<Security>>,
    /// The route's `httpsRedirect`: plain-HTTP requests get this redirect.
    pub https_redirect: Option<HttpsRedirectSpec>,
    // Metric handles are registered by the first request that needs them, not when the
    // config is compiled: a config may have tens of thousands of rules, most of them quiet,
    // and registering was most of what compiling a rule cost (and a fifth of the memory a
    // rule held). Once registered, a handle is an atomic increment like before.
    /// `raftgate_request_duration_seconds` for the route.
    latency: OnceLock<Histogram>,
    /// `raftgate_requests_total` for answers the gateway gave before a backend was chosen
    /// (redirects, refusals), by status class.
    /// Boxed, like `Backend::requests`: most rules never register it, and an empty
    /// `OnceLock` of five counters is 88 bytes per rule.
    answered_here: OnceLock<Box<[Counter; 5]>>,
    /// `raftgate_fallbacks_total` for this route.
    fallbacks: OnceLock<Counter>,
    /// `raftgate_cache_requests_total` for this route, by result (`CACHE_RESULTS`).
    cache_results: OnceLock<Box<[Counter; 5]>>,
}

#[derive(Debug)]
pub struct Backend {
    pub upstream: Arc<Upstream>,
    pub weight: u32,
    /// `raftgate_requests_total` for this route and upstream, by status class 1xx..5xx.
    requests: OnceLock<Box<[Counter; 5]>>,
    /// `raftgate_retries_total` for this route and upstream.
    retries: OnceLock<Counter>,
}

impl Backend {
    pub fn requests(&self, route: &str) -> &[Counter; 5] {
        self.requests.get_or_init(|| Box::new(status_counters(route, &self.upstream.spec.name)))
    }

    pub fn retries(&self, route: &str) -> &Counter {
        self.retries.get_or_init(|| {
            metrics::counter!("raftgate_retries_total", "route" => route.to_string(), "upstream" => self.upstream.spec.name.clone())
        })
    }
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

    /// `raftgate_cache_requests_total` of result `i` of `CACHE_RESULTS`.
    pub fn cache_result(&self, i: usize) -> &Counter {
        let all = self.cache_results.get_or_init(|| {
            Box::new(CACHE_RESULTS.map(|r| {
                metrics::counter!("raftgate_cache_requests_total", "route" => self.route.to_string(), "result" => r)
            }))
        });
        &all[i]
    }

    /// The counters of answers given before a backend was chosen.
    pub fn answered_here(&self) -> &[Counter; 5] {
        self.answered_here.get_or_init(|| Box::new(status_counters(&self.route, "")))
    }

    pub fn latency(&self) -> &Histogram {
        self.latency
            .get_or_init(|| metrics::histogram!("raftgate_request_duration_seconds", "route" => self.route.to_string()))
    }

    pub fn fallbacks(&self) -> &Counter {
        self.fallbacks.get_or_init(|| metrics::counter!("raftgate_fallbacks_total", "route" => self.route.to_string()))
    }

    /// Compiles rule `ri` of `route` against this config's upstreams and rate limiters.
    /// `name`: the route's name, shared by its rules.
    fn compile(route: &RouteSpec, ri: usize, name: &Arc<str>, built: &Built) -> Self {
        let (upstreams, limiters) = (&built.upstreams, &built.limiters);
        let rule = &route.rules[ri];
        let name = name.clone();
        // Sized exactly: collecting a filtered iterator would reserve room for four.
        let mut backends: Vec<Backend> = Vec::with_capacity(rule.backends.len());
        // `schemas` guarantees every reference resolves.
        backends.extend(rule.backends.iter().filter_map(|b| {
            Some(Backend {
                upstream: upstreams.get(&b.upstream)?.clone(),
                weight: b.weight,
                requests: OnceLock::new(),
                retries: OnceLock::new(),
            })
        }));
        RuleRuntime {
            rule: ri,
            total_weight: backends.iter().map(|b| u64::from(b.weight)).sum(),
            backends,
            filters: if rule.filters.is_empty() {
                NO_FILTERS.get_or_init(Arc::default).clone()
            } else {
                Arc::new(RuleFilters::compile(&rule.filters))
            },
            https_redirect: route.https_redirect,
            request_timeout: rule.request_timeout,
            backend_timeout: rule.backend_request_timeout,
            max_body_bytes: rule.max_request_body_bytes,
            retry: rule.retry.clone().filter(|r| r.attempts > 1),
            fallback: rule.fallback.as_deref().and_then(|f| match f {
                FallbackSpec::Upstream(name) => upstreams.get(name).cloned().map(Fallback::Upstream),
                FallbackSpec::Static { status, headers, body } => {
                    Some(Fallback::Static(Box::new(StaticAnswer::compile(*status, headers, body))))
                }
            }),
            rate_limit: rule.rate_limit.as_ref().and_then(|_| limiters.get(&(name.clone(), ri)).cloned()),
            security: rule.security.as_ref().and_then(|p| built.security.get(p).cloned()),
            mirrors: rule
                .mirrors
                .iter()
                .filter_map(|m| Some(Mirror::new(&name, m, upstreams.get(&m.upstream)?.clone())))
                .collect(),
            cache: rule.cache.clone(),
            session: rule.session_persistence.as_deref().map(|s| Box::new(Persistence::compile(s))),
            compression: rule.compression.as_deref().map(|c| Box::new(Compressor::compile(c))),
            latency: OnceLock::new(),
            answered_here: OnceLock::new(),
            fallbacks: OnceLock::new(),
            cache_results: OnceLock::new(),
            route: name,
        }
    }
}

impl StaticAnswer {
    fn compile(status: u16, headers: &[(String, String)], body: &str) -> Self {
        StaticAnswer {
            status: StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
            headers: header_pairs(headers),
            body: Bytes::copy_from_slice(body.as_bytes()),
        }
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

/// What `Runtime::build` needs besides the snapshot.
#[derive(Debug)]
pub struct BuildEnv<'a> {
    /// The runtime being replaced, whose unchanged upstreams and rate limiters are reused.
    pub previous: Option<&'a Runtime>,
    pub roots: &'a Arc<rustls::RootCertStore>,
    /// The node terminates TLS (certificates must be loaded), with this session state.
    pub tls: Option<&'a Sessions>,
    /// The cluster's member count, which cluster-wide rate limits divide by.
    pub nodes: &'a Arc<AtomicUsize>,
    /// Endpoint names may resolve to link-local addresses (--allow-internal-endpoints).
    pub allow_internal: bool,
}

impl Runtime {
    /// Compiles a snapshot whose content hash is `hash` (computed once, where the snapshot
    /// was made or checked), reusing what did not change from `env.previous`. Its origin is
    /// set by whoever swaps it in (`Engine::apply`); a build may start before that is known.
    pub fn build(snapshot: Arc<ConfigSnapshot>, hash: ContentHash, env: &BuildEnv<'_>) -> anyhow::Result<Self> {
        let built = Built {
            upstreams: build_upstreams(&snapshot, env)?,
            limiters: build_limiters(&snapshot, env),
            security: build_security(&snapshot, env.roots)?,
        };
        let router =
            RouteTable::build(&snapshot.routes, |route, name, ri| RuleRuntime::compile(route, ri, name, &built))
                .map_err(|e| anyhow::anyhow!("{e}"))?;
        let Built { upstreams, limiters, .. } = built;
        let certs = match env.tls {
            Some(sessions) => {
                let tls = TlsBuild { policy: snapshot.tls_policy.clone(), sessions: sessions.clone() };
                CertStore::load(&snapshot.certificates, env.previous.map(|p| &p.certs), &tls)?
            }
            None => CertStore::default(),
        };
        Ok(Runtime {
            snapshot,
            hash,
            origin: ConfigOrigin::default(),
            loaded_at: SystemTime::now(),
            router,
            upstreams,
            limiters,
            certs,
            unrouted: status_counters("", ""),
        })
    }
}

/// What rules are compiled against.
struct Built {
    upstreams: HashMap<String, Arc<Upstream>>,
    limiters: HashMap<(Arc<str>, usize), Arc<RateLimiter>>,
    security: HashMap<String, Arc<Security>>,
}

/// Every security policy, with the key and password files it names read on this node. A
/// file that cannot be read keeps the node on its previous config (shown in `raftgate
/// status`) rather than serving the routes open or closed by accident.
fn build_security(
    snapshot: &ConfigSnapshot,
    roots: &Arc<rustls::RootCertStore>,
) -> anyhow::Result<HashMap<String, Arc<Security>>> {
    snapshot
        .security_policies
        .iter()
        .map(|p| {
            let sec = Security::build(p, roots).map_err(|e| anyhow::anyhow!("security policy `{}`: {e}", p.name))?;
            Ok((p.name.clone(), Arc::new(sec)))
        })
        .collect()
}

/// Every upstream, reusing each one whose spec did not change (its pool, balancer and
/// policy state carry over).
fn build_upstreams(snapshot: &ConfigSnapshot, env: &BuildEnv<'_>) -> anyhow::Result<HashMap<String, Arc<Upstream>>> {
    let mut upstreams = HashMap::new();
    for spec in &snapshot.upstreams {
        let previous = env.previous.and_then(|p| p.upstreams.get(&spec.name));
        let up = match previous {
            Some(u) if u.spec == *spec => u.clone(),
            _ => {
                let up = Upstream::new(spec.clone(), env.roots, env.allow_internal)?;
                if let Some(p) = previous {
                    up.seed_from(p);
                }
                Arc::new(up)
            }
        };
        upstreams.insert(spec.name.clone(), up);
    }
    Ok(upstreams)
}

/// The rate limiters of rate-limited rules, reusing those of unchanged routes.
fn build_limiters(snapshot: &ConfigSnapshot, env: &BuildEnv<'_>) -> HashMap<(Arc<str>, usize), Arc<RateLimiter>> {
    let mut limiters = HashMap::new();
    for route in snapshot.routes.iter().filter(|r| r.rules.iter().any(|rule| rule.rate_limit.is_some())) {
        // Routes are sorted by name: one binary search finds the previous definition.
        let unchanged = env.previous.filter(|p| {
            let routes = &p.snapshot.routes;
            routes.binary_search_by(|r| r.name.cmp(&route.name)).is_ok_and(|i| routes[i] == *route)
        });
        let name: Arc<str> = Arc::from(route.name.as_str());
        for (ri, rule) in route.rules.iter().enumerate() {
            let Some(spec) = &rule.rate_limit else { continue };
            let key = (name.clone(), ri);
            let limiter = match unchanged.and_then(|p| p.limiters.get(&key)) {
                Some(l) => l.clone(),
                None => Arc::new(RateLimiter::new(&route.name, spec, env.nodes.clone())),
            };
            limiters.insert(key, limiter);
        }
    }
    limiters
}

/// What one upstream's protection policies are doing, for the admin API and metrics.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UpstreamView {
    pub name: String,
    pub circuit: Circuit,
    pub circuit_retry_after_ms: u64,
    pub requests_in_flight: usize,
    pub retries_in_flight: usize,
    pub endpoints: Vec<EndpointView>,
    /// Where DNS stands, for an upstream that finds endpoints there.
    pub dns: Option<DnsView>,
}

/// How an upstream's DNS resolutions go.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DnsView {
    pub name: String,
    /// `pending`, `ok`, `error` or `empty`.
    pub result: &'static str,
    /// Why the last resolution failed; empty after a good one.
    pub error: String,
    /// Milliseconds since the last good resolution; 0 when none yet.
    pub last_ok_ago_ms: u64,
    pub failures: u32,
}

/// Where an upstream's failure-based breaker stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Circuit {
    /// The upstream has no failure thresholds.
    None,
    Closed,
    Open,
    HalfOpen,
}

impl Circuit {
    /// The word the admin API and `/status` use.
    pub fn as_str(self) -> &'static str {
        match self {
            Circuit::None => "none",
            Circuit::Closed => "closed",
            Circuit::Open => "open",
            Circuit::HalfOpen => "half-open",
        }
    }
}

/// What active health checks say of an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum EndpointHealth {
    Healthy,
    Unhealthy,
    /// The upstream has no active health checks.
    Unchecked,
}

impl EndpointHealth {
    /// The word the admin API and `/status` use.
    pub fn as_str(self) -> &'static str {
        match self {
            EndpointHealth::Healthy => "healthy",
            EndpointHealth::Unhealthy => "unhealthy",
            EndpointHealth::Unchecked => "unchecked",
        }
    }
}

#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointView {
    pub address: String,
    /// Found in DNS rather than listed in the config.
    pub from_dns: bool,
    pub weight: u32,
    pub in_flight: usize,
    pub health: EndpointHealth,
    pub ejected_for_ms: u64,
}

impl UpstreamView {
    fn of(u: &Upstream, now: u64) -> Self {
        let phase = u.breaker.phase(now);
        let (requests, retries) = u.breaker.in_flight();
        let set = u.endpoints();
        let endpoints = set
            .list
            .iter()
            .zip(&set.weights)
            .map(|(e, w)| EndpointView {
                address: e.address.clone(),
                from_dns: e.from_dns,
                weight: *w,
                in_flight: e.in_flight(),
                health: match &e.health {
                    None => EndpointHealth::Unchecked,
                    Some(h) if h.is_healthy() => EndpointHealth::Healthy,
                    Some(_) => EndpointHealth::Unhealthy,
                },
                ejected_for_ms: e.outlier.as_ref().map_or(0, |o| o.ejected_for_ms(now)),
            })
            .collect();
        let dns = u.dns.as_ref().map(|d| {
            let s = d.status();
            DnsView {
                name: d.spec.name.clone(),
                result: s.result,
                error: s.error,
                last_ok_ago_ms: s.last_ok.map_or(0, |t| t.elapsed().as_millis() as u64),
                failures: s.failures,
            }
        });
        UpstreamView {
            name: u.spec.name.clone(),
            circuit: match phase {
                None => Circuit::None,
                Some(Phase::Closed) => Circuit::Closed,
                Some(Phase::Open { .. }) => Circuit::Open,
                Some(Phase::HalfOpen { .. }) => Circuit::HalfOpen,
            },
            circuit_retry_after_ms: match phase {
                Some(Phase::Open { until_ms }) => until_ms.saturating_sub(now),
                _ => 0,
            },
            requests_in_flight: requests,
            retries_in_flight: retries,
            endpoints,
            dns,
        }
    }
}

impl Runtime {
    /// The live state of every upstream, sorted by name.
    pub fn upstream_views(&self) -> Vec<UpstreamView> {
        let now = clock::now_ms();
        let mut out: Vec<UpstreamView> = self.upstreams.values().map(|u| UpstreamView::of(u, now)).collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }
}

/// What `raftgate_cache_requests_total` counts, by `result`.
pub const CACHE_RESULTS: [&str; 5] = ["hit", "stale", "revalidated", "miss", "bypass"];

/// Holds the current runtime. Readers never wait: `current()` is one atomic load.
#[derive(Debug)]
pub struct Engine {
    /// Shared with the TLS listener's certificate resolver, which reads the certificates of
    /// whatever runtime is current.
    current: Arc<ArcSwap<Runtime>>,
    roots: Arc<rustls::RootCertStore>,
    /// Session state of the TLS listener (cache, ticket keys), kept across configs; `None`
    /// when the node does not terminate TLS.
    sessions: Option<Sessions>,
    /// Members of the Raft cluster (1 for a single node), kept current by `cluster`.
    pub nodes: Arc<AtomicUsize>,
    loaded: std::sync::atomic::AtomicBool,
    swap_lock: tokio::sync::Mutex<()>,
    /// The node's --allow-internal-endpoints, for the upstreams it builds.
    allow_internal: std::sync::atomic::AtomicBool,
    /// A build started by `prepare`, which `apply` takes when it is for the same snapshot.
    prepared: std::sync::Mutex<Option<Prepared>>,
}

/// A config compiling ahead of its apply.
#[derive(Debug)]
struct Prepared {
    snapshot: Arc<ConfigSnapshot>,
    hash: ContentHash,
    /// The runtime it reuses upstreams and limiters from: must still be current at apply.
    previous: Arc<Runtime>,
    build: tokio::task::JoinHandle<anyhow::Result<Runtime>>,
}

impl Engine {
    /// An engine serving an empty config (every request gets 404) until the first swap.
    /// `tls`: the node terminates TLS, so certificates must be loaded (session tickets with
    /// keys of this node only).
    pub fn new(roots: Arc<rustls::RootCertStore>, tls: bool) -> anyhow::Result<Self> {
        Self::with_sessions(roots, if tls { Some(Sessions::node_local()?) } else { None })
    }

    /// An engine whose TLS listener uses `sessions` (`None`: no TLS).
    pub fn with_sessions(roots: Arc<rustls::RootCertStore>, sessions: Option<Sessions>) -> anyhow::Result<Self> {
        let snapshot = Arc::new(ConfigSnapshot::default());
        let hash = snapshot.content_hash();
        let nodes = Arc::new(AtomicUsize::new(1));
        let env =
            BuildEnv { previous: None, roots: &roots, tls: sessions.as_ref(), nodes: &nodes, allow_internal: false };
        let rt = Runtime::build(snapshot, hash, &env)?;
        Ok(Self {
            current: Arc::new(ArcSwap::from_pointee(rt)),
            roots,
            sessions,
            nodes,
            loaded: false.into(),
            swap_lock: tokio::sync::Mutex::new(()),
            allow_internal: false.into(),
            prepared: std::sync::Mutex::new(None),
        })
    }

    /// Lets endpoint names resolve to link-local addresses (--allow-internal-endpoints);
    /// set before the first config is applied.
    pub fn allow_internal_endpoints(&self, allow: bool) {
        self.allow_internal.store(allow, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn current(&self) -> Arc<Runtime> {
        self.current.load_full()
    }

    /// The certificate for a TLS handshake's SNI name (`None`: no SNI), from the current
    /// config.
    pub fn cert_lookup(
        &self,
    ) -> impl Fn(Option<&str>) -> Option<Arc<rustls::sign::CertifiedKey>> + Send + Sync + 'static {
        let current = self.current.clone();
        move |name| current.load().certs.get(name)
    }

    /// The server config for a TLS handshake's SNI name, from the current config: its
    /// `TLSPolicy` and certificates, or the certificate's own config when it verifies
    /// client certificates.
    pub fn tls_lookup(&self) -> impl Fn(Option<&str>) -> Option<Arc<rustls::ServerConfig>> + Send + Sync + 'static {
        let current = self.current.clone();
        move |name| current.load().certs.config_for(name)
    }

    /// Serves the certificates whose files changed on disk (renewals) and exports their
    /// expiry; run every `--certificate-check-interval`. A config swap reusing the same
    /// slots meanwhile is safe: each slot loads under its own lock.
    pub async fn refresh_certificates(&self, node: &str) {
        let rt = self.current();
        let rt = tokio::task::spawn_blocking(move || {
            rt.certs.refresh();
            rt
        })
        .await;
        if let Ok(rt) = rt {
            rt.certs.export_expiry(node);
        }
    }

    /// Sets the gauges that describe live policy state (breaker phase, ejected endpoints);
    /// called before each metrics scrape, as that state changes with time alone.
    pub fn refresh_gauges(&self) {
        for u in self.current().upstream_views() {
            let state = match u.circuit {
                Circuit::Open => 1.0,
                Circuit::HalfOpen => 2.0,
                Circuit::None | Circuit::Closed => 0.0,
            };
            metrics::gauge!("raftgate_circuit_state", "upstream" => u.name.clone()).set(state);
            for e in &u.endpoints {
                metrics::gauge!("raftgate_endpoint_ejected", "upstream" => u.name.clone(), "endpoint" => e.address.clone())
                    .set(if e.ejected_for_ms > 0 { 1.0 } else { 0.0 });
            }
        }
    }

    /// True once a config has been applied.
    pub fn is_loaded(&self) -> bool {
        self.loaded.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Starts compiling `snapshot`, stated to hash to `hash`, before anything has checked
    /// that it does: the result is only served if `apply` is then called with this same
    /// snapshot (after the state machine's check). A newer `prepare` replaces an older one.
    pub fn prepare(&self, snapshot: Arc<ConfigSnapshot>, hash: ContentHash) {
        if tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        let previous = self.current();
        let build = self.spawn_build(Arc::clone(&snapshot), hash, Arc::clone(&previous));
        let p = Prepared { snapshot, hash, previous, build };
        // The replaced build, if any, runs to its end and is dropped.
        *self.prepared.lock().unwrap_or_else(|e| e.into_inner()) = Some(p);
    }

    /// Drops a prepared build that will not be applied (its entry was refused, or it is
    /// already served), so it does not hold a whole config's memory until the next one.
    pub fn forget_prepared(&self) {
        drop(self.take_prepared());
    }

    fn take_prepared(&self) -> Option<Prepared> {
        self.prepared.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    /// Compiles on a blocking thread, reusing what did not change from `previous`.
    fn spawn_build(
        &self,
        snapshot: Arc<ConfigSnapshot>,
        hash: ContentHash,
        previous: Arc<Runtime>,
    ) -> tokio::task::JoinHandle<anyhow::Result<Runtime>> {
        let roots = self.roots.clone();
        let sessions = self.sessions.clone();
        let nodes = self.nodes.clone();
        let allow_internal = self.allow_internal.load(std::sync::atomic::Ordering::Relaxed);
        tokio::task::spawn_blocking(move || {
            let env = BuildEnv {
                previous: Some(&previous),
                roots: &roots,
                tls: sessions.as_ref(),
                nodes: &nodes,
                allow_internal,
            };
            Runtime::build(snapshot, hash, &env)
        })
    }

    /// Compiles `snapshot` (whose content hash is `hash`) off the request path and swaps it
    /// in, routes and certificates together. On failure the current config stays. Swaps are
    /// serialised so two producers cannot interleave.
    pub async fn apply(
        &self,
        snapshot: Arc<ConfigSnapshot>,
        hash: ContentHash,
        origin: ConfigOrigin,
    ) -> anyhow::Result<ContentHash> {
        let _guard = self.swap_lock.lock().await;
        let previous = self.current();
        // Compiled ahead by `prepare` if it was this snapshot, against this runtime.
        let prepared = self
            .take_prepared()
            .filter(|p| Arc::ptr_eq(&p.snapshot, &snapshot) && p.hash == hash && Arc::ptr_eq(&p.previous, &previous));
        let build = match prepared {
            Some(p) => p.build,
            None => self.spawn_build(snapshot, hash, previous),
        };
        // A build that does not finish in time is abandoned (its thread finishes on its
        // own and its result is dropped): the node keeps serving the current config and the
        // next config is not held up behind it.
        let mut rt = tokio::time::timeout(APPLY_TIMEOUT, build)
            .await
            .map_err(|_| anyhow::anyhow!("building the config took longer than {} s", APPLY_TIMEOUT.as_secs()))?
            .map_err(|e| anyhow::anyhow!("config compile panicked: {e}"))??;
        rt.origin = origin;
        for up in rt.upstreams.values() {
            prober::start(up);
            super::dns::start(up);
        }
        let routes = rt.router.rule_count();
        let old = self.current.swap(Arc::new(rt));
        // The old config is freed off the runtime's threads: at 10,000 routes dropping it
        // takes milliseconds, which requests on this worker would otherwise wait out.
        tokio::task::spawn_blocking(move || drop(old));
        self.loaded.store(true, std::sync::atomic::Ordering::Release);
        metrics::counter!("raftgate_config_swaps_total").increment(1);
        tracing::info!(hash = %hash.short(), rules = routes, "config applied");
        Ok(hash)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A config with a certificate for `host` (files in `dir`) and one route named `route`.
    fn config(dir: &std::path::Path, host: &str, route: &str) -> Arc<ConfigSnapshot> {
        let ck = rcgen::generate_simple_self_signed(vec![host.to_string()]).unwrap();
        let (crt, key) = (dir.join(format!("{host}.crt")), dir.join(format!("{host}.key")));
        std::fs::write(&crt, ck.cert.pem()).unwrap();
        std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
        let yaml = format!(
            "kind: Upstream\nname: u\nendpoints: [{{ address: 127.0.0.1:9 }}]\n---\nkind: Route\nname: {route}\nrules:\n  - backendRefs: [{{ upstream: u }}]\n---\nkind: Certificate\nname: c\nhostnames: [{host}]\ncertificate: {{ file: {} }}\nprivateKey: {{ file: {} }}\n",
            crt.display(),
            key.display()
        );
        let files = [schemas::SourceFile { path: "c.yaml".into(), contents: yaml.into_bytes() }];
        Arc::new(schemas::compile_tree(&files).unwrap().snapshot)
    }

    /// A build started by `prepare` is never served by itself: only `apply` of that same
    /// snapshot serves it (with the origin `apply` names), and `apply` of another snapshot
    /// serves that one.
    #[tokio::test]
    async fn a_prepared_config_is_served_only_by_its_apply() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::new(Arc::new(rustls::RootCertStore::empty()), true).unwrap();
        let (a, b) = (config(dir.path(), "a.example", "ra"), config(dir.path(), "b.example", "rb"));
        let (ha, hb) = (a.content_hash(), b.content_hash());
        engine.prepare(Arc::clone(&a), ha);
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        assert!(engine.current().snapshot.routes.is_empty(), "preparing serves nothing");
        // Another snapshot is applied: the prepared one is dropped, not served.
        engine.apply(Arc::clone(&b), hb, ConfigOrigin::default()).await.unwrap();
        assert_eq!(engine.current().snapshot.routes[0].name, "rb");
        assert!(engine.take_prepared().is_none());
        // Prepared, then applied: served, with the origin of the apply.
        engine.prepare(Arc::clone(&a), ha);
        let origin = ConfigOrigin { commit: Some("c0ffee".into()), source: "test".into() };
        engine.apply(Arc::clone(&a), ha, origin).await.unwrap();
        let rt = engine.current();
        assert_eq!((rt.snapshot.routes[0].name.as_str(), rt.origin.commit.as_deref()), ("ra", Some("c0ffee")));
        assert!(rt.certs.get(Some("a.example")).is_some());
        // A build prepared against a runtime that is no longer current (another swap came
        // in between, as when `prepare` runs during an `apply`) is not used: it would carry
        // over that runtime's upstreams, with their pools and breaker state, not the
        // current ones.
        engine.prepare(Arc::clone(&b), hb);
        let c = config(dir.path(), "c.example", "rc");
        let roots = engine.roots.clone();
        let env = BuildEnv {
            previous: None,
            roots: &roots,
            tls: engine.sessions.as_ref(),
            nodes: &engine.nodes,
            allow_internal: false,
        };
        let rc = Arc::new(Runtime::build(c.clone(), c.content_hash(), &env).unwrap());
        engine.current.store(Arc::clone(&rc));
        engine.apply(Arc::clone(&b), hb, ConfigOrigin::default()).await.unwrap();
        let now = engine.current();
        assert_eq!(now.snapshot.routes[0].name, "rb");
        assert!(Arc::ptr_eq(&now.upstreams["u"], &rc.upstreams["u"]), "compiled against the runtime current at apply");
    }

    /// Certificates live in the runtime and are published with its routes: a resolver made
    /// before a swap answers from the new config after it, and from the old one before.
    #[tokio::test]
    async fn certificates_and_routes_are_published_together() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::new(Arc::new(rustls::RootCertStore::empty()), true).unwrap();
        let lookup = engine.cert_lookup();
        assert!(lookup(Some("a.example")).is_none());
        for (host, route, gone) in [("a.example", "ra", None), ("b.example", "rb", Some("a.example"))] {
            let snapshot = config(dir.path(), host, route);
            let hash = snapshot.content_hash();
            engine.apply(snapshot, hash, ConfigOrigin::default()).await.unwrap();
            let rt = engine.current();
            assert_eq!(rt.snapshot.routes[0].name, route);
            assert!(
                rt.certs.get(Some(host)).is_some() && lookup(Some(host)).is_some(),
                "{host} is served with {route}"
            );
            if let Some(old) = gone {
                assert!(lookup(Some(old)).is_none(), "{old} left with its config");
            }
        }
    }
}
