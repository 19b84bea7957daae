//! `TLSPolicy`: the listener's versions, cipher suites, order and session resumption, with
//! the checks that a policy can actually negotiate something.

use crate::diag::{did_you_mean, Diagnostic};
use crate::load::Resources;
use crate::model::{TlsPolicy, TlsVersion};
use crate::snapshot::{TlsPolicySpec, CIPHER_SUITES};
use crate::yaml::at;

use super::ctx::Ctx;

/// Largest session cache a policy may ask for (entries are a few hundred bytes each).
const MAX_SESSION_CACHE: u32 = 1_000_000;

impl Ctx<'_, TlsPolicy> {
    pub(super) fn tls_policy(&mut self, p: &TlsPolicy) -> TlsPolicySpec {
        self.name(&p.name, "TLS policy");
        let tls13_only = p.min_version == Some(TlsVersion::Tls13);
        let mut suites = Vec::new();
        match &p.cipher_suites {
            None => suites = TlsPolicySpec::default().cipher_suites,
            Some(list) => {
                for (i, s) in list.iter().enumerate() {
                    let name = s.trim().to_ascii_uppercase();
                    if !CIPHER_SUITES.contains(&name.as_str()) {
                        let hint = did_you_mean(&name, CIPHER_SUITES).map(|m| format!("did you mean `{m}`? "));
                        self.err(
                            at!["cipherSuites", i],
                            format!("unknown or unsupported cipher suite `{s}`"),
                            Some(format!("{}supported: {}", hint.unwrap_or_default(), CIPHER_SUITES.join(", "))),
                        );
                    } else if suites.contains(&name) {
                        self.err(at!["cipherSuites", i], format!("`{name}` is listed twice"), None);
                    } else {
                        suites.push(name);
                    }
                }
                let has13 = suites.iter().any(|s| s.starts_with("TLS13_"));
                let has12 = suites.iter().any(|s| !s.starts_with("TLS13_"));
                if !self.failed && !has13 {
                    self.err(
                        at!["cipherSuites"],
                        "no TLS 1.3 cipher suite: every modern client would be refused",
                        Some(
                            "add TLS13_AES_256_GCM_SHA384, TLS13_AES_128_GCM_SHA256 or TLS13_CHACHA20_POLY1305_SHA256"
                                .into(),
                        ),
                    );
                }
                if !self.failed && tls13_only && has12 {
                    self.err(
                        at!["cipherSuites"],
                        "TLS 1.2 cipher suites listed with `minVersion: \"1.3\"`, which never uses them",
                        Some("remove the TLS_ECDHE_… suites, or allow TLS 1.2 with `minVersion: \"1.2\"`".into()),
                    );
                }
                if !self.failed && !tls13_only && !has12 {
                    self.err(
                        at!["cipherSuites"],
                        "no TLS 1.2 cipher suite, so TLS 1.2 clients would be refused",
                        Some("add a TLS_ECDHE_… suite, or say so with `minVersion: \"1.3\"`".into()),
                    );
                }
            }
        }
        let resumption = p.session_resumption.as_ref();
        let cache = resumption.and_then(|r| r.cache_size).unwrap_or(TlsPolicySpec::default().session_cache_size);
        if cache > MAX_SESSION_CACHE {
            self.err(
                at!["sessionResumption", "cacheSize"],
                format!("cacheSize is {cache}; at most {MAX_SESSION_CACHE}"),
                None,
            );
        }
        TlsPolicySpec {
            name: p.name.clone(),
            tls13_only,
            cipher_suites: suites,
            server_cipher_order: p.server_cipher_order.unwrap_or(true),
            tickets: resumption.and_then(|r| r.tickets).unwrap_or(true),
            session_cache_size: cache,
        }
    }
}

/// One listener, one policy.
pub(super) fn check_single_policy(res: &Resources, diags: &mut Vec<Diagnostic>) {
    if let [first, rest @ ..] = res.tls_policies.as_slice() {
        for p in rest {
            diags.push(p.diag(
                at!["kind"],
                format!("a second TLSPolicy; `{}` ({}) already sets the listener's TLS", first.value.name, first.file),
                Some("keep one TLSPolicy in the config; it applies to every node's HTTPS listener".into()),
            ));
        }
    }
}
