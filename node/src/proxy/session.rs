//! Session persistence (Gateway API `sessionPersistence`): a client that comes back with
//! its session cookie (or header) reaches the endpoint it reached before, while that
//! endpoint is available; otherwise the balancer picks another and the session moves.
//!
//! The session value names the endpoint without revealing it (given a secret key; see
//! `BUILT_IN_KEY`): an 8-byte id, a keyed hash
//! (HMAC-SHA256) of the upstream's name and the endpoint's address, with the session's
//! start and last use, sealed by an HMAC over all of it (checked in constant time). Every
//! node derives the same ids and seals from the same key (`--session-key-file`, or a
//! built-in one), so a session made on one node holds on all. Read in `prepare` (which
//! then prefers the session's backend and endpoint), written in `response_filter`.

use std::sync::{Arc, OnceLock};

use base64::Engine as _;
use hmac::{Hmac, Mac};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use schemas::snapshot::{PersistenceType, SessionPersistenceSpec};
use sha2::Sha256;

use super::endpoints::Endpoint;
use super::upstream::Upstream;

type HmacSha256 = Hmac<Sha256>;

/// The key every node uses unless `--session-key-file` gives one. Public: a client could
/// then forge a value naming another endpoint of the same upstream (never anything else).
const BUILT_IN_KEY: &[u8] = b"raftgate session persistence: built-in key; set --session-key-file";

static KEY: OnceLock<Vec<u8>> = OnceLock::new();

/// Sets the node's session key (once, at start-up, from `--session-key-file`).
pub fn set_key(secret: &[u8]) {
    let _ = KEY.set(secret.to_vec());
}

fn key() -> &'static [u8] {
    KEY.get().map_or(BUILT_IN_KEY, Vec::as_slice)
}

fn mac(label: &[u8], parts: &[&[u8]]) -> HmacSha256 {
    let mut m = HmacSha256::new_from_slice(key()).expect("HMAC takes any key length");
    m.update(label);
    for p in parts {
        m.update(&(p.len() as u32).to_be_bytes());
        m.update(p);
    }
    m
}

/// The id of endpoint `ep` of `up`, made once per endpoint.
fn id(up: &Upstream, ep: &Endpoint) -> u64 {
    *ep.session_id.get_or_init(|| {
        let tag = mac(b"endpoint", &[up.spec.name.as_bytes(), ep.address.as_bytes()]).finalize().into_bytes();
        u64::from_be_bytes(tag[..8].try_into().expect("8 bytes"))
    })
}

/// A rule's session persistence, ready for the request path.
#[derive(Debug)]
pub struct Persistence {
    pub spec: SessionPersistenceSpec,
    header: Option<HeaderName>,
}

/// A valid session the request came with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Session {
    pub endpoint: u64,
    /// When the session began, in Unix seconds.
    pub since: u64,
    /// When the value was last (re)issued.
    pub seen: u64,
}

/// What the request's session value turned out to be (for the metric and the answer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    None,
    Valid(Session),
    /// Sealed correctly, but past its absolute or idle timeout.
    Expired,
    /// Not a value this cluster made (or altered).
    Invalid,
}

const SEALED_LEN: usize = 24 + 16;

impl Persistence {
    pub fn compile(spec: &SessionPersistenceSpec) -> Self {
        if KEY.get().is_none() {
            static WARNED: std::sync::Once = std::sync::Once::new();
            WARNED.call_once(|| {
                tracing::warn!(
                    "sessionPersistence runs with the built-in session key: clients could forge sessions naming \
                     other endpoints, or guess endpoint addresses from their ids; give every node the same \
                     --session-key-file"
                );
            });
        }
        let header =
            (spec.kind == PersistenceType::Header).then(|| HeaderName::from_bytes(spec.name.as_bytes()).ok()).flatten();
        Persistence { spec: spec.clone(), header }
    }

    /// The session the request carries, checked.
    pub fn read(&self, headers: &HeaderMap, now: u64) -> Found {
        let value = match &self.header {
            Some(h) => headers.get(h).and_then(|v| v.to_str().ok()).map(str::to_string),
            None => cookie(headers, &self.spec.name),
        };
        let Some(value) = value else { return Found::None };
        let Ok(raw) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(value.trim()) else {
            return Found::Invalid;
        };
        if raw.len() != SEALED_LEN {
            return Found::Invalid;
        }
        let (payload, tag) = raw.split_at(24);
        if mac(b"session", &[self.spec.name.as_bytes(), payload]).verify_truncated_left(tag).is_err() {
            return Found::Invalid;
        }
        let field = |i: usize| u64::from_be_bytes(payload[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
        let s = Session { endpoint: field(0), since: field(1), seen: field(2) };
        let over = |t: Option<schemas::Duration>, from: u64| {
            t.is_some_and(|t| now.saturating_sub(from) * 1000 > t.as_millis())
        };
        if over(self.spec.absolute_timeout, s.since) || over(self.spec.idle_timeout, s.seen) {
            return Found::Expired;
        }
        Found::Valid(s)
    }

    /// The backend (index among `upstreams`) and endpoint the session names, if the rule
    /// still has them.
    pub fn locate<'a>(
        &self,
        s: &Session,
        upstreams: impl Iterator<Item = &'a Arc<Upstream>>,
    ) -> Option<(usize, Arc<Endpoint>)> {
        upstreams.enumerate().find_map(|(b, up)| {
            let set = up.endpoints();
            set.list.iter().find(|e| id(up, e) == s.endpoint).map(|e| (b, e.clone()))
        })
    }

    /// Sets the session value on the answer when it is new, moved to another endpoint, or
    /// due for a refresh of its idle timer (a header session is sent on every answer).
    /// Returns the outcome for the metric.
    pub fn write(
        &self,
        h: &mut HeaderMap,
        found: Found,
        up: &Upstream,
        endpoint: &Endpoint,
        now: u64,
        https: bool,
    ) -> &'static str {
        let id = id(up, endpoint);
        let (since, outcome) = match found {
            Found::Valid(s) if s.endpoint == id => {
                let refresh =
                    self.spec.idle_timeout.is_some_and(|t| (now.saturating_sub(s.seen)) * 4000 >= t.as_millis());
                if !refresh && self.header.is_none() {
                    return "kept";
                }
                (s.since, "kept")
            }
            Found::Valid(s) => (s.since, "moved"),
            Found::None => (now, "new"),
            Found::Expired => (now, "expired"),
            Found::Invalid => (now, "invalid"),
        };
        let mut payload = [0u8; 24];
        payload[..8].copy_from_slice(&id.to_be_bytes());
        payload[8..16].copy_from_slice(&since.to_be_bytes());
        payload[16..].copy_from_slice(&now.to_be_bytes());
        let tag = mac(b"session", &[self.spec.name.as_bytes(), &payload]).finalize().into_bytes();
        let mut sealed = payload.to_vec();
        sealed.extend_from_slice(&tag[..16]);
        let value = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sealed);
        match &self.header {
            Some(name) => {
                if let Ok(v) = HeaderValue::from_str(&value) {
                    h.insert(name.clone(), v);
                }
            }
            None => {
                let mut c = format!("{}={value}; Path=/; HttpOnly; SameSite=Lax", self.spec.name);
                if https {
                    c.push_str("; Secure");
                }
                if let (true, Some(t)) = (self.spec.permanent, self.spec.absolute_timeout) {
                    let left = (t.as_millis() / 1000).saturating_sub(now.saturating_sub(since));
                    c.push_str(&format!("; Max-Age={left}"));
                }
                if let Ok(v) = HeaderValue::from_str(&c) {
                    h.append(header::SET_COOKIE, v);
                }
            }
        }
        outcome
    }
}

/// The value of cookie `name` in the request's `Cookie` headers.
fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim_matches('"').to_string())
}

/// Unix seconds now.
pub fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(kind: PersistenceType, idle: Option<u64>, absolute: Option<u64>) -> SessionPersistenceSpec {
        SessionPersistenceSpec {
            name: if kind == PersistenceType::Cookie { "rg-session".into() } else { "x-session".into() },
            kind,
            absolute_timeout: absolute.map(|s| schemas::Duration::from_millis(s * 1000)),
            idle_timeout: idle.map(|s| schemas::Duration::from_millis(s * 1000)),
            permanent: false,
        }
    }

    /// A value sealed by `write`, read back from the answer's headers.
    fn issue(p: &Persistence, id: u64, since: u64, now: u64) -> HeaderMap {
        let mut payload = [0u8; 24];
        payload[..8].copy_from_slice(&id.to_be_bytes());
        payload[8..16].copy_from_slice(&since.to_be_bytes());
        payload[16..].copy_from_slice(&now.to_be_bytes());
        let tag = mac(b"session", &[p.spec.name.as_bytes(), &payload]).finalize().into_bytes();
        let value = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([&payload[..], &tag[..16]].concat());
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_str(&format!("a=b; {}={value}; c=d", p.spec.name)).unwrap());
        h
    }

    #[test]
    fn sessions_are_sealed_and_expire() {
        let p = Persistence::compile(&spec(PersistenceType::Cookie, Some(60), Some(3600)));
        let h = issue(&p, 42, 1000, 1000);
        assert!(matches!(p.read(&h, 1030), Found::Valid(Session { endpoint: 42, since: 1000, seen: 1000 })));
        assert_eq!(p.read(&h, 1061), Found::Expired, "idle for longer than idleTimeout");
        let later = issue(&p, 42, 1000, 4590);
        assert!(matches!(p.read(&later, 4600), Found::Valid(_)));
        assert_eq!(p.read(&later, 4601), Found::Expired, "older than absoluteTimeout");
        // Any change to the value breaks the seal.
        let v = h.get(header::COOKIE).unwrap().to_str().unwrap().to_string();
        let start = v.find("rg-session=").unwrap() + "rg-session=".len();
        for i in [start, start + 10, start + 40] {
            let mut bytes = v.clone().into_bytes();
            bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
            let mut t = HeaderMap::new();
            t.insert(header::COOKIE, HeaderValue::from_bytes(&bytes).unwrap());
            assert_eq!(p.read(&t, 1001), Found::Invalid, "altered at {i}");
        }
        assert_eq!(p.read(&HeaderMap::new(), 1001), Found::None);
        // Another rule's session name does not open this one's value.
        let other = Persistence::compile(&SessionPersistenceSpec { name: "other".into(), ..p.spec.clone() });
        let moved = h.get(header::COOKIE).unwrap().to_str().unwrap().replace("rg-session=", "other=");
        let mut t = HeaderMap::new();
        t.insert(header::COOKIE, HeaderValue::from_str(&moved).unwrap());
        assert_eq!(other.read(&t, 1001), Found::Invalid);
    }
}
