//! Who a certificate says its holder is.
//!
//! A node's identity is the DNS name `node-<id>.<cluster>` in its certificate's subject
//! alternative names. DNS names were chosen over SPIFFE-style URIs because the standard
//! hostname check of every TLS client then does the client's half of the job: a node
//! dialing node 3 asks for the server name `node-3.<cluster>`, and webpki refuses any
//! certificate that does not carry it. The server's half (which node is calling?) reads the
//! same name out of the client certificate, after the chain was verified against the
//! cluster's CA.
//!
//! A certificate from the cluster CA without a node name belongs to an operator (`raftgate
//! certs client`): it authenticates admin calls, never Raft.

use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer;

/// The DNS name that makes a certificate node `id`'s in `cluster`.
pub fn node_name(cluster: &str, id: u64) -> String {
    format!("node-{id}.{cluster}")
}

/// Checks that a cluster name can be the tail of a DNS name (labels of letters, digits and
/// `-`), since node identities are built from it.
pub fn check_cluster_name(cluster: &str) -> Result<(), String> {
    let ok_label = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if cluster.len() > 200 || !cluster.split('.').all(ok_label) {
        return Err(format!(
            "cluster name `{cluster}` cannot be part of a certificate name: use letters, digits, `-` and `.` \
             (node certificates are issued for node-<id>.<cluster>)"
        ));
    }
    Ok(())
}

/// What one certificate says about its holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// Node ids of `cluster` named in the subject alternative names (normally one).
    pub node_ids: Vec<u64>,
    /// Every DNS name and IP address in the subject alternative names.
    pub names: Vec<String>,
    /// The subject's common name, if any (operators' certificates are told apart by it).
    pub common_name: Option<String>,
    /// Seconds since the epoch after which the certificate is no longer valid.
    pub not_after: i64,
}

impl CertInfo {
    /// The one node id the certificate names, if it names exactly one.
    pub fn node_id(&self) -> Option<u64> {
        match self.node_ids.as_slice() {
            [id] => Some(*id),
            _ => None,
        }
    }
}

/// Parses a DER certificate. `None` when it is not X.509 (rustls has already verified it by
/// then, so that does not happen for a peer).
pub fn inspect(der: &[u8], cluster: &str) -> Option<CertInfo> {
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(der).ok()?;
    let mut names = Vec::new();
    let mut node_ids = Vec::new();
    let mut ambiguous = false;
    let suffix = format!(".{cluster}");
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(dns) => {
                    names.push(dns.to_string());
                    let id = dns
                        .strip_suffix(suffix.as_str())
                        .and_then(|head| head.strip_prefix("node-"))
                        .and_then(|n| n.parse::<u64>().ok());
                    match id.filter(|id| node_name(cluster, *id) == *dns) {
                        Some(id) => node_ids.push(id),
                        // A wildcard, or another name inside the cluster's domain, would let
                        // a TLS client's hostname check accept this certificate for other
                        // nodes: such a certificate is no node's.
                        None if dns.contains('*') || dns.ends_with(suffix.as_str()) => ambiguous = true,
                        None => {}
                    }
                }
                GeneralName::IPAddress(ip) => {
                    let shown = match ip.len() {
                        4 => <[u8; 4]>::try_from(*ip).map(|o| std::net::IpAddr::from(o).to_string()).ok(),
                        16 => <[u8; 16]>::try_from(*ip).map(|o| std::net::IpAddr::from(o).to_string()).ok(),
                        _ => None,
                    };
                    names.extend(shown);
                }
                _ => {}
            }
        }
    }
    if ambiguous {
        node_ids.clear();
    }
    let common_name = cert.subject().iter_common_name().next().and_then(|cn| cn.as_str().ok()).map(str::to_string);
    Some(CertInfo { node_ids, names, common_name, not_after: cert.validity().not_after.timestamp() })
}

/// Checks that `der` is an OCSP response (RFC 6960) a client would accept for the
/// certificate `leaf` (DER) at `now` (Unix seconds), before it is stapled: successful,
/// about this certificate's serial number, status good, already valid and not past its
/// `nextUpdate`. Stapling an error response, another certificate's, or an expired one
/// makes strict clients fail the handshake. Returns the `nextUpdate` (Unix seconds), when
/// the response has one, after which it must not be stapled any more. The responder's
/// signature is the client's to check.
pub fn check_ocsp_response(der: &[u8], leaf: &[u8], now: i64) -> Result<Option<i64>, String> {
    use x509_parser::der_parser::ber::{BerObject, BerObjectContent};
    use x509_parser::der_parser::der::parse_der;
    fn parse<'a>(bytes: &'a [u8], what: &str) -> Result<BerObject<'a>, String> {
        match parse_der(bytes) {
            Ok(([], obj)) => Ok(obj),
            _ => Err(format!("not an OCSP response ({what} is not DER; the file must be binary DER, not PEM)")),
        }
    }
    fn seq<'a, 'b>(o: &'b BerObject<'a>, what: &str) -> Result<&'b Vec<BerObject<'a>>, String> {
        o.as_sequence().map_err(|_| format!("not an OCSP response ({what} is not a SEQUENCE)"))
    }
    /// The content of an explicitly tagged value.
    fn inner<'a>(o: &BerObject<'a>, what: &str) -> Result<BerObject<'a>, String> {
        match &o.content {
            BerObjectContent::Unknown(any) => parse(any.data, what),
            BerObjectContent::Tagged(_, _, b) => Ok((**b).clone()),
            _ => Err(format!("not an OCSP response ({what} is not tagged)")),
        }
    }
    fn time(o: &BerObject<'_>) -> Option<i64> {
        match &o.content {
            BerObjectContent::GeneralizedTime(t) => t.to_datetime().ok().map(|d| d.unix_timestamp()),
            _ => None,
        }
    }
    let strip = |b: &[u8]| -> Vec<u8> { b.iter().copied().skip_while(|x| *x == 0).collect() };
    let (_, cert) =
        x509_parser::certificate::X509Certificate::from_der(leaf).map_err(|_| "the certificate is not X.509")?;
    let serial = strip(cert.raw_serial());

    let top = parse(der, "the file")?;
    let top = seq(&top, "the file")?;
    const STATUS: [&str; 7] =
        ["successful", "malformedRequest", "internalError", "tryLater", "(unused)", "sigRequired", "unauthorized"];
    let status = top.first().and_then(|s| s.as_u64().ok()).ok_or("not an OCSP response (no responseStatus)")?;
    if status != 0 {
        let name = STATUS.get(status as usize).copied().unwrap_or("unknown");
        return Err(format!("the OCSP response's status is {name}, not successful"));
    }
    let bytes = inner(top.get(1).ok_or("the OCSP response has no responseBytes")?, "responseBytes")?;
    let body = seq(&bytes, "responseBytes")?.get(1).and_then(|o| o.as_slice().ok()).ok_or("no BasicOCSPResponse")?;
    let basic = parse(body, "the BasicOCSPResponse")?;
    let tbs = seq(&basic, "the BasicOCSPResponse")?.first().ok_or("no tbsResponseData")?;
    let tbs = seq(tbs, "tbsResponseData")?;
    // version [0]? responderID, producedAt, responses: the first SEQUENCE after producedAt.
    let at = tbs.iter().position(|o| time(o).is_some()).ok_or("no producedAt in the OCSP response")?;
    let responses = tbs.get(at + 1).ok_or("no responses in the OCSP response")?;
    for single in seq(responses, "responses")? {
        let single = seq(single, "a SingleResponse")?;
        let cert_id = seq(single.first().ok_or("no certID")?, "certID")?;
        let their = cert_id.get(3).and_then(|o| o.as_slice().ok()).map(strip).ok_or("no serial in certID")?;
        if their != serial {
            continue;
        }
        let state = single.get(1).ok_or("no certStatus")?;
        match state.header.tag().0 {
            0 => {}
            1 => return Err("the OCSP response says the certificate is revoked".into()),
            _ => return Err("the OCSP response says the certificate's status is unknown".into()),
        }
        let this_update = single.get(2).and_then(time).ok_or("no thisUpdate in the OCSP response")?;
        if this_update > now + 300 {
            return Err(format!(
                "the OCSP response is not valid yet (thisUpdate {this_update}, now {now}): is this node's clock right?"
            ));
        }
        let next_update = single
            .get(3)
            .filter(|o| o.header.tag().0 == 0)
            .and_then(|o| inner(o, "nextUpdate").ok())
            .and_then(|t| time(&t));
        if let Some(next) = next_update.filter(|n| *n <= now) {
            return Err(format!("the OCSP response expired (nextUpdate {next}, now {now}); fetch a fresh one"));
        }
        return Ok(next_update);
    }
    Err(format!("the OCSP response is for another certificate (this one's serial is {})", hex_upper(&serial)))
}

fn hex_upper(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02X}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_names_must_fit_in_a_dns_name() {
        assert!(check_cluster_name("raftgate").is_ok());
        assert!(check_cluster_name("prod-eu.example").is_ok());
        assert!(check_cluster_name("prod eu").is_err());
        assert!(check_cluster_name("-x").is_err());
        assert!(check_cluster_name("a..b").is_err());
        assert!(check_cluster_name("").is_err());
    }

    #[test]
    fn node_ids_are_read_from_exact_names_only() {
        let ca = crate::gen::Ca::new("prod", 30).unwrap();
        let node = ca.node(7, &["gw7.example".into()], &["10.0.0.7".parse().unwrap()], 30).unwrap();
        let info = node.info("prod").unwrap();
        assert_eq!(info.node_id(), Some(7));
        assert!(info.names.contains(&"gw7.example".to_string()));
        assert!(info.names.contains(&"10.0.0.7".to_string()));
        // The same certificate names no node of another cluster.
        assert_eq!(node.info("staging").unwrap().node_id(), None);
        // Look-alikes do not count.
        let client = ca.client("node-7.prod", 30);
        assert!(client.is_err(), "an operator certificate may not take a node's name");
        assert!(ca.client("ca", 30).is_err(), "would overwrite the CA's files");
        assert!(ca.client("../x", 30).is_err());
        assert!(ca.node(3, &["node-4.prod".into()], &[], 30).is_err(), "another node's name");
        assert!(ca.node(3, &["*.prod".into()], &[], 30).is_err(), "a wildcard over the cluster");
        let client = ca.client("alice", 30).unwrap();
        let info = client.info("prod").unwrap();
        assert_eq!(info.node_id(), None);
        assert_eq!(info.common_name.as_deref(), Some("alice"));
    }
}
