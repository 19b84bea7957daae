//! The testbed's config repository, driven with the git CLI as a developer would: seeded
//! from the topology's config directory; changes land as merged pull requests (a branch,
//! a commit, a merge commit on `main`).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};

#[derive(Debug, Clone)]
pub(crate) struct Repo {
    pub(crate) dir: PathBuf,
}

/// The route every testbed change rewrites: `Host: testbed.local`, path `/probe`, answered
/// with `x-testbed-change: <n>`, so anyone can see which change a node serves.
pub(crate) const PROBE_HOST: &str = "testbed.local";
pub(crate) const PROBE_PATH: &str = "/probe";

impl Repo {
    pub(crate) fn at(dir: PathBuf) -> Repo {
        Repo { dir }
    }

    pub(crate) fn git(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = Command::new("git")
            .current_dir(&self.dir)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_AUTHOR_NAME", "Testbed")
            .env("GIT_AUTHOR_EMAIL", "testbed@raftgate.invalid")
            .env("GIT_COMMITTER_NAME", "Testbed")
            .env("GIT_COMMITTER_EMAIL", "testbed@raftgate.invalid")
            .args(args)
            .output()
            .context("running git (make deps installs it)")?;
        if !out.status.success() {
            bail!("git {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// A new repository holding `config` (copied) plus the probe route, on `main`.
    pub(crate) fn create(dir: PathBuf, config: &Path, upstream: &str) -> anyhow::Result<Repo> {
        std::fs::create_dir_all(&dir)?;
        let repo = Repo { dir };
        repo.git(&["init", "-q", "-b", "main"])?;
        copy_tree(config, &repo.dir)?;
        repo.write_probe(0, upstream)?;
        repo.git(&["add", "-A"])?;
        repo.git(&["-c", "commit.gpgsign=false", "commit", "-q", "-m", "Initial config"])?;
        Ok(repo)
    }

    fn head(&self) -> anyhow::Result<String> {
        self.git(&["rev-parse", "HEAD"])
    }

    fn write_probe(&self, n: u64, upstream: &str) -> anyhow::Result<()> {
        let text = format!(
            "# Rewritten by `testbed merge`: the change number shows which commit a node serves.\n\
             kind: Route\nname: testbed-probe\nhostnames: [{PROBE_HOST}]\nrules:\n  - matches: [{{ path: {{ type: PathPrefix, value: {PROBE_PATH} }} }}]\n    \
             filters:\n      - type: ResponseHeaderModifier\n        responseHeaderModifier:\n          set: [{{ name: x-testbed-change, value: \"{n}\" }}]\n    \
             backendRefs: [{{ upstream: {upstream} }}]\n"
        );
        std::fs::write(self.dir.join("testbed-probe.yaml"), text)?;
        Ok(())
    }

    /// The change number the probe route carries now.
    fn change_number(&self) -> u64 {
        std::fs::read_to_string(self.dir.join("testbed-probe.yaml"))
            .ok()
            .and_then(|t| t.split("x-testbed-change, value: \"").nth(1)?.split('"').next()?.parse().ok())
            .unwrap_or(0)
    }

    /// A pull request merged: branch, commit, `merge --no-ff` into main. Returns the merge
    /// commit and the change number.
    pub(crate) fn merge_change(&self, upstream: &str) -> anyhow::Result<(String, u64)> {
        let n = self.change_number() + 1;
        let branch = format!("change-{n}");
        self.git(&["checkout", "-q", "-b", &branch])?;
        self.write_probe(n, upstream)?;
        // A change also fixes what `merge_invalid` broke.
        let _ = std::fs::remove_file(self.dir.join("testbed-broken.yaml"));
        self.git(&["add", "-A"])?;
        self.git(&["-c", "commit.gpgsign=false", "commit", "-q", "-m", &format!("Probe change {n}")])?;
        self.git(&["checkout", "-q", "main"])?;
        let msg = format!("Merge pull request #{n} from testbed/{branch}");
        self.git(&["-c", "commit.gpgsign=false", "merge", "-q", "--no-ff", "-m", &msg, &branch])?;
        self.git(&["branch", "-q", "-d", &branch])?;
        Ok((self.head()?, n))
    }

    /// Writes (`Some`) or deletes (`None`) one file and commits it on main.
    pub(crate) fn commit_file(&self, name: &str, text: Option<&str>, message: &str) -> anyhow::Result<String> {
        let path = self.dir.join(name);
        match text {
            Some(t) => std::fs::write(&path, t)?,
            None => std::fs::remove_file(&path)?,
        }
        self.git(&["add", "-A"])?;
        self.git(&["-c", "commit.gpgsign=false", "commit", "-q", "-m", message])?;
        self.head()
    }

    /// A merged change that does not validate (a route to an upstream that does not exist).
    pub(crate) fn merge_invalid(&self) -> anyhow::Result<String> {
        // A new upstream name each time, so two invalid merges in a row are two commits.
        let n = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let text = format!(
            "kind: Route\nname: testbed-broken\nrules:\n  - backendRefs: [{{ upstream: no-such-upstream-{n} }}]\n"
        );
        std::fs::write(self.dir.join("testbed-broken.yaml"), text)?;
        self.git(&["add", "-A"])?;
        self.git(&["-c", "commit.gpgsign=false", "commit", "-q", "-m", "An invalid change"])?;
        self.head()
    }
}

fn copy_tree(from: &Path, to: &Path) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(from).with_context(|| format!("cannot read {}", from.display()))? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            std::fs::create_dir_all(&target)?;
            copy_tree(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}
