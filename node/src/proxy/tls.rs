//! TLS termination: the server configs, and reading the PEM material a config names.
//!
//! The rustls `ServerConfig` is built once; its certificate resolver reads the certificates
//! of whatever config is current (`certs::CertStore`, part of the `Runtime`, swapped with
//! its routes), so a new config or a renewed file brings new certificates without a
//! restart and without touching open connections.

use std::sync::{Arc, Mutex};

use rustls::server::{ClientHello, ProducesTickets, ResolvesServerCert, StoresServerSessions};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use schemas::snapshot::{ClientValidationSpec, PemSourceSpec, TlsPolicySpec};

/// The bytes a config names on this node: a file (see `config_file`) or an environment
/// variable.
pub(crate) fn read_pem(src: &PemSourceSpec) -> anyhow::Result<Vec<u8>> {
    match src {
        PemSourceSpec::File(path) => config_file(path),
        PemSourceSpec::Env(var) => std::env::var(var)
            .map(String::into_bytes)
            .map_err(|_| anyhow::anyhow!("environment variable {var} is not set")),
    }
}

/// A file a config names (a certificate, a key, a CA bundle): a regular file of at most
/// `trust::material::MAX_PEM_BYTES`. The commit chose the path, so this is the one guard
/// between a config repository and this node's files: devices, FIFOs and sockets are
/// refused, also behind a link (checked on what the link names, then again on the opened
/// descriptor). Links are followed because renewal tools publish through them (certbot's
/// `live/` directory, Kubernetes secret volumes).
pub fn config_file(path: &str) -> anyhow::Result<Vec<u8>> {
    use trust::material::{read_bounded, Symlinks, MAX_PEM_BYTES};
    read_bounded(std::path::Path::new(path), MAX_PEM_BYTES, Symlinks::Follow)
        .map_err(|why| anyhow::anyhow!("cannot read {path}: {why}"))
}

/// A text file a config names (key and password lists), read like `config_file` (links
/// followed, as Kubernetes mounts secrets through them) but with its own size bound.
pub fn config_text(path: &str, limit: u64) -> anyhow::Result<String> {
    use trust::material::{read_bounded, Symlinks};
    let bytes = read_bounded(std::path::Path::new(path), limit, Symlinks::Follow)
        .map_err(|why| anyhow::anyhow!("cannot read {path}: {why}"))?;
    String::from_utf8(bytes).map_err(|_| anyhow::anyhow!("{path}: not UTF-8"))
}

/// A PEM CA bundle a config names (an upstream's `tls.caFile`, a certificate's
/// `clientValidation.caFile`).
pub fn load_roots(path: &str) -> anyhow::Result<rustls::RootCertStore> {
    use rustls_pki_types::pem::PemObject;
    let pem = config_file(path)?;
    let mut store = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| anyhow::anyhow!("bad PEM in CA file {path}: {e}"))?;
        store.add(cert).map_err(|e| anyhow::anyhow!("bad certificate in {path}: {e}"))?;
    }
    if store.is_empty() {
        anyhow::bail!("CA file {path} holds no certificate");
    }
    Ok(store)
}

/// A certificate chain and key from the node (file or environment), for raftgate to present
/// as a TLS client; checked to belong together.
pub fn client_identity(
    cert: &PemSourceSpec,
    key: &PemSourceSpec,
) -> anyhow::Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
    let (chain, private) = read_pair(cert, key)?;
    certify(chain.clone(), private.clone_key(), cert, key)?;
    Ok((chain, private))
}

/// A certificate chain and its key, read from the node and checked to belong together.
pub(crate) fn load_certified_key(cert: &PemSourceSpec, key: &PemSourceSpec) -> anyhow::Result<CertifiedKey> {
    let (chain, private) = read_pair(cert, key)?;
    certify(chain, private, cert, key)
}

/// The chain and key PEM parsed; errors name where each came from.
fn read_pair(
    cert: &PemSourceSpec,
    key: &PemSourceSpec,
) -> anyhow::Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
    let (c, k) = (source_name(cert), source_name(key));
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&read_pem(cert)?)
        .collect::<Result<_, _>>()
        .map_err(|e| anyhow::anyhow!("bad certificate PEM in {c}: {e}"))?;
    if chain.is_empty() {
        anyhow::bail!("no certificate in {c} (a half-written file?)");
    }
    let private = PrivateKeyDer::from_pem_slice(&read_pem(key)?)
        .map_err(|e| anyhow::anyhow!("bad private key PEM in {k}: {e}"))?;
    Ok((chain, private))
}

/// The signing key, checked to match the chain's leaf.
fn certify(
    chain: Vec<CertificateDer<'static>>,
    private: PrivateKeyDer<'static>,
    cert: &PemSourceSpec,
    key: &PemSourceSpec,
) -> anyhow::Result<CertifiedKey> {
    let (c, k) = (source_name(cert), source_name(key));
    let provider = rustls::crypto::ring::default_provider();
    let signing = provider
        .key_provider
        .load_private_key(private)
        .map_err(|e| anyhow::anyhow!("unusable private key in {k}: {e}"))?;
    let ck = CertifiedKey::new(chain, signing);
    ck.keys_match().map_err(|e| {
        anyhow::anyhow!("the certificate in {c} and the private key in {k} do not match ({e}); write both files")
    })?;
    Ok(ck)
}

/// Where PEM material comes from, for messages: a path or `$VARIABLE`.
fn source_name(src: &PemSourceSpec) -> String {
    match src {
        PemSourceSpec::File(path) => path.clone(),
        PemSourceSpec::Env(var) => format!("${var}"),
    }
}

/// Resolves SNI with `lookup`, which reads the current config's certificates.
struct SniResolver<F>(F);

impl<F> std::fmt::Debug for SniResolver<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SniResolver")
    }
}

impl<F: Fn(Option<&str>) -> Option<Arc<CertifiedKey>> + Send + Sync> ResolvesServerCert for SniResolver<F> {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        (self.0)(hello.server_name())
    }
}

/// Serves one certificate whatever the SNI (the config was picked by SNI already).
#[derive(Debug)]
struct Fixed(Arc<CertifiedKey>);

impl ResolvesServerCert for Fixed {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

/// Session state every listener config shares for the node's life, so resumption
/// survives config swaps: the session cache (by size) and the ticket keys.
#[derive(Debug, Clone)]
pub struct Sessions {
    ticketer: Arc<dyn ProducesTickets>,
    cache: Arc<Mutex<Option<SizedCache>>>,
}

/// A session cache and the size it was made with.
type SizedCache = (u32, Arc<dyn StoresServerSessions>);

impl Sessions {
    /// Tickets from `ticketer` (`tickets::SharedTickets` for keys shared by the cluster).
    pub fn new(ticketer: Arc<dyn ProducesTickets>) -> Self {
        Sessions { ticketer, cache: Arc::default() }
    }

    /// Ticket keys of this node only, random and rotating (rustls's ticketer).
    pub fn node_local() -> anyhow::Result<Self> {
        Ok(Self::new(rustls::crypto::ring::Ticketer::new()?))
    }

    fn cache(&self, size: u32) -> Arc<dyn StoresServerSessions> {
        let mut c = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        match &*c {
            Some((n, cache)) if *n == size => cache.clone(),
            _ => {
                let cache: Arc<dyn StoresServerSessions> = rustls::server::ServerSessionMemoryCache::new(size as usize);
                *c = Some((size, cache.clone()));
                cache
            }
        }
    }
}

/// What a config's TLS listener settings are built from: its policy and the node's
/// session state.
#[derive(Debug, Clone)]
pub struct TlsBuild {
    pub policy: TlsPolicySpec,
    pub sessions: Sessions,
}

/// rustls's *ring* provider with the policy's cipher suites, in its order.
fn provider(policy: &TlsPolicySpec) -> anyhow::Result<rustls::crypto::CryptoProvider> {
    let mut provider = rustls::crypto::ring::default_provider();
    let all = std::mem::take(&mut provider.cipher_suites);
    for name in &policy.cipher_suites {
        let suite = all
            .iter()
            .find(|s| format!("{:?}", s.suite()) == *name)
            .ok_or_else(|| anyhow::anyhow!("cipher suite {name} is not supported by this node"))?;
        provider.cipher_suites.push(*suite);
    }
    Ok(provider)
}

/// The session state a listener config resumes sessions from.
enum Resumption<'a> {
    /// The node's: a cache and ticket keys that outlive configs (and, with a shared key
    /// file, work on every node).
    Shared(&'a Sessions),
    /// A cache of this config only and no tickets: for configs that verify client
    /// certificates. A resumed session keeps the client identity (or its absence) it was
    /// made with, so a session from before `clientValidation` was added, or from before a
    /// CA was replaced to revoke it, must never resume under the new rules.
    Isolated,
}

/// A listener config for `policy`: its versions, suites and order, session resumption,
/// ALPN h2 and http/1.1, certificates from `resolver`, and client certificates checked by
/// `client_auth` when given.
fn listener_config(
    policy: &TlsPolicySpec,
    resumption: Resumption<'_>,
    client_auth: Option<Arc<dyn rustls::server::danger::ClientCertVerifier>>,
    resolver: Arc<dyn ResolvesServerCert>,
) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let versions: &[&'static rustls::SupportedProtocolVersion] = if policy.tls13_only {
        &[&rustls::version::TLS13]
    } else {
        &[&rustls::version::TLS13, &rustls::version::TLS12]
    };
    let builder =
        rustls::ServerConfig::builder_with_provider(Arc::new(provider(policy)?)).with_protocol_versions(versions)?;
    let builder = match client_auth {
        Some(verifier) => builder.with_client_cert_verifier(verifier),
        None => builder.with_no_client_auth(),
    };
    let mut cfg = builder.with_cert_resolver(resolver);
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    cfg.ignore_client_order = policy.server_cipher_order;
    cfg.session_storage = match (policy.session_cache_size, &resumption) {
        (0, _) => Arc::new(rustls::server::NoServerSessionStorage {}),
        (n, Resumption::Shared(sessions)) => sessions.cache(n),
        (n, Resumption::Isolated) => rustls::server::ServerSessionMemoryCache::new(n.min(MTLS_CACHE) as usize),
    };
    match resumption {
        Resumption::Shared(sessions) if policy.tickets => cfg.ticketer = sessions.ticketer.clone(),
        // rustls's default: no tickets.
        _ => {}
    }
    Ok(Arc::new(cfg))
}

/// Sessions a client-certificate config remembers (its own cache, see `Resumption`).
const MTLS_CACHE: u32 = 1_000;

/// The server config of a certificate whose clients must present one from `v.ca_file`:
/// the listener's policy, its own session cache and no tickets.
pub(crate) fn mtls_config(
    key: Arc<CertifiedKey>,
    v: &ClientValidationSpec,
    policy: &TlsPolicySpec,
) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let roots = Arc::new(load_roots(&v.ca_file)?);
    let builder = rustls::server::WebPkiClientVerifier::builder_with_provider(roots, Arc::new(provider(policy)?));
    let verifier = if v.optional { builder.allow_unauthenticated().build()? } else { builder.build()? };
    listener_config(policy, Resumption::Isolated, Some(verifier), Arc::new(Fixed(key)))
}

/// A config's listener settings, certificates by SNI from `resolver`.
pub(crate) fn policy_config(
    policy: &TlsPolicySpec,
    sessions: &Sessions,
    resolver: Arc<dyn ResolvesServerCert>,
) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    listener_config(policy, Resumption::Shared(sessions), None, resolver)
}

/// A server config with the default policy (TLS 1.2 and 1.3, the server's order of
/// rustls's AEAD suites, strongest first, as testssl.sh expects of a server), certificates
/// by SNI from `lookup` (`Engine::cert_lookup`; `None` when the client sent no SNI). For
/// listeners that do not follow the config's `TLSPolicy` (webhooks).
pub fn server_config(
    lookup: impl Fn(Option<&str>) -> Option<Arc<CertifiedKey>> + Send + Sync + 'static,
) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let sessions = Sessions::node_local()?;
    listener_config(&TlsPolicySpec::default(), Resumption::Shared(&sessions), None, Arc::new(SniResolver(lookup)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The names a config may write (schemas) are exactly the suites this node has.
    #[test]
    fn every_cipher_suite_name_is_one_of_ours() {
        let ours: Vec<String> =
            rustls::crypto::ring::default_provider().cipher_suites.iter().map(|s| format!("{:?}", s.suite())).collect();
        assert_eq!(ours, schemas::snapshot::CIPHER_SUITES);
        let p = provider(&TlsPolicySpec::default()).unwrap();
        assert_eq!(p.cipher_suites.len(), ours.len());
    }
}
