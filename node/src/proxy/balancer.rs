//! Load-balancing algorithms: which endpoint of an upstream gets the next request.
//!
//! Each algorithm is built from the endpoints' weights once per endpoint set (a config, or
//! a change in DNS) and then picks in constant or logarithmic time. In-flight counts (for
//! least-request) live on the endpoints themselves, so they carry over to the next set.

use std::net::IpAddr;
use std::sync::Mutex;

use http::HeaderMap;
use schemas::snapshot::{HashOn, LoadBalancerSpec};

/// What a pick may look at.
#[derive(Debug)]
pub struct PickContext<'a> {
    pub headers: &'a HeaderMap,
    pub client_ip: IpAddr,
}

#[derive(Debug)]
pub enum Balancer {
    /// nginx's smooth weighted round robin: spreads a heavy endpoint's turns evenly.
    RoundRobin(Mutex<Vec<i64>>),
    /// Power of two choices on in-flight requests divided by weight.
    LeastRequest,
    Random,
    ConsistentHash(Ring, HashOn),
}

impl Balancer {
    pub fn new(spec: &LoadBalancerSpec, endpoints: &[(&str, u32)]) -> Self {
        match spec {
            LoadBalancerSpec::RoundRobin => Balancer::RoundRobin(Mutex::new(vec![0; endpoints.len()])),
            LoadBalancerSpec::LeastRequest => Balancer::LeastRequest,
            LoadBalancerSpec::Random => Balancer::Random,
            LoadBalancerSpec::ConsistentHash(on) => Balancer::ConsistentHash(Ring::new(endpoints), on.clone()),
        }
    }

    /// Index of the chosen endpoint. `weights[i]` and `in_flight(i)` describe endpoint `i`;
    /// there is always at least one endpoint.
    pub fn pick(&self, weights: &[u32], in_flight: impl Fn(usize) -> usize, ctx: &PickContext<'_>) -> usize {
        let n = weights.len();
        if n == 1 {
            return 0;
        }
        match self {
            Balancer::RoundRobin(current) => {
                let mut cur = current.lock().unwrap_or_else(|e| e.into_inner());
                let total: i64 = weights.iter().map(|w| i64::from(*w)).sum();
                let mut best = 0;
                for i in 0..n {
                    cur[i] += i64::from(weights[i]);
                    if cur[i] > cur[best] {
                        best = i;
                    }
                }
                cur[best] -= total;
                best
            }
            Balancer::Random => weighted_random(weights),
            Balancer::LeastRequest => {
                let a = weighted_random(weights);
                let mut b = weighted_random(weights);
                if a == b {
                    b = (a + 1 + fastrand::usize(..n - 1)) % n;
                }
                // Compare load per unit of weight without division: a/wa < b/wb.
                let la = in_flight(a) as u64 * u64::from(weights[b]);
                let lb = in_flight(b) as u64 * u64::from(weights[a]);
                if la <= lb {
                    a
                } else {
                    b
                }
            }
            Balancer::ConsistentHash(ring, on) => {
                let key: Option<u64> = match on {
                    HashOn::Header(name) => ctx.headers.get(name.as_str()).map(|v| hash(v.as_bytes())),
                    HashOn::Cookie(name) => cookie(ctx.headers, name).map(|v| hash(v.as_bytes())),
                    HashOn::SourceIp => Some(hash(ctx.client_ip.to_string().as_bytes())),
                };
                match key {
                    Some(k) => ring.get(k),
                    // No key (header or cookie absent): any endpoint will do.
                    None => weighted_random(weights),
                }
            }
        }
    }
}

fn weighted_random(weights: &[u32]) -> usize {
    let total: u64 = weights.iter().map(|w| u64::from(*w)).sum();
    let mut r = fastrand::u64(..total.max(1));
    for (i, w) in weights.iter().enumerate() {
        let w = u64::from(*w);
        if r < w {
            return i;
        }
        r -= w;
    }
    weights.len() - 1
}

fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get_all(http::header::COOKIE).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(';')).find_map(
        |pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k == name).then_some(v)
        },
    )
}

fn hash(bytes: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(bytes)
}

/// A hash ring with virtual nodes. Points depend only on each endpoint's address and weight,
/// so adding or removing an endpoint moves only the keys that land on its points (about
/// 1/n of them), and every node of the cluster builds the same ring.
#[derive(Debug)]
pub struct Ring {
    points: Vec<(u64, usize)>,
}

const POINTS_PER_WEIGHT: u64 = 160;
/// The most points a ring holds (16 bytes each: 2.5 MiB), whatever the endpoints' count
/// and weights (1,000 endpoints of weight 1,000 would otherwise make 16 million). Past
/// it, points are shared out in proportion to weight, at least one per endpoint.
const MAX_POINTS: u64 = 160_000;

impl Ring {
    pub fn new(endpoints: &[(&str, u32)]) -> Self {
        let total: u64 = endpoints.iter().map(|(_, w)| u64::from(*w)).sum::<u64>().max(1);
        let mut points = Vec::new();
        for (i, (addr, weight)) in endpoints.iter().enumerate() {
            let w = u64::from(*weight);
            let count = (POINTS_PER_WEIGHT * w).min((w * MAX_POINTS / total).max(1));
            for v in 0..count {
                points.push((hash(format!("{addr}#{v}").as_bytes()), i));
            }
        }
        points.sort_unstable();
        Ring { points }
    }

    pub fn get(&self, key: u64) -> usize {
        let i = self.points.partition_point(|(h, _)| *h < key);
        self.points.get(i).unwrap_or(&self.points[0]).1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idle(_: usize) -> usize {
        0
    }

    fn ctx(h: &HeaderMap) -> PickContext<'_> {
        PickContext { headers: h, client_ip: "127.0.0.1".parse().unwrap() }
    }

    #[test]
    fn smooth_round_robin_interleaves_by_weight() {
        let b = Balancer::new(&LoadBalancerSpec::RoundRobin, &[("a", 5), ("b", 1), ("c", 1)]);
        let h = HeaderMap::new();
        let picks: Vec<usize> = (0..7).map(|_| b.pick(&[5, 1, 1], idle, &ctx(&h))).collect();
        // nginx's documented sequence for weights 5,1,1: a a b a c a a
        assert_eq!(picks, [0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn least_request_avoids_busy_endpoints() {
        let b = Balancer::new(&LoadBalancerSpec::LeastRequest, &[("a", 1), ("b", 1)]);
        let busy = |i: usize| if i == 0 { 10 } else { 0 };
        let h = HeaderMap::new();
        for _ in 0..100 {
            assert_eq!(b.pick(&[1, 1], busy, &ctx(&h)), 1);
        }
    }

    #[test]
    fn random_follows_weights() {
        let b = Balancer::new(&LoadBalancerSpec::Random, &[("a", 3), ("b", 1)]);
        let h = HeaderMap::new();
        let a = (0..40_000).filter(|_| b.pick(&[3, 1], idle, &ctx(&h)) == 0).count();
        assert!((29_000..31_000).contains(&a), "{a}");
    }

    #[test]
    fn consistent_hash_is_sticky_and_remaps_little() {
        let names: Vec<String> = (0..10).map(|i| format!("10.0.0.{i}:80")).collect();
        let eps: Vec<(&str, u32)> = names.iter().map(|n| (n.as_str(), 1)).collect();
        let before = Ring::new(&eps);
        let after = Ring::new(&eps[..9]); // one endpoint removed
        let keys: Vec<u64> = (0..10_000u32).map(|k| hash(&k.to_be_bytes())).collect();
        let moved = keys.iter().filter(|k| before.get(**k) != after.get(**k)).count();
        // Only keys of the removed endpoint (about 1/10) move.
        let on_removed = keys.iter().filter(|k| before.get(**k) == 9).count();
        assert_eq!(moved, on_removed);
        assert!((700..1_300).contains(&moved), "{moved}");

        let b = Balancer::new(&LoadBalancerSpec::ConsistentHash(HashOn::Header("x-user".into())), &eps);
        let mut h = HeaderMap::new();
        h.insert("x-user", "alice".parse().unwrap());
        let first = b.pick(&[1; 10], idle, &ctx(&h));
        assert!((0..20).all(|_| b.pick(&[1; 10], idle, &ctx(&h)) == first));
    }

    #[test]
    fn rings_stay_bounded_and_follow_weights() {
        let names: Vec<String> = (0..1_000).map(|i| format!("10.0.{}.{}:80", i / 256, i % 256)).collect();
        let heavy: Vec<(&str, u32)> = names.iter().map(|n| (n.as_str(), 1_000)).collect();
        let ring = Ring::new(&heavy);
        assert!(ring.points.len() <= MAX_POINTS as usize + 1_000, "{}", ring.points.len());
        // Small sets keep 160 points per unit of weight, so their keys do not move.
        let few: Vec<(&str, u32)> = names[..10].iter().map(|n| (n.as_str(), 2)).collect();
        assert_eq!(Ring::new(&few).points.len(), 10 * 2 * 160);
        // A bounded ring still shares keys by weight: 3:1.
        let mixed: Vec<(&str, u32)> =
            names.iter().enumerate().map(|(i, n)| (n.as_str(), if i < 500 { 900 } else { 300 })).collect();
        let ring = Ring::new(&mixed);
        let first_half = (0..40_000u32).filter(|k| ring.get(hash(&k.to_be_bytes())) < 500).count();
        assert!((28_500..31_500).contains(&first_half), "{first_half}");
    }

    #[test]
    fn cookies_are_found() {
        let mut h = HeaderMap::new();
        h.append(http::header::COOKIE, "a=1; session=xyz".parse().unwrap());
        assert_eq!(cookie(&h, "session"), Some("xyz"));
        assert_eq!(cookie(&h, "nope"), None);
    }
}
