//! A node's TLS material (`--tls-ca`, `--tls-cert`, `--tls-key`), the rustls configs made
//! from it, and their rotation: the files are re-read when they change (polled) or on
//! SIGHUP, and new connections use the new material while open ones keep theirs. A reload
//! that fails (a half-copied file, a key that does not match) keeps the previous material
//! and says why; a rotation is then simply finished by writing the missing file.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::UnixTime;

use crate::identity::{self, CertInfo};

/// PEM files larger than this are refused (a bundle of a few CAs is a few KiB).
pub const MAX_PEM_BYTES: u64 = 1 << 20;

/// Where a node's TLS material lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The cluster CA bundle: every certificate in it is trusted (old and new during a CA
    /// rotation).
    pub ca: PathBuf,
    /// This node's certificate (chain), leaf first.
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
}

/// Why TLS material cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {what} {}: {reason}", path.display())]
    Read { what: &'static str, path: PathBuf, reason: String },
    #[error("{what} {} holds no {expected}", path.display())]
    Empty { what: &'static str, path: PathBuf, expected: &'static str },
    #[error("{what} {} is not valid PEM: {reason}", path.display())]
    Pem { what: &'static str, path: PathBuf, reason: String },
    #[error("the certificate {} does not match the key {}: {reason}", cert.display(), key.display())]
    KeyMismatch { cert: PathBuf, key: PathBuf, reason: String },
    #[error("the certificate {} is not trusted by the CA bundle {}: {reason}", cert.display(), ca.display())]
    Untrusted { cert: PathBuf, ca: PathBuf, reason: String },
    #[error(
        "the certificate {} does not name this node: it holds {names:?}, node {id} of cluster `{cluster}` needs \
         {expected} (issue one with `raftgate certs node --id {id} --cluster {cluster}`)",
        cert.display()
    )]
    NotThisNode { cert: PathBuf, id: u64, cluster: String, expected: String, names: Vec<String> },
    #[error("TLS setup: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Which clients a listener takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// A certificate from the cluster CA or no connection (the Raft listener).
    Required,
    /// Verified when offered; callers without one authenticate otherwise (the admin API's
    /// bearer token).
    Optional,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads a PEM file: a regular file (symlinks are followed, as Kubernetes mounts secrets
/// through them) of at most `MAX_PEM_BYTES`.
pub fn read_pem(path: &Path, what: &'static str) -> Result<Vec<u8>, TlsError> {
    read_bounded(path, MAX_PEM_BYTES, Symlinks::Follow).map_err(|reason| TlsError::Read {
        what,
        path: path.to_path_buf(),
        reason,
    })
}

/// Whether `read_bounded` follows a symlink in the last component of the path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Symlinks {
    /// Files the operator names on the command line.
    Follow,
    /// Files a config commit names: whoever can merge into the config repository must not
    /// be able to point a node at `/dev/zero` or a FIFO through a link.
    Refuse,
}

/// Reads a regular file of at most `limit` bytes, or says why not. A device, FIFO, socket
/// or directory is refused before it is opened (reading `/dev/zero` never ends, opening a
/// FIFO waits for a writer); the file is then opened non-blocking and checked again
/// through its descriptor, so swapping it for something else in between gains nothing;
/// and the read itself stops at the bound, whatever the file grew to meanwhile.
pub fn read_bounded(path: &Path, limit: u64, symlinks: Symlinks) -> Result<Vec<u8>, String> {
    use std::io::Read;
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let meta = match symlinks {
        Symlinks::Follow => std::fs::metadata(path),
        Symlinks::Refuse => std::fs::symlink_metadata(path),
    }
    .map_err(|e| e.to_string())?;
    let kind = |m: &std::fs::Metadata| -> Result<(), String> {
        let t = m.file_type();
        if t.is_symlink() {
            return Err("it is a symbolic link, which config files may not be; name the file itself".into());
        }
        if !t.is_file() {
            return Err("not a regular file (a directory, device, FIFO or socket)".into());
        }
        if m.len() > limit {
            return Err(format!("{} bytes; the limit is {limit}", m.len()));
        }
        Ok(())
    };
    kind(&meta)?;
    let mut flags = libc::O_NONBLOCK | libc::O_CLOEXEC;
    if symlinks == Symlinks::Refuse {
        flags |= libc::O_NOFOLLOW;
    }
    let file = std::fs::OpenOptions::new().read(true).custom_flags(flags).open(path).map_err(|e| e.to_string())?;
    let opened = file.metadata().map_err(|e| e.to_string())?;
    kind(&opened)?;
    if (opened.dev(), opened.ino()) != (meta.dev(), meta.ino()) {
        return Err("the file changed while it was being opened; try again".into());
    }
    let mut bytes = Vec::with_capacity(opened.len() as usize);
    file.take(limit + 1).read_to_end(&mut bytes).map_err(|e| e.to_string())?;
    if bytes.len() as u64 > limit {
        return Err(format!("more than {limit} bytes"));
    }
    Ok(bytes)
}

/// Warns when a secret file can be read by other users.
pub fn warn_if_exposed(path: &Path, what: &str) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path) {
        let mode = meta.permissions().mode();
        if mode & 0o077 != 0 {
            tracing::warn!(
                file = %path.display(),
                mode = format!("{:o}", mode & 0o777),
                "{what} can be read by other users of this machine: chmod 600 it"
            );
        }
    }
}

/// The certificates in a PEM file, in order.
pub fn load_certs(path: &Path, what: &'static str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read_pem(path, what)?;
    let certs = CertificateDer::pem_slice_iter(&bytes).collect::<Result<Vec<_>, _>>().map_err(|e| TlsError::Pem {
        what,
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    if certs.is_empty() {
        return Err(TlsError::Empty { what, path: path.to_path_buf(), expected: "CERTIFICATE block" });
    }
    Ok(certs)
}

/// The private key in a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let what = "the private key";
    let bytes = read_pem(path, what)?;
    warn_if_exposed(path, "the TLS private key");
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => {
            TlsError::Empty { what, path: path.to_path_buf(), expected: "PRIVATE KEY block" }
        }
        e => TlsError::Pem { what, path: path.to_path_buf(), reason: e.to_string() },
    })
}

/// A root store of every certificate in the CA bundle.
pub fn load_roots(path: &Path) -> Result<Arc<RootCertStore>, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(path, "the CA bundle")? {
        roots.add(cert).map_err(|e| TlsError::Pem {
            what: "the CA bundle",
            path: path.to_path_buf(),
            reason: format!("a certificate cannot be a trust anchor: {e}"),
        })?;
    }
    Ok(Arc::new(roots))
}

/// A client config trusting `roots`, presenting `identity` when given: what the CLI and the
/// nodes dial with. TLS 1.3 only (every client of these ports is ours or modern).
pub fn client_config(
    roots: Arc<RootCertStore>,
    identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
) -> Result<Arc<ClientConfig>, TlsError> {
    let builder = ClientConfig::builder_with_provider(provider()).with_protocol_versions(&[&rustls::version::TLS13])?;
    let builder = builder.with_root_certificates(roots);
    let mut config = match identity {
        Some((chain, key)) => builder.with_client_auth_cert(chain, key)?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// A client config from files: the CA bundle to trust, and the certificate and key to
/// present when given (the CLI, the testbed, tests).
pub fn client_config_from_files(ca: &Path, identity: Option<(&Path, &Path)>) -> Result<Arc<ClientConfig>, TlsError> {
    let identity = match identity {
        Some((cert, key)) => Some((load_certs(cert, "the client certificate")?, load_key(key)?)),
        None => None,
    };
    client_config(load_roots(ca)?, identity)
}

/// The configs made from one reading of the files.
#[derive(Debug)]
struct Loaded {
    stamp: Stamp,
    required: Arc<ServerConfig>,
    optional: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
    info: CertInfo,
}

/// What tells a changed file: size, modification time and inode of each of the three.
type Stamp = [(u64, i64, i64, u64); 3];

fn stamp(files: &TlsFiles) -> Stamp {
    use std::os::unix::fs::MetadataExt;
    let one =
        |p: &Path| std::fs::metadata(p).map(|m| (m.len(), m.mtime(), m.mtime_nsec(), m.ino())).unwrap_or((0, 0, 0, 0));
    [one(&files.ca), one(&files.cert), one(&files.key)]
}

/// A node's TLS material, reloadable.
#[derive(Debug)]
pub struct Tls {
    files: TlsFiles,
    cluster: String,
    node: Option<u64>,
    current: ArcSwap<Loaded>,
}

impl Tls {
    /// Loads and checks the material of node `node` (or of a tool, without an id): the
    /// certificate must match the key, chain to the CA bundle, and name the node.
    pub fn load(files: TlsFiles, cluster: &str, node: Option<u64>) -> Result<Arc<Tls>, TlsError> {
        let loaded = Self::read(&files, cluster, node)?;
        Ok(Arc::new(Tls { files, cluster: cluster.to_string(), node, current: ArcSwap::from_pointee(loaded) }))
    }

    fn read(files: &TlsFiles, cluster: &str, node: Option<u64>) -> Result<Loaded, TlsError> {
        // Stamped before reading: a change while reading is seen by the next poll.
        let stamp = stamp(files);
        let roots = load_roots(&files.ca)?;
        let chain = load_certs(&files.cert, "the certificate")?;
        let key = load_key(&files.key)?;
        let mismatch = |e: rustls::Error| TlsError::KeyMismatch {
            cert: files.cert.clone(),
            key: files.key.clone(),
            reason: e.to_string(),
        };
        let certified =
            rustls::sign::CertifiedKey::from_der(chain.clone(), key.clone_key(), &provider()).map_err(mismatch)?;
        certified.keys_match().map_err(mismatch)?;
        let info = identity::inspect(&chain[0], cluster).ok_or_else(|| TlsError::Pem {
            what: "the certificate",
            path: files.cert.clone(),
            reason: "not an X.509 certificate".into(),
        })?;
        if let Some(id) = node {
            if info.node_id() != Some(id) {
                return Err(TlsError::NotThisNode {
                    cert: files.cert.clone(),
                    id,
                    cluster: cluster.to_string(),
                    expected: identity::node_name(cluster, id),
                    names: info.names.clone(),
                });
            }
        }
        // Our own certificate must pass the check peers will make of it.
        let required = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider())
            .build()
            .map_err(|e| TlsError::Pem { what: "the CA bundle", path: files.ca.clone(), reason: e.to_string() })?;
        required.verify_client_cert(&chain[0], &chain[1..], UnixTime::now()).map_err(|e| TlsError::Untrusted {
            cert: files.cert.clone(),
            ca: files.ca.clone(),
            reason: e.to_string(),
        })?;
        let optional = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider())
            .allow_unauthenticated()
            .build()
            .map_err(|e| TlsError::Pem { what: "the CA bundle", path: files.ca.clone(), reason: e.to_string() })?;
        let server = |verifier, alpn: &[&[u8]]| -> Result<Arc<ServerConfig>, TlsError> {
            let mut c = ServerConfig::builder_with_provider(provider())
                .with_protocol_versions(&[&rustls::version::TLS13])?
                .with_client_cert_verifier(verifier)
                .with_single_cert(chain.clone(), key.clone_key())
                .map_err(mismatch)?;
            c.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
            c.ignore_client_order = true;
            Ok(Arc::new(c))
        };
        Ok(Loaded {
            stamp,
            required: server(required, &[b"h2"])?,
            // The admin port also answers curl and probes over HTTP/1.1.
            optional: server(optional, &[b"h2", b"http/1.1"])?,
            client: client_config(roots, Some((chain.clone(), key)))?,
            info,
        })
    }

    /// The server config for a listener.
    pub fn server(&self, auth: ClientAuth) -> Arc<ServerConfig> {
        let l = self.current.load();
        match auth {
            ClientAuth::Required => l.required.clone(),
            ClientAuth::Optional => l.optional.clone(),
        }
    }

    /// The client config this node dials peers with (presenting its own certificate).
    pub fn client(&self) -> Arc<ClientConfig> {
        self.current.load().client.clone()
    }

    pub fn cluster(&self) -> &str {
        &self.cluster
    }

    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// What this node's current certificate says.
    pub fn info(&self) -> CertInfo {
        self.current.load().info.clone()
    }

    /// Re-reads the files if any changed. `Ok(true)` when new material is in use; on an
    /// error the previous material stays.
    pub fn reload_if_changed(&self) -> Result<bool, TlsError> {
        if stamp(&self.files) == self.current.load().stamp {
            return Ok(false);
        }
        self.reload()
    }

    /// Re-reads the files now.
    pub fn reload(&self) -> Result<bool, TlsError> {
        let loaded = Self::read(&self.files, &self.cluster, self.node)?;
        self.current.store(Arc::new(loaded));
        self.export();
        Ok(true)
    }

    fn export(&self) {
        metrics::gauge!("raftgate_tls_cert_not_after_seconds").set(self.info().not_after as f64);
    }

    /// Watches the files: polls every `every`, and reloads at once on SIGHUP. A failed
    /// reload is logged (and counted) once per change and retried on the next change.
    pub fn watch(
        self: Arc<Self>,
        every: Duration,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        self.export();
        async move {
            let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut failed_stamp = None;
            loop {
                let forced = tokio::select! {
                    _ = tick.tick() => false,
                    _ = async { match hup.as_mut() { Some(h) => { h.recv().await; } None => std::future::pending().await } } => true,
                    _ = shutdown.changed() => return,
                };
                let now = stamp(&self.files);
                let unchanged = now == self.current.load().stamp || failed_stamp == Some(now);
                if !forced && unchanged {
                    continue;
                }
                match self.reload() {
                    Ok(false) => {}
                    Ok(true) => {
                        failed_stamp = None;
                        let info = self.info();
                        metrics::counter!("raftgate_tls_reloads_total", "result" => "ok").increment(1);
                        tracing::info!(names = ?info.names, not_after = info.not_after, "TLS material reloaded; new connections use it");
                    }
                    Err(e) => {
                        failed_stamp = Some(now);
                        metrics::counter!("raftgate_tls_reloads_total", "result" => "error").increment(1);
                        tracing::warn!(error = %e, "TLS files changed but cannot be used; still using the previous material");
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gen::Ca;

    fn files(dir: &Path, stem: &str) -> TlsFiles {
        TlsFiles {
            ca: dir.join("ca.pem"),
            cert: dir.join(format!("{stem}.pem")),
            key: dir.join(format!("{stem}-key.pem")),
        }
    }

    #[test]
    fn material_is_checked_when_loaded_and_reloaded() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path();
        let ca = Ca::new("unit", 10).unwrap();
        ca.save(dir).unwrap();
        ca.node(1, &[], &[], 10).unwrap().save(dir, "node-1").unwrap();
        ca.node(2, &[], &[], 10).unwrap().save(dir, "node-2").unwrap();

        let tls = Tls::load(files(dir, "node-1"), "unit", Some(1)).unwrap();
        assert_eq!(tls.info().node_id(), Some(1));
        // Not this node's certificate.
        let e = Tls::load(files(dir, "node-2"), "unit", Some(1)).unwrap_err();
        assert!(matches!(e, TlsError::NotThisNode { id: 1, .. }), "{e}");
        assert!(e.to_string().contains("raftgate certs node --id 1"), "{e}");
        // A key that is not the certificate's.
        let mut mixed = files(dir, "node-1");
        mixed.key = dir.join("node-2-key.pem");
        assert!(matches!(Tls::load(mixed, "unit", Some(1)).unwrap_err(), TlsError::KeyMismatch { .. }));
        // A certificate from another CA.
        let other = tempfile::tempdir().unwrap();
        let stranger = Ca::new("unit", 10).unwrap();
        stranger.node(1, &[], &[], 10).unwrap().save(other.path(), "node-1").unwrap();
        let mut foreign = files(other.path(), "node-1");
        foreign.ca = dir.join("ca.pem");
        assert!(matches!(Tls::load(foreign, "unit", Some(1)).unwrap_err(), TlsError::Untrusted { .. }));
        // Not PEM at all; a directory instead of a file.
        std::fs::write(dir.join("junk.pem"), "hello").unwrap();
        let mut junk = files(dir, "node-1");
        junk.cert = dir.join("junk.pem");
        assert!(matches!(Tls::load(junk, "unit", Some(1)).unwrap_err(), TlsError::Empty { .. }));
        let mut not_file = files(dir, "node-1");
        not_file.ca = dir.to_path_buf();
        assert!(Tls::load(not_file, "unit", Some(1)).unwrap_err().to_string().contains("not a regular file"));

        // Unchanged files: nothing to do. A new certificate: used. A broken rotation (the
        // key replaced by another node's): refused, the previous material stays.
        assert!(!tls.reload_if_changed().unwrap());
        let before = tls.server(ClientAuth::Required);
        ca.node(1, &[], &[], 20).unwrap().save(dir, "node-1").unwrap();
        assert!(tls.reload_if_changed().unwrap());
        assert!(!Arc::ptr_eq(&before, &tls.server(ClientAuth::Required)));
        let good = tls.info();
        std::fs::copy(dir.join("node-2-key.pem"), dir.join("node-1-key.pem")).unwrap();
        assert!(tls.reload_if_changed().is_err());
        assert_eq!(tls.info(), good);
    }
}
