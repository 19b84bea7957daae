//! Upstream pools: endpoints (static, and from DNS), the load balancer, a keep-alive
//! connection pool, and the state of the policies that protect the upstream (circuit
//! breaker, outlier detection, active health). An `Upstream` whose definition did not change
//! between two configs is reused as is, so its pooled connections, endpoints and policy
//! state carry over a swap: an open breaker stays open, an ejected endpoint stays out.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use http::uri::Scheme;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;

use super::resolve::Guarded;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use schemas::snapshot::{ActiveHealthCheckSpec, DnsRecordType, UpstreamProtocol, UpstreamSpec};

use super::balancer::PickContext;
use super::body::ReqBody;
use super::breaker::CircuitBreaker;
use super::clock;
use super::connlimit::Limited;
use super::endpoints::{DnsState, Endpoint, EndpointSet, Entry, InFlight};
use super::outlier::Outlier;

pub type HttpClient = Client<Limited<HttpsConnector<HttpConnector<Guarded>>>, ReqBody>;

#[derive(Debug)]
pub struct Upstream {
    pub spec: UpstreamSpec,
    pub scheme: Scheme,
    /// The endpoints now: replaced as a whole when DNS answers change.
    endpoints: ArcSwap<EndpointSet>,
    pub client: HttpClient,
    pub breaker: CircuitBreaker,
    pub outlier: Option<Outlier>,
    pub health: Option<ActiveHealthCheckSpec>,
    pub dns: Option<DnsState>,
    /// Endpoint names and DNS answers may lead to link-local addresses.
    pub allow_internal: bool,
    /// Set once the background tasks (health probes, DNS refresh) run.
    probing: AtomicBool,
    resolving: AtomicBool,
}

impl Upstream {
    /// `allow_internal`: endpoint names may resolve to link-local addresses (the node's
    /// --allow-internal-endpoints).
    pub fn new(
        spec: UpstreamSpec,
        tls_roots: &Arc<rustls::RootCertStore>,
        allow_internal: bool,
    ) -> anyhow::Result<Self> {
        let endpoints = EndpointSet::build(&spec, static_entries(&spec), None)?;

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
                // endpoint's host, or for endpoints from A/AAAA records the name resolved
                // (their host is an address). Validation makes SRV upstreams, and those
                // mixing static and DNS endpoints, give `sni`.
                let dns_name = spec
                    .dns
                    .as_ref()
                    .filter(|d| d.record_type != DnsRecordType::SRV && spec.endpoints.is_empty())
                    .map(|d| &d.name);
                let sni = match tls.sni.as_ref().or(dns_name) {
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
        Ok(Self {
            scheme,
            endpoints: ArcSwap::from_pointee(endpoints),
            client,
            breaker: CircuitBreaker::new(&spec.name, &spec.circuit_breaker),
            outlier: spec.passive_health_check.as_ref().map(Outlier::new),
            health: spec.active_health_check.clone(),
            dns: spec.dns.as_ref().map(|d| DnsState::new(&spec.name, d)),
            allow_internal,
            probing: false.into(),
            resolving: false.into(),
            spec,
        })
    }

    /// The endpoints now.
    pub fn endpoints(&self) -> arc_swap::Guard<Arc<EndpointSet>> {
        self.endpoints.load()
    }

    /// Makes the endpoints the spec's static ones plus `found` (from DNS; an address
    /// listed statically stays static). Endpoints that stay keep their state. Returns the
    /// addresses added and removed, both empty when nothing changed.
    pub fn set_found(&self, found: Vec<(String, u32)>) -> anyhow::Result<(Vec<String>, Vec<String>)> {
        let mut entries = static_entries(&self.spec);
        for (address, weight) in found {
            if !entries.iter().any(|e| e.address == address) {
                entries.push(Entry { address, weight, from_dns: true });
            }
        }
        entries.sort_by(|a, b| a.address.cmp(&b.address));
        let current = self.endpoints.load_full();
        let before = current.entries();
        if before == entries {
            return Ok((Vec::new(), Vec::new()));
        }
        let added = entries
            .iter()
            .filter(|e| !before.iter().any(|b| b.address == e.address))
            .map(|e| e.address.clone())
            .collect();
        let removed = before
            .iter()
            .filter(|b| !entries.iter().any(|e| e.address == b.address))
            .map(|b| b.address.clone())
            .collect();
        self.endpoints.store(Arc::new(EndpointSet::build(&self.spec, entries, Some(&current))?));
        Ok((added, removed))
    }

    /// Starts a replacement of `previous` (same name, changed spec) with the endpoints
    /// `previous` found in DNS, when both resolve the same name the same way, so the new
    /// upstream serves them at once instead of waiting for its first resolution.
    pub fn seed_from(&self, previous: &Upstream) {
        let (Some(dns), Some(old)) = (&self.dns, &previous.dns) else { return };
        if dns.spec.name != old.spec.name
            || dns.spec.record_type != old.spec.record_type
            || dns.spec.port != old.spec.port
        {
            return;
        }
        let found: Vec<(String, u32)> =
            previous.endpoints().entries().into_iter().filter(|e| e.from_dns).map(|e| (e.address, e.weight)).collect();
        if found.is_empty() {
            return;
        }
        if self.set_found(found).is_ok() {
            let status = old.status();
            dns.record(|s| *s = status);
        }
    }

    /// True the first time it is called: health probes start once, whichever config
    /// reuses the upstream.
    pub fn mark_probing(&self) -> bool {
        !self.probing.swap(true, Ordering::Relaxed)
    }

    /// True the first time it is called: DNS refresh starts once.
    pub fn mark_resolving(&self) -> bool {
        !self.resolving.swap(true, Ordering::Relaxed)
    }

    /// Chooses an available endpoint and counts the request in flight on it. `prefer`: the
    /// endpoint the request's session names, taken while it is available; `tried`:
    /// endpoints that already failed this request, skipped while another one is available.
    /// `None` when every endpoint is unhealthy or ejected, or there is none.
    pub fn pick(
        &self,
        ctx: &PickContext<'_>,
        prefer: Option<&Arc<Endpoint>>,
        tried: &[Arc<Endpoint>],
        now_ms: u64,
    ) -> Option<InFlight> {
        let set = self.endpoints.load();
        if set.list.is_empty() {
            return None;
        }
        // The session's endpoint, while it is still in the set (DNS may have removed it).
        let prefer = prefer.filter(|p| set.list.iter().any(|e| Arc::ptr_eq(e, p)));
        let mut chosen = prefer.unwrap_or_else(|| set.choose(ctx));
        let was_tried = |e: &Arc<Endpoint>| tried.iter().any(|t| Arc::ptr_eq(t, e));
        if !chosen.available(now_ms) || was_tried(chosen) {
            // Rare: a weighted draw among the endpoints still in and not tried yet; failing
            // that, among all those still in.
            let n = set.list.len();
            let fresh: Vec<usize> =
                (0..n).filter(|j| set.list[*j].available(now_ms) && !was_tried(&set.list[*j])).collect();
            let candidates =
                if fresh.is_empty() { (0..n).filter(|j| set.list[*j].available(now_ms)).collect() } else { fresh };
            chosen = set.weighted_choice(&candidates)?;
        }
        Some(chosen.begin())
    }

    /// Waits (at most the connect timeout) for the first DNS resolution, when the upstream
    /// has no endpoint yet because it has not resolved its name.
    pub async fn first_resolution(&self) {
        if let Some(dns) = &self.dns {
            if self.endpoints.load().list.is_empty() {
                dns.settled(self.spec.connect_timeout.to_std()).await;
            }
        }
    }

    /// Reports how a request to `ep` went, for outlier detection.
    pub fn endpoint_result(&self, ep: &Endpoint, failed: bool) {
        let (Some(o), Some(state)) = (&self.outlier, &ep.outlier) else { return };
        if !failed {
            state.success();
            return;
        }
        let set = self.endpoints.load();
        let all = set.list.iter().filter_map(|e| e.outlier.as_ref());
        if let Some(ms) = o.failure(state, all, clock::now_ms()) {
            tracing::warn!(upstream = %self.spec.name, endpoint = %ep.address, ejected_for_ms = ms, "outlier detection ejected an endpoint");
        }
    }

    /// Whether admitting and picking for this upstream need the time: only a failure-based
    /// breaker and outlier detection do, so other upstreams skip the clock read.
    pub fn uses_clock(&self) -> bool {
        self.breaker.uses_clock() || self.outlier.is_some()
    }
}

/// The spec's own endpoints.
fn static_entries(spec: &UpstreamSpec) -> Vec<Entry> {
    spec.endpoints.iter().map(|e| Entry { address: e.address.clone(), weight: e.weight, from_dns: false }).collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream(yaml: &str) -> Upstream {
        let files = [schemas::SourceFile { path: "u.yaml".into(), contents: yaml.as_bytes().to_vec() }];
        let spec = schemas::compile_tree(&files).unwrap().snapshot.upstreams[0].clone();
        Upstream::new(spec, &Arc::new(rustls::RootCertStore::empty()), false).unwrap()
    }

    fn found(list: &[&str]) -> Vec<(String, u32)> {
        list.iter().map(|a| (a.to_string(), 1)).collect()
    }

    /// A new set from DNS keeps the endpoints that stay, with their in-flight requests,
    /// ejection and health; static endpoints stay whatever DNS says.
    #[test]
    fn endpoints_that_stay_keep_their_state_across_sets() {
        let up = upstream(
            "kind: Upstream\nname: u\nendpoints: [{ address: 10.0.0.9:80 }]\ndns: { name: u.internal, port: 80 }\nhealthCheck:\n  active: { path: /h, unhealthyThreshold: 1 }\n  passive: { consecutiveFailures: 1, maxEjectionPercent: 100 }\n",
        );
        assert_eq!(up.endpoints().list.len(), 1, "the static endpoint serves before DNS answers");
        let (added, removed) = up.set_found(found(&["10.0.0.1:80", "10.0.0.2:80"])).unwrap();
        assert_eq!((added.len(), removed.len()), (2, 0));
        let set = up.endpoints();
        let [one, two, fixed] = [&set.list[0], &set.list[1], &set.list[2]].map(|e| (*e).clone());
        assert_eq!(
            [one.address.as_str(), two.address.as_str(), fixed.address.as_str()],
            ["10.0.0.1:80", "10.0.0.2:80", "10.0.0.9:80"]
        );
        drop(set);
        let held = one.begin();
        up.endpoint_result(&two, true);
        assert!(two.outlier.as_ref().unwrap().is_ejected(clock::now_ms()));
        fixed.health.as_ref().unwrap().observe(up.health.as_ref().unwrap(), false);

        // Unchanged answer: no new set.
        assert_eq!(up.set_found(found(&["10.0.0.2:80", "10.0.0.1:80"])).unwrap(), (vec![], vec![]));
        // 10.0.0.1 leaves (its request still in flight), 10.0.0.3 arrives; DNS also names the
        // static endpoint, which stays static.
        let (added, removed) = up.set_found(found(&["10.0.0.2:80", "10.0.0.3:80", "10.0.0.9:80"])).unwrap();
        assert_eq!((added, removed), (vec!["10.0.0.3:80".to_string()], vec!["10.0.0.1:80".to_string()]));
        let set = up.endpoints();
        assert_eq!(set.list.len(), 3);
        assert!(Arc::ptr_eq(&set.list[0], &two), "the staying endpoint is the same");
        assert!(set.list[0].outlier.as_ref().unwrap().is_ejected(clock::now_ms()), "still ejected");
        assert!(set.list[1].from_dns && set.list[1].address == "10.0.0.3:80");
        assert!(Arc::ptr_eq(&set.list[2], &fixed) && !fixed.from_dns);
        assert!(!fixed.health.as_ref().unwrap().is_healthy(), "still unhealthy");
        assert_eq!(one.in_flight(), 1, "the removed endpoint drains its request");
        drop(held);
        assert_eq!(one.in_flight(), 0);
        // Only the new endpoint is available: one is gone, two is ejected, fixed unhealthy.
        let h = http::HeaderMap::new();
        let ctx = PickContext { headers: &h, client_ip: "127.0.0.1".parse().unwrap() };
        for _ in 0..20 {
            assert_eq!(up.pick(&ctx, None, &[], clock::now_ms()).unwrap().endpoint().address, "10.0.0.3:80");
        }
    }
}
