//! What the operator of the nodes allows a config to do, beyond what the format allows.
//!
//! A config repository is written by many people; the nodes are run by a few. Some
//! settings are sound config but dangerous in the wrong hands, so the nodes refuse them
//! unless their operator said otherwise on the command line: endpoints on link-local
//! addresses (where cloud metadata services answer with credentials) or on the cluster's
//! own listeners (Raft, admin, the proxy itself), and upstream TLS without certificate
//! verification.

use std::net::IpAddr;

/// The operator's allowances and the addresses a config may never send traffic to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    /// `--allow-internal-endpoints`: link-local and the cluster's own listeners too.
    pub allow_internal_endpoints: bool,
    /// `--allow-insecure-upstream-tls`: `tls.insecureSkipVerify: true`.
    pub allow_insecure_tls: bool,
    /// The cluster's own listeners (`host:port`).
    pub reserved: Vec<String>,
}

/// Host names of metadata services that do not look link-local.
const METADATA_HOSTS: &[&str] =
    &["metadata.google.internal", "metadata", "instance-data", "instance-data.ec2.internal"];

fn ip_of(host: &str) -> Option<IpAddr> {
    // `[fe80::1%2]`: the zone does not change what the address is.
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    bare.split('%').next().unwrap_or(bare).parse().ok()
}

/// A host that resolvers read as an IPv4 address although it is not written as one:
/// `2852039166`, `0xa9fea9fe`, `169.254.43518`, `127.1`, `010.0.0.1` (octal). The C
/// resolver turns each into an address, so each could hide a refused one.
fn odd_numeric(host: &str) -> bool {
    if host.parse::<std::net::Ipv4Addr>().is_ok() || host.contains(':') || host.starts_with('[') {
        return false;
    }
    let last = host.trim_end_matches('.').rsplit('.').next().unwrap_or("");
    let numeric = |l: &str| {
        !l.is_empty()
            && (l.bytes().all(|b| b.is_ascii_digit())
                || l.get(..2).is_some_and(|p| p.eq_ignore_ascii_case("0x"))
                    && l[2..].bytes().all(|b| b.is_ascii_hexdigit()))
    };
    numeric(last)
}

/// Whether `ip` is link-local (where cloud metadata services answer), including AWS's
/// IPv6 metadata address. Nodes also check where endpoint names resolve to with this.
pub fn link_local(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => {
            // fe80::/10, the IPv4 link-local range mapped, and AWS's IPv6 metadata address.
            (v6.segments()[0] & 0xffc0) == 0xfe80
                || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_link_local())
                || v6.segments() == [0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254]
        }
    }
}

fn loopback_or_unspecified(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost") || ip_of(host).is_some_and(|ip| ip.is_loopback() || ip.is_unspecified())
}

fn split(address: &str) -> Option<(&str, &str)> {
    let i = address.rfind(':')?;
    Some((&address[..i], &address[i + 1..]))
}

impl Policy {
    /// Why an endpoint address (`host:port`, already valid) is refused, if it is.
    pub fn endpoint(&self, address: &str) -> Option<String> {
        if self.allow_internal_endpoints {
            return None;
        }
        let (host, port) = split(address)?;
        let host_l = host.to_ascii_lowercase();
        if odd_numeric(&host_l) {
            return Some(format!(
                "endpoint `{address}` is a number that resolvers read as an IPv4 address; write the address as a.b.c.d"
            ));
        }
        if ip_of(&host_l).is_some_and(link_local) || METADATA_HOSTS.contains(&host_l.trim_end_matches('.')) {
            return Some(format!(
                "endpoint `{address}` is a link-local or metadata address, where cloud metadata services hand out credentials"
            ));
        }
        for r in &self.reserved {
            let Some((rh, rp)) = split(r) else { continue };
            let same_host =
                rh.eq_ignore_ascii_case(host) || (loopback_or_unspecified(host) && loopback_or_unspecified(rh));
            if rp == port && same_host {
                return Some(format!("endpoint `{address}` is one of this cluster's own listeners ({r})"));
            }
        }
        None
    }

    /// The help every refusal carries.
    pub fn help(flag: &str) -> String {
        format!("the nodes refuse this unless their operator starts them with {flag} (and `raftgate validate` with the same flag)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_endpoints_are_refused_unless_allowed() {
        let p = Policy {
            reserved: vec!["127.0.0.1:9800".into(), "0.0.0.0:9900".into(), "10.0.0.7:8080".into()],
            ..Policy::default()
        };
        for bad in [
            "169.254.169.254:80",
            "[fe80::1]:80",
            "[::ffff:169.254.169.254]:80",
            "[fd00:ec2::254]:80",
            "[fe80::1%2]:80",
            "2852039166:80",
            "0xa9fea9fe:80",
            "169.254.43518:80",
            "127.1:9800",
            "010.0.0.1:80",
            "metadata.google.internal:80",
            "127.0.0.1:9800",
            "localhost:9800",
            "127.0.0.1:9900",
            "10.0.0.7:8080",
        ] {
            assert!(p.endpoint(bad).is_some(), "{bad}");
        }
        for good in ["10.0.0.5:9800", "127.0.0.1:8080", "users.internal:80", "[2001:db8::1]:443", "10.0.0.7:9800"] {
            assert_eq!(p.endpoint(good), None, "{good}");
        }
        let open = Policy { allow_internal_endpoints: true, ..p };
        assert_eq!(open.endpoint("169.254.169.254:80"), None);
    }
}
