//! The chaos checker: what every node applied, when each node was faulted and which
//! requests failed, judged after the run. A pure function of what `chaos` observed, so each
//! rule is tested here with a history that breaks it.
//!
//! The rules (issue #15):
//! - one sequence: every node's applied history is a window of one sequence of configs
//!   (the same commit at the same log index everywhere, no node skipping an entry inside
//!   its window, no node going backwards);
//! - nothing applied twice, nothing out of merge order, no refused commit ever applied;
//! - every node converges on the last good commit within the limit after the last heal;
//! - a node that was not faulted at a moment failed no request then;
//! - no node crashed on its own, and every restarted node came back.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

/// One look at a node's applied history: `(log index, commit)`, oldest first.
pub(crate) type History = Vec<(u64, String)>;

/// Per node, each look at its history: `(Unix ms, entries)`.
pub(crate) type Looks = BTreeMap<String, Vec<(u64, History)>>;

/// Everything the chaos run observed.
#[derive(Debug, Clone)]
pub(crate) struct Observations {
    pub(crate) histories: Looks,
    /// The commit every node served before the run.
    pub(crate) initial: String,
    /// Every merge, in merge order: `(commit, valid)`.
    pub(crate) merges: Vec<(String, bool)>,
    /// Per node, when it was faulted (killed until serving again, or cut off): Unix ms.
    pub(crate) faulted: BTreeMap<String, Vec<(u64, u64)>>,
    /// Per node, failed requests per second sent (Unix seconds).
    pub(crate) failed_by_second: BTreeMap<String, BTreeMap<u64, u64>>,
    /// Nodes found dead that the schedule had not killed, restarts that failed.
    pub(crate) crashes: Vec<String>,
    /// How long after the last heal every node served the last good commit, or why not.
    pub(crate) converged_ms: Result<u64, String>,
    pub(crate) converge_limit_ms: u64,
    /// Failures this close to a faulted interval (before or after) belong to it: a request
    /// sent just before a kill, a connection that died with the node, a retransmission.
    pub(crate) margin_ms: u64,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct Check {
    pub(crate) rule: &'static str,
    pub(crate) passed: bool,
    /// What broke the rule (at most `MAX_DETAILS` lines), or what was checked.
    pub(crate) details: Vec<String>,
}

const MAX_DETAILS: usize = 20;

fn check(rule: &'static str, mut problems: Vec<String>, checked: String) -> Check {
    let passed = problems.is_empty();
    if passed {
        problems.push(checked);
    } else if problems.len() > MAX_DETAILS {
        let more = problems.len() - MAX_DETAILS;
        problems.truncate(MAX_DETAILS);
        problems.push(format!("... and {more} more"));
    }
    Check { rule, passed, details: problems }
}

fn short(sha: &str) -> &str {
    &sha[..sha.len().min(12)]
}

/// Judges a run. Every rule gets a `Check`, passed or not.
pub(crate) fn judge(obs: &Observations) -> Vec<Check> {
    // The one sequence: log index -> commit, from every look at every node.
    let mut sequence: BTreeMap<u64, &str> = BTreeMap::new();
    let mut disagreements = Vec::new();
    for (node, looks) in &obs.histories {
        for (_, history) in looks {
            for (index, commit) in history {
                match sequence.get(index) {
                    Some(seen) if *seen != commit => disagreements.push(format!(
                        "log index {index}: {node} applied {} where another applied {}",
                        short(commit),
                        short(seen)
                    )),
                    Some(_) => {}
                    None => {
                        sequence.insert(*index, commit);
                    }
                }
            }
        }
    }
    let mut checks = vec![check(
        "one sequence: the same commit at each log index on every node",
        disagreements,
        match (sequence.keys().next(), sequence.keys().last()) {
            (Some(first), Some(last)) => format!("{} applied configs, log indices {first} to {last}", sequence.len()),
            _ => "no applied config seen".into(),
        },
    )];

    let mut at: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for (index, commit) in &sequence {
        at.entry(commit).or_default().push(*index);
    }
    let twice = at
        .iter()
        .filter(|(_, indices)| indices.len() > 1)
        .map(|(commit, indices)| format!("{} applied at log indices {indices:?}", short(commit)))
        .collect();
    checks.push(check("nothing applied twice", twice, format!("{} distinct commits", at.len())));

    let order: BTreeMap<&str, (usize, bool)> = std::iter::once((obs.initial.as_str(), (0, true)))
        .chain(obs.merges.iter().enumerate().map(|(i, (sha, valid))| (sha.as_str(), (i + 1, *valid))))
        .collect();
    let refused: Vec<String> = sequence
        .iter()
        .filter(|(_, c)| order.get(**c).is_some_and(|(_, valid)| !valid))
        .map(|(i, c)| format!("refused commit {} applied at log index {i}", short(c)))
        .collect();
    let invalid = obs.merges.iter().filter(|(_, valid)| !valid).count();
    checks.push(check(
        "no refused commit applied",
        refused,
        format!("none of the {invalid} invalid merges was applied"),
    ));

    let mut out_of_order = Vec::new();
    let mut last: Option<(u64, usize)> = None;
    for (index, commit) in &sequence {
        match order.get(commit) {
            None => out_of_order.push(format!("log index {index}: {} was never merged", short(commit))),
            Some((n, _)) => {
                if let Some((prev_index, prev)) = last.filter(|(_, prev)| prev >= n) {
                    out_of_order.push(format!(
                        "log index {index}: merge #{n} ({}) after merge #{prev} at log index {prev_index}",
                        short(commit)
                    ));
                }
                last = Some((*index, *n));
            }
        }
    }
    checks.push(check("in merge order", out_of_order, format!("{} merges, applied in order", obs.merges.len())));

    let mut windows = Vec::new();
    for (node, looks) in &obs.histories {
        let mut newest: Option<(u64, u64)> = None;
        for (when, history) in looks {
            let indices: Vec<u64> = history.iter().map(|(i, _)| *i).collect();
            if indices.windows(2).any(|w| w[0] >= w[1]) {
                windows.push(format!("{node} at {when}: its history is not in log order: {indices:?}"));
            }
            if let (Some(first), Some(last)) = (indices.first(), indices.last()) {
                let held: BTreeSet<u64> = indices.iter().copied().collect();
                let skipped: Vec<u64> =
                    sequence.range(first..=last).map(|(i, _)| *i).filter(|i| !held.contains(i)).collect();
                if !skipped.is_empty() {
                    windows.push(format!("{node} at {when}: skipped log indices {skipped:?}"));
                }
                if let Some((then, prev)) = newest.filter(|(_, prev)| last < prev) {
                    windows.push(format!("{node} went back from log index {prev} (at {then}) to {last} (at {when})"));
                }
                newest = Some((*when, newest.map_or(*last, |(_, p)| p.max(*last))));
            }
        }
    }
    // Silence is not a pass: a node the load reached but whose history was never read.
    for node in obs.failed_by_second.keys().filter(|n| obs.histories.get(*n).is_none_or(Vec::is_empty)) {
        windows.push(format!("{node}: its history was never read"));
    }
    if obs.histories.is_empty() {
        windows.push("no node's history was read".into());
    }
    let looks: usize = obs.histories.values().map(Vec::len).sum();
    checks.push(check(
        "every node's history is a window of the sequence, never going back",
        windows,
        format!("{looks} looks at {} nodes", obs.histories.len()),
    ));

    let converged = match &obs.converged_ms {
        Ok(ms) if *ms <= obs.converge_limit_ms => Vec::new(),
        Ok(ms) => vec![format!("took {ms} ms (limit {} ms)", obs.converge_limit_ms)],
        Err(e) => vec![e.clone()],
    };
    checks.push(check(
        "every node serves the last good commit soon after the last heal",
        converged,
        format!(
            "{} ms after the last heal (limit {} ms)",
            obs.converged_ms.clone().unwrap_or(0),
            obs.converge_limit_ms
        ),
    ));

    let mut unexcused = Vec::new();
    for (node, seconds) in &obs.failed_by_second {
        for (second, failed) in seconds {
            if !while_faulted(obs, node, *second) {
                unexcused.push(format!("{node}: {failed} failed in second {second}, while it was not faulted"));
            }
        }
    }
    let (excused, total) =
        obs.failed_by_second.keys().map(|n| excused(obs, n)).fold((0, 0), |(a, b), (x, y)| (a + x, b + y));
    checks.push(check(
        "nodes not faulted failed no request",
        unexcused,
        format!("{total} failed requests, all {excused} while their node was killed or cut off"),
    ));
    checks.push(check(
        "no node crashed on its own; every restart came back",
        obs.crashes.clone(),
        "every node ran until killed, and every restart served".into(),
    ));
    checks
}

/// Whether `second` (Unix seconds) overlaps one of `node`'s faults, give or take the margin.
fn while_faulted(obs: &Observations, node: &str, second: u64) -> bool {
    let (from, to) = (second * 1000, second * 1000 + 999);
    obs.faulted
        .get(node)
        .is_some_and(|f| f.iter().any(|(a, b)| from <= b.saturating_add(obs.margin_ms) && to + obs.margin_ms >= *a))
}

/// A node's failed requests: `(while it was faulted, all)`.
pub(crate) fn excused(obs: &Observations, node: &str) -> (u64, u64) {
    let Some(seconds) = obs.failed_by_second.get(node) else { return (0, 0) };
    seconds.iter().fold((0, 0), |(e, t), (s, n)| (e + if while_faulted(obs, node, *s) { *n } else { 0 }, t + n))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(entries: &[(u64, &str)]) -> History {
        entries.iter().map(|(i, c)| (*i, (*c).to_string())).collect()
    }

    /// Two nodes, three merges (the second invalid), one kill of b with failures inside it.
    fn clean() -> Observations {
        let mut obs = Observations {
            histories: BTreeMap::new(),
            initial: "c0".into(),
            merges: vec![("c1".into(), true), ("bad".into(), false), ("c3".into(), true)],
            faulted: BTreeMap::new(),
            failed_by_second: BTreeMap::new(),
            crashes: Vec::new(),
            converged_ms: Ok(1200),
            converge_limit_ms: 5000,
            margin_ms: 1000,
        };
        obs.histories.insert("a".into(), vec![(1, h(&[(3, "c0")])), (2, h(&[(3, "c0"), (5, "c1"), (9, "c3")]))]);
        obs.histories
            .insert("b".into(), vec![(1, h(&[(3, "c0"), (5, "c1")])), (2, h(&[(3, "c0"), (5, "c1"), (9, "c3")]))]);
        obs.faulted.insert("b".into(), vec![(10_000, 14_000)]);
        obs.failed_by_second.insert("b".into(), BTreeMap::from([(10, 20), (14, 3)]));
        obs
    }

    fn failing(obs: &Observations) -> Vec<&'static str> {
        judge(obs).into_iter().filter(|c| !c.passed).map(|c| c.rule).collect()
    }

    #[test]
    fn a_clean_run_passes_every_rule() {
        let checks = judge(&clean());
        assert_eq!(checks.len(), 8);
        assert!(checks.iter().all(|c| c.passed), "{checks:#?}");
    }

    #[test]
    fn each_broken_rule_is_reported() {
        let mut o = clean();
        o.histories.get_mut("b").unwrap()[1].1[2].1 = "c1x".into();
        assert!(failing(&o).contains(&"one sequence: the same commit at each log index on every node"));

        let mut o = clean();
        o.histories.get_mut("a").unwrap().push((3, h(&[(5, "c1"), (9, "c3"), (11, "c3")])));
        assert!(failing(&o).contains(&"nothing applied twice"));

        let mut o = clean();
        o.histories.get_mut("a").unwrap().push((3, h(&[(9, "c3"), (11, "bad")])));
        assert!(failing(&o).contains(&"no refused commit applied"));

        let mut o = clean();
        o.merges.swap(0, 2);
        assert!(failing(&o).contains(&"in merge order"));
        let mut o = clean();
        o.histories.get_mut("a").unwrap().push((3, h(&[(9, "c3"), (12, "stranger")])));
        assert!(failing(&o).contains(&"in merge order"));

        let mut o = clean();
        o.histories.get_mut("b").unwrap()[1].1.remove(1);
        assert_eq!(failing(&o), ["every node's history is a window of the sequence, never going back"]);
        let mut o = clean();
        o.histories.get_mut("a").unwrap().push((3, h(&[(3, "c0"), (5, "c1")])));
        assert_eq!(failing(&o), ["every node's history is a window of the sequence, never going back"]);

        let mut o = clean();
        o.histories.remove("a");
        o.failed_by_second.insert("a".into(), BTreeMap::new());
        assert_eq!(failing(&o), ["every node's history is a window of the sequence, never going back"]);
        o.histories.clear();
        assert!(failing(&o).contains(&"every node's history is a window of the sequence, never going back"));

        let mut o = clean();
        o.converged_ms = Ok(5001);
        assert_eq!(failing(&o), ["every node serves the last good commit soon after the last heal"]);
        o.converged_ms = Err("a-1 still serves c1".into());
        assert_eq!(failing(&o), ["every node serves the last good commit soon after the last heal"]);

        let mut o = clean();
        o.failed_by_second.get_mut("b").unwrap().insert(16, 1);
        assert_eq!(failing(&o), ["nodes not faulted failed no request"]);
        let mut o = clean();
        o.failed_by_second.insert("a".into(), BTreeMap::from([(11, 1)]));
        assert_eq!(failing(&o), ["nodes not faulted failed no request"]);

        let mut o = clean();
        o.crashes.push("a exited at 12 s".into());
        assert_eq!(failing(&o), ["no node crashed on its own; every restart came back"]);
    }
}
