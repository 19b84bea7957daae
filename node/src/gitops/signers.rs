//! Commit signatures, checked as `git verify-commit` does with `gpg.format=ssh`: the commit
//! carries an SSH signature (SSHSIG, namespace `git`) over the commit object without its
//! signature header, made by a key listed in an allowed-signers file
//! (`ssh-keygen -Y verify` format: `principals [options] key-type base64-key [comment]`).
//!
//! Parsing the file is ours; the signature format and the cryptography are the `ssh-key`
//! crate's.

use std::path::Path;

use ssh_key::{HashAlg, PublicKey, SshSig};

/// The namespace git signs commits in.
const NAMESPACE: &str = "git";

#[derive(Debug, Clone)]
struct Signer {
    principals: String,
    key: PublicKey,
    /// `namespaces="..."`: when present, the namespaces this key may sign in.
    namespaces: Option<Vec<String>>,
}

/// The keys allowed to sign config commits.
#[derive(Debug, Clone)]
pub struct AllowedSigners {
    signers: Vec<Signer>,
}

impl AllowedSigners {
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the allowed signers file {}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| format!("{}:{e}", path.display()))
    }

    /// Parses the file; errors start with the 1-based line number.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut signers = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            signers.push(parse_line(line).map_err(|e| format!("{}: {e}", n + 1))?);
        }
        if signers.is_empty() {
            return Err(" no keys: an empty allowed signers file would refuse every commit".into());
        }
        Ok(Self { signers })
    }

    /// Checks `signature` (armored SSHSIG) over `signed`. Returns the signer's principals.
    pub fn verify(&self, signature: &[u8], signed: &[u8]) -> Result<String, String> {
        let text = std::str::from_utf8(signature).map_err(|_| "the signature is not text".to_string())?;
        if !text.trim_start().starts_with("-----BEGIN SSH SIGNATURE-----") {
            return Err(
                "the commit is signed, but not with an SSH key (GPG or X.509); only SSH signatures are accepted".into(),
            );
        }
        let sig = SshSig::from_pem(text.trim()).map_err(|e| format!("malformed SSH signature: {e}"))?;
        if sig.namespace() != NAMESPACE {
            return Err(format!("the signature is for namespace `{}`, not `{NAMESPACE}`", sig.namespace()));
        }
        let fingerprint = sig.public_key().fingerprint(HashAlg::Sha256);
        let signer = self
            .signers
            .iter()
            .find(|s| {
                s.key.key_data() == sig.public_key()
                    && s.namespaces.as_ref().is_none_or(|ns| ns.iter().any(|n| n == NAMESPACE))
            })
            .ok_or_else(|| format!("signed by key {fingerprint}, which is not in the allowed signers file"))?;
        signer
            .key
            .verify(NAMESPACE, signed, &sig)
            .map_err(|e| format!("the signature by {} ({fingerprint}) does not verify: {e}", signer.principals))?;
        Ok(signer.principals.clone())
    }
}

fn parse_line(line: &str) -> Result<Signer, String> {
    let (principals, rest) = line.split_once(char::is_whitespace).ok_or("expected `principals key-type key`")?;
    let rest = rest.trim_start();
    let mut namespaces = None;
    let key_text = if looks_like_key_type(rest) {
        rest
    } else {
        let (options, key) = split_options(rest)?;
        for opt in options {
            let (name, value) = opt.split_once('=').unwrap_or((opt.as_str(), ""));
            match name.to_ascii_lowercase().as_str() {
                "namespaces" => {
                    namespaces = Some(value.trim_matches('"').split(',').map(|s| s.trim().to_string()).collect());
                }
                other => {
                    return Err(format!(
                        "option `{other}` is not supported here; list plain keys (optionally with namespaces=\"git\")"
                    ))
                }
            }
        }
        key
    };
    let key = PublicKey::from_openssh(key_text.trim()).map_err(|e| format!("not an SSH public key: {e}"))?;
    Ok(Signer { principals: principals.to_string(), key, namespaces })
}

fn looks_like_key_type(s: &str) -> bool {
    ["ssh-", "ecdsa-", "sk-"].iter().any(|p| s.starts_with(p))
}

/// Splits `opt1,opt2="a,b" key-type key` into options and the rest; quotes may hold commas
/// and spaces.
fn split_options(s: &str) -> Result<(Vec<String>, &str), String> {
    let mut options = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    for (i, c) in s.char_indices() {
        match c {
            '"' => {
                quoted = !quoted;
                current.push(c);
            }
            ',' if !quoted => options.push(std::mem::take(&mut current)),
            c if c.is_whitespace() && !quoted => {
                options.push(std::mem::take(&mut current));
                return Ok((options, s[i..].trim_start()));
            }
            c => current.push(c),
        }
    }
    Err("expected a key after the options".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILG8bdAsKTKuLIjiVw8C2ai+DS59ca17oafAg5SSR7L3 a@b";

    #[test]
    fn allowed_signer_lines_parse_with_and_without_options() {
        let s = AllowedSigners::parse(&format!(
            "# comment\nalice@example.com {KEY}\nbob@example.com namespaces=\"git,file\" {KEY}\n"
        ))
        .unwrap();
        assert_eq!(s.signers.len(), 2);
        assert_eq!(s.signers[1].namespaces.as_deref(), Some(&["git".to_string(), "file".to_string()][..]));
        let e = AllowedSigners::parse(&format!("x cert-authority {KEY}")).unwrap_err();
        assert!(e.starts_with("1: option `cert-authority`"), "{e}");
        let e = AllowedSigners::parse("\n\nx ssh-ed25519 AAAA").unwrap_err();
        assert!(e.starts_with("3: not an SSH public key"), "{e}");
        assert!(AllowedSigners::parse("# nothing\n").is_err());
    }
}
