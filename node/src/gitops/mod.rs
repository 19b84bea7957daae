//! GitOps: from a merged pull request to a committed config entry.
//!
//! Every node runs the sync loop; only the leader acts. On each poll tick, webhook or
//! `raftgate config sync`, the leader makes sure it has applied everything committed (a
//! new leader may still be applying its predecessor's last entries), fetches the branch
//! into its bare mirror (`DATA/git/mirror.git`) and judges the head against the config the
//! state machine holds (`repo::Mirror::evaluate`): ancestry, signature, load, validate,
//! compile. A new config is proposed through Raft and the loop waits for the commit; a
//! refusal is recorded through Raft too, so every node shows it until a good commit
//! arrives. Followers never touch Git.
//!
//! Resuming after a leader change needs no state of its own: the state machine's current
//! commit is where the next leader starts, so nothing is proposed twice (a commit already
//! applied is `UpToDate`) and nothing is skipped (its descendants are still ahead of it).

pub mod repo;
pub mod signers;
pub mod webhook;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use raft::{Request, SyncNote};
use tokio::sync::{watch, Notify};

use crate::cluster::{Cluster, ProposeError};
use repo::{Mirror, MirrorError, Source, Verdict};

/// Fetch failures back off up to this long between attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// What the last sync did, for status and `raftgate config sync`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncState {
    pub head: Option<String>,
    pub outcome: SyncOutcome,
    /// Why the run failed (`SyncOutcome::Failed`), as status shows it.
    pub error: Option<String>,
    /// Runs started, and the number of the last one finished (runs are sequential).
    pub started: u64,
    pub finished: u64,
    pub last_run_at: u64,
}

/// What a sync run concluded. Named (`as_str`) only where it leaves the node: status and
/// `raftgate config sync`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SyncOutcome {
    /// No run has finished yet.
    #[default]
    NotRun,
    /// A new config commit was proposed and committed.
    Proposed,
    /// A good commit whose config is the one already served.
    Unchanged,
    /// The branch head is the commit already applied.
    UpToDate,
    /// The head was refused; the refusal is in the state machine, on every node.
    Refused,
    /// The run did not finish (mirror, fetch or Raft); `SyncState::error` says why.
    Failed,
}

impl SyncOutcome {
    /// `proposed`, `unchanged`, `up-to-date`, `refused`, `failed`; empty before the first run.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::NotRun => "",
            Self::Proposed => "proposed",
            Self::Unchanged => "unchanged",
            Self::UpToDate => "up-to-date",
            Self::Refused => "refused",
            Self::Failed => "failed",
        }
    }
}

impl std::fmt::Display for SyncOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a sync run failed. The loop records it, backs off and tries again; nothing is
/// refused and every node keeps serving.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Mirror(#[from] MirrorError),
    #[error("sync task failed: {0}")]
    Task(tokio::task::JoinError),
    #[error("proposing through Raft: {0}")]
    Propose(#[from] ProposeError),
}

/// The running sync loop: trigger it, watch what it did.
#[derive(Debug, Clone)]
pub struct GitSync {
    trigger: Arc<Notify>,
    state: watch::Receiver<SyncState>,
    /// The bare mirror the loop fetches into, and the config directory inside the
    /// repository: the leader compiles past commits from them for `DiffConfigs`.
    pub mirror_dir: PathBuf,
    pub path: Option<String>,
}

impl GitSync {
    /// Asks for a sync now (webhook, `raftgate config sync`).
    pub fn trigger(&self) {
        self.trigger.notify_one();
    }

    pub fn state(&self) -> SyncState {
        self.state.borrow().clone()
    }

    /// Triggers a sync and waits until a run that started after this call has finished.
    /// A run already under way when the call came may have fetched before the push, so
    /// it does not count.
    pub async fn sync_and_wait(&self, limit: Duration) -> Result<SyncState, SyncState> {
        let mut rx = self.state.clone();
        let started_before = rx.borrow_and_update().started;
        self.trigger();
        let wait = async {
            while rx.borrow_and_update().finished <= started_before {
                if rx.changed().await.is_err() {
                    return;
                }
            }
        };
        match tokio::time::timeout(limit, wait).await {
            Ok(()) => Ok(self.state()),
            Err(_) => Err(self.state()),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub source: Source,
    pub poll_interval: Duration,
    pub mirror_dir: PathBuf,
    /// Tests only (`--test-sync-pause`): wait between judging a commit and proposing it.
    pub test_pause: Option<Duration>,
    /// Traces each new commit's way through this leader (`--otlp-endpoint`).
    pub telemetry: Option<Arc<crate::telemetry::Telemetry>>,
}

/// Starts the sync loop on this node.
pub fn spawn(
    settings: Settings,
    cluster: Cluster,
    tasks: &mut tokio::task::JoinSet<()>,
    shutdown: watch::Receiver<bool>,
) -> GitSync {
    let trigger = Arc::new(Notify::new());
    let (tx, rx) = watch::channel(SyncState::default());
    let (mirror_dir, path) = (settings.mirror_dir.clone(), settings.source.path.clone());
    tasks.spawn(run(settings, cluster, trigger.clone(), tx, shutdown));
    GitSync { trigger, state: rx, mirror_dir, path }
}

async fn run(
    settings: Settings,
    cluster: Cluster,
    trigger: Arc<Notify>,
    state: watch::Sender<SyncState>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut mirror: Option<Mirror> = None;
    let mut delay = Duration::ZERO;
    let mut backoff = settings.poll_interval;
    let mut server = cluster.raft.server_metrics();
    let failures = metrics::counter!("raftgate_git_sync_failures_total");
    let refused = metrics::counter!("raftgate_git_commits_refused_total");
    let proposed = metrics::counter!("raftgate_git_commits_proposed_total");
    loop {
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = trigger.notified() => {}
            // A node that becomes leader syncs at once.
            Ok(()) = server.changed() => {}
            _ = shutdown.changed() => return,
        }
        delay = settings.poll_interval;
        if !cluster.is_leader() {
            continue;
        }
        // Apply everything committed before judging the head against the current config.
        if let Err(e) = cluster.raft.ensure_linearizable().await {
            tracing::debug!(error = %e, "not syncing: leadership not confirmed");
            continue;
        }
        let run = state.borrow().started + 1;
        state.send_modify(|s| s.started = run);
        let current = cluster.sm.current();
        let source = settings.source.clone();
        let dir = settings.mirror_dir.clone();
        let taken = mirror.take();
        let work = tokio::task::spawn_blocking(move || {
            let m = match taken {
                Some(m) => m,
                None => match Mirror::open(&dir, source) {
                    Ok(m) => m,
                    Err(e) => return (None, Err(SyncError::from(e))),
                },
            };
            let started = SystemTime::now();
            let result = m
                .fetch()
                .map(|head| {
                    let fetched = SystemTime::now();
                    (head, m.evaluate(head, current.as_deref()), Timing { started, fetched, judged: SystemTime::now() })
                })
                .map_err(SyncError::from);
            // A fetch that brought objects adds a pack, and libgit2 keeps every pack it
            // has read open for as long as the repository is: reopening after such a sync
            // keeps the leader's descriptors flat (the soak saw +107 in ten minutes).
            let changed =
                matches!(&result, Ok((_, Verdict::Propose(_) | Verdict::Refused(_) | Verdict::Unchanged { .. }, _)));
            (if changed { None } else { Some(m) }, result)
        })
        .await;
        let (m, result) = work.unwrap_or_else(|e| (None, Err(SyncError::Task(e))));
        mirror = m;
        let mut next = SyncState { started: run, finished: run, last_run_at: now(), ..SyncState::default() };
        match result {
            Err(e) => {
                failures.increment(1);
                // Back off while the server stays unreachable; every node keeps serving.
                delay = backoff;
                backoff = (backoff * 2).min(MAX_BACKOFF).max(settings.poll_interval);
                tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "git sync failed; still serving the current config");
                next.outcome = SyncOutcome::Failed;
                next.error = Some(e.to_string());
            }
            Ok((head, verdict, timing)) => {
                backoff = settings.poll_interval;
                let refused_before = cluster.sm.subscribe_refusal().borrow().as_ref().map(|r| r.commit.clone());
                let traced = settings
                    .telemetry
                    .as_ref()
                    .and_then(|t| trace_of(&verdict, refused_before.as_deref()).map(|c| (t, c, timing)));
                next.head = Some(head.to_string());
                if let (Some(pause), Verdict::Propose(entry)) = (settings.test_pause, &verdict) {
                    tracing::warn!(commit = %entry.commit, pause_ms = pause.as_millis() as u64, "test pause before proposing");
                    tokio::time::sleep(pause).await;
                }
                match act(&cluster, verdict, &refused, &proposed).await {
                    Ok(outcome) => next.outcome = outcome,
                    Err(e) => {
                        next.outcome = SyncOutcome::Failed;
                        next.error = Some(e.to_string());
                    }
                }
                if let Some((t, (commit, refusal), timing)) = traced {
                    t.config_leader(&commit, &timing.stages(cluster.id, refusal, next.error.clone()));
                }
            }
        }
        metrics::gauge!("raftgate_git_sync_ok").set(if next.error.is_none() { 1.0 } else { 0.0 });
        state.send_replace(next);
    }
}

/// When a sync run reached each stage (the commit's trace).
#[derive(Debug, Clone, Copy)]
struct Timing {
    started: SystemTime,
    fetched: SystemTime,
    judged: SystemTime,
}

impl Timing {
    /// The leader's stages: fetch, validate (ancestry, signature, load, compile), and the
    /// Raft commit (proposed until applied here), which ends now.
    fn stages(&self, node: u64, refusal: Option<String>, failed: Option<String>) -> Vec<crate::telemetry::Stage> {
        use crate::telemetry::Stage;
        use opentelemetry::KeyValue;
        let at = vec![KeyValue::new("raftgate.node", node as i64)];
        let mut stages = vec![
            Stage { name: "git fetch", start: self.started, end: self.fetched, error: None, attributes: at.clone() },
            Stage {
                name: "validate and compile",
                start: self.fetched,
                end: self.judged,
                error: refusal.clone(),
                attributes: at.clone(),
            },
        ];
        if refusal.is_none() {
            stages.push(Stage {
                name: "raft commit",
                start: self.judged,
                end: SystemTime::now(),
                error: failed,
                attributes: at,
            });
        }
        stages
    }
}

/// The commit a verdict traces, and why it was refused: new configs and new refusals are
/// traced; a head already served or already refused is not (every poll would make one).
fn trace_of(verdict: &Verdict, refused_before: Option<&str>) -> Option<(String, Option<String>)> {
    match verdict {
        Verdict::Propose(entry) => Some((entry.commit.clone(), None)),
        Verdict::Refused(r) if refused_before != Some(r.commit.as_str()) => {
            Some((r.commit.clone(), Some(format!("{}: {}", r.step_name(), r.errors.join("; ")))))
        }
        Verdict::Refused(_) | Verdict::UpToDate | Verdict::Unchanged { .. } => None,
    }
}

/// Carries out a verdict: what the run concluded, or why it could not finish.
async fn act(
    cluster: &Cluster,
    verdict: Verdict,
    refused: &metrics::Counter,
    proposed: &metrics::Counter,
) -> Result<SyncOutcome, SyncError> {
    let refusal = cluster.sm.subscribe_refusal().borrow().clone();
    let verdict = refuse_oversized(verdict);
    match verdict {
        Verdict::UpToDate => Ok(SyncOutcome::UpToDate),
        Verdict::Unchanged { commit } => {
            // Same content as served: nothing to apply, but a good commit clears a refusal.
            if refusal.is_some() {
                cluster.propose(Request::RecordSync(SyncNote::Unchanged { commit })).await?;
            }
            Ok(SyncOutcome::Unchanged)
        }
        Verdict::Refused(r) => {
            let same = refusal.as_deref().is_some_and(|old| {
                old.commit == r.commit && old.step_name() == r.step_name() && old.errors == r.errors
            });
            if !same {
                refused.increment(1);
                tracing::error!(commit = %r.commit, step = r.step_name(), errors = ?r.errors, "refused a config commit; still serving the current config");
                cluster.propose(Request::RecordSync(SyncNote::Refused(r))).await?;
            }
            Ok(SyncOutcome::Refused)
        }
        Verdict::Propose(entry) => {
            let commit = entry.commit.clone();
            tracing::info!(%commit, covers = entry.covers.len(), "proposing a config commit");
            cluster.propose(Request::ApplyConfig(entry)).await?;
            proposed.increment(1);
            Ok(SyncOutcome::Proposed)
        }
    }
}

/// A config too large for one Raft entry is refused like an invalid one (recorded through
/// Raft, shown by every node's status) instead of failing at every sync.
fn refuse_oversized(verdict: Verdict) -> Verdict {
    let Verdict::Propose(entry) = verdict else { return verdict };
    match raft::network::entry_fits(&*entry) {
        Ok(_) => Verdict::Propose(entry),
        Err(e) => Verdict::Refused(raft::Refusal::new(
            entry.commit.clone(),
            raft::RefusalStep::Validate,
            vec![format!("the compiled config cannot be replicated: {e}")],
            now(),
        )),
    }
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}
