//! The testbed's cluster certificates, in `<state dir>/certs`: a CA for the cluster
//! `testbed`, the operator client certificate `testbed` (what the testbed's own admin
//! calls and the `raftgate` CLI present), and one certificate per node naming
//! `node-<id>.testbed`, the node's IP (the address peers and the CLI dial) and `localhost`.
//! All of it is throwaway: made by `up`, removed by `down`.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use trust::gen::{self, Ca};

/// The cluster name every testbed node runs with (`--cluster-name`).
pub(crate) const CLUSTER: &str = "testbed";
/// The operator client certificate's name.
const CLIENT: &str = "testbed";
/// Long enough for any testbed's life; short enough that a leaked key soon stops mattering.
const DAYS: u32 = 30;

/// The certificate directory of a state directory.
pub(crate) fn dir(state: &Path) -> PathBuf {
    state.join("certs")
}

/// The CA bundle in `certs`.
pub(crate) fn ca(certs: &Path) -> PathBuf {
    certs.join(gen::CA_CERT)
}

/// The operator client certificate and key in `certs`.
pub(crate) fn client(certs: &Path) -> (PathBuf, PathBuf) {
    files(certs, CLIENT)
}

/// Node `id`'s certificate and key in `certs`.
pub(crate) fn node(certs: &Path, id: u64) -> (PathBuf, PathBuf) {
    files(certs, &format!("node-{id}"))
}

fn files(certs: &Path, stem: &str) -> (PathBuf, PathBuf) {
    let (cert, key) = gen::file_names(stem);
    (certs.join(cert), certs.join(key))
}

/// A new CA and operator certificate in `certs`, replacing whatever an earlier testbed
/// left there (none of its nodes run any more).
pub(crate) fn create(certs: &Path) -> anyhow::Result<()> {
    if certs.exists() {
        std::fs::remove_dir_all(certs).with_context(|| format!("cannot remove {}", certs.display()))?;
    }
    let ca = Ca::new(CLUSTER, DAYS)?;
    ca.save(certs)?;
    ca.client(CLIENT, DAYS)?.save(certs, CLIENT)?;
    Ok(())
}

/// Issues node `id`'s certificate for `ip` unless it exists (a restarted node keeps its own).
pub(crate) fn ensure_node(certs: &Path, id: u64, ip: &str) -> anyhow::Result<(PathBuf, PathBuf)> {
    let (cert, key) = node(certs, id);
    if cert.exists() && key.exists() {
        return Ok((cert, key));
    }
    let ip: IpAddr = ip.parse().with_context(|| format!("node {id}'s address `{ip}` is not an IP"))?;
    let ca = Ca::load(certs)?;
    ca.node(id, &["localhost".to_string()], &[ip], DAYS)?.save(certs, &format!("node-{id}"))?;
    Ok((cert, key))
}

/// Issues node `id` a new certificate (a rotation): written key first, then certificate,
/// each by rename, as an operator's tooling would. Returns the new certificate's expiry
/// (Unix seconds), which the node exports once it uses it.
pub(crate) fn reissue_node(certs: &Path, id: u64, ip: &str) -> anyhow::Result<i64> {
    let ip: IpAddr = ip.parse().with_context(|| format!("node {id}'s address `{ip}` is not an IP"))?;
    let ca = Ca::load(certs)?;
    // One more day than the first issue, so the new certificate is told apart by expiry.
    let issued = ca.node(id, &["localhost".to_string()], &[ip], DAYS + 1)?;
    issued.save(certs, &format!("node-{id}"))?;
    let info = issued.info(CLUSTER).context("the new certificate does not parse")?;
    Ok(info.not_after)
}

/// An HTTP/1.1 client config trusting the testbed CA and presenting the operator
/// certificate, for the testbed's own calls to the admin listeners.
pub(crate) fn client_config(certs: &Path) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let (cert, key) = client(certs);
    let config = trust::material::client_config_from_files(&ca(certs), Some((&cert, &key)))?;
    // The shared config offers h2 only (gRPC); these calls are plain HTTP/1.1 requests.
    let mut config = (*config).clone();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
