//! Commit signatures, checked as `git verify-commit` does with `gpg.format=ssh`: the commit
//! carries an SSH signature (SSHSIG, namespace `git`) over the commit object without its
//! signature header, made by a key listed in an allowed-signers file
//! (`ssh-keygen -Y verify` format: `principals [options] key-type base64-key [comment]`).
//!
//! Parsing the file is ours; the signature format and the cryptography are the `ssh-key`
//! crate's.

use std::path::{Path, PathBuf};

use ssh_key::{Fingerprint, HashAlg, PublicKey, SshSig};

/// The namespace git signs commits in.
const NAMESPACE: &str = "git";

/// Why an allowed signers file was refused. Located as compilers do: `FILE:LINE: problem`.
// The cause is part of each message rather than `source()`: these are rendered once, at
// start-up, and `{:#}` would print it twice.
#[derive(Debug, thiserror::Error)]
pub enum SignersError {
    #[error("cannot read the allowed signers file {}: {error}", path.display())]
    Read { path: PathBuf, error: std::io::Error },
    #[error("{}{line}: {problem}", located(file.as_deref(), ":"))]
    Line { file: Option<PathBuf>, line: usize, problem: LineError },
    #[error("{}no keys: an empty allowed signers file would refuse every commit", located(file.as_deref(), ": "))]
    NoKeys { file: Option<PathBuf> },
}

impl SignersError {
    /// Names the file the text came from.
    fn in_file(self, path: &Path) -> Self {
        match self {
            Self::Line { line, problem, .. } => Self::Line { file: Some(path.to_path_buf()), line, problem },
            Self::NoKeys { .. } => Self::NoKeys { file: Some(path.to_path_buf()) },
            read @ Self::Read { .. } => read,
        }
    }
}

fn located(file: Option<&Path>, separator: &str) -> String {
    file.map(|f| format!("{}{separator}", f.display())).unwrap_or_default()
}

/// What is wrong with one line of an allowed signers file.
#[derive(Debug, thiserror::Error)]
pub enum LineError {
    #[error("expected `principals key-type key`")]
    NoKey,
    #[error("expected a key after the options")]
    NoKeyAfterOptions,
    #[error("option `{0}` is not supported here; list plain keys (optionally with namespaces=\"git\")")]
    UnsupportedOption(String),
    #[error("not an SSH public key: {0}")]
    NotAKey(ssh_key::Error),
}

/// Why a commit's signature was not accepted. Recorded in the refusal, word for word.
/// (Fingerprints are boxed: 65 bytes each would make every `Result` carrying this large.)
#[derive(Debug, thiserror::Error)]
pub enum SignatureError {
    #[error("the commit is not signed; signed commits are required (git commit -S with gpg.format=ssh)")]
    Unsigned,
    #[error("cannot read the commit's signature: {}", .0.message())]
    Unreadable(git2::Error),
    #[error("the signature is not text")]
    NotText,
    #[error("the commit is signed, but not with an SSH key (GPG or X.509); only SSH signatures are accepted")]
    NotSsh,
    #[error("malformed SSH signature: {0}")]
    Malformed(ssh_key::Error),
    #[error("the signature is for namespace `{0}`, not `{NAMESPACE}`")]
    WrongNamespace(String),
    #[error("signed by key {0}, which is not in the allowed signers file")]
    UnknownKey(Box<Fingerprint>),
    #[error("the signature by {principals} ({fingerprint}) does not verify: {error}")]
    Invalid { principals: String, fingerprint: Box<Fingerprint>, error: ssh_key::Error },
}

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
    pub fn load(path: &Path) -> Result<Self, SignersError> {
        let text =
            std::fs::read_to_string(path).map_err(|error| SignersError::Read { path: path.to_path_buf(), error })?;
        Self::parse(&text).map_err(|e| e.in_file(path))
    }

    /// Parses the file; errors name the 1-based line.
    pub fn parse(text: &str) -> Result<Self, SignersError> {
        let mut signers = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            signers.push(parse_line(line).map_err(|problem| SignersError::Line {
                file: None,
                line: n + 1,
                problem,
            })?);
        }
        if signers.is_empty() {
            return Err(SignersError::NoKeys { file: None });
        }
        Ok(Self { signers })
    }

    /// Checks `signature` (armored SSHSIG) over `signed`. Returns the signer's principals.
    pub fn verify(&self, signature: &[u8], signed: &[u8]) -> Result<String, SignatureError> {
        let text = std::str::from_utf8(signature).map_err(|_| SignatureError::NotText)?;
        if !text.trim_start().starts_with("-----BEGIN SSH SIGNATURE-----") {
            return Err(SignatureError::NotSsh);
        }
        let sig = SshSig::from_pem(text.trim()).map_err(SignatureError::Malformed)?;
        if sig.namespace() != NAMESPACE {
            return Err(SignatureError::WrongNamespace(sig.namespace().to_string()));
        }
        let fingerprint = || Box::new(sig.public_key().fingerprint(HashAlg::Sha256));
        let signer = self
            .signers
            .iter()
            .find(|s| {
                s.key.key_data() == sig.public_key()
                    && s.namespaces.as_ref().is_none_or(|ns| ns.iter().any(|n| n == NAMESPACE))
            })
            .ok_or_else(|| SignatureError::UnknownKey(fingerprint()))?;
        signer.key.verify(NAMESPACE, signed, &sig).map_err(|error| SignatureError::Invalid {
            principals: signer.principals.clone(),
            fingerprint: fingerprint(),
            error,
        })?;
        Ok(signer.principals.clone())
    }
}

fn parse_line(line: &str) -> Result<Signer, LineError> {
    let (principals, rest) = line.split_once(char::is_whitespace).ok_or(LineError::NoKey)?;
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
                other => return Err(LineError::UnsupportedOption(other.to_string())),
            }
        }
        key
    };
    let key = PublicKey::from_openssh(key_text.trim()).map_err(LineError::NotAKey)?;
    Ok(Signer { principals: principals.to_string(), key, namespaces })
}

fn looks_like_key_type(s: &str) -> bool {
    ["ssh-", "ecdsa-", "sk-"].iter().any(|p| s.starts_with(p))
}

/// Splits `opt1,opt2="a,b" key-type key` into options and the rest; quotes may hold commas
/// and spaces.
fn split_options(s: &str) -> Result<(Vec<String>, &str), LineError> {
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
    Err(LineError::NoKeyAfterOptions)
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
        let e = AllowedSigners::parse(&format!("x cert-authority {KEY}")).unwrap_err().to_string();
        assert!(e.starts_with("1: option `cert-authority`"), "{e}");
        let e = AllowedSigners::parse("\n\nx ssh-ed25519 AAAA").unwrap_err();
        assert!(e.to_string().starts_with("3: not an SSH public key"), "{e}");
        let e = e.in_file(Path::new("signers"));
        assert!(e.to_string().starts_with("signers:3: not an SSH public key"), "{e}");
        let e = AllowedSigners::parse("# nothing\n").unwrap_err().in_file(Path::new("signers"));
        assert!(e.to_string().starts_with("signers: no keys"), "{e}");
    }
}
