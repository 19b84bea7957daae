//! Admin authentication: one bearer token (`--admin-token-file`) for every mutating call
//! and, unless `--admin-read-open`, for reads. Liveness and readiness probes stay open so
//! orchestrators need no secret.

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
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("this admin API needs a token: send `authorization: Bearer <token>` (raftgate --token-file)")]
    Missing,
    #[error("the admin token is wrong")]
    Wrong,
}

impl Auth {
    /// No token: every call is allowed (the admin listener should then stay on loopback).
    pub fn open() -> Self {
        Self::default()
    }

    pub fn with_token(token: &str, read_open: bool) -> Self {
        Self { digest: Some(Sha256::digest(token.as_bytes()).into()), token: Some(token.into()), read_open }
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

    /// Checks a call's `authorization` header.
    pub fn check(&self, headers: &HeaderMap, mutating: bool) -> Result<(), AuthError> {
        let Some(want) = &self.digest else { return Ok(()) };
        if !mutating && self.read_open {
            return Ok(());
        }
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

    #[test]
    fn tokens_are_checked_for_writes_and_reads_unless_reads_are_open() {
        let auth = Auth::with_token("s3cret-s3cret-s3cret", false);
        assert_eq!(auth.check(&headers(None), false), Err(AuthError::Missing));
        assert_eq!(auth.check(&headers(Some("Bearer nope")), true), Err(AuthError::Wrong));
        assert_eq!(auth.check(&headers(Some("Basic s3cret-s3cret-s3cret")), true), Err(AuthError::Missing));
        assert_eq!(auth.check(&headers(Some("Bearer s3cret-s3cret-s3cret")), true), Ok(()));
        let open_reads = Auth::with_token("s3cret-s3cret-s3cret", true);
        assert_eq!(open_reads.check(&headers(None), false), Ok(()));
        assert_eq!(open_reads.check(&headers(None), true), Err(AuthError::Missing));
        assert_eq!(Auth::open().check(&headers(None), true), Ok(()));
    }
}
