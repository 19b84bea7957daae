//! Upstream pools: endpoints, the load balancer, a keep-alive connection pool, and the
//! state of the policies that protect the upstream (circuit breaker, outlier detection,
//! active health). An `Upstream` whose definition did not change between two configs is
//! reused as is, so its pooled connections, balancer and policy state carry over a swap:
//! an open breaker stays open, an ejected endpoint stays out.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::uri::{Authority, Scheme};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;

use super::resolve::Guarded;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use schemas::snapshot::{UpstreamProtocol, UpstreamSpec};

use super::balancer::{Balancer, PickContext};
use super::body::ReqBody;
use super::breaker::CircuitBreaker;
use super::clock;
use super::connlimit::Limited;
use super::health::Health;
use super::outlier::Outlier;

pub type HttpClient = Client<Limited<HttpsConnector<HttpConnector<Guarded>>>, ReqBody>;

#[derive(Debug)]
pub struct Upstream {
    pub spec: UpstreamSpec,
    pub scheme: Scheme,
    pub authorities: Vec<Authority>,
    weights: Vec<u32>,
    in_flight: Vec<AtomicUsize>,
    balancer: Balancer,
    pub client: HttpClient,
    pub breaker: CircuitBreaker,
    pub outlier: Option<Outlier>,
    pub health: Option<Health>,
    /// Set once the background tasks (health probes) run.
    started: std::sync::atomic::AtomicBool,
    /// The endpoints' session ids (`session`), made by the first request that needs them.
    pub session_ids: std::sync::OnceLock<Box<[u64]>>,
}

/// Marks one request in flight on an endpoint until dropped.
#[derive(Debug)]
pub struct InFlight {
    upstream: Arc<Upstream>,
    index: usize,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.upstream.in_flight[self.index].fetch_sub(1, Ordering::Relaxed);
    }
}

impl Upstream {
    /// Requests in flight on each endpoint, in endpoint order.
    pub fn in_flight_counts(&self) -> Vec<usize> {
        self.in_flight.iter().map(|n| n.load(Ordering::Relaxed)).collect()
    }

    /// `allow_internal`: endpoint names may resolve to link-local addresses (the node's
    /// --allow-internal-endpoints).
    pub fn new(
        spec: UpstreamSpec,
        tls_roots: &Arc<rustls::RootCertStore>,
        allow_internal: bool,
    ) -> anyhow::Result<Self> {
        let authorities = spec
            .endpoints
            .iter()
            .map(|e| e.address.parse::<Authority>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| anyhow::anyhow!("upstream `{}`: {e}", spec.name))?;
        let weights: Vec<u32> = spec.endpoints.iter().map(|e| e.weight).collect();
        let named: Vec<(&str, u32)> = spec.endpoints.iter().map(|e| (e.address.as_str(), e.weight)).collect();
        let balancer = Balancer::new(&spec.load_balancer, &named);

        let mut http = HttpConnector::new_with_resolver(Guarded::new(allow_internal));
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(spec.connect_timeout.to_std()));
        let (scheme, connector) = match &spec.tls {
            None => (Scheme::HTTP, https_connector(http, client_tls(tls_roots, false, None)?, None)),
            Some(tls) => {
                let roots = match &tls.ca_file {
                    Some(path) => Arc::new(super::tls::load_roots(path)?),
                    None => tls_roots.clone(),
                };
                let identity = match &tls.client_certificate {
                    Some((cert, key)) => Some(
                        super::tls::client_identity(cert, key)
                            .map_err(|e| anyhow::anyhow!("upstream `{}`: client certificate: {e}", spec.name))?,
                    ),
                    None => None,
                };
                let mut cfg = client_tls(&roots, tls.insecure_skip_verify, identity)?;
                if spec.protocol == UpstreamProtocol::Http2 {
                    cfg.alpn_protocols = vec![b"h2".to_vec()];
                }
                // `sni` names the server to ask for and to verify; by default, the
                // endpoint's host.
                let sni = match &tls.sni {
                    Some(name) => Some(
                        rustls_pki_types::ServerName::try_from(name.clone())
                            .map_err(|e| anyhow::anyhow!("upstream `{}`: bad sni `{name}`: {e}", spec.name))?,
                    ),
                    None => None,
                };
                (Scheme::HTTPS, https_connector(http, cfg, sni))
            }
        };
        let mut builder = Client::builder(TokioExecutor::new());
        builder.timer(TokioTimer::new()).pool_timer(TokioTimer::new()).pool_idle_timeout(Duration::from_secs(90));
        if spec.protocol == UpstreamProtocol::Http2 {
            builder.http2_only(true);
        }
        let cb = &spec.circuit_breaker;
        let connector =
            Limited::new(connector, cb.max_connections, cb.max_pending_requests, spec.connect_timeout.to_std());
        let client = builder.build(connector);
        let in_flight = spec.endpoints.iter().map(|_| AtomicUsize::new(0)).collect();
        let addresses: Vec<String> = spec.endpoints.iter().map(|e| e.address.clone()).collect();
        let breaker = CircuitBreaker::new(&spec.name, &spec.circuit_breaker);
        let outlier = spec.passive_health_check.as_ref().map(|p| Outlier::new(&spec.name, &addresses, p));
        let health = spec.active_health_check.as_ref().map(|a| Health::new(&spec.name, &addresses, a));
        Ok(Self {
            spec,
            scheme,
            authorities,
            weights,
            in_flight,
            balancer,
            client,
            breaker,
            outlier,
            health,
            started: false.into(),
            session_ids: std::sync::OnceLock::new(),
        })
    }

    /// True the first time it is called: the upstream's background work (`prober`) is
    /// started once, whichever config reuses it.
    pub fn mark_started(&self) -> bool {
        !self.started.swap(true, Ordering::Relaxed)
    }

    /// Whether endpoint `i` may get traffic: healthy and not ejected.
    pub fn available(&self, i: usize, now_ms: u64) -> bool {
        self.health.as_ref().is_none_or(|h| h.is_healthy(i))
            && self.outlier.as_ref().is_none_or(|o| !o.is_ejected(i, now_ms))
    }

    /// Chooses an available endpoint and counts the request in flight on it. `tried`:
    /// endpoints that already failed this request, skipped while another one is available.
    /// `None` when every endpoint is unhealthy or ejected.
    pub fn pick(self: &Arc<Self>, ctx: &PickContext<'_>, tried: &[usize], now_ms: u64) -> Option<(usize, InFlight)> {
        let mut i = match ctx.prefer {
            Some(p) if p < self.weights.len() => p,
            _ => self.balancer.pick(&self.weights, &self.in_flight, ctx),
        };
        if !self.available(i, now_ms) || tried.contains(&i) {
            // Rare: a weighted draw among the endpoints still in and not tried yet; failing
            // that, among all those still in.
            let fresh: Vec<usize> =
                (0..self.weights.len()).filter(|j| self.available(*j, now_ms) && !tried.contains(j)).collect();
            let candidates = if fresh.is_empty() {
                (0..self.weights.len()).filter(|j| self.available(*j, now_ms)).collect()
            } else {
                fresh
            };
            i = self.weighted_choice(&candidates)?;
        }
        self.in_flight[i].fetch_add(1, Ordering::Relaxed);
        Some((i, InFlight { upstream: self.clone(), index: i }))
    }

    fn weighted_choice(&self, candidates: &[usize]) -> Option<usize> {
        let total: u64 = candidates.iter().map(|j| u64::from(self.weights[*j])).sum();
        let mut r = fastrand::u64(..total.max(1));
        for j in candidates {
            let w = u64::from(self.weights[*j]);
            if r < w {
                return Some(*j);
            }
            r -= w;
        }
        candidates.last().copied()
    }

    /// Reports how a request to endpoint `i` went, for outlier detection.
    pub fn endpoint_result(&self, i: usize, failed: bool) {
        if let Some(o) = &self.outlier {
            if failed {
                o.failure(i, clock::now_ms());
            } else {
                o.success(i);
            }
        }
    }

    /// Whether admitting and picking for this upstream need the time: only a failure-based
    /// breaker and outlier detection do, so other upstreams skip the clock read.
    pub fn uses_clock(&self) -> bool {
        self.breaker.uses_clock() || self.outlier.is_some()
    }
}

fn https_connector(
    http: HttpConnector<Guarded>,
    cfg: rustls::ClientConfig,
    sni: Option<rustls_pki_types::ServerName<'static>>,
) -> HttpsConnector<HttpConnector<Guarded>> {
    let mut b = hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(cfg).https_or_http();
    if let Some(name) = sni {
        b = b.with_server_name_resolver(hyper_rustls::FixedServerNameResolver::new(name));
    }
    b.enable_http1().enable_http2().wrap_connector(http)
}

/// A certificate chain and its key, presented to upstreams that ask for one.
type ClientIdentity = (Vec<rustls_pki_types::CertificateDer<'static>>, rustls_pki_types::PrivateKeyDer<'static>);

fn client_tls(
    roots: &Arc<rustls::RootCertStore>,
    insecure: bool,
    identity: Option<ClientIdentity>,
) -> anyhow::Result<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder =
        rustls::ClientConfig::builder_with_provider(provider.clone()).with_safe_default_protocol_versions()?;
    let builder = if insecure {
        builder.dangerous().with_custom_certificate_verifier(Arc::new(NoVerify(provider)))
    } else {
        builder.with_root_certificates(roots.clone())
    };
    Ok(match identity {
        Some((chain, key)) => builder.with_client_auth_cert(chain, key)?,
        None => builder.with_no_client_auth(),
    })
}

/// `insecureSkipVerify: true`: accepts any server certificate. Signatures are still checked
/// so the handshake itself is sound; only the identity is not.
#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls_pki_types::CertificateDer<'_>,
        _intermediates: &[rustls_pki_types::CertificateDer<'_>],
        _server_name: &rustls_pki_types::ServerName<'_>,
        _ocsp: &[u8],
        _now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
