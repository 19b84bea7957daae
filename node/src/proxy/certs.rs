//! The certificates a node serves, chosen by SNI, and their renewal without a commit.
//!
//! Each `Certificate` of the config is a `CertSlot`: the material last loaded from its files
//! (chain, key, client CA), swapped in place when the files change on disk. Tools that
//! renew certificates (certbot, cert-manager, an internal CA agent) write files; a node
//! checks their metadata every `--certificate-check-interval` and loads what changed, so
//! new handshakes get the new certificate within that interval, open connections keep
//! theirs, and no commit is needed. A file that does not parse (half-written) or a key that
//! does not match its certificate leaves the last good material served and is reported in
//! `raftgate status` until the files are right.
//!
//! A new config reuses the slots of certificates whose spec did not change, so a config
//! swap neither re-reads their files nor loses a renewal.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwapOption;
use rustls::sign::CertifiedKey;
use schemas::snapshot::{CertificateSpec, PemSourceSpec};

use super::tls::{config_file, load_certified_key, mtls_config, policy_config, TlsBuild};

/// The certificates of a config and the listener settings of its `TLSPolicy`: what a TLS
/// handshake on the proxy listener uses.
#[derive(Debug, Default)]
pub struct CertStore {
    names: Arc<Names>,
    /// The listener config (policy, sessions, certificates by SNI from `names`); `None`
    /// when the node does not terminate TLS.
    listener: Option<Arc<rustls::ServerConfig>>,
}

/// Certificates by host name: exact names, `*.` wildcards, and the default.
#[derive(Debug, Default)]
struct Names {
    exact: HashMap<String, usize>,
    wildcard: HashMap<String, usize>,
    default: Option<usize>,
    slots: Vec<Arc<CertSlot>>,
    /// Some certificate sends HSTS (most configs: none, and requests skip the lookup).
    any_hsts: bool,
    /// Some certificate verifies client certificates.
    any_mtls: bool,
}

/// One certificate as this node serves it.
#[derive(Debug)]
pub struct CertSlot {
    pub spec: CertificateSpec,
    /// The policy and session state its client-certificate config is built with.
    tls: TlsBuild,
    /// `Strict-Transport-Security` for its host names over HTTPS.
    hsts: Option<http::HeaderValue>,
    served: ArcSwapOption<Served>,
    watch: Mutex<Watch>,
}

/// Material that loaded and matched: what handshakes get.
#[derive(Debug)]
struct Served {
    key: Arc<CertifiedKey>,
    /// The server config of a certificate that verifies client certificates.
    mtls: Option<Arc<rustls::ServerConfig>>,
    not_after: i64,
    fingerprint: String,
    loaded_at: u64,
    /// The stapled OCSP response's `nextUpdate`: past it, the staple is dropped.
    ocsp_until: Option<i64>,
    /// Why the configured OCSP response is not stapled (the certificate is served without).
    ocsp_problem: Option<String>,
}

/// What the files looked like when last read, and what was wrong with them.
#[derive(Debug, Default)]
struct Watch {
    /// `None` before the first look.
    seen: Option<Vec<Option<FileSig>>>,
    error: Option<String>,
    /// A failed load is tried again from then even if the files do not change (the cause
    /// may have been a full descriptor table or a permission since fixed).
    retry_at: Option<std::time::Instant>,
}

/// How long a failed load waits before it is tried again with unchanged files.
const RETRY: std::time::Duration = std::time::Duration::from_secs(10);

/// A file's identity and version as `stat` sees it (following links, as certbot's `live/`
/// and Kubernetes secret volumes renew by pointing a link at a new file).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileSig {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

fn sig(path: &str) -> Option<FileSig> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some(FileSig {
        dev: m.dev(),
        ino: m.ino(),
        len: m.len(),
        mtime: (m.mtime(), m.mtime_nsec()),
        ctime: (m.ctime(), m.ctime_nsec()),
    })
}

/// What `raftgate status` and `raftgate certificates` show of one certificate on a node.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CertView {
    pub name: String,
    pub hostnames: Vec<String>,
    pub default: bool,
    /// Unix seconds; 0 when nothing is served.
    pub not_after: i64,
    /// Hex SHA-256 of the served leaf certificate; empty when nothing is served.
    pub fingerprint: String,
    /// Unix seconds when the served material was read from the files.
    pub loaded_at: u64,
    /// Why the files are not (or no longer) what is served; empty when they are.
    pub error: String,
    /// `stapled`, `none` (no `ocspResponseFile`), or why the response is not stapled.
    pub ocsp: String,
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

impl CertSlot {
    fn new(spec: CertificateSpec, tls: TlsBuild) -> Self {
        let hsts = spec.hsts.as_deref().and_then(|v| http::HeaderValue::from_str(v).ok());
        let slot = CertSlot { spec, tls, hsts, served: ArcSwapOption::empty(), watch: Mutex::default() };
        slot.check();
        slot
    }

    /// The files a node re-reads when they change (environment variables are read once).
    fn files(&self) -> impl Iterator<Item = &str> {
        fn pem(s: &PemSourceSpec) -> Option<&str> {
            match s {
                PemSourceSpec::File(path) => Some(path.as_str()),
                PemSourceSpec::Env(_) => None,
            }
        }
        let spec = &self.spec;
        [
            pem(&spec.certificate),
            pem(&spec.private_key),
            spec.client_validation.as_ref().map(|v| v.ca_file.as_str()),
            spec.ocsp_response_file.as_deref(),
        ]
        .into_iter()
        .flatten()
    }

    /// Loads the files when they changed since the last look (or a failed load is due
    /// again, or the stapled OCSP response expired); returns whether it served new material.
    fn check(&self) -> bool {
        let sigs: Vec<Option<FileSig>> = self.files().map(sig).collect();
        let mut watch = self.watch.lock().unwrap_or_else(|p| p.into_inner());
        let now = std::time::Instant::now();
        let changed = watch.seen.as_ref() != Some(&sigs);
        let retry = watch.retry_at.is_some_and(|t| now >= t);
        let staple_expired =
            self.served.load().as_ref().and_then(|s| s.ocsp_until).is_some_and(|until| until <= now_secs() as i64);
        if !changed && !retry && !staple_expired {
            return false;
        }
        // Recorded before reading: a file still being written changes again, and is read
        // again at the next look.
        watch.seen = Some(sigs);
        let renewal = self.served.load().is_some();
        match self.load() {
            Ok(served) => {
                let same = self.served.load().as_ref().is_some_and(|s| s.fingerprint == served.fingerprint);
                if renewal && !same {
                    tracing::info!(certificate = %self.spec.name, fingerprint = %served.fingerprint, not_after = served.not_after, "serving the renewed certificate");
                }
                if let Some(why) = &served.ocsp_problem {
                    tracing::warn!(certificate = %self.spec.name, %why, "serving the certificate without an OCSP staple");
                }
                (watch.error, watch.retry_at) = (None, None);
                self.served.store(Some(Arc::new(served)));
                !same
            }
            Err(e) => {
                let e = format!("{e:#}");
                // Logged once per distinct problem, not at every retry.
                if watch.error.as_deref() != Some(e.as_str()) {
                    if renewal {
                        tracing::warn!(certificate = %self.spec.name, error = %e, "the certificate's files changed but cannot be used; still serving the last good ones");
                    } else {
                        tracing::error!(certificate = %self.spec.name, error = %e, "cannot load certificate; its host names get no TLS");
                    }
                }
                watch.error = Some(e);
                watch.retry_at = Some(now + RETRY);
                false
            }
        }
    }

    fn load(&self) -> anyhow::Result<Served> {
        let mut key = load_certified_key(&self.spec.certificate, &self.spec.private_key)?;
        let leaf = key.end_entity_cert().map_err(|e| anyhow::anyhow!("{e}"))?.clone().into_owned();
        // A response that cannot be stapled leaves the certificate served without one.
        let (mut ocsp_until, mut ocsp_problem) = (None, None);
        if let Some(path) = &self.spec.ocsp_response_file {
            let checked = config_file(path).map_err(|e| format!("{e:#}")).and_then(|der| {
                trust::identity::check_ocsp_response(&der, leaf.as_ref(), now_secs() as i64).map(|until| (der, until))
            });
            match checked {
                Ok((der, until)) => {
                    key.ocsp = Some(der);
                    ocsp_until = until;
                }
                Err(why) => ocsp_problem = Some(format!("{path}: {why}")),
            }
        }
        let key = Arc::new(key);
        let mtls =
            self.spec.client_validation.as_ref().map(|v| mtls_config(key.clone(), v, &self.tls.policy)).transpose()?;
        let not_after = trust::identity::inspect(leaf.as_ref(), "")
            .map(|i| i.not_after)
            .ok_or_else(|| anyhow::anyhow!("the certificate is not X.509"))?;
        use sha2::Digest;
        let fingerprint = hex::encode(sha2::Sha256::digest(leaf.as_ref()));
        Ok(Served { key, mtls, not_after, fingerprint, loaded_at: now_secs(), ocsp_until, ocsp_problem })
    }

    pub fn view(&self) -> CertView {
        let served = self.served.load();
        let error = self.watch.lock().unwrap_or_else(|p| p.into_inner()).error.clone().unwrap_or_default();
        CertView {
            name: self.spec.name.clone(),
            hostnames: self.spec.hostnames.clone(),
            default: self.spec.is_default,
            not_after: served.as_ref().map_or(0, |s| s.not_after),
            fingerprint: served.as_ref().map(|s| s.fingerprint.clone()).unwrap_or_default(),
            loaded_at: served.as_ref().map_or(0, |s| s.loaded_at),
            error,
            ocsp: match (&self.spec.ocsp_response_file, served.as_ref()) {
                (None, _) => "none".into(),
                (Some(_), None) => String::new(),
                (Some(_), Some(s)) => match &s.ocsp_problem {
                    Some(why) => format!("not stapled: {why}"),
                    None => "stapled".into(),
                },
            },
        }
    }
}

impl CertStore {
    /// The certificates of a config: those whose spec (and listener policy) is unchanged
    /// from `previous` keep their slot (and what it serves); the others are loaded from
    /// this node's files or environment now. A certificate that cannot be loaded is left
    /// out of TLS and reported; it never takes the other ones down.
    pub fn load(specs: &[CertificateSpec], previous: Option<&CertStore>, tls: &TlsBuild) -> anyhow::Result<Self> {
        let mut names = Names::default();
        for spec in specs {
            let reused = previous
                .and_then(|p| p.names.slots.iter().find(|s| s.spec == *spec && s.tls.policy == tls.policy))
                .cloned();
            let slot = reused.unwrap_or_else(|| Arc::new(CertSlot::new(spec.clone(), tls.clone())));
            let i = names.slots.len();
            for h in &spec.hostnames {
                match h.strip_prefix("*.") {
                    Some(suffix) => names.wildcard.insert(suffix.to_string(), i),
                    None => names.exact.insert(h.clone(), i),
                };
            }
            if spec.is_default {
                names.default = Some(i);
            }
            names.any_hsts |= slot.hsts.is_some();
            names.any_mtls |= spec.client_validation.is_some();
            names.slots.push(slot);
        }
        let names = Arc::new(names);
        let listener = policy_config(&tls.policy, &tls.sessions, Arc::new(Resolver(names.clone())))?;
        Ok(CertStore { names, listener: Some(listener) })
    }

    /// Re-reads the files that changed; returns how many certificates now serve new
    /// material.
    pub fn refresh(&self) -> usize {
        self.names.slots.iter().filter(|s| s.check()).count()
    }

    /// The server config for a handshake: the certificate's own when it verifies client
    /// certificates, else the listener's. `None` when this node does not terminate TLS.
    pub fn config_for(&self, sni: Option<&str>) -> Option<Arc<rustls::ServerConfig>> {
        self.mtls(sni).or_else(|| self.listener.clone())
    }

    /// The certificate for a handshake's SNI name (`None`: the client sent none).
    pub fn get(&self, sni: Option<&str>) -> Option<Arc<CertifiedKey>> {
        self.names.slot(sni)?.served.load().as_ref().map(|s| s.key.clone())
    }

    /// The server config for `sni` when its certificate verifies client certificates.
    pub fn mtls(&self, sni: Option<&str>) -> Option<Arc<rustls::ServerConfig>> {
        self.names.slot(sni)?.served.load().as_ref()?.mtls.clone()
    }

    pub fn views(&self) -> Vec<CertView> {
        self.names.slots.iter().map(|s| s.view()).collect()
    }

    /// Whether a request for `host` on a TLS connection made for `sni` must be refused:
    /// the host's certificate verifies client certificates and the connection was made
    /// under another certificate (whose handshake did not check them, or with another CA).
    pub fn misdirected(&self, host: &str, sni: Option<&str>) -> bool {
        if !self.names.any_mtls {
            return false;
        }
        let n = &self.names;
        let Some(h) = n.listed(host).or(n.default) else { return false };
        n.slots[h].spec.client_validation.is_some() && sni.and_then(|s| n.listed(s)).or(n.default) != Some(h)
    }

    /// The `Strict-Transport-Security` value for a request to `host` over HTTPS: from the
    /// certificate that lists the host (never the default's for a name it does not list).
    pub fn hsts(&self, host: &str) -> Option<http::HeaderValue> {
        if !self.names.any_hsts {
            return None;
        }
        self.names.listed(host).and_then(|i| self.names.slots[i].hsts.clone())
    }

    /// Certificates this node cannot serve as their files say, each with why: not loaded
    /// at all, or renewed files that cannot be used (the last good ones still served).
    pub fn errors(&self) -> Vec<String> {
        let views = self.views();
        let ocsp = views
            .iter()
            .filter(|v| v.ocsp.starts_with("not stapled"))
            .map(|v| format!("certificate `{}`: OCSP response {}", v.name, v.ocsp))
            .collect::<Vec<_>>();
        views
            .into_iter()
            .filter(|v| !v.error.is_empty())
            .map(|v| match v.fingerprint.is_empty() {
                true => format!("certificate `{}`: {}", v.name, v.error),
                false => format!(
                    "certificate `{}`: its files changed but cannot be used ({}); still serving the one loaded at {}",
                    v.name,
                    v.error,
                    humantime::format_rfc3339_seconds(UNIX_EPOCH + std::time::Duration::from_secs(v.loaded_at))
                ),
            })
            .chain(ocsp)
            .collect()
    }

    /// Sets `raftgate_certificate_expiry_seconds` (seconds left, negative once expired)
    /// for each served certificate.
    pub fn export_expiry(&self, node: &str) {
        let now = now_secs() as i64;
        for s in &self.names.slots {
            if let Some(served) = s.served.load().as_ref() {
                metrics::gauge!("raftgate_certificate_expiry_seconds", "certificate" => s.spec.name.clone(), "node" => node.to_string())
                    .set((served.not_after - now) as f64);
            }
        }
    }
}

impl Names {
    /// The slot serving `sni`: its own certificate, a wildcard's, else the default.
    fn slot(&self, sni: Option<&str>) -> Option<&CertSlot> {
        let listed = sni.and_then(|name| self.listed(name));
        listed.or(self.default).map(|i| &*self.slots[i])
    }

    /// The certificate that lists `name`, exactly or by a wildcard.
    fn listed(&self, name: &str) -> Option<usize> {
        let name = name.to_ascii_lowercase();
        self.exact.get(&name).copied().or_else(|| {
            let mut rest = name.as_str();
            while let Some(dot) = rest.find('.') {
                rest = &rest[dot + 1..];
                if let Some(&i) = self.wildcard.get(rest) {
                    return Some(i);
                }
            }
            None
        })
    }
}

/// Resolves a handshake's SNI from one config's certificates.
#[derive(Debug)]
struct Resolver(Arc<Names>);

impl rustls::server::ResolvesServerCert for Resolver {
    fn resolve(&self, hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0.slot(hello.server_name())?.served.load().as_ref().map(|s| s.key.clone())
    }
}
