//! The real client address of a request behind load balancers and CDNs.
//!
//! A connection's peer (the PROXY protocol's source address when the listener speaks it)
//! is the client unless it is one of the node's `--trusted-proxies`. From a trusted peer,
//! `X-Forwarded-For` is walked from the right, past every trusted hop: the first address
//! that is not trusted is the client (and if every hop is, the leftmost). Entries left of
//! the client are whatever the client wrote and are never believed; an entry that is not
//! an address stops the walk at the last trusted hop. A client that forges
//! `X-Forwarded-For` therefore gains nothing: its own address is still the rightmost
//! untrusted one.

use std::net::IpAddr;
use std::str::FromStr;

use http::HeaderValue;
use ipnet::IpNet;

/// Most `X-Forwarded-For` entries looked at; a longer chain stops at its last trusted hop.
const MAX_HOPS: usize = 64;

#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// Comma-separated blocks or addresses, e.g. `10.0.0.0/8,192.0.2.7`.
    pub fn parse(list: &[String]) -> Result<Self, String> {
        let mut nets = Vec::new();
        for item in list.iter().flat_map(|s| s.split(',')).map(str::trim).filter(|s| !s.is_empty()) {
            let net = match IpAddr::from_str(item) {
                Ok(ip) => IpNet::from(ip),
                Err(_) => IpNet::from_str(item)
                    .map_err(|_| format!("`{item}` is not an address or a CIDR block (10.0.0.0/8)"))?,
            };
            if net.trunc() != net {
                return Err(format!("`{item}` has host bits set; the block is `{}`", net.trunc()));
            }
            nets.push(net);
        }
        Ok(TrustedProxies(nets))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.0.iter().any(|n| n.contains(&ip))
    }

    /// The client of a request that `peer` sent with these `X-Forwarded-For` values.
    pub fn client<'a>(&self, peer: IpAddr, xff: impl DoubleEndedIterator<Item = &'a HeaderValue>) -> IpAddr {
        let peer = canonical(peer);
        if !self.contains(peer) {
            return peer;
        }
        let mut hop = peer;
        // Later header lines come after earlier ones; within a line, right is nearer.
        let entries = xff.rev().flat_map(|v| v.to_str().unwrap_or("?").rsplit(',')).take(MAX_HOPS);
        for entry in entries {
            let Some(ip) = parse_entry(entry.trim()) else { return hop };
            hop = ip;
            if !self.contains(ip) {
                return ip;
            }
        }
        hop
    }
}

/// An IPv4 client of a dual-stack socket arrives as `::ffff:a.b.c.d`.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// `1.2.3.4`, `1.2.3.4:5678`, `2001:db8::1` or `[2001:db8::1]:443`.
fn parse_entry(s: &str) -> Option<IpAddr> {
    if let Ok(ip) = IpAddr::from_str(s) {
        return Some(canonical(ip));
    }
    if let Ok(sa) = std::net::SocketAddr::from_str(s) {
        return Some(canonical(sa.ip()));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(list: &str) -> TrustedProxies {
        TrustedProxies::parse(&[list.to_string()]).unwrap()
    }

    fn client(t: &TrustedProxies, peer: &str, xff: &[&str]) -> String {
        let values: Vec<HeaderValue> = xff.iter().map(|v| HeaderValue::from_str(v).unwrap()).collect();
        t.client(peer.parse().unwrap(), values.iter()).to_string()
    }

    #[test]
    fn the_walk_stops_at_the_first_untrusted_hop_from_the_right() {
        let lb = t("10.0.0.0/8, 192.0.2.7");
        // Not trusted: the peer is the client, whatever it claims.
        assert_eq!(client(&lb, "203.0.113.9", &["1.1.1.1"]), "203.0.113.9");
        // CDN edge 192.0.2.7 -> LB 10.0.0.5 -> us; the client forged a first entry.
        assert_eq!(client(&lb, "10.0.0.5", &["6.6.6.6, 198.51.100.4, 192.0.2.7"]), "198.51.100.4");
        // The same chain over two header lines.
        assert_eq!(client(&lb, "10.0.0.5", &["6.6.6.6, 198.51.100.4", "192.0.2.7"]), "198.51.100.4");
        // Ports and brackets, and IPv4-mapped peers.
        assert_eq!(client(&lb, "::ffff:10.0.0.5", &["[2001:db8::1]:443"]), "2001:db8::1");
        assert_eq!(client(&lb, "10.0.0.5", &["198.51.100.4:5678"]), "198.51.100.4");
        // Every hop trusted: the leftmost; none: the peer.
        assert_eq!(client(&lb, "10.0.0.5", &["10.1.1.1, 10.2.2.2"]), "10.1.1.1");
        assert_eq!(client(&lb, "10.0.0.5", &[]), "10.0.0.5");
        // Garbage stops the walk at the last trusted hop, never believed.
        assert_eq!(client(&lb, "10.0.0.5", &["198.51.100.4, unknown"]), "10.0.0.5");
        assert_eq!(client(&lb, "10.0.0.5", &["1.1.1.1, not-an-ip, 10.9.9.9"]), "10.9.9.9");
    }

    #[test]
    fn lists_are_checked() {
        assert!(TrustedProxies::parse(&["10.0.0.1/8".into()]).unwrap_err().contains("10.0.0.0/8"));
        assert!(TrustedProxies::parse(&["lb.internal".into()]).is_err());
        assert!(TrustedProxies::parse(&[String::new()]).unwrap().is_empty());
        assert!(t("::1,127.0.0.1").contains("127.0.0.1".parse().unwrap()));
    }
}
