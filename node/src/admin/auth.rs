//! Admin authentication. A caller is authenticated by a client certificate from the cluster
//! CA (the admin listener runs TLS) or by the bearer token (`--admin-token-file`); either
//! is needed for every mutating call and, unless `--admin-read-open`, for reads. Liveness
//! and readiness probes stay open so orchestrators need no secret. Without TLS and without
//! a token the API is open: the node refuses to start that way in cluster mode unless
//! `--insecure-plaintext` says so.

use std::path::Path;
use std::sync::Arc;

use http::HeaderMap;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

#[derive(Debug, Clone, Default)]
pub struct Auth {
    /// SHA-256 of the token: comparing digests in constant time hides the token's length too.
    digest: Option<[u8; 32]>,
    /// The token itself, for calls this node makes to other members.
    token: Option<Arc<str>>,
    read_open: bool,
    /// Client certificates are checked (the listener runs TLS): without a token, they are
    /// the only way in.
    certificates: bool,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("this admin API needs a token: send `authorization: Bearer <token>` (raftgate --token-file)")]
    Missing,
    #[error(
        "this admin API needs a client certificate from the cluster CA (raftgate --cert/--key; create one with \
         `raftgate certs client`) or the admin token"
    )]
    NoCertificate,
    #[error("the admin token is wrong")]
    Wrong,
}

impl Auth {
    /// No token: every call is allowed (the admin listener should then stay on loopback).
    pub fn open() -> Self {
        Self::default()
    }

    /// Also accept (and, without a token, require) client certificates: the admin listener
    /// runs TLS with the cluster CA.
    pub fn with_certificates(mut self, read_open: bool) -> Self {
        self.certificates = true;
        self.read_open |= read_open;
        self
    }

    /// Whether anything is checked at all.
    pub fn is_open(&self) -> bool {
        self.digest.is_none() && !self.certificates
    }

    pub fn with_token(token: &str, read_open: bool) -> Self {
        Self {
            digest: Some(Sha256::digest(token.as_bytes()).into()),
            token: Some(token.into()),
            read_open,
            certificates: false,
        }
    }

    /// Reads the token from a file (surrounding whitespace ignored). An empty file is an error:
    /// it would otherwise silently mean "no authentication".
    pub fn from_file(path: &Path, read_open: bool) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read the admin token file {}: {e}", path.display()))?;
        let token = text.trim();
        if token.is_empty() {
            anyhow::bail!("the admin token file {} is empty; put a long random token in it", path.display());
        }
        if token.len() < 16 {
            anyhow::bail!(
                "the admin token in {} is shorter than 16 characters; use a long random token",
                path.display()
            );
        }
        Ok(Self::with_token(token, read_open))
    }

    pub fn token(&self) -> Option<Arc<str>> {
        self.token.clone()
    }

    /// Checks a call: the caller's certificate, else its `authorization` header.
    pub fn check(&self, headers: &HeaderMap, mutating: bool, caller: &trust::Identity) -> Result<(), AuthError> {
        if self.is_open() || (self.certificates && caller.is_authenticated()) {
            return Ok(());
        }
        if !mutating && self.read_open {
            return Ok(());
        }
        let Some(want) = &self.digest else { return Err(AuthError::NoCertificate) };
        let given = headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .ok_or(AuthError::Missing)?;
        let given: [u8; 32] = Sha256::digest(given.trim().as_bytes()).into();
        if bool::from(given.ct_eq(want)) {
            Ok(())
        } else {
            Err(AuthError::Wrong)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(v: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(v) = v {
            h.insert(http::header::AUTHORIZATION, v.parse().unwrap());
        }
        h
    }

    const ANON: trust::Identity = trust::Identity::Anonymous;

    #[test]
    fn tokens_are_checked_for_writes_and_reads_unless_reads_are_open() {
        let auth = Auth::with_token("s3cret-s3cret-s3cret", false);
        assert_eq!(auth.check(&headers(None), false, &ANON), Err(AuthError::Missing));
        assert_eq!(auth.check(&headers(Some("Bearer nope")), true, &ANON), Err(AuthError::Wrong));
        assert_eq!(auth.check(&headers(Some("Basic s3cret-s3cret-s3cret")), true, &ANON), Err(AuthError::Missing));
        assert_eq!(auth.check(&headers(Some("Bearer s3cret-s3cret-s3cret")), true, &ANON), Ok(()));
        let open_reads = Auth::with_token("s3cret-s3cret-s3cret", true);
        assert_eq!(open_reads.check(&headers(None), false, &ANON), Ok(()));
        assert_eq!(open_reads.check(&headers(None), true, &ANON), Err(AuthError::Missing));
        assert_eq!(Auth::open().check(&headers(None), true, &ANON), Ok(()));
    }

    #[test]
    fn client_certificates_authenticate_when_the_listener_checks_them() {
        let operator = trust::Identity::Operator("alice".into());
        let certs_only = Auth::open().with_certificates(false);
        assert_eq!(certs_only.check(&headers(None), true, &operator), Ok(()));
        assert_eq!(certs_only.check(&headers(None), true, &trust::Identity::Node(2)), Ok(()));
        assert_eq!(certs_only.check(&headers(None), false, &ANON), Err(AuthError::NoCertificate));
        assert_eq!(
            certs_only.check(&headers(Some("Bearer whatever-whatever")), true, &ANON),
            Err(AuthError::NoCertificate)
        );
        let both = Auth::with_token("s3cret-s3cret-s3cret", false).with_certificates(false);
        assert_eq!(both.check(&headers(Some("Bearer s3cret-s3cret-s3cret")), true, &ANON), Ok(()));
        assert_eq!(both.check(&headers(None), true, &operator), Ok(()));
        // Without TLS a certificate identity cannot arise; if it did, it would not count.
        let token_only = Auth::with_token("s3cret-s3cret-s3cret", false);
        assert_eq!(token_only.check(&headers(None), true, &operator), Err(AuthError::Missing));
    }
}
