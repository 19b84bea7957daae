//! Certificates: the SNI host names each one serves, where its PEM files come from, and the
//! check that every host name picks exactly one certificate.

use std::collections::HashMap;

use crate::diag::Diagnostic;
use crate::load::Resources;
use crate::model::{Certificate, PemSource};
use crate::snapshot::{CertificateSpec, PemSourceSpec};
use crate::yaml::at;

use super::ctx::Ctx;

impl Ctx<'_, Certificate> {
    pub(super) fn certificate(&mut self, c: &Certificate) -> CertificateSpec {
        self.name(&c.name, "certificate");
        if c.hostnames.is_empty() {
            self.err(
                at!["hostnames"],
                "a certificate needs at least one host name",
                Some("list the SNI names it serves, e.g. `hostnames: [api.example.com]`".to_string()),
            );
        }
        let hostnames = self.hostnames(&c.hostnames);
        let certificate = self.pem_source("certificate", &c.certificate);
        let private_key = self.pem_source("privateKey", &c.private_key);
        CertificateSpec { name: c.name.clone(), hostnames, certificate, private_key }
    }

    fn pem_source(&mut self, field: &str, src: &PemSource) -> PemSourceSpec {
        let looks_like_pem = |s: &Option<String>| s.as_deref().is_some_and(|v| v.contains("-----BEGIN"));
        if looks_like_pem(&src.file) || looks_like_pem(&src.env) {
            self.err(
                at![field],
                "PEM text is written in the config: keys and certificates never go into Git",
                Some("put the PEM on each node and reference it with `file: /path` or `env: VARIABLE`".to_string()),
            );
            return PemSourceSpec::File(String::new());
        }
        match (&src.file, &src.env) {
            (Some(f), None) => {
                if !f.starts_with('/') {
                    self.err(
                        at![field, "file"],
                        format!("`{f}` is not an absolute path"),
                        Some("write the absolute path of the PEM file as it is on every node".to_string()),
                    );
                }
                PemSourceSpec::File(f.clone())
            }
            (None, Some(e)) => {
                let ok = !e.is_empty()
                    && !e.starts_with(|c: char| c.is_ascii_digit())
                    && e.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
                if !ok {
                    self.err(
                        at![field, "env"],
                        format!("`{e}` is not an environment variable name"),
                        Some("use upper-case letters, digits and `_`, not starting with a digit".to_string()),
                    );
                }
                PemSourceSpec::Env(e.clone())
            }
            _ => {
                self.err(at![field], "give exactly one of `file` or `env`", None);
                PemSourceSpec::File(String::new())
            }
        }
    }
}

pub(super) fn check_certificate_overlap(res: &Resources, diags: &mut Vec<Diagnostic>) {
    let mut seen: HashMap<String, (String, String)> = HashMap::new();
    for c in &res.certificates {
        for (i, h) in c.value.hostnames.iter().enumerate() {
            let h = h.to_ascii_lowercase();
            if let Some((name, file)) = seen.get(&h) {
                diags.push(c.diag(
                    at!["hostnames", i],
                    format!("host name `{h}` is already served by certificate `{name}` ({file})"),
                    Some("each SNI name must choose exactly one certificate; remove it from one of them".into()),
                ));
            } else {
                seen.insert(h, (c.value.name.clone(), c.file.clone()));
            }
        }
    }
}
