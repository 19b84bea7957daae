//! Certificates: the SNI host names each one serves, where its PEM files come from, and the
//! check that every host name picks exactly one certificate.

use std::collections::HashMap;

use crate::diag::Diagnostic;
use crate::load::Resources;
use crate::model::Certificate;
use crate::snapshot::{CertificateSpec, ClientValidationSpec};
use crate::yaml::at;

use super::ctx::Ctx;

impl Ctx<'_, Certificate> {
    pub(super) fn certificate(&mut self, c: &Certificate) -> CertificateSpec {
        self.name(&c.name, "certificate");
        let is_default = c.is_default.unwrap_or(false);
        if c.hostnames.is_empty() && !is_default {
            self.err(
                at!["hostnames"],
                "a certificate needs at least one host name",
                Some(
                    "list the SNI names it serves, e.g. `hostnames: [api.example.com]`, or make it the \
                     certificate for clients without SNI with `default: true`"
                        .to_string(),
                ),
            );
        }
        let hostnames = self.hostnames(&c.hostnames);
        let certificate = self.pem_source(at!["certificate"], &c.certificate);
        let private_key = self.pem_source(at!["privateKey"], &c.private_key);
        let client_validation = c.client_validation.as_ref().map(|v| {
            if !v.ca_file.starts_with('/') {
                self.err(
                    at!["clientValidation", "caFile"],
                    format!("`{}` is not an absolute path", v.ca_file),
                    Some("write the absolute path of the CA bundle as it is on every node".to_string()),
                );
            }
            ClientValidationSpec { ca_file: v.ca_file.clone(), optional: v.optional.unwrap_or(false) }
        });
        if let Some(f) = c.ocsp_response_file.as_deref().filter(|f| !f.starts_with('/')) {
            self.err(
                at!["ocspResponseFile"],
                format!("`{f}` is not an absolute path"),
                Some("write the absolute path of the DER OCSP response as it is on every node".to_string()),
            );
        }
        let hsts = c.hsts.as_ref().map(|h| {
            const YEAR: u64 = 365 * 24 * 3600;
            let secs = h.max_age_seconds;
            let (sub, preload) = (h.include_sub_domains.unwrap_or(false), h.preload.unwrap_or(false));
            if secs > 2 * YEAR {
                self.err(
                    at!["hsts", "maxAgeSeconds"],
                    "maxAgeSeconds is over two years",
                    Some("a year (31536000) is the usual value".into()),
                );
            }
            if preload && (secs < YEAR || !sub) {
                self.err(
                    at!["hsts", "preload"],
                    "preload lists accept only a `maxAgeSeconds` of a year or more with `includeSubDomains: true`",
                    Some("set `maxAgeSeconds: 31536000` and `includeSubDomains: true`, or leave `preload` out".into()),
                );
            }
            if c.hostnames.is_empty() {
                self.err(at!["hsts"], "HSTS is sent for a certificate's host names, and this one lists none", None);
            }
            let mut v = format!("max-age={secs}");
            if sub {
                v += "; includeSubDomains";
            }
            if preload {
                v += "; preload";
            }
            v
        });
        CertificateSpec {
            name: c.name.clone(),
            hsts,
            hostnames,
            is_default,
            certificate,
            private_key,
            client_validation,
            ocsp_response_file: c.ocsp_response_file.clone(),
        }
    }
}

/// Every host name picks exactly one certificate, and at most one is the default.
pub(super) fn check_certificate_overlap(res: &Resources, diags: &mut Vec<Diagnostic>) {
    let mut seen: HashMap<String, (String, String)> = HashMap::new();
    let mut default: Option<(String, String)> = None;
    for c in &res.certificates {
        if c.value.is_default == Some(true) {
            match &default {
                Some((name, file)) => diags.push(c.diag(
                    at!["default"],
                    format!("certificate `{name}` ({file}) is already the default"),
                    Some("one certificate answers clients without SNI; set `default: true` on one only".into()),
                )),
                None => default = Some((c.value.name.clone(), c.file.clone())),
            }
        }
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
