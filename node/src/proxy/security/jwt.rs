//! JSON Web Tokens: a token from one of the providers' places (a header with its prefix, a
//! cookie, a query parameter) verified by `jsonwebtoken` against the provider's keys.
//!
//! The algorithm a token names must be one its key may verify (an RSA key never verifies
//! an HS256 token, so a public key cannot be used as an HMAC secret), `none` is refused by
//! the crate, `exp` is required and `exp`/`nbf` hold within the provider's clock skew,
//! `iss` and `aud` match when the provider names them. Verified tokens are cached under a
//! salted hash until they expire (at most `CACHE_TTL`), so a client repeating its token
//! costs a hash, not a signature check; the cache is emptied when keys change.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use http::{header, HeaderName, HeaderValue, Request, Uri};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use schemas::snapshot::{JwtProviderSpec, JwtSpec, TokenSourceSpec};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::super::error::Denial;
use super::jwks::{self, Fetcher, Key, KeySet};

const MAX_TOKEN_BYTES: usize = 8 * 1024;
const CACHE_TTL: Duration = Duration::from_secs(300);
const CACHE_ENTRIES: usize = 10_000;
/// Shortest HMAC secret accepted (RFC 7518: at least the hash output, 256 bits for HS256).
const MIN_SECRET_BYTES: usize = 32;

/// A token that passed: who issued it and what it says.
#[derive(Debug, Clone)]
pub struct Verified {
    pub provider: Arc<str>,
    pub claims: Arc<Map<String, Value>>,
}

impl Verified {
    /// A claim by name; `a.b` reads `b` inside the object claim `a`.
    pub fn claim(&self, name: &str) -> Option<&Value> {
        let mut parts = name.split('.');
        let mut v = self.claims.get(parts.next()?)?;
        for p in parts {
            v = v.as_object()?.get(p)?;
        }
        Some(v)
    }

    /// The token's scopes: `scope` (space-separated) or `scp` (a list or a string).
    pub fn scopes(&self) -> Vec<&str> {
        let mut out = Vec::new();
        for name in ["scope", "scp"] {
            match self.claims.get(name) {
                Some(Value::String(s)) => out.extend(s.split(' ').filter(|s| !s.is_empty())),
                Some(Value::Array(a)) => out.extend(a.iter().filter_map(Value::as_str)),
                _ => {}
            }
        }
        out
    }
}

#[derive(Debug)]
struct Provider {
    name: Arc<str>,
    issuer: Option<String>,
    audiences: Vec<String>,
    local: Option<KeySet>,
    remote: Option<Arc<Fetcher>>,
    hmac: Option<Key>,
    sources: Vec<TokenSourceSpec>,
    claim_headers: Vec<(HeaderName, String)>,
    skew_secs: u64,
}

#[derive(Debug)]
pub struct Jwt {
    providers: Vec<Provider>,
    /// Salted token hash → (what it says, until when, the key generation that verified it).
    cache: quick_cache::sync::Cache<[u8; 32], (Verified, Instant, u64)>,
    salt: [u8; 16],
}

impl Jwt {
    pub fn build(spec: &JwtSpec, roots: &Arc<rustls::RootCertStore>) -> anyhow::Result<Self> {
        let providers = spec.providers.iter().map(|p| Provider::build(p, roots)).collect::<anyhow::Result<_>>()?;
        Ok(Jwt {
            providers,
            cache: quick_cache::sync::Cache::new(CACHE_ENTRIES),
            salt: fastrand::u128(..).to_le_bytes(),
        })
    }

    pub fn challenge(&self) -> String {
        "Bearer".to_string()
    }

    pub fn presented<B>(&self, req: &Request<B>) -> bool {
        self.providers.iter().any(|p| p.token(req).is_some())
    }

    /// The verified token, with the headers its claims fill in set on the request; and, for
    /// a token in the query, the URI without it (for the log, whatever the outcome, and to
    /// forward).
    pub async fn authenticate<B>(&self, req: &mut Request<B>) -> (Result<Verified, Denial>, Option<Uri>) {
        let mut last = Denial::CredentialsMissing;
        let mut cut: Option<Uri> = None;
        for p in &self.providers {
            let Some((token, source)) = p.token(req) else { continue };
            if let TokenSourceSpec::Param(name) = source {
                cut = Some(super::apikey::without_query_param(cut.as_ref().unwrap_or(req.uri()), name));
            }
            match self.verify(p, &token).await {
                Ok(v) => {
                    for (h, claim) in &p.claim_headers {
                        match v.claim(claim).and_then(header_value) {
                            Some(value) => req.headers_mut().insert(h.clone(), value),
                            None => req.headers_mut().remove(h),
                        };
                    }
                    if let TokenSourceSpec::Header(h, _) = source {
                        if h == "authorization" {
                            req.headers_mut().remove(header::AUTHORIZATION);
                        }
                    }
                    return (Ok(v), cut);
                }
                Err(d) => last = d,
            }
        }
        (Err(last), cut)
    }

    async fn verify(&self, p: &Provider, token: &str) -> Result<Verified, Denial> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(Denial::CredentialsInvalid);
        }
        let hash: [u8; 32] = Sha256::new()
            .chain_update(self.salt)
            .chain_update(p.name.as_bytes())
            .chain_update([0])
            .chain_update(token.as_bytes())
            .finalize()
            .into();
        // An entry is good until the token expires and while the provider's keys are the
        // ones that verified it: a key withdrawn from the JWKS takes its tokens with it.
        let generation = p.remote.as_ref().map_or(0, |r| r.generation());
        if let Some((v, until, g)) = self.cache.get(&hash) {
            if Instant::now() < until && g == generation {
                return Ok(v);
            }
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| Denial::CredentialsInvalid)?;
        let mut key = p.key(&header);
        if key.is_none() && !matches!(header.alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512) {
            // An unknown key id may be a rotation the node has not seen yet.
            if let Some(remote) = &p.remote {
                remote.refresh_now().await;
                key = p.key(&header);
            }
        }
        let key = key.ok_or(Denial::CredentialsInvalid)?;
        if !key.algorithms.contains(&header.alg) {
            return Err(Denial::CredentialsInvalid);
        }
        let mut v = Validation::new(header.alg);
        v.leeway = p.skew_secs;
        v.validate_nbf = true;
        // A configured issuer or audience must be present, not just right when present.
        let mut required = vec!["exp"];
        required.extend(p.issuer.as_ref().map(|_| "iss"));
        required.extend((!p.audiences.is_empty()).then_some("aud"));
        v.set_required_spec_claims(&required);
        match &p.issuer {
            Some(iss) => v.set_issuer(&[iss]),
            None => v.iss = None,
        }
        if p.audiences.is_empty() {
            v.validate_aud = false;
        } else {
            v.set_audience(&p.audiences);
        }
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, &v).map_err(|e| {
            tracing::debug!(provider = &*p.name, error = %e, "token refused");
            Denial::CredentialsInvalid
        })?;
        let verified = Verified { provider: p.name.clone(), claims: Arc::new(data.claims) };
        let exp = verified.claim("exp").and_then(Value::as_u64).unwrap_or(0);
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let ttl = Duration::from_secs(exp.saturating_sub(now)).min(CACHE_TTL);
        let generation = p.remote.as_ref().map_or(0, |r| r.generation());
        self.cache.insert(hash, (verified.clone(), Instant::now() + ttl, generation));
        Ok(verified)
    }
}

impl Provider {
    fn build(spec: &JwtProviderSpec, roots: &Arc<rustls::RootCertStore>) -> anyhow::Result<Self> {
        let what = |e: String| anyhow::anyhow!("JWT provider `{}`: {e}", spec.name);
        let local = match &spec.local_jwks {
            Some(path) => {
                let bytes = super::super::tls::config_file(path).map_err(|e| what(e.to_string()))?;
                Some(KeySet::parse(&bytes).map_err(|e| what(format!("{path}: {e}")))?)
            }
            None => None,
        };
        let hmac = match &spec.hmac_secret {
            Some(src) => {
                let secret = super::super::tls::read_pem(src).map_err(|e| what(e.to_string()))?;
                let secret = secret.trim_ascii_end().to_vec();
                if secret.len() < MIN_SECRET_BYTES {
                    return Err(what(format!(
                        "the HMAC secret is {} bytes; at least {MIN_SECRET_BYTES} are needed",
                        secret.len()
                    )));
                }
                Some(Key {
                    key: DecodingKey::from_secret(&secret),
                    algorithms: vec![Algorithm::HS256, Algorithm::HS384, Algorithm::HS512],
                })
            }
            None => None,
        };
        let remote = spec
            .remote_jwks
            .as_ref()
            .map(|r| jwks::shared(&r.uri, Duration::from_millis(r.cache_duration.as_millis()), roots));
        Ok(Provider {
            name: Arc::from(spec.name.as_str()),
            issuer: spec.issuer.clone(),
            audiences: spec.audiences.clone(),
            local,
            remote,
            hmac,
            sources: spec.extract_from.clone(),
            claim_headers: spec
                .claim_to_headers
                .iter()
                .filter_map(|(h, c)| Some((HeaderName::from_bytes(h.as_bytes()).ok()?, c.clone())))
                .collect(),
            skew_secs: spec.clock_skew.as_millis() / 1000,
        })
    }

    /// The key for a token with this header: by `kid`, or the only candidate.
    fn key(&self, header: &jsonwebtoken::Header) -> Option<Key> {
        if matches!(header.alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512) {
            return self.hmac.clone();
        }
        let remote = self.remote.as_ref().map(|r| r.keys.load_full());
        let sets = self.local.iter().chain(remote.as_deref());
        let mut found = None;
        for set in sets {
            match &header.kid {
                Some(kid) => found = found.or_else(|| set.by_kid.get(kid).cloned()),
                None => {
                    found = found
                        .or_else(|| set.anonymous.iter().find(|k| k.algorithms.contains(&header.alg)).cloned())
                        .or_else(|| set.by_kid.values().find(|k| k.algorithms.contains(&header.alg)).cloned())
                }
            }
        }
        found
    }

    /// The token and where it was found.
    fn token<'s, B>(&'s self, req: &Request<B>) -> Option<(String, &'s TokenSourceSpec)> {
        self.sources.iter().find_map(|s| {
            let t = match s {
                TokenSourceSpec::Header(name, prefix) => {
                    let v = req.headers().get(name.as_str())?.to_str().ok()?;
                    let head = v.get(..prefix.len())?;
                    head.eq_ignore_ascii_case(prefix).then(|| v[prefix.len()..].trim().to_string())?
                }
                TokenSourceSpec::Cookie(name) => req
                    .headers()
                    .get_all(header::COOKIE)
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .flat_map(|v| v.split(';'))
                    .filter_map(|c| c.trim().split_once('='))
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| v.to_string())?,
                TokenSourceSpec::Param(name) => {
                    let q = req.uri().query()?;
                    form_urlencoded::parse(q.as_bytes()).find(|(k, _)| k == name).map(|(_, v)| v.into_owned())?
                }
            };
            (!t.is_empty()).then_some((t, s))
        })
    }
}

fn header_value(v: &Value) -> Option<HeaderValue> {
    let text = match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Array(a) => a.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(","),
        _ => return None,
    };
    HeaderValue::from_str(&text).ok()
}
