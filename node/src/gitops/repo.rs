//! The leader's bare mirror of the config repository, and the checks a new branch head goes
//! through before it may be proposed: ancestry, signature, load, validate and compile.
//! Everything here is blocking libgit2 work, run on a blocking thread.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use std::sync::Arc;

use git2::{Commit, Oid, Repository};
use raft::{AppliedConfig, ApplyConfig, Refusal, RefusalStep};
use schemas::TreeLimits;

use super::signers::{AllowedSigners, SignatureError};

/// Most commits listed as covered by one entry (the rest are summarized by the range).
const MAX_COVERS: usize = 100;
/// Commit messages kept in the log (the first line shows in history).
const MAX_MESSAGE_BYTES: usize = 4096;

/// How to log in to the Git server.
#[derive(Clone, Default)]
pub struct Credentials {
    pub username: Option<String>,
    /// Password or access token (https), read from a file or the environment.
    pub password: Option<String>,
    /// Private key file for ssh://; without one, ssh-agent is asked.
    pub ssh_key: Option<PathBuf>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("ssh_key", &self.ssh_key)
            .finish()
    }
}

/// What to sync and how strictly.
#[derive(Debug, Clone)]
pub struct Source {
    pub url: String,
    pub branch: String,
    /// The config directory inside the repository (`None`: its root).
    pub path: Option<String>,
    pub credentials: Credentials,
    pub allow_non_fast_forward: bool,
    pub signers: Option<AllowedSigners>,
    /// What the operator allows a config to do (`schemas::Policy`).
    pub policy: schemas::Policy,
}

/// What a branch head turned out to be.
#[derive(Debug)]
pub enum Verdict {
    /// The head is the commit already applied.
    UpToDate,
    /// A good commit whose config is the one already served.
    Unchanged { commit: String },
    /// A good commit with a new config: propose it.
    Propose(Box<ApplyConfig>),
    /// Refused at some step; never proposed.
    Refused(Refusal),
}

/// Why the mirror could not be set up or fetched. The sync loop backs off and retries; every
/// node keeps serving. Unlike a `Verdict::Refused`, nothing is wrong with a commit.
// The cause is part of each message rather than `source()`: the message is what status and
// `raftgate config sync` show, and `{:#}` would print the cause twice.
#[derive(Debug, thiserror::Error)]
pub enum MirrorError {
    #[error("cannot create {}: {error}", dir.display())]
    CreateDir { dir: PathBuf, error: std::io::Error },
    #[error("cannot create a mirror in {}: {}", dir.display(), error.message())]
    Init { dir: PathBuf, error: git2::Error },
    #[error("bad --git-url `{}`: {}", redact_url(url), error.message())]
    BadUrl { url: String, error: git2::Error },
    #[error("the mirror's remote `origin`: {}", .0.message())]
    Remote(git2::Error),
    #[error("fetching {branch} from {}: {}", redact_url(url), error.message())]
    Fetch { branch: String, url: String, error: git2::Error },
    #[error("branch `{branch}` does not exist in {}", redact_url(url))]
    NoBranch { branch: String, url: String },
}

pub struct Mirror {
    repo: Repository,
    source: Source,
}

impl std::fmt::Debug for Mirror {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mirror").field("path", &self.repo.path()).field("url", &redact_url(&self.source.url)).finish()
    }
}

impl Mirror {
    /// Opens (or creates) the bare mirror in `dir`, pointed at the source URL.
    pub fn open(dir: &Path, source: Source) -> Result<Self, MirrorError> {
        let repo = match Repository::open_bare(dir) {
            Ok(r) => r,
            Err(_) => {
                std::fs::create_dir_all(dir)
                    .map_err(|error| MirrorError::CreateDir { dir: dir.to_path_buf(), error })?;
                Repository::init_bare(dir).map_err(|error| MirrorError::Init { dir: dir.to_path_buf(), error })?
            }
        };
        match repo.find_remote("origin") {
            Ok(r) if r.url() == Some(source.url.as_str()) => {}
            Ok(_) => repo.remote_set_url("origin", &source.url).map_err(MirrorError::Remote)?,
            Err(_) => {
                repo.remote("origin", &source.url)
                    .map_err(|error| MirrorError::BadUrl { url: source.url.clone(), error })?;
            }
        }
        Ok(Self { repo, source })
    }

    /// Fetches the branch; returns its head.
    pub fn fetch(&self) -> Result<Oid, MirrorError> {
        let mut remote = self.repo.find_remote("origin").map_err(MirrorError::Remote)?;
        let mut callbacks = git2::RemoteCallbacks::new();
        let creds = self.source.credentials.clone();
        let mut attempts = 0;
        callbacks.credentials(move |_url, user_from_url, allowed| {
            // libgit2 asks again after each rejection: give up rather than loop.
            attempts += 1;
            if attempts > 3 {
                return Err(git2::Error::from_str("authentication failed: the server refused the credentials"));
            }
            let user = creds.username.as_deref().or(user_from_url).unwrap_or("git");
            if allowed.contains(git2::CredentialType::SSH_KEY) {
                return match &creds.ssh_key {
                    Some(key) => git2::Cred::ssh_key(user, None, key, None),
                    None => git2::Cred::ssh_key_from_agent(user),
                };
            }
            if allowed.contains(git2::CredentialType::USER_PASS_PLAINTEXT) {
                if let Some(p) = &creds.password {
                    return git2::Cred::userpass_plaintext(user, p);
                }
            }
            if allowed.contains(git2::CredentialType::USERNAME) {
                return git2::Cred::username(user);
            }
            Err(git2::Error::from_str("the server wants credentials: set --git-password-file or --git-ssh-key"))
        });
        let mut options = git2::FetchOptions::new();
        options.remote_callbacks(callbacks);
        options.download_tags(git2::AutotagOption::None);
        let branch = &self.source.branch;
        let refspec = format!("+refs/heads/{branch}:refs/remotes/origin/{branch}");
        remote.fetch(&[&refspec], Some(&mut options), None).map_err(|error| MirrorError::Fetch {
            branch: branch.clone(),
            url: self.source.url.clone(),
            error,
        })?;
        let head = self
            .repo
            .refname_to_id(&format!("refs/remotes/origin/{branch}"))
            .map_err(|_| MirrorError::NoBranch { branch: branch.clone(), url: self.source.url.clone() })?;
        Ok(head)
    }

    /// Runs the checks on `head`, given the config the cluster serves now.
    pub fn evaluate(&self, head: Oid, current: Option<&AppliedConfig>) -> Verdict {
        let sha = head.to_string();
        let refuse =
            |step: RefusalStep, errors: Vec<String>| Verdict::Refused(Refusal::new(sha.clone(), step, errors, now()));
        let commit = match self.repo.find_commit(head) {
            Ok(c) => c,
            Err(e) => return refuse(RefusalStep::Load, vec![format!("cannot read commit {sha}: {}", e.message())]),
        };
        // The last applied commit, when it is a commit of this repository (a config from a
        // local directory is not).
        let last = current.and_then(|c| Oid::from_str(&c.entry.commit).ok());
        if last == Some(head) {
            return Verdict::UpToDate;
        }
        let mut covers = Vec::new();
        if let Some(last) = last {
            let descends =
                self.repo.find_commit(last).is_ok() && self.repo.graph_descendant_of(head, last).unwrap_or(false);
            if !descends && !self.source.allow_non_fast_forward {
                return refuse(
                    RefusalStep::Ancestry,
                    vec![format!(
                        "{sha} does not descend from the last applied commit {last}: the branch `{}` was rewritten \
                         (force-push). Restore its history, or start the leader with --allow-non-fast-forward",
                        self.source.branch
                    )],
                );
            }
            if descends {
                covers = self.covered(head, last);
            }
        }
        if let Some(signers) = &self.source.signers {
            if let Err(e) = self.check_signature(head, signers) {
                return refuse(RefusalStep::Signature, vec![e.to_string()]);
            }
        }
        let files = match schemas::source::read_commit(
            &self.repo,
            &commit,
            self.source.path.as_deref(),
            &TreeLimits::default(),
        ) {
            Ok(f) if f.is_empty() => {
                return refuse(
                    RefusalStep::Load,
                    vec![format!(
                        "no *.yaml or *.yml files in `{}` at {sha}",
                        self.source.path.as_deref().unwrap_or("/")
                    )],
                )
            }
            Ok(f) => f,
            Err(e) => return refuse(RefusalStep::Load, vec![e.to_string()]),
        };
        let compiled = match schemas::compile_tree_for(&files, &TreeLimits::default(), &self.source.policy) {
            Ok(c) => c,
            Err(diags) => return refuse(RefusalStep::Validate, diags.iter().map(ToString::to_string).collect()),
        };
        if current.is_some_and(|c| c.entry.hash == compiled.hash) {
            return Verdict::Unchanged { commit: sha };
        }
        Verdict::Propose(Box::new(ApplyConfig {
            commit: sha,
            parent: last.map(|l| l.to_string()),
            author: author(&commit),
            message: message(&commit),
            committed_at: commit.time().seconds(),
            hash: compiled.hash,
            snapshot: Arc::new(compiled.snapshot),
            covers,
        }))
    }

    /// The commits between `last` (excluded) and `head` (excluded), oldest first.
    fn covered(&self, head: Oid, last: Oid) -> Vec<String> {
        let walk = || -> Result<Vec<String>, git2::Error> {
            let mut w = self.repo.revwalk()?;
            w.set_sorting(git2::Sort::TOPOLOGICAL | git2::Sort::REVERSE)?;
            w.push(head)?;
            w.hide(last)?;
            let all: Vec<Oid> = w.collect::<Result<_, _>>()?;
            let between: Vec<String> = all.into_iter().filter(|o| *o != head).map(|o| o.to_string()).collect();
            let skip = between.len().saturating_sub(MAX_COVERS);
            Ok(between.into_iter().skip(skip).collect())
        };
        walk().unwrap_or_default()
    }

    fn check_signature(&self, head: Oid, signers: &AllowedSigners) -> Result<(), SignatureError> {
        let (signature, signed) = self.repo.extract_signature(&head, None).map_err(|e| {
            if e.code() == git2::ErrorCode::NotFound {
                SignatureError::Unsigned
            } else {
                SignatureError::Unreadable(e)
            }
        })?;
        signers.verify(&signature, &signed).map(|principal| {
            tracing::debug!(commit = %head, %principal, "commit signature verified");
        })
    }
}

fn author(c: &Commit<'_>) -> String {
    let a = c.author();
    format!("{} <{}>", a.name().unwrap_or("?"), a.email().unwrap_or("?"))
}

fn message(c: &Commit<'_>) -> String {
    let m = c.message().unwrap_or("").trim_end();
    if m.len() <= MAX_MESSAGE_BYTES {
        return m.to_string();
    }
    let mut end = MAX_MESSAGE_BYTES;
    while !m.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &m[..end])
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// A Git URL fit to log or show: a password or token in it (`https://user:token@host/…`)
/// is replaced by `***`. libgit2's own messages can quote the URL too, so every message
/// that names it goes through here.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_string() };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    match authority.rsplit_once('@') {
        // ssh's user is a login name (`git`), never the secret; anywhere else a lone user
        // part is often the token itself (`https://ghp_…@github.com`).
        Some((userinfo, host)) if scheme.contains("ssh") => {
            let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
            let shown = if userinfo.contains(':') { format!("{user}:***") } else { user.to_string() };
            format!("{scheme}://{shown}@{host}{path}")
        }
        Some((_, host)) => format!("{scheme}://***@{host}{path}"),
        None => url.to_string(),
    }
}

#[cfg(test)]
mod redact_tests {
    use super::redact_url;

    #[test]
    fn credentials_in_urls_are_hidden() {
        assert_eq!(redact_url("https://bot:ghp_secret@github.com/org/cfg.git"), "https://***@github.com/org/cfg.git");
        assert_eq!(redact_url("https://ghp_secret@github.com/org/cfg.git"), "https://***@github.com/org/cfg.git");
        assert_eq!(redact_url("https://github.com/org/cfg.git"), "https://github.com/org/cfg.git");
        assert_eq!(redact_url("ssh://git@host:22/cfg"), "ssh://git@host:22/cfg");
        assert_eq!(redact_url("/srv/git/cfg"), "/srv/git/cfg");
        assert_eq!(redact_url("https://u:p@ss@host/x"), "https://***@host/x");
        assert_eq!(redact_url("ssh://git:pw@host/x"), "ssh://git:***@host/x");
    }
}
