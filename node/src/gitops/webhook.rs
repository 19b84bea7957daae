//! Push webhooks from GitHub, Gitea and GitLab. A webhook only says "look now": the sync
//! that follows fetches and checks everything itself, so a forged push can at worst cause
//! an early fetch. Still, a bad or missing signature is refused and changes nothing.
//!
//! - GitHub: `X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the body>`.
//! - Gitea: `X-Gitea-Signature: <hex HMAC-SHA256 of the body>` (it also sends GitHub's).
//! - GitLab: `X-Gitlab-Token: <the secret>`.
//!
//! All comparisons are constant-time (HMAC verification, or digests of the tokens).

use std::path::{Path, PathBuf};

use hmac::{Hmac, Mac};
use http::HeaderMap;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Largest webhook body accepted (push payloads with many commits stay far below).
pub const MAX_BODY_BYTES: usize = 1 << 20;
/// Shortest secret accepted: a short one could be guessed from forged pushes.
const MIN_SECRET_LEN: usize = 16;

#[derive(Clone)]
pub struct Secret(Vec<u8>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// A webhook secret too short to use.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("the webhook secret is shorter than {MIN_SECRET_LEN} characters; use a long random one")]
pub struct TooShort;

/// Why the configured webhook secret cannot be used. Stops the node at start-up.
// The cause is part of each message rather than `source()`: `{:#}` would print it twice.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("cannot read the webhook secret file {}: {error}", path.display())]
    Read { path: PathBuf, error: std::io::Error },
    #[error("environment variable {var} (webhook secret) is not set")]
    NotSet { var: String },
    /// Read, but too short; `origin` is the file or `$VAR`.
    #[error("{origin}: {problem}")]
    Weak { origin: String, problem: TooShort },
}

impl Secret {
    pub fn new(secret: &str) -> Result<Self, TooShort> {
        let s = secret.trim();
        if s.len() < MIN_SECRET_LEN {
            return Err(TooShort);
        }
        Ok(Self(s.as_bytes().to_vec()))
    }

    pub fn from_file(path: &Path) -> Result<Self, SecretError> {
        let text =
            std::fs::read_to_string(path).map_err(|error| SecretError::Read { path: path.to_path_buf(), error })?;
        Self::new(&text).map_err(|problem| SecretError::Weak { origin: path.display().to_string(), problem })
    }

    pub fn from_env(var: &str) -> Result<Self, SecretError> {
        let text = std::env::var(var).map_err(|_| SecretError::NotSet { var: var.to_string() })?;
        Self::new(&text).map_err(|problem| SecretError::Weak { origin: format!("${var}"), problem })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    GitHub,
    Gitea,
    GitLab,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WebhookError {
    #[error("no webhook signature: expected X-Hub-Signature-256 (GitHub), X-Gitea-Signature or X-Gitlab-Token")]
    Missing,
    #[error("the webhook signature does not match the configured secret")]
    Mismatch,
}

/// Checks the request's signature against `secret`.
pub fn verify(headers: &HeaderMap, body: &[u8], secret: &Secret) -> Result<Provider, WebhookError> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
    if let Some(sig) = header("x-gitea-signature") {
        return hmac_ok(sig, body, secret).then_some(Provider::Gitea).ok_or(WebhookError::Mismatch);
    }
    if let Some(sig) = header("x-hub-signature-256") {
        let hex = sig.strip_prefix("sha256=").ok_or(WebhookError::Mismatch)?;
        return hmac_ok(hex, body, secret).then_some(Provider::GitHub).ok_or(WebhookError::Mismatch);
    }
    if let Some(token) = header("x-gitlab-token") {
        let given: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let want: [u8; 32] = Sha256::digest(&secret.0).into();
        return bool::from(given.ct_eq(&want)).then_some(Provider::GitLab).ok_or(WebhookError::Mismatch);
    }
    Err(WebhookError::Missing)
}

fn hmac_ok(hex_sig: &str, body: &[u8], secret: &Secret) -> bool {
    let Ok(sig) = hex::decode(hex_sig) else { return false };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&secret.0) else { return false };
    mac.update(body);
    mac.verify_slice(&sig).is_ok()
}

/// The branch a push event is for (`refs/heads/<branch>`), when the body says.
pub fn pushed_branch(body: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    v.get("ref")?.as_str()?.strip_prefix("refs/heads/").map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sign(secret: &str, body: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(body);
        hex::encode(mac.finalize().into_bytes())
    }

    fn headers(pairs: &[(&'static str, String)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn each_provider_is_checked_and_bad_signatures_are_refused() {
        let secret = Secret::new("0123456789abcdef-secret").unwrap();
        let body = br#"{"ref":"refs/heads/main"}"#;
        let good = sign("0123456789abcdef-secret", body);
        let bad = sign("another-secret-entirely", body);
        let gh = |s: &str| headers(&[("x-hub-signature-256", format!("sha256={s}"))]);
        assert_eq!(verify(&gh(&good), body, &secret), Ok(Provider::GitHub));
        assert_eq!(verify(&gh(&bad), body, &secret), Err(WebhookError::Mismatch));
        assert_eq!(verify(&gh(&good), b"tampered", &secret), Err(WebhookError::Mismatch));
        assert_eq!(
            verify(&headers(&[("x-hub-signature-256", good.clone())]), body, &secret),
            Err(WebhookError::Mismatch)
        );
        assert_eq!(verify(&headers(&[("x-gitea-signature", good.clone())]), body, &secret), Ok(Provider::Gitea));
        assert_eq!(verify(&headers(&[("x-gitea-signature", "zz".into())]), body, &secret), Err(WebhookError::Mismatch));
        let gl = |s: &str| headers(&[("x-gitlab-token", s.to_string())]);
        assert_eq!(verify(&gl("0123456789abcdef-secret"), body, &secret), Ok(Provider::GitLab));
        assert_eq!(verify(&gl("0123456789abcdef-secreT"), body, &secret), Err(WebhookError::Mismatch));
        assert_eq!(verify(&HeaderMap::new(), body, &secret), Err(WebhookError::Missing));
        assert_eq!(pushed_branch(body).as_deref(), Some("main"));
        assert_eq!(Secret::new("short").unwrap_err(), TooShort);
    }

    /// Whatever the headers and body, `verify` answers without panicking, accepts a body
    /// only with its own signature, and refuses it once one byte changes.
    #[test]
    fn fuzz_webhook_verify() {
        use testkit::fuzz::{self, proptest::prelude::*};
        let secret = "a-webhook-secret-of-some-length";
        let kinds = prop_oneof![Just("x-hub-signature-256"), Just("x-gitea-signature"), Just("x-gitlab-token")];
        let junk = "[ -~]{0,80}";
        let strategy = (prop::collection::vec(any::<u8>(), 0..512), kinds, junk, any::<usize>(), any::<u8>());
        fuzz::run("webhook_verify", file!(), strategy, |(body, kind, junk, at, flip)| {
            let key = Secret::new(secret).unwrap();
            let signed = match kind {
                "x-hub-signature-256" => format!("sha256={}", sign(secret, &body)),
                "x-gitea-signature" => sign(secret, &body),
                _ => secret.to_string(),
            };
            prop_assert!(verify(&headers(&[(kind, signed.clone())]), &body, &key).is_ok());
            // Junk in the header is refused, never accepted and never a panic.
            if let Ok(v) = junk.parse::<http::HeaderValue>() {
                let mut h = HeaderMap::new();
                h.insert(kind, v);
                prop_assert!(verify(&h, &body, &key).is_err() || junk.trim() == signed);
            }
            if kind != "x-gitlab-token" && !body.is_empty() && flip != 0 {
                let mut changed = body.clone();
                let i = at % changed.len();
                changed[i] ^= flip;
                prop_assert!(verify(&headers(&[(kind, signed)]), &changed, &key).is_err());
            }
            let _ = pushed_branch(&body);
            Ok(())
        });
    }
}
