//! TLS termination: the server configs, and reading the PEM material a config names.
//!
//! The rustls `ServerConfig` is built once; its certificate resolver reads the certificates
//! of whatever config is current (`certs::CertStore`, part of the `Runtime`, swapped with
//! its routes), so a new config or a renewed file brings new certificates without a
//! restart and without touching open connections.

use std::sync::Arc;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use schemas::snapshot::{ClientValidationSpec, PemSourceSpec};

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
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&read_pem(cert)?)
        .collect::<Result<_, _>>()
        .map_err(|e| anyhow::anyhow!("bad certificate PEM: {e}"))?;
    if chain.is_empty() {
        anyhow::bail!("no certificate in the PEM");
    }
    let key =
        PrivateKeyDer::from_pem_slice(&read_pem(key)?).map_err(|e| anyhow::anyhow!("bad private key PEM: {e}"))?;
    let provider = rustls::crypto::ring::default_provider();
    let signing = provider.key_provider.load_private_key(key.clone_key())?;
    CertifiedKey::new(chain.clone(), signing)
        .keys_match()
        .map_err(|e| anyhow::anyhow!("certificate and private key do not match: {e}"))?;
    Ok((chain, key))
}

/// A certificate chain and its key, read from the node and checked to belong together.
pub(crate) fn load_certified_key(cert: &PemSourceSpec, key: &PemSourceSpec) -> anyhow::Result<CertifiedKey> {
    let chain_pem = read_pem(cert)?;
    let key_pem = read_pem(key)?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&chain_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| anyhow::anyhow!("bad certificate PEM: {e}"))?;
    if chain.is_empty() {
        anyhow::bail!("no certificate in the PEM");
    }
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| anyhow::anyhow!("bad private key PEM: {e}"))?;
    let provider = rustls::crypto::ring::default_provider();
    let signing =
        provider.key_provider.load_private_key(key).map_err(|e| anyhow::anyhow!("unusable private key: {e}"))?;
    let ck = CertifiedKey::new(chain, signing);
    ck.keys_match().map_err(|e| anyhow::anyhow!("certificate and private key do not match: {e}"))?;
    Ok(ck)
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

/// The server config of a certificate whose clients must present one from `v.ca_file`.
pub(crate) fn mtls_config(
    key: Arc<CertifiedKey>,
    v: &ClientValidationSpec,
) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let roots = Arc::new(load_roots(&v.ca_file)?);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::server::WebPkiClientVerifier::builder_with_provider(roots, provider.clone());
    let verifier = if v.optional { builder.allow_unauthenticated().build()? } else { builder.build()? };
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(Fixed(key)));
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    cfg.ignore_client_order = true;
    Ok(Arc::new(cfg))
}

/// The server TLS config: TLS 1.2 and 1.3, ALPN h2 and http/1.1, certificates by SNI from
/// `lookup` (`Engine::cert_lookup`; `None` when the client sent no SNI). The server's cipher order wins over the client's
/// (rustls lists AEAD suites only, strongest first), as testssl.sh expects of a server.
pub fn server_config(
    lookup: impl Fn(Option<&str>) -> Option<Arc<CertifiedKey>> + Send + Sync + 'static,
) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SniResolver(lookup)));
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    cfg.ignore_client_order = true;
    Ok(Arc::new(cfg))
}
