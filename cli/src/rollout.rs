//! `raftgate rollout wait <sha>`: until every node (or a quorum of voters) serves a commit.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use schemas::admin::{ClusterStatus, ClusterStatusRequest};
use serde::Serialize;

use crate::client::{CliError, Target};
use crate::output::{self, short, Format};

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RolloutView {
    pub commit: String,
    pub done: bool,
    pub quorum: bool,
    pub nodes: Vec<RolloutNode>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RolloutNode {
    pub id: u64,
    pub voter: bool,
    pub reachable: bool,
    /// Serves the commit, or a later one that covers it.
    pub serving: bool,
    pub commit: Option<String>,
}

/// Whether a node's current config is `sha` or includes it.
fn serves(status: &schemas::admin::NodeStatus, sha: &str) -> bool {
    status.config.as_ref().is_some_and(|c| c.commit.starts_with(sha) || c.covers.iter().any(|x| x.starts_with(sha)))
}

fn nodes(s: &ClusterStatus, sha: &str) -> Vec<RolloutNode> {
    s.nodes
        .iter()
        .map(|n| {
            let m = n.member.clone().unwrap_or_default();
            RolloutNode {
                id: m.id,
                voter: m.voter,
                reachable: n.reachable,
                serving: n.status.as_ref().is_some_and(|st| serves(st, sha)),
                commit: n.status.as_ref().and_then(|st| st.config.as_ref()).map(|c| c.commit.clone()),
            }
        })
        .collect()
}

fn finished(nodes: &[RolloutNode], quorum: bool) -> bool {
    if quorum {
        let voters = nodes.iter().filter(|n| n.voter).count();
        nodes.iter().filter(|n| n.voter && n.serving).count() > voters / 2
    } else {
        !nodes.is_empty() && nodes.iter().all(|n| n.serving)
    }
}

pub async fn wait(target: &Target, format: Format, sha: &str, limit: Duration, quorum: bool) -> Result<(), CliError> {
    if sha.len() < 4 {
        return Err(CliError::Usage(format!("`{sha}` is too short to name a commit: give at least 4 characters")));
    }
    let started = Instant::now();
    let bar = (format == Format::Table && std::io::stdout().is_terminal()).then(|| {
        let b = ProgressBar::new(0);
        b.set_style(
            ProgressStyle::with_template("{spinner} [{bar:30}] {pos}/{len} nodes serve {prefix} {msg}")
                .expect("template is valid")
                .progress_chars("=> "),
        );
        b.set_prefix(short(sha));
        b.enable_steady_tick(Duration::from_millis(120));
        b
    });
    let mut last: Vec<RolloutNode> = Vec::new();
    let mut last_error = String::new();
    loop {
        let call = target.client()?.get_cluster_status(target.request(ClusterStatusRequest {})).await;
        match call {
            Ok(r) => {
                let s = r.into_inner();
                if let Some(r) = s
                    .nodes
                    .iter()
                    .filter_map(|n| n.status.as_ref()?.refusal.as_ref())
                    .find(|r| r.commit.starts_with(sha))
                {
                    if let Some(b) = &bar {
                        b.abandon();
                    }
                    return Err(CliError::Failed(format!(
                        "commit {} was refused at step {}:\n  {}",
                        short(&r.commit),
                        r.step,
                        r.errors.join("\n  ")
                    )));
                }
                let now = nodes(&s, sha);
                report(&bar, format, &last, &now);
                last = now;
                if finished(&last, quorum) {
                    if let Some(b) = &bar {
                        b.finish_with_message("done");
                    }
                    let view = RolloutView { commit: sha.to_string(), done: true, quorum, nodes: last };
                    output::print(format, &view, |v| {
                        format!("{} nodes serve {}\n", v.nodes.iter().filter(|n| n.serving).count(), short(sha))
                    });
                    return Ok(());
                }
            }
            // Leader elections and restarts are what rollouts live through: keep asking.
            Err(e) => last_error = target.error(e).message().to_string(),
        }
        if started.elapsed() >= limit {
            if let Some(b) = &bar {
                b.abandon();
            }
            let view = RolloutView { commit: sha.to_string(), done: false, quorum, nodes: last.clone() };
            if format != Format::Table {
                output::print(format, &view, |_| String::new());
            }
            let pending: Vec<String> = last
                .iter()
                .filter(|n| !n.serving)
                .map(|n| format!("node {} ({})", n.id, n.commit.as_deref().map_or("no config".into(), short)))
                .collect();
            let why = if pending.is_empty() { last_error } else { format!("still waiting for {}", pending.join(", ")) };
            return Err(CliError::Timeout(format!("{} not rolled out after {}s: {why}", short(sha), limit.as_secs())));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Progress: a bar on a terminal, one line per node that got there otherwise.
fn report(bar: &Option<ProgressBar>, format: Format, before: &[RolloutNode], now: &[RolloutNode]) {
    let done = now.iter().filter(|n| n.serving).count();
    match bar {
        Some(b) => {
            b.set_length(now.len() as u64);
            b.set_position(done as u64);
            let waiting: Vec<String> = now.iter().filter(|n| !n.serving).map(|n| n.id.to_string()).collect();
            b.set_message(if waiting.is_empty() { String::new() } else { format!("(waiting: {})", waiting.join(" ")) });
        }
        None if format == Format::Table => {
            for n in now.iter().filter(|n| n.serving) {
                if !before.iter().any(|b| b.id == n.id && b.serving) {
                    println!("node {} serves it ({done}/{})", n.id, now.len());
                }
            }
        }
        None => {}
    }
}
