//! Issuing a cluster CA, node certificates and operator certificates (`raftgate certs`,
//! `make run` and the testbed). ECDSA P-256 keys; the CA key never leaves the machine it
//! was made on unless the operator copies it.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

use crate::identity::{check_cluster_name, node_name};

/// Why a certificate could not be issued.
#[derive(Debug, thiserror::Error)]
pub enum GenError {
    #[error("{0}")]
    Usage(String),
    #[error("cannot {what} {path}: {source}")]
    Io { what: &'static str, path: PathBuf, source: std::io::Error },
    #[error("{what}: {source}")]
    Rcgen { what: &'static str, source: rcgen::Error },
}

/// A certificate and its private key, PEM.
#[derive(Debug, Clone)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

/// A cluster CA able to sign.
pub struct Ca {
    pub cluster: String,
    pub cert_pem: String,
    key: KeyPair,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca").field("cluster", &self.cluster).finish_non_exhaustive()
    }
}

fn rc(what: &'static str) -> impl FnOnce(rcgen::Error) -> GenError {
    move |source| GenError::Rcgen { what, source }
}

fn validity(params: &mut CertificateParams, days: u32) {
    let now = time::OffsetDateTime::now_utc();
    // A little slack for clocks that run behind the issuer's.
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(i64::from(days.max(1)));
}

impl Ca {
    /// A new self-signed CA for `cluster`.
    pub fn new(cluster: &str, days: u32) -> Result<Ca, GenError> {
        check_cluster_name(cluster).map_err(GenError::Usage)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, format!("raftgate cluster CA ({cluster})"));
        params.distinguished_name.push(DnType::OrganizationName, cluster.to_string());
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        validity(&mut params, days);
        let key = KeyPair::generate().map_err(rc("generating the CA key"))?;
        let cert = params.self_signed(&key).map_err(rc("signing the CA certificate"))?;
        Ok(Ca { cluster: cluster.to_string(), cert_pem: cert.pem(), key })
    }

    /// The CA written by `save` in `dir`; its cluster is the certificate's organization.
    pub fn load(dir: &Path) -> Result<Ca, GenError> {
        use x509_parser::prelude::FromDer;
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read_to_string(&path).map_err(|source| GenError::Io { what: "read", path, source })
        };
        let cert_pem = read(CA_CERT)?;
        let key = KeyPair::from_pem(&read(CA_KEY)?).map_err(rc("reading the CA key"))?;
        let not_ours = || {
            GenError::Usage(format!(
                "{} was not made by `raftgate certs ca` (no cluster name in its organization)",
                dir.join(CA_CERT).display()
            ))
        };
        let der = pem_to_der(&cert_pem).ok_or_else(not_ours)?;
        let (_, cert) = x509_parser::certificate::X509Certificate::from_der(&der).map_err(|_| not_ours())?;
        let cluster = cert
            .subject()
            .iter_organization()
            .next()
            .and_then(|o| o.as_str().ok())
            .map(str::to_string)
            .ok_or_else(not_ours)?;
        Ok(Ca { cluster, cert_pem, key })
    }

    /// Writes `ca.pem` and `ca-key.pem` (mode 0600) into `dir`, refusing to replace an
    /// existing CA: every certificate it signed would stop being trusted.
    pub fn save(&self, dir: &Path) -> Result<(), GenError> {
        let cert = dir.join(CA_CERT);
        if cert.exists() {
            return Err(GenError::Usage(format!(
                "{} exists already; replacing a CA invalidates every certificate it issued (remove it first, or \
                 use another --dir)",
                cert.display()
            )));
        }
        write(&dir.join(CA_KEY), &self.key.serialize_pem(), true)?;
        write(&cert, &self.cert_pem, false)
    }

    /// The same CA issuing for another cluster (one CA may serve several clusters; their
    /// node names differ, so a node of one is no one in the other).
    pub fn with_cluster(mut self, cluster: &str) -> Result<Ca, GenError> {
        check_cluster_name(cluster).map_err(GenError::Usage)?;
        self.cluster = cluster.to_string();
        Ok(self)
    }

    fn issuer(&self) -> Result<Issuer<'static, &KeyPair>, GenError> {
        Issuer::from_ca_cert_pem(&self.cert_pem, &self.key).map_err(rc("reading the CA certificate"))
    }

    /// A certificate for node `id`: its identity name plus the DNS names and addresses
    /// clients dial it by. Good for both ends of a TLS connection (server and client auth).
    pub fn node(&self, id: u64, dns: &[String], ips: &[IpAddr], days: u32) -> Result<Issued, GenError> {
        let domain = format!(".{}", self.cluster);
        if let Some(bad) = dns.iter().find(|d| d.contains('*') || d.ends_with(&domain) || d.as_str() == self.cluster) {
            return Err(GenError::Usage(format!(
                "--dns {bad}: wildcards and names inside the cluster's domain ({}) would let this certificate pass \
                 for other nodes",
                self.cluster
            )));
        }
        let mut names = vec![node_name(&self.cluster, id)];
        names.extend(dns.iter().cloned());
        let mut params = CertificateParams::new(names).map_err(rc("node certificate names"))?;
        params.subject_alt_names.extend(ips.iter().map(|ip| SanType::IpAddress(*ip)));
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, node_name(&self.cluster, id));
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        validity(&mut params, days);
        self.sign(params)
    }

    /// A client certificate for an operator (or a tool) called `name`: it authenticates
    /// admin calls and can never act as a node.
    pub fn client(&self, name: &str, days: u32) -> Result<Issued, GenError> {
        let reserved = name == "ca" || name.starts_with("ca-") || name.starts_with('.');
        let path_like = name.contains('/') || name.contains('\\') || name.contains("..");
        if path_like || reserved {
            return Err(GenError::Usage(format!(
                "`{name}` cannot name an operator: use letters, digits and `-` (not `ca`, which names the CA's files)"
            )));
        }
        if name.is_empty() || name.starts_with("node-") {
            return Err(GenError::Usage(format!(
                "`{name}` cannot name an operator: names starting with node- are node identities"
            )));
        }
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, name.to_string());
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        validity(&mut params, days);
        self.sign(params)
    }

    fn sign(&self, params: CertificateParams) -> Result<Issued, GenError> {
        let key = KeyPair::generate().map_err(rc("generating a key"))?;
        let cert = params.signed_by(&key, &self.issuer()?).map_err(rc("signing the certificate"))?;
        Ok(Issued { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
    }
}

fn pem_to_der(pem: &str) -> Option<Vec<u8>> {
    use rustls_pki_types::pem::PemObject;
    rustls_pki_types::CertificateDer::from_pem_slice(pem.as_bytes()).ok().map(|c| c.to_vec())
}

/// File names inside a certificate directory.
pub const CA_CERT: &str = "ca.pem";
pub const CA_KEY: &str = "ca-key.pem";

/// `node-<id>.pem` and `node-<id>-key.pem`, or `<name>.pem` and `<name>-key.pem`.
pub fn file_names(stem: &str) -> (String, String) {
    (format!("{stem}.pem"), format!("{stem}-key.pem"))
}

impl Issued {
    /// What the issued certificate says, as peers of `cluster` will read it.
    pub fn info(&self, cluster: &str) -> Option<crate::identity::CertInfo> {
        crate::identity::inspect(&pem_to_der(&self.cert_pem)?, cluster)
    }

    /// Writes the certificate and key (mode 0600) as `<stem>.pem` and `<stem>-key.pem`;
    /// both are replaced atomically (a running node re-reads them on change).
    pub fn save(&self, dir: &Path, stem: &str) -> Result<(PathBuf, PathBuf), GenError> {
        let (cert, key) = file_names(stem);
        let (cert, key) = (dir.join(cert), dir.join(key));
        write(&key, &self.key_pem, true)?;
        write(&cert, &self.cert_pem, false)?;
        Ok((cert, key))
    }
}

/// Writes through a temporary file and a rename, so a reader never sees half a file.
fn write(path: &Path, text: &str, secret: bool) -> Result<(), GenError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|source| GenError::Io { what: "create", path: dir.into(), source })?;
    let tmp = dir.join(format!(".{}.tmp", path.file_name().and_then(|n| n.to_str()).unwrap_or("cert")));
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(if secret { 0o600 } else { 0o644 })
        .open(&tmp)
        .map_err(|source| GenError::Io { what: "write", path: tmp.clone(), source })?;
    f.write_all(text.as_bytes()).and_then(|()| f.sync_all()).map_err(|source| GenError::Io {
        what: "write",
        path: tmp.clone(),
        source,
    })?;
    std::fs::rename(&tmp, path).map_err(|source| GenError::Io { what: "write", path: path.into(), source })
}
