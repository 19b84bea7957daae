//! Key sets of JWT providers: parsed from a JWKS (a file, or fetched), each key with the
//! algorithms it may verify, and the background fetcher of a remote JWKS.
//!
//! A fetcher refreshes its set every `cacheDuration`, backs off on failure and keeps the
//! last good set meanwhile; a token with an unknown `kid` may ask for one early refresh
//! per `ON_DEMAND_INTERVAL`, and waits at most `ON_DEMAND_WAIT` for it. Fetchers are shared
//! by URI across config swaps (`shared`), so a new config keeps the keys of the old one
//! even while the JWKS server is down.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey};
use tokio::sync::{watch, Notify};

/// Largest JWKS accepted.
const MAX_JWKS_BYTES: usize = 1 << 20;
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
const ON_DEMAND_INTERVAL: Duration = Duration::from_secs(10);
/// The longest a request waits for an early refresh.
pub const ON_DEMAND_WAIT: Duration = Duration::from_secs(1);

#[derive(Clone)]
pub struct Key {
    pub key: DecodingKey,
    pub algorithms: Vec<Algorithm>,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key").field("algorithms", &self.algorithms).finish_non_exhaustive()
    }
}

#[derive(Debug, Default)]
pub struct KeySet {
    pub by_kid: HashMap<String, Key>,
    /// Keys without a `kid`, tried in turn by tokens without one.
    pub anonymous: Vec<Key>,
}

impl KeySet {
    /// Parses a JWKS; keys of a kind raftgate does not verify with are skipped, and
    /// symmetric (`oct`) keys are refused: HMAC secrets come only from the node.
    pub fn parse(json: &[u8]) -> Result<KeySet, String> {
        let set: JwkSet = serde_json::from_slice(json).map_err(|e| format!("not a JWKS: {e}"))?;
        let mut out = KeySet::default();
        for jwk in &set.keys {
            let Some(key) = key_of(jwk)? else { continue };
            match &jwk.common.key_id {
                Some(kid) => {
                    out.by_kid.insert(kid.clone(), key);
                }
                None => out.anonymous.push(key),
            }
        }
        if out.is_empty() {
            return Err("the JWKS holds no usable key".into());
        }
        Ok(out)
    }

    pub fn len(&self) -> usize {
        self.by_kid.len() + self.anonymous.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn key_of(jwk: &Jwk) -> Result<Option<Key>, String> {
    if jwk.common.public_key_use == Some(jsonwebtoken::jwk::PublicKeyUse::Encryption) {
        return Ok(None);
    }
    let family: Vec<Algorithm> = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => {
            vec![
                Algorithm::RS256,
                Algorithm::RS384,
                Algorithm::RS512,
                Algorithm::PS256,
                Algorithm::PS384,
                Algorithm::PS512,
            ]
        }
        AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
            EllipticCurve::P256 => vec![Algorithm::ES256],
            EllipticCurve::P384 => vec![Algorithm::ES384],
            _ => return Ok(None),
        },
        AlgorithmParameters::OctetKeyPair(okp) if okp.curve == EllipticCurve::Ed25519 => vec![Algorithm::EdDSA],
        AlgorithmParameters::OctetKeyPair(_) => return Ok(None),
        AlgorithmParameters::OctetKey(_) => {
            return Err("the JWKS holds a symmetric (oct) key; HMAC secrets are read from the node only".into())
        }
    };
    // A key that names its algorithm verifies only that one.
    let algorithms = match jwk.common.key_algorithm.and_then(named_algorithm) {
        Some(a) if family.contains(&a) => vec![a],
        Some(_) => return Ok(None),
        None => family,
    };
    let key = DecodingKey::from_jwk(jwk).map_err(|e| format!("unusable key: {e}"))?;
    Ok(Some(Key { key, algorithms }))
}

fn named_algorithm(a: KeyAlgorithm) -> Option<Algorithm> {
    Some(match a {
        KeyAlgorithm::RS256 => Algorithm::RS256,
        KeyAlgorithm::RS384 => Algorithm::RS384,
        KeyAlgorithm::RS512 => Algorithm::RS512,
        KeyAlgorithm::PS256 => Algorithm::PS256,
        KeyAlgorithm::PS384 => Algorithm::PS384,
        KeyAlgorithm::PS512 => Algorithm::PS512,
        KeyAlgorithm::ES256 => Algorithm::ES256,
        KeyAlgorithm::ES384 => Algorithm::ES384,
        KeyAlgorithm::EdDSA => Algorithm::EdDSA,
        _ => return None,
    })
}

/// A remote JWKS, fetched in the background.
pub struct Fetcher {
    uri: String,
    pub keys: ArcSwap<KeySet>,
    /// Bumped at every successful fetch.
    generation: watch::Sender<u64>,
    wake: Notify,
    last_on_demand: Mutex<Option<Instant>>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl std::fmt::Debug for Fetcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fetcher").field("uri", &self.uri).field("keys", &self.keys.load().len()).finish()
    }
}

impl Drop for Fetcher {
    fn drop(&mut self) {
        if let Some(t) = self.task.lock().unwrap_or_else(|e| e.into_inner()).take() {
            t.abort();
        }
    }
}

type Registry = Mutex<HashMap<(String, u64), Weak<Fetcher>>>;

/// The fetcher of `uri`, shared with every config that names it while one is alive.
pub fn shared(uri: &str, every: Duration, roots: &Arc<rustls::RootCertStore>) -> Arc<Fetcher> {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    let mut reg = REGISTRY.get_or_init(Registry::default).lock().unwrap_or_else(|e| e.into_inner());
    reg.retain(|_, w| w.strong_count() > 0);
    let key = (uri.to_string(), every.as_millis() as u64);
    if let Some(f) = reg.get(&key).and_then(Weak::upgrade) {
        return f;
    }
    let f = Arc::new(Fetcher {
        uri: uri.to_string(),
        keys: ArcSwap::from_pointee(KeySet::default()),
        generation: watch::channel(0).0,
        wake: Notify::new(),
        last_on_demand: Mutex::new(None),
        task: Mutex::new(None),
    });
    match tokio::runtime::Handle::try_current() {
        Ok(handle) => {
            let task = handle.spawn(run(Arc::downgrade(&f), every, client(roots)));
            *f.task.lock().unwrap_or_else(|e| e.into_inner()) = Some(task);
        }
        Err(_) => tracing::warn!(uri, "no runtime to fetch the JWKS on; its tokens will be refused"),
    }
    reg.insert(key, Arc::downgrade(&f));
    f
}

impl Fetcher {
    /// Counts the key sets fetched so far.
    pub fn generation(&self) -> u64 {
        *self.generation.borrow()
    }

    /// Asks for an early refresh (at most one per `ON_DEMAND_INTERVAL`) and waits up to
    /// `ON_DEMAND_WAIT` for a new key set. True when one arrived.
    pub async fn refresh_now(&self) -> bool {
        {
            let mut last = self.last_on_demand.lock().unwrap_or_else(|e| e.into_inner());
            if last.is_some_and(|t| t.elapsed() < ON_DEMAND_INTERVAL) {
                return false;
            }
            *last = Some(Instant::now());
        }
        let mut rx = self.generation.subscribe();
        rx.borrow_and_update();
        self.wake.notify_one();
        tokio::time::timeout(ON_DEMAND_WAIT, rx.changed()).await.is_ok_and(|r| r.is_ok())
    }
}

/// A client for the gateway's own calls (JWKS fetches, external authorization): TLS with
/// the node's roots, empty request bodies.
pub type FetchClient = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    Empty<Bytes>,
>;

pub fn client(roots: &Arc<rustls::RootCertStore>) -> FetchClient {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default versions")
        .with_root_certificates(roots.clone())
        .with_no_client_auth();
    let https = hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls).https_or_http().enable_http1().build();
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build(https)
}

async fn run(me: Weak<Fetcher>, every: Duration, client: FetchClient) {
    let mut backoff = Duration::from_secs(1);
    loop {
        let Some(f) = me.upgrade() else { return };
        let outcome = fetch(&client, &f.uri).await;
        let wait = match outcome {
            Ok(set) => {
                tracing::debug!(uri = f.uri, keys = set.len(), "JWKS fetched");
                f.keys.store(Arc::new(set));
                f.generation.send_modify(|g| *g += 1);
                metrics::counter!("raftgate_jwks_fetches_total", "outcome" => "ok").increment(1);
                backoff = Duration::from_secs(1);
                every
            }
            Err(why) => {
                tracing::warn!(uri = f.uri, %why, "JWKS fetch failed; keeping the last good key set");
                metrics::counter!("raftgate_jwks_fetches_total", "outcome" => "error").increment(1);
                let wait = backoff.min(every);
                backoff = (backoff * 2).min(Duration::from_secs(60));
                wait
            }
        };
        let woken = async { f.wake.notified().await };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = woken => {}
        }
    }
}

async fn fetch(client: &FetchClient, uri: &str) -> Result<KeySet, String> {
    let req = http::Request::get(uri)
        .header(http::header::ACCEPT, "application/json")
        .header(http::header::USER_AGENT, "raftgate-jwks")
        .body(Empty::new())
        .map_err(|e| e.to_string())?;
    let resp = tokio::time::timeout(FETCH_TIMEOUT, client.request(req))
        .await
        .map_err(|_| "timed out".to_string())?
        .map_err(|e| e.to_string())?;
    if !resp.status().is_success() {
        return Err(format!("status {}", resp.status()));
    }
    let body = tokio::time::timeout(FETCH_TIMEOUT, Limited::new(resp.into_body(), MAX_JWKS_BYTES).collect())
        .await
        .map_err(|_| "timed out reading".to_string())?
        .map_err(|e| format!("reading: {e}"))?
        .to_bytes();
    KeySet::parse(&body)
}
