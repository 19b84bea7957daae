//! Named connection settings, the way kubectl keeps them: a YAML file (`$RAFTGATE_CONFIG`,
//! else `$XDG_CONFIG_HOME/raftgate/config.yaml`, else `~/.config/raftgate/config.yaml`):
//!
//! ```yaml
//! current-context: prod
//! contexts:
//!   - name: prod
//!     admin: 10.0.0.1:9900
//!     ca: /etc/raftgate/ca.pem
//!     cert: alice.pem          # relative paths are relative to this file
//!     key: alice-key.pem
//!   - name: lab
//!     admin: 127.0.0.1:9900
//!     tokenFile: ~/lab-token
//! ```
//!
//! Flags and environment variables override the context field by field.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::client::{CliError, Settings};

/// Fills what flags and environment left unset from a context.
pub fn fill(s: Settings, ctx: Option<Context>) -> Settings {
    let Some(c) = ctx else { return s };
    Settings {
        admin: s.admin.or(c.admin),
        token_file: s.token_file.or(c.token_file),
        token: s.token,
        ca: s.ca.or(c.ca),
        cert: s.cert.or(c.cert),
        key: s.key.or(c.key),
        tls_server_name: s.tls_server_name.or(c.tls_server_name),
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct File {
    current_context: Option<String>,
    #[serde(default)]
    contexts: Vec<Context>,
}

/// One named set of connection settings.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Context {
    pub name: String,
    pub admin: Option<String>,
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub token_file: Option<PathBuf>,
    pub tls_server_name: Option<String>,
}

/// Where the context file is looked for.
pub fn default_path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("RAFTGATE_CONFIG") {
        return Some(PathBuf::from(p));
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("raftgate").join("config.yaml"))
}

/// The context to use: `name` (which must exist), else the file's current context, else
/// none (no file is fine).
pub fn load(path: Option<&Path>, name: Option<&str>) -> Result<Option<Context>, CliError> {
    let Some(path) = path else {
        return match name {
            Some(n) => Err(CliError::Usage(format!("--context {n}: no context file (set RAFTGATE_CONFIG or HOME)"))),
            None => Ok(None),
        };
    };
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && name.is_none() => return Ok(None),
        Err(e) => return Err(CliError::Usage(format!("cannot read the context file {}: {e}", path.display()))),
    };
    let file: File = serde_yaml::from_str(&text)
        .map_err(|e| CliError::Usage(format!("the context file {} is invalid: {e}", path.display())))?;
    let Some(wanted) = name.map(str::to_string).or(file.current_context.clone()) else { return Ok(None) };
    let mut ctx = file.contexts.iter().find(|c| c.name == wanted).cloned().ok_or_else(|| {
        let known: Vec<&str> = file.contexts.iter().map(|c| c.name.as_str()).collect();
        CliError::Usage(format!(
            "no context `{wanted}` in {} (it has: {})",
            path.display(),
            if known.is_empty() { "none".to_string() } else { known.join(", ") }
        ))
    })?;
    let base = path.parent().unwrap_or(Path::new("."));
    for p in [&mut ctx.ca, &mut ctx.cert, &mut ctx.key, &mut ctx.token_file].into_iter().flatten() {
        *p = resolve(base, p);
    }
    Ok(Some(ctx))
}

/// `~/x` from the home directory, a relative path from the context file's directory.
fn resolve(base: &Path, p: &Path) -> PathBuf {
    if let Ok(rest) = p.strip_prefix("~") {
        if let Some(home) = std::env::var_os("HOME") {
            return PathBuf::from(home).join(rest);
        }
    }
    if p.is_relative() {
        base.join(p)
    } else {
        p.to_path_buf()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contexts_are_picked_by_name_or_current_and_paths_resolved() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.yaml");
        std::fs::write(
            &path,
            "current-context: lab\ncontexts:\n  - name: lab\n    admin: 127.0.0.1:9900\n    tokenFile: tok\n  - name: prod\n    admin: 10.0.0.1:9900\n    ca: /etc/ca.pem\n    cert: alice.pem\n    key: alice-key.pem\n",
        )
        .unwrap();
        let lab = load(Some(&path), None).unwrap().unwrap();
        assert_eq!(lab.admin.as_deref(), Some("127.0.0.1:9900"));
        assert_eq!(lab.token_file, Some(dir.path().join("tok")));
        let prod = load(Some(&path), Some("prod")).unwrap().unwrap();
        assert_eq!(prod.ca, Some(PathBuf::from("/etc/ca.pem")));
        assert_eq!(prod.cert, Some(dir.path().join("alice.pem")));
        let err = load(Some(&path), Some("nope")).unwrap_err();
        assert!(err.message().contains("it has: lab, prod"), "{}", err.message());
        // No file: no context, unless one was asked for.
        let missing = dir.path().join("none.yaml");
        assert_eq!(load(Some(&missing), None).unwrap(), None);
        assert!(load(Some(&missing), Some("lab")).is_err());
        // A typo in a field is an error, not a silently ignored setting.
        std::fs::write(&path, "contexts:\n  - name: x\n    admn: 1.2.3.4:1\n").unwrap();
        assert!(load(Some(&path), Some("x")).unwrap_err().message().contains("unknown field"));
    }
}
