//! HTTP basic authentication against bcrypt htpasswd entries.
//!
//! bcrypt is slow on purpose (about 1 ms at cost 5, 60 ms at cost 10), so verifications run
//! on tokio's blocking pool, at most one per core at a time node-wide, and their outcome is
//! cached under a salted SHA-256 of the credentials: a client that repeats the right header
//! costs one hash per request, one that repeats a wrong one a bcrypt per `FAILED_TTL`.
//! Unknown users are checked against a dummy hash, so timing does not tell which users exist.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use base64::Engine as _;
use http::{header, HeaderName, Request};
use schemas::snapshot::{parse_htpasswd_line, BasicAuthSpec};
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

use super::super::error::Denial;

const VERIFIED_TTL: Duration = Duration::from_secs(60);
const FAILED_TTL: Duration = Duration::from_secs(10);
const CACHE_ENTRIES: usize = 10_000;
/// How long a request waits for a free verification slot before getting a 503.
const QUEUE_WAIT: Duration = Duration::from_secs(1);
const MAX_FILE_BYTES: u64 = 16 << 20;

#[derive(Debug)]
pub struct Basic {
    users: HashMap<String, Arc<str>>,
    /// Checked for unknown users, at the highest cost of the known ones, so that the time
    /// of an answer does not tell whether a user exists.
    dummy: Arc<str>,
    realm: String,
    forward: HeaderName,
    /// Salted hash of the `Authorization` value → (user or failure, when it expires).
    cache: quick_cache::sync::Cache<[u8; 32], (Option<Arc<str>>, Instant)>,
    salt: [u8; 16],
}

impl Basic {
    pub fn build(spec: &BasicAuthSpec) -> anyhow::Result<Self> {
        let mut users: HashMap<String, Arc<str>> =
            spec.users.iter().map(|(u, h)| (u.clone(), Arc::from(h.as_str()))).collect();
        if let Some(path) = &spec.htpasswd_file {
            let text = super::super::tls::config_text(path, MAX_FILE_BYTES)?;
            for (n, line) in text.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                let (user, hash) = parse_htpasswd_line(line).map_err(|e| anyhow::anyhow!("{path}:{}: {e}", n + 1))?;
                users.insert(user, Arc::from(hash.as_str()));
            }
        }
        let cost = users.values().filter_map(|h| h.split('$').nth(2)?.parse::<u32>().ok()).max().unwrap_or(5);
        let dummy = bcrypt::hash(fastrand::u64(..).to_string(), cost).map_err(|e| anyhow::anyhow!("bcrypt: {e}"))?;
        Ok(Basic {
            users,
            dummy: Arc::from(dummy.as_str()),
            realm: spec.realm.clone(),
            forward: HeaderName::from_bytes(spec.forward_header.as_bytes())?,
            cache: quick_cache::sync::Cache::new(CACHE_ENTRIES),
            salt: fastrand::u128(..).to_le_bytes(),
        })
    }

    pub fn challenge(&self) -> String {
        format!("Basic realm=\"{}\", charset=\"UTF-8\"", self.realm)
    }

    pub fn presented<B>(&self, req: &Request<B>) -> bool {
        req.headers()
            .get(header::AUTHORIZATION)
            .is_some_and(|v| v.as_bytes().get(..6).is_some_and(|s| s.eq_ignore_ascii_case(b"basic ")))
    }

    pub async fn authenticate<B>(&self, req: &mut Request<B>) -> Result<(HeaderName, Arc<str>), Denial> {
        let value = req.headers_mut().remove(header::AUTHORIZATION).ok_or(Denial::CredentialsMissing)?;
        let key: [u8; 32] = Sha256::new().chain_update(self.salt).chain_update(value.as_bytes()).finalize().into();
        if let Some((who, until)) = self.cache.get(&key) {
            if Instant::now() < until {
                return who.map(|u| (self.forward.clone(), u)).ok_or(Denial::CredentialsInvalid);
            }
        }
        let (user, password) = decode(&value.as_bytes()[6..]).ok_or(Denial::CredentialsInvalid)?;
        let (hash, known) = match self.users.get(&user) {
            Some(h) => (h.clone(), true),
            None => (self.dummy.clone(), false),
        };
        let ok = verify(password, hash).await? && known;
        let who = ok.then(|| Arc::from(user.as_str()));
        let ttl = if ok { VERIFIED_TTL } else { FAILED_TTL };
        self.cache.insert(key, (who.clone(), Instant::now() + ttl));
        who.map(|u| (self.forward.clone(), u)).ok_or(Denial::CredentialsInvalid)
    }
}

/// `user:password` from the base64 of a `Basic` credential.
fn decode(b64: &[u8]) -> Option<(String, Vec<u8>)> {
    if b64.len() > 4096 {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD.decode(b64.trim_ascii()).ok()?;
    let colon = raw.iter().position(|b| *b == b':')?;
    let user = String::from_utf8(raw[..colon].to_vec()).ok()?;
    Some((user, raw[colon + 1..].to_vec()))
}

/// One bcrypt check on the blocking pool, at most one per core node-wide.
async fn verify(password: Vec<u8>, hash: Arc<str>) -> Result<bool, Denial> {
    static SLOTS: OnceLock<Arc<Semaphore>> = OnceLock::new();
    let slots = SLOTS
        .get_or_init(|| Arc::new(Semaphore::new(std::thread::available_parallelism().map_or(1, |n| n.get()))))
        .clone();
    let permit = tokio::time::timeout(QUEUE_WAIT, slots.acquire_owned())
        .await
        .map_err(|_| Denial::Overloaded)?
        .map_err(|_| Denial::Overloaded)?;
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        // bcrypt reads at most 72 bytes; longer passwords are refused rather than cut.
        password.len() <= 72 && bcrypt::verify(&password, &hash).unwrap_or(false)
    })
    .await
    .map_err(|_| Denial::Overloaded)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic() -> Basic {
        let hash = bcrypt::hash("s3cret", 4).unwrap();
        Basic::build(&BasicAuthSpec {
            users: vec![("alice".into(), hash)],
            htpasswd_file: None,
            realm: "r".into(),
            forward_header: "x-raftgate-consumer".into(),
        })
        .unwrap()
    }

    fn req(user: &str, pass: &str) -> Request<()> {
        let v = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
        Request::builder().header("authorization", format!("Basic {v}")).body(()).unwrap()
    }

    #[tokio::test]
    async fn right_wrong_and_unknown_users() {
        let b = basic();
        let mut r = req("alice", "s3cret");
        assert!(b.presented(&r));
        assert_eq!(&*b.authenticate(&mut r).await.unwrap().1, "alice");
        assert!(!r.headers().contains_key("authorization"), "the password does not go upstream");
        // From the cache now, and still right.
        assert_eq!(&*b.authenticate(&mut req("alice", "s3cret")).await.unwrap().1, "alice");
        assert_eq!(b.authenticate(&mut req("alice", "wrong")).await.unwrap_err(), Denial::CredentialsInvalid);
        assert_eq!(b.authenticate(&mut req("alice", "wrong")).await.unwrap_err(), Denial::CredentialsInvalid);
        assert_eq!(b.authenticate(&mut req("mallory", "s3cret")).await.unwrap_err(), Denial::CredentialsInvalid);
        let mut bad = Request::builder().header("authorization", "Basic !!!").body(()).unwrap();
        assert_eq!(b.authenticate(&mut bad).await.unwrap_err(), Denial::CredentialsInvalid);
    }
}
