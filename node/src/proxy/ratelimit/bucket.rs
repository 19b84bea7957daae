//! The buckets of one rule's rate limit: a token bucket per key (client IP, a header's
//! value or an API key), kept as one "theoretical arrival time" per key (GCRA), so a check
//! is one compare-and-swap on an atomic and no timer runs in the background.
//!
//! A `cluster` limit is shared by the fleet: each node allows `requests / nodes` per period
//! (and `burst / nodes`, at least 1), where `nodes` is the number of members in the Raft
//! membership, read at every check so the share follows the fleet as it grows and shrinks.
//!
//! Buckets live in a bounded cache (least recently used go first), so a flood of distinct
//! keys costs bounded memory; an evicted key starts over with a full bucket. Keys are stored
//! as 64-bit keyed hashes, never as text: API keys never sit in memory longer than a request.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use http::HeaderMap;

use super::super::security::jwt::Verified;
use schemas::snapshot::{RateLimitKeySpec, RateLimitScope, RateLimitSpec};

/// Requests refused by any rate limit since the node started, for `raftgate status`.
pub static REJECTED: AtomicU64 = AtomicU64::new(0);

/// Most keys tracked per rule and node.
const MAX_KEYS: usize = 100_000;

#[derive(Debug)]
pub struct RateLimiter {
    pub spec: RateLimitSpec,
    buckets: quick_cache::sync::Cache<u64, Arc<AtomicU64>>,
    /// Members of the cluster (1 without a cluster), shared with the node.
    nodes: Arc<AtomicUsize>,
    rejected: metrics::Counter,
}

/// The verdict on one request, with what the `RateLimit-*` headers say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// Requests per period on this node.
    pub limit: u64,
    pub remaining: u64,
    /// Seconds until the bucket is full again.
    pub reset_secs: u64,
    /// Seconds to wait before the next request can pass (rejections only).
    pub retry_after_secs: u64,
}

impl RateLimiter {
    pub fn new(route: &str, spec: &RateLimitSpec, nodes: Arc<AtomicUsize>) -> Self {
        Self {
            spec: spec.clone(),
            buckets: quick_cache::sync::Cache::new(MAX_KEYS),
            nodes,
            rejected: metrics::counter!("raftgate_ratelimit_rejected_total", "route" => route.to_string()),
        }
    }

    /// The bucket key of a request.
    pub fn key(&self, headers: &HeaderMap, client: IpAddr, consumer: Option<&str>, token: Option<&Verified>) -> u64 {
        let ip = || match client {
            IpAddr::V4(a) => keyed_hash(b'i', &a.octets()),
            IpAddr::V6(a) => keyed_hash(b'i', &a.octets()),
        };
        match &self.spec.key {
            RateLimitKeySpec::ClientIp => ip(),
            RateLimitKeySpec::Header(name) => keyed_hash(b'h', headers.get(name).map_or(&b""[..], |v| v.as_bytes())),
            RateLimitKeySpec::ApiKey(name) => match headers.get(name) {
                Some(v) if !v.is_empty() => keyed_hash(b'k', v.as_bytes()),
                _ => ip(),
            },
            RateLimitKeySpec::Consumer => consumer.map_or_else(ip, |c| keyed_hash(b'c', c.as_bytes())),
            RateLimitKeySpec::Claim(name) => match token.and_then(|t| t.claim(name)) {
                Some(serde_json::Value::String(s)) => keyed_hash(b'j', s.as_bytes()),
                Some(other) => keyed_hash(b'j', other.to_string().as_bytes()),
                None => ip(),
            },
        }
    }

    /// Takes one token from `key`'s bucket if there is one.
    pub fn check(&self, key: u64, now_ns: u64) -> Decision {
        let nodes = match self.spec.scope {
            RateLimitScope::Node => 1,
            RateLimitScope::Cluster => self.nodes.load(Ordering::Relaxed).max(1) as u64,
        };
        let requests = u64::from(self.spec.requests);
        let period = u128::from(self.spec.period.as_millis()) * 1_000_000;
        // Time between two tokens on this node, and how far ahead the bucket may run.
        let interval = ((period * u128::from(nodes)) / u128::from(requests)).max(1) as u64;
        let burst = u64::from(self.spec.burst).div_ceil(nodes).max(1);
        let tolerance = interval * (burst - 1);
        let limit = (requests / nodes).max(1);

        let tat =
            self.buckets.get_or_insert_with(&key, || Ok::<_, ()>(Arc::new(AtomicU64::new(0)))).expect("infallible");
        let mut current = tat.load(Ordering::Relaxed);
        loop {
            let start = current.max(now_ns);
            if start - now_ns > tolerance {
                self.rejected.increment(1);
                REJECTED.fetch_add(1, Ordering::Relaxed);
                let wait = start - tolerance - now_ns;
                return Decision {
                    allowed: false,
                    limit,
                    remaining: 0,
                    reset_secs: secs_ceil(start - now_ns),
                    retry_after_secs: secs_ceil(wait).max(1),
                };
            }
            let next = start + interval;
            match tat.compare_exchange_weak(current, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => {
                    let remaining = (tolerance + interval - (next - now_ns)) / interval;
                    return Decision {
                        allowed: true,
                        limit,
                        remaining,
                        reset_secs: secs_ceil(next - now_ns),
                        retry_after_secs: 0,
                    };
                }
                Err(actual) => current = actual,
            }
        }
    }
}

fn secs_ceil(ns: u64) -> u64 {
    ns.div_ceil(1_000_000_000)
}

/// A hash keyed with a per-process random seed, so clients cannot aim keys at each other's
/// buckets.
fn keyed_hash(kind: u8, bytes: &[u8]) -> u64 {
    static SEED: OnceLock<u64> = OnceLock::new();
    let seed = *SEED.get_or_init(|| fastrand::u64(..));
    xxhash_rust::xxh3::xxh3_64_with_seed(bytes, seed ^ u64::from(kind))
}

#[cfg(test)]
mod tests {
    use schemas::Duration;

    use super::*;

    fn limiter(requests: u32, burst: u32, scope: RateLimitScope, nodes: usize) -> RateLimiter {
        let spec = RateLimitSpec {
            requests,
            period: Duration::from_millis(1_000),
            burst,
            key: RateLimitKeySpec::ClientIp,
            scope,
        };
        RateLimiter::new("r", &spec, Arc::new(AtomicUsize::new(nodes)))
    }

    #[test]
    fn a_bucket_allows_its_burst_then_the_rate() {
        let l = limiter(10, 5, RateLimitScope::Node, 1);
        let t0 = 1_000_000_000;
        let first: Vec<Decision> = (0..6).map(|_| l.check(1, t0)).collect();
        assert!(first[..5].iter().all(|d| d.allowed));
        assert_eq!(first.iter().map(|d| d.remaining).collect::<Vec<_>>(), [4, 3, 2, 1, 0, 0]);
        assert!(!first[5].allowed);
        assert_eq!(first[5].retry_after_secs, 1);
        // One token every 100 ms.
        assert!(l.check(1, t0 + 100_000_000).allowed);
        assert!(!l.check(1, t0 + 150_000_000).allowed);
        // Other keys have their own bucket.
        assert!(l.check(2, t0).allowed);
        // Over 10 s at a steady 50/s offered, about 10/s pass (+ the burst).
        let l = limiter(10, 1, RateLimitScope::Node, 1);
        let passed = (0..500).filter(|i| l.check(7, t0 + i * 20_000_000).allowed).count();
        assert_eq!(passed, 100);
    }

    #[test]
    fn a_cluster_limit_is_shared_by_the_members() {
        let nodes = Arc::new(AtomicUsize::new(4));
        let spec = RateLimitSpec {
            requests: 100,
            period: Duration::from_millis(1_000),
            burst: 1,
            key: RateLimitKeySpec::ClientIp,
            scope: RateLimitScope::Cluster,
        };
        let l = RateLimiter::new("r", &spec, nodes.clone());
        let t0 = 1_000_000_000;
        let passed = (0..1_000).filter(|i| l.check(1, t0 + i * 1_000_000).allowed).count();
        assert_eq!(passed, 25, "100/s over 4 nodes is 25/s here");
        assert_eq!(l.check(2, t0).limit, 25);
        nodes.store(2, Ordering::Relaxed);
        let t1 = t0 + 2_000_000_000;
        let passed = (0..1_000).filter(|i| l.check(3, t1 + i * 1_000_000).allowed).count();
        assert_eq!(passed, 50, "the share grows when the fleet shrinks");
    }

    #[test]
    fn keys_follow_the_spec() {
        let mut spec = limiter(1, 1, RateLimitScope::Node, 1).spec;
        spec.key = RateLimitKeySpec::ApiKey("x-api-key".into());
        let l = RateLimiter::new("r", &spec, Arc::new(AtomicUsize::new(1)));
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let mut h = HeaderMap::new();
        let anonymous = l.key(&h, ip, None, None);
        h.insert("x-api-key", "secret-1".parse().unwrap());
        let k1 = l.key(&h, ip, None, None);
        h.insert("x-api-key", "secret-2".parse().unwrap());
        assert_ne!(k1, l.key(&h, ip, None, None));
        assert_ne!(k1, anonymous);
        assert_eq!(anonymous, l.key(&HeaderMap::new(), ip, None, None));
        assert_ne!(anonymous, l.key(&HeaderMap::new(), "10.0.0.2".parse().unwrap(), None, None));
    }
}
