//! `--config-dir`: serve a local config directory and reload it when it changes.
//!
//! A node without a cluster applies each new tree to its engine. In cluster mode this is
//! how a cluster runs from a local directory, without Git: the leader proposes each new
//! tree through Raft and every node applies it from the log, as it would a Git commit. The
//! directory is polled: each tick reads and compiles the tree, and a new content hash is
//! swapped in (or proposed). A tree that fails validation is reported (every diagnostic,
//! once per distinct failure) and the node keeps serving the last good config.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use schemas::source::{dir_stamp, read_dir, DirStamp, SourceError};
use schemas::{ContentHash, Diagnostic, TreeLimits};
use tokio::sync::watch;

use crate::proxy::runtime::{ConfigOrigin, Engine};

/// Why a directory holds no usable config.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The tree could not be read (a file, a link, a limit).
    #[error(transparent)]
    Unreadable(#[from] SourceError),
    #[error("no *.yaml or *.yml files in {}", dir.display())]
    Empty { dir: PathBuf },
    /// Every problem found, kept as data; displayed one per line.
    #[error("{}", lines(.0))]
    Invalid(Vec<Diagnostic>),
}

fn lines(diagnostics: &[Diagnostic]) -> String {
    diagnostics.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n")
}

/// The log entry for a directory tree. It has no Git metadata, so its commit is named by
/// its content: `dir-<hash>`.
pub fn dir_entry(compiled: schemas::Compiled) -> raft::ApplyConfig {
    raft::ApplyConfig {
        commit: format!("dir-{}", compiled.hash.short()),
        parent: None,
        author: String::new(),
        message: "local config directory".into(),
        committed_at: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_secs()).unwrap_or(0))
            .unwrap_or(0),
        hash: compiled.hash,
        snapshot: Arc::new(compiled.snapshot),
        covers: Vec::new(),
    }
}

/// Reads and compiles the directory once.
pub fn load(dir: &Path, policy: &schemas::Policy) -> Result<schemas::Compiled, LoadError> {
    let files = read_dir(dir, &TreeLimits::default())?;
    if files.is_empty() {
        return Err(LoadError::Empty { dir: dir.to_path_buf() });
    }
    schemas::compile_tree_for(&files, &TreeLimits::default(), policy).map_err(LoadError::Invalid)
}

/// The directory to watch, how often, and under what policy.
#[derive(Debug, Clone)]
pub struct Watch {
    pub dir: PathBuf,
    pub interval: Duration,
    pub policy: schemas::Policy,
    /// The stamp of the tree already applied at start (taken before it was read), so the
    /// first tick does not read it again.
    pub applied: Option<DirStamp>,
}

/// Where a new valid tree goes.
#[derive(Debug, Clone)]
pub enum Sink {
    /// Straight into this node's engine (a node without a cluster).
    Engine(Arc<Engine>),
    /// Proposed through Raft when this node leads; every node then applies it from the log.
    /// The commit is named `dir-<hash>`.
    Cluster(crate::cluster::Cluster),
}

/// A tree whose files were all modified longer ago than this is skipped while its stamp
/// stays the same (`DirStamp::settled`).
const SETTLED: Duration = Duration::from_secs(2);

/// Even an unchanged stamp is read again this often: a last resort against a file system
/// whose timestamps say less than they should.
const FULL_RELOAD_EVERY: Duration = Duration::from_secs(300);

/// What the watcher last read: the tree's stamp, and whether this node led then (a follower
/// that becomes leader must read the tree again to propose it).
struct Seen {
    stamp: DirStamp,
    leader: bool,
    at: std::time::Instant,
}

/// Polls `dir` every `interval` and hands each new valid config to `sink`. A tick first
/// stats the files: an unchanged, settled tree is not read or compiled again (at 10,000
/// routes that is half a second of CPU and a hundred megabytes of garbage per tick).
pub async fn watch_dir(
    Watch { dir, interval, policy, applied }: Watch,
    sink: Sink,
    mut current: ContentHash,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut last_error: Option<String> = None;
    let mut seen = applied.map(|stamp| Seen { stamp, leader: false, at: std::time::Instant::now() });
    let failures = metrics::counter!("raftgate_config_reload_failures_total");
    let reads = metrics::counter!("raftgate_config_dir_reads_total");
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = shutdown.changed() => return,
        }
        let leader = matches!(&sink, Sink::Cluster(c) if c.is_leader());
        let (d, p) = (dir.clone(), policy.clone());
        let previous = seen.as_ref().filter(|s| s.leader == leader && s.at.elapsed() < FULL_RELOAD_EVERY);
        let previous = previous.map(|s| s.stamp.clone());
        let read = tokio::task::spawn_blocking(move || {
            let stamp = dir_stamp(&d).ok();
            let unchanged = stamp
                .as_ref()
                .is_some_and(|s| previous.as_ref() == Some(s) && s.settled(std::time::SystemTime::now(), SETTLED));
            if unchanged {
                return None;
            }
            Some((stamp, load(&d, &p)))
        });
        let (stamp, result) = match read.await {
            Ok(None) => continue,
            Ok(Some(r)) => {
                reads.increment(1);
                r
            }
            Err(e) => {
                failures.increment(1);
                tracing::error!(error = %e, "config load panicked; still serving the previous one");
                continue;
            }
        };
        // Whether this tree has been dealt with: applied, proposed, or found invalid. A tree
        // that could not be read or applied is read again on the next tick.
        let settled = match result {
            Ok(compiled) if compiled.hash == current && matches!(sink, Sink::Engine(_)) => {
                last_error = None;
                true
            }
            Ok(compiled) => {
                let hash = compiled.hash;
                let result = match &sink {
                    Sink::Engine(engine) => {
                        let origin = ConfigOrigin { commit: None, source: dir.display().to_string() };
                        engine.apply(Arc::new(compiled.snapshot), compiled.hash, origin).await.map(|_| ())
                    }
                    // Followers read the same directory and leave it to the leader.
                    Sink::Cluster(cluster) if !cluster.is_leader() => Ok(()),
                    Sink::Cluster(cluster) => {
                        cluster.propose_config(dir_entry(compiled)).await.map(|_| ()).map_err(anyhow::Error::from)
                    }
                };
                match result {
                    Ok(()) => {
                        current = hash;
                        last_error = None;
                        true
                    }
                    Err(e) => {
                        failures.increment(1);
                        tracing::error!(error = %e, "new config could not be applied; still serving the previous one");
                        false
                    }
                }
            }
            Err(e) => {
                let invalid = !matches!(e, LoadError::Unreadable(_));
                // Compared as rendered: the same problems read again on the next tick are
                // the same failure, reported once.
                let e = e.to_string();
                if last_error.as_deref() != Some(e.as_str()) {
                    failures.increment(1);
                    tracing::error!(dir = %dir.display(), errors = %e, "config is invalid; still serving the previous one");
                    last_error = Some(e);
                }
                invalid
            }
        };
        seen = match (settled, stamp) {
            (true, Some(stamp)) => Some(Seen { stamp, leader, at: std::time::Instant::now() }),
            _ => None,
        };
    }
}
