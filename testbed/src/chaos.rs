//! `testbed chaos`: a random schedule of faults drawn from a seed (SIGKILLs and restarts,
//! leader kills in the middle of a rollout, partitions, isolated nodes, latency spikes, Git
//! server outages) while changes are merged every few seconds (some of them invalid) and
//! steady load runs through every node. Afterwards `check::judge` decides from what was
//! observed. The same seed draws the same schedule, so a failing run can be replayed.
//!
//! The schedule is drawn up front from the seed, the node names and the duration alone;
//! what a step hits at run time (which node leads when "kill the leader" comes) is in the
//! event log of the report.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde_json::{json, Value};

use crate::check::{self, History, Looks, Observations};
use crate::cluster::State;
use crate::net::{self, Mode};
use crate::ops;
use crate::process::{self, alive};
use crate::scenario::{self, ms, Load};

#[derive(Debug, Clone)]
pub(crate) struct ChaosOptions {
    pub duration: Duration,
    pub seed: u64,
    /// Requests per second to each node.
    pub rate: u32,
    /// No new fault starts in the last `calm` of the run (faults still on end with it).
    pub calm: Duration,
    pub converge_limit: Duration,
    pub report_dir: PathBuf,
    pub tls: bool,
    pub loopback: bool,
    pub port_offset: u16,
    /// Leave the testbed up afterwards (when the run brought it up).
    pub keep: bool,
    /// Print the schedule the seed draws for `topology` and stop.
    pub dry_run: bool,
}

/// Who a kill or a restart is about: a named node, or whichever node led when kill
/// number `n` of the leader came.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Victim {
    Node(String),
    Leader(usize),
}

/// One step of the schedule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "do", rename_all = "kebab-case")]
pub(crate) enum Action {
    Merge {
        invalid: bool,
    },
    Kill {
        victim: Victim,
    },
    Restart {
        victim: Victim,
    },
    Partition {
        a: String,
        b: String,
    },
    Heal {
        a: String,
        b: String,
    },
    Isolate {
        node: String,
    },
    Rejoin {
        node: String,
    },
    Slow {
        a: String,
        b: String,
        rtt_ms: u64,
    },
    Unslow {
        a: String,
        b: String,
    },
    /// The Git server stops answering: killed (connections refused) or stopped (SIGSTOP:
    /// connections hang).
    GitDown {
        hang: bool,
    },
    GitUp,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct Step {
    pub at_ms: u64,
    #[serde(flatten)]
    pub action: Action,
}

/// What a fault holds while it lasts, so the schedule never stacks two of a kind on one
/// target, and never has more than `MAX_DOWN` nodes killed or cut off at once.
#[derive(Debug, Clone, PartialEq)]
enum Hold {
    Down(Victim),
    Isolated(String),
    Cut(String, String),
    Slow(String, String),
    Git,
}

const MAX_DOWN: usize = 2;

/// Draws the schedule: `nodes` are `(name, region)`; with `netns` false (loopback) only
/// kills, restarts and merges, since partitions, latency and the Git server need the
/// emulator.
pub(crate) fn schedule(
    seed: u64,
    nodes: &[(String, String)],
    duration: Duration,
    calm: Duration,
    netns: bool,
) -> Vec<Step> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut regions: Vec<String> = nodes.iter().map(|(_, r)| r.clone()).collect();
    regions.sort();
    regions.dedup();
    let end = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
    let last_start = end.saturating_sub(u64::try_from(calm.as_millis()).unwrap_or(u64::MAX));
    let mut steps = Vec::new();
    let mut held: Vec<(u64, Hold)> = Vec::new();
    let mut leader_kills = 0;
    let mut t = 2_000;
    while t < last_start {
        held.retain(|(until, _)| *until > t);
        let down = held.iter().filter(|(_, h)| matches!(h, Hold::Down(_) | Hold::Isolated(_))).count();
        let lasting = |rng: &mut fastrand::Rng| (t + rng.u64(3_000..12_000)).min(end);
        let is_down = |held: &[(u64, Hold)], n: &str| {
            held.iter()
                .any(|(_, h)| *h == Hold::Down(Victim::Node(n.to_string())) || *h == Hold::Isolated(n.to_string()))
        };
        if rng.u32(0..100) < 70 {
            let invalid = rng.u32(0..100) < 20;
            steps.push(Step { at_ms: t, action: Action::Merge { invalid } });
            // A leader killed while it rolls the change out.
            if !invalid && down < MAX_DOWN && rng.u32(0..100) < 12 {
                let victim = Victim::Leader(leader_kills);
                leader_kills += 1;
                let at = t + rng.u64(0..800);
                let back = lasting(&mut rng).max(at + 1);
                steps.push(Step { at_ms: at, action: Action::Kill { victim: victim.clone() } });
                steps.push(Step { at_ms: back, action: Action::Restart { victim: victim.clone() } });
                held.push((back, Hold::Down(victim)));
            }
        }
        let down = held.iter().filter(|(_, h)| matches!(h, Hold::Down(_) | Hold::Isolated(_))).count();
        if rng.u32(0..100) < 45 {
            let until = lasting(&mut rng);
            let kinds = if netns { 5 } else { 1 };
            let pair = |rng: &mut fastrand::Rng| {
                let a = rng.usize(0..regions.len());
                let b = (a + 1 + rng.usize(0..regions.len().max(2) - 1)) % regions.len();
                (regions[a.min(b)].clone(), regions[a.max(b)].clone())
            };
            match rng.u32(0..kinds) {
                0 | 2 if down < MAX_DOWN => {
                    let up: Vec<&String> = nodes.iter().map(|(n, _)| n).filter(|n| !is_down(&held, n)).collect();
                    if up.is_empty() {
                        // nothing to take down
                    } else if rng.bool() || !netns {
                        let node = up[rng.usize(0..up.len())].clone();
                        let victim = Victim::Node(node);
                        steps.push(Step { at_ms: t, action: Action::Kill { victim: victim.clone() } });
                        steps.push(Step { at_ms: until, action: Action::Restart { victim: victim.clone() } });
                        held.push((until, Hold::Down(victim)));
                    } else {
                        let node = up[rng.usize(0..up.len())].clone();
                        steps.push(Step { at_ms: t, action: Action::Isolate { node: node.clone() } });
                        steps.push(Step { at_ms: until, action: Action::Rejoin { node: node.clone() } });
                        held.push((until, Hold::Isolated(node)));
                    }
                }
                1 if regions.len() > 1 => {
                    let (a, b) = pair(&mut rng);
                    if !held.iter().any(|(_, h)| *h == Hold::Cut(a.clone(), b.clone())) {
                        steps.push(Step { at_ms: t, action: Action::Partition { a: a.clone(), b: b.clone() } });
                        steps.push(Step { at_ms: until, action: Action::Heal { a: a.clone(), b: b.clone() } });
                        held.push((until, Hold::Cut(a, b)));
                    }
                }
                3 if regions.len() > 1 => {
                    let (a, b) = pair(&mut rng);
                    if !held.iter().any(|(_, h)| *h == Hold::Slow(a.clone(), b.clone())) {
                        let rtt_ms = rng.u64(300..1500);
                        steps.push(Step { at_ms: t, action: Action::Slow { a: a.clone(), b: b.clone(), rtt_ms } });
                        steps.push(Step { at_ms: until, action: Action::Unslow { a: a.clone(), b: b.clone() } });
                        held.push((until, Hold::Slow(a, b)));
                    }
                }
                4 if !held.iter().any(|(_, h)| *h == Hold::Git) => {
                    steps.push(Step { at_ms: t, action: Action::GitDown { hang: rng.bool() } });
                    steps.push(Step { at_ms: until, action: Action::GitUp });
                    held.push((until, Hold::Git));
                }
                _ => {}
            }
        }
        t += rng.u64(1_500..4_000);
    }
    // Stable: at one instant, the order drawn (a kill before its own restart).
    steps.sort_by_key(|s| s.at_ms);
    steps
}

fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)).unwrap_or(0)
}

/// One executed step, for the report.
#[derive(Debug, Clone, Serialize)]
struct Done {
    /// Since the start of the run.
    at_ms: u64,
    took_ms: u64,
    #[serde(flatten)]
    action: Action,
    /// What it hit or found (the leader's name, a merged commit, why it was skipped).
    outcome: String,
}

/// Runs the chaos on the testbed in `dir` (bringing `topology` up if none is), returns
/// whether the checker passed.
pub(crate) fn run(dir: &Path, topology: &Path, opts: &ChaosOptions) -> anyhow::Result<bool> {
    if opts.dry_run {
        let topo = crate::topology::Topology::load(topology)?;
        let nodes: Vec<(String, String)> = topo
            .regions
            .iter()
            .flat_map(|r| (1..=r.nodes).map(move |i| (format!("{}-{i}", r.name), r.name.clone())))
            .collect();
        for step in schedule(opts.seed, &nodes, opts.duration, opts.calm, !opts.loopback) {
            println!("{:>8.1} s  {}", step.at_ms as f64 / 1000.0, serde_json::to_string(&step.action)?);
        }
        return Ok(true);
    }
    let up = ops::UpOptions {
        loopback: opts.loopback,
        quiet: true,
        port_offset: opts.port_offset,
        tls: opts.tls,
        snapshot_every: None,
    };
    ops::on_testbed(dir, topology, up, opts.keep, || chaos(dir, topology, opts))
}

/// Runs one step; returns what it hit, or why it did nothing.
struct Runner<'a> {
    dir: &'a Path,
    /// Node name -> when its current fault began (Unix ms), and how many faults hold it
    /// (a killed node can also be cut off).
    open: BTreeMap<String, (u64, usize)>,
    faulted: BTreeMap<String, Vec<(u64, u64)>>,
    leaders: BTreeMap<usize, String>,
    merges: Vec<(String, bool)>,
    /// Whether the Git server is down, and stopped (true) or killed.
    git_hang: Option<bool>,
    /// Nodes cut off from everything (the testbed cannot see them come up).
    isolated: std::collections::BTreeSet<String>,
    /// Nodes that died on their own and could not be restarted: not tried again.
    lost: std::collections::BTreeSet<String>,
    crashes: Vec<String>,
}

impl Runner<'_> {
    fn begin_fault(&mut self, node: &str) {
        self.open.entry(node.to_string()).or_insert_with(|| (unix_ms(), 0)).1 += 1;
    }

    fn end_fault(&mut self, node: &str) {
        let Some((from, holds)) = self.open.get_mut(node) else { return };
        *holds -= 1;
        if *holds == 0 {
            let from = *from;
            self.open.remove(node);
            self.faulted.entry(node.to_string()).or_default().push((from, unix_ms()));
        }
    }

    /// A running node no fault holds: the one to ask and to tell.
    fn reachable(&self, state: &State) -> Option<String> {
        state
            .nodes
            .iter()
            .find(|n| n.pid.is_some_and(alive) && !self.open.contains_key(&n.name))
            .map(|n| n.admin.clone())
    }

    fn node_name(&self, victim: &Victim) -> Option<String> {
        match victim {
            Victim::Node(n) => Some(n.clone()),
            Victim::Leader(k) => self.leaders.get(k).cloned(),
        }
    }

    fn restart(&mut self, name: &str) -> String {
        if self.isolated.contains(name) {
            // Cut off: started, but its readiness cannot be seen from here until it
            // rejoins; the final convergence check sees whether it came back.
            return match ops::launch(self.dir, name) {
                Ok(()) => {
                    self.end_fault(name);
                    format!("{name} started (cut off: not waited for)")
                }
                Err(e) => {
                    self.crashes.push(format!("{name} could not be started: {e:#}"));
                    format!("restart failed: {e:#}")
                }
            };
        }
        match ops::start(self.dir, name) {
            Ok(took) => {
                self.end_fault(name);
                format!("{name} serves again after {} ms", ms(took))
            }
            Err(e) => {
                self.crashes.push(format!("{name} did not come back: {e:#}"));
                format!("restart failed: {e:#}")
            }
        }
    }

    fn step(&mut self, action: &Action) -> anyhow::Result<String> {
        let state = State::load(self.dir)?;
        let running = |n: &str| state.node(n).ok().and_then(|n| n.pid).is_some_and(alive);
        Ok(match action {
            Action::Merge { invalid } => {
                let sha = ops::merge(self.dir, false, *invalid)?;
                self.merges.push((sha.clone(), !invalid));
                // Best effort and in the background: the leader polls Git every 2 s anyway.
                if let Some(admin) = self.reachable(&state) {
                    std::thread::spawn(move || ops::notify_at(&state, &admin));
                }
                sha[..12].to_string()
            }
            Action::Kill { victim } => {
                let name = match victim {
                    Victim::Node(n) => n.clone(),
                    Victim::Leader(k) => {
                        let Some(id) = self.reachable(&state).and_then(|admin| leader(&state, &admin)) else {
                            return Ok("skipped: no leader known".into());
                        };
                        let name = state.node(&id.to_string())?.name.clone();
                        self.leaders.insert(*k, name.clone());
                        name
                    }
                };
                if !running(&name) {
                    return Ok(format!("skipped: {name} is down already"));
                }
                self.begin_fault(&name);
                ops::kill(self.dir, &name)?;
                format!("{name} killed")
            }
            Action::Restart { victim } => match self.node_name(victim) {
                Some(name) if !running(&name) => self.restart(&name),
                Some(name) => format!("skipped: {name} runs"),
                None => "skipped: its kill was skipped".into(),
            },
            Action::Partition { a, b } => {
                net::partition(self.dir, a, b)?;
                format!("{a} and {b} cut off from each other")
            }
            Action::Heal { a, b } => {
                net::heal(self.dir, Some((a, b)))?;
                "healed".into()
            }
            Action::Isolate { node } => {
                self.begin_fault(node);
                self.isolated.insert(node.clone());
                net::partition(self.dir, node, "*")?;
                format!("{node} cut off from everything")
            }
            Action::Rejoin { node } => {
                net::heal(self.dir, Some((node, "*")))?;
                self.isolated.remove(node);
                self.end_fault(node);
                format!("{node} reachable again")
            }
            Action::Slow { a, b, rtt_ms } => {
                net::set_rtt(self.dir, a, b, *rtt_ms, None, None)?;
                format!("{a} <-> {b}: {rtt_ms} ms round trip")
            }
            Action::Unslow { a, b } => {
                let rtt = u64::try_from(state.topology.rtt(a, b).as_millis()).unwrap_or(u64::MAX);
                net::set_rtt(self.dir, a, b, rtt, None, None)?;
                format!("{a} <-> {b}: back to {rtt} ms")
            }
            Action::GitDown { hang } => {
                let pid = git_daemon(&state)?;
                if *hang {
                    process::pause(pid);
                } else {
                    process::crash(pid);
                }
                self.git_hang = Some(*hang);
                if *hang { "git daemon stopped (connections hang)" } else { "git daemon killed" }.into()
            }
            Action::GitUp => self.git_up(state)?,
        })
    }

    fn git_up(&mut self, mut state: State) -> anyhow::Result<String> {
        let pid = git_daemon(&state)?;
        Ok(match self.git_hang.take() {
            Some(true) => {
                process::resume(pid);
                "git daemon continued".into()
            }
            Some(false) => {
                let new = net::start_git_daemon(&state.dir)?;
                for h in state.helpers.iter_mut().filter(|(n, _)| n == net::GIT_DAEMON) {
                    h.1 = new;
                }
                state.save()?;
                "git daemon restarted".into()
            }
            None => "skipped: the git daemon runs".into(),
        })
    }

    /// Nodes that died without the schedule killing them: recorded, and restarted so the
    /// run goes on.
    fn crashed(&mut self, elapsed: Duration) -> anyhow::Result<()> {
        let state = State::load(self.dir)?;
        let dead: Vec<String> = state
            .nodes
            .iter()
            .filter(|n| n.pid.is_some_and(|p| !alive(p)) && !self.lost.contains(&n.name))
            .map(|n| n.name.clone())
            .collect();
        for name in dead {
            self.crashes.push(format!("{name} exited at {:.1} s without being killed", elapsed.as_secs_f64()));
            let mut state = State::load(self.dir)?;
            if let Some(n) = state.nodes.iter_mut().find(|n| n.name == name) {
                n.pid = None;
            }
            state.save()?;
            self.begin_fault(&name);
            let before = self.crashes.len();
            self.restart(&name);
            if self.crashes.len() > before {
                self.lost.insert(name);
            }
        }
        Ok(())
    }
}

/// The leader's id, as the node at `admin` knows it.
fn leader(state: &State, admin: &str) -> Option<u64> {
    let out = state.raftgate_at(admin, &["-o", "json", "--timeout", "3s", "status"]).ok()?;
    serde_json::from_slice::<Value>(&out.stdout).ok()?["leader"].as_u64()
}

fn git_daemon(state: &State) -> anyhow::Result<u32> {
    state
        .helpers
        .iter()
        .find(|(n, _)| n == net::GIT_DAEMON)
        .map(|(_, p)| *p)
        .ok_or_else(|| anyhow::anyhow!("this testbed has no git daemon (loopback mode)"))
}

/// Looks at every node's applied history, one node at a time, until `stop`.
fn watch_histories(state: State, stop: Arc<AtomicBool>, seen: Arc<Mutex<Looks>>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            for node in &state.nodes {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                if let Some(h) = history(&state, &node.admin) {
                    seen.lock().expect("not poisoned").entry(node.name.clone()).or_default().push((unix_ms(), h));
                }
                std::thread::sleep(Duration::from_millis(700));
            }
        }
    })
}

/// A node's applied history, oldest first.
fn history(state: &State, admin: &str) -> Option<History> {
    let out = state.raftgate_at(admin, &["--timeout", "2s", "-o", "json", "config", "history"]).ok()?;
    if !out.status.success() {
        return None;
    }
    let v: Vec<Value> = serde_json::from_slice(&out.stdout).ok()?;
    let mut h: History =
        v.iter().filter_map(|e| Some((e["logIndex"].as_u64()?, e["commit"].as_str()?.to_string()))).collect();
    h.sort();
    Some(h)
}

fn chaos(dir: &Path, topology: &Path, opts: &ChaosOptions) -> anyhow::Result<bool> {
    let state = State::load(dir)?;
    let netns = state.mode == Mode::Netns;
    let nodes: Vec<(String, String)> = state.nodes.iter().map(|n| (n.name.clone(), n.region.clone())).collect();
    let plan = schedule(opts.seed, &nodes, opts.duration, opts.calm, netns);
    let initial = history(&state, &state.live_admin()?)
        .and_then(|h| h.last().map(|(_, c)| c.clone()))
        .ok_or_else(|| anyhow::anyhow!("cannot read the config the cluster serves"))?;
    eprintln!(
        "testbed: chaos with seed {} for {} s: {} steps on {} nodes{}",
        opts.seed,
        opts.duration.as_secs(),
        plan.len(),
        nodes.len(),
        if netns { "" } else { " (loopback: kills, restarts and merges only)" }
    );

    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(BTreeMap::new()));
    let watcher = watch_histories(state.clone(), stop.clone(), seen.clone());
    let load = Load::start_on(&state, "chaos", &[], opts.rate)?;
    let mut runner = Runner {
        dir,
        open: BTreeMap::new(),
        faulted: BTreeMap::new(),
        leaders: BTreeMap::new(),
        merges: Vec::new(),
        git_hang: None,
        isolated: Default::default(),
        lost: Default::default(),
        crashes: Vec::new(),
    };
    let started = Instant::now();
    let mut done = Vec::new();
    for step in &plan {
        let due = Duration::from_millis(step.at_ms);
        while started.elapsed() < due {
            runner.crashed(started.elapsed())?;
            std::thread::sleep((due - started.elapsed().min(due)).min(Duration::from_millis(200)));
        }
        let at = started.elapsed();
        let outcome = runner.step(&step.action).unwrap_or_else(|e| format!("error: {e:#}"));
        let took = started.elapsed().saturating_sub(at);
        done.push(Done { at_ms: millis(at), took_ms: millis(took), action: step.action.clone(), outcome });
    }
    while started.elapsed() < opts.duration {
        runner.crashed(started.elapsed())?;
        std::thread::sleep(Duration::from_millis(200));
    }
    // Every fault the schedule ended is over; this is the last heal.
    let healed = Instant::now();
    let last_good = runner.merges.iter().rev().find(|(_, valid)| *valid).map_or(initial.clone(), |(c, _)| c.clone());
    let state = State::load(dir)?;
    let _ = ops::notify(&state);
    // Every node, not only those running: one that never came back fails here too.
    let all: Vec<String> = state.nodes.iter().map(|n| n.name.clone()).collect();
    let converged = scenario::wait_serving(&state, &last_good, &all, healed)
        .map(|t| t.values().map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)).max().unwrap_or(0))
        .map_err(|e| format!("{e:#}"));
    runner.crashed(started.elapsed())?;
    let load = load.stop()?;
    stop.store(true, Ordering::Relaxed);
    let _ = watcher.join();
    let mut histories = seen.lock().expect("not poisoned").clone();
    for node in &state.nodes {
        if let Some(h) = history(&state, &node.admin) {
            histories.entry(node.name.clone()).or_default().push((unix_ms(), h));
        }
    }
    let failed_by_second = load["nodes"]
        .as_object()
        .map(|nodes| {
            nodes
                .iter()
                .map(|(name, n)| {
                    let by: BTreeMap<u64, u64> =
                        serde_json::from_value(n["failed_by_second"].clone()).unwrap_or_default();
                    (name.clone(), by)
                })
                .collect()
        })
        .unwrap_or_default();
    // Faults still open (a restart that failed) last to the end.
    for node in runner.open.keys().cloned().collect::<Vec<_>>() {
        runner.end_fault(&node);
    }
    let obs = Observations {
        histories,
        initial,
        merges: runner.merges.clone(),
        faulted: runner.faulted.clone(),
        failed_by_second,
        crashes: runner.crashes.clone(),
        converged_ms: converged,
        converge_limit_ms: u64::try_from(opts.converge_limit.as_millis()).unwrap_or(u64::MAX),
        margin_ms: 1_000,
    };
    let checks = check::judge(&obs);
    let passed = checks.iter().all(|c| c.passed);
    let (md, js) = report(&state, topology, opts, &plan, &done, &obs, &checks, &load, passed);
    scenario::write_report(&opts.report_dir, &format!("chaos-{}", state.topology.name), &md, &js)?;
    Ok(passed)
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[allow(clippy::too_many_arguments)]
fn report(
    state: &State,
    topology: &Path,
    opts: &ChaosOptions,
    plan: &[Step],
    done: &[Done],
    obs: &Observations,
    checks: &[check::Check],
    load: &Value,
    passed: bool,
) -> (String, Value) {
    let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
    for d in done.iter().filter(|d| !d.outcome.starts_with("skipped") && !d.outcome.starts_with("error")) {
        let kind = match &d.action {
            Action::Merge { invalid: false } => "merges",
            Action::Merge { invalid: true } => "invalid merges",
            Action::Kill { victim: Victim::Leader(_) } => "leader kills during a rollout",
            Action::Kill { .. } => "node kills",
            Action::Partition { .. } => "region partitions",
            Action::Isolate { .. } => "nodes cut off",
            Action::Slow { .. } => "latency spikes",
            Action::GitDown { hang: true } => "Git server hangs",
            Action::GitDown { hang: false } => "Git server kills",
            _ => continue,
        };
        *kinds.entry(kind).or_default() += 1;
    }
    let mut md = format!(
        "# Chaos: {} s on `{}`, seed {}\n\n**Verdict: {}**\n\n",
        opts.duration.as_secs(),
        state.topology.name,
        opts.seed,
        if passed { "PASS" } else { "FAIL" }
    );
    md += &format!(
        "{} nodes ({}, {}), {} requests/s to each node. Replay: `testbed chaos --topology {} --duration {}s --seed {}`.\n\n",
        state.nodes.len(),
        if state.mode == Mode::Netns { "network namespaces" } else { "loopback" },
        if state.tls { "mTLS" } else { "plaintext" },
        opts.rate,
        topology.display(),
        opts.duration.as_secs(),
        opts.seed
    );
    md += "| what | count |\n|---|---|\n";
    for (k, n) in &kinds {
        md += &format!("| {k} | {n} |\n");
    }
    md += "\n| rule | verdict | details |\n|---|---|---|\n";
    for c in checks {
        md += &format!(
            "| {} | {} | {} |\n",
            c.rule,
            if c.passed { "ok" } else { "FAIL" },
            c.details.join("<br>").replace('|', "\\|")
        );
    }
    md += "\n| node | requests ok | failed | of which while faulted or within 1 s | faulted (s) |\n|---|---|---|---|---|\n";
    for n in &state.nodes {
        let l = &load["nodes"][&n.name];
        let windows = obs.faulted.get(&n.name).map_or(&[][..], Vec::as_slice);
        let faulted_s: u64 = windows.iter().map(|(a, b)| b.saturating_sub(*a)).sum::<u64>() / 1000;
        let (excused, failed) = check::excused(obs, &n.name);
        md += &format!("| {} | {} | {failed} | {excused} | {faulted_s} |\n", n.name, l["ok"].as_u64().unwrap_or(0));
    }
    md += "\n## Events\n\n| at (s) | took (ms) | step | outcome |\n|---|---|---|---|\n";
    for d in done {
        let step = serde_json::to_value(&d.action).map(|v| v.to_string()).unwrap_or_default();
        md += &format!(
            "| {:.1} | {} | `{}` | {} |\n",
            d.at_ms as f64 / 1000.0,
            d.took_ms,
            step,
            d.outcome.replace('|', "\\|").replace('\n', " ")
        );
    }
    let js = json!({
        "topology": state.topology.name, "seed": opts.seed, "duration_s": opts.duration.as_secs(),
        "rate_per_node": opts.rate, "passed": passed, "counts": kinds, "checks": checks,
        "schedule": plan, "events": done, "faulted_ms": obs.faulted, "merges": obs.merges,
        "converged_ms": obs.converged_ms.as_ref().ok(), "load": load, "crashes": obs.crashes,
    });
    (md, js)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes() -> Vec<(String, String)> {
        [("a-1", "a"), ("a-2", "a"), ("b-1", "b"), ("c-1", "c")]
            .iter()
            .map(|(n, r)| (n.to_string(), r.to_string()))
            .collect()
    }

    #[test]
    fn a_seed_draws_one_schedule() {
        let d = Duration::from_secs(600);
        let one = schedule(7, &nodes(), d, Duration::from_secs(10), true);
        let again = schedule(7, &nodes(), d, Duration::from_secs(10), true);
        let other = schedule(8, &nodes(), d, Duration::from_secs(10), true);
        let text = |s: &[Step]| serde_json::to_string(s).unwrap();
        assert_eq!(text(&one), text(&again));
        assert_ne!(text(&one), text(&other));
        // Every kind of fault shows up in ten minutes, and merges, some invalid.
        for kind in [
            "merge",
            "kill",
            "restart",
            "partition",
            "heal",
            "isolate",
            "rejoin",
            "slow",
            "unslow",
            "git-down",
            "git-up",
        ] {
            assert!(text(&one).contains(&format!("\"do\":\"{kind}\"")), "{kind} missing");
        }
        assert!(one.iter().any(|s| s.action == Action::Merge { invalid: true }));
        assert!(one.iter().any(|s| matches!(&s.action, Action::Kill { victim: Victim::Leader(_) })));
    }

    #[test]
    fn faults_end_by_the_end_and_never_take_more_than_two_nodes() {
        for seed in 0..50 {
            let d = Duration::from_secs(300);
            let steps = schedule(seed, &nodes(), d, Duration::from_secs(10), true);
            let mut down = BTreeMap::new();
            let mut git = false;
            for s in &steps {
                assert!(s.at_ms <= 300_000);
                match &s.action {
                    Action::Kill { victim } => assert!(down.insert(format!("{victim:?}"), ()).is_none()),
                    Action::Isolate { node } => {
                        assert!(down.insert(format!("{:?}", Victim::Node(node.clone())), ()).is_none())
                    }
                    Action::Restart { victim } => assert!(down.remove(&format!("{victim:?}")).is_some()),
                    Action::Rejoin { node } => {
                        assert!(down.remove(&format!("{:?}", Victim::Node(node.clone()))).is_some())
                    }
                    Action::GitDown { .. } => {
                        assert!(!git);
                        git = true;
                    }
                    Action::GitUp => git = false,
                    Action::Merge { .. } => {}
                    Action::Partition { a, b } | Action::Slow { a, b, .. } => assert_ne!(a, b),
                    _ => {}
                }
                assert!(down.len() <= MAX_DOWN, "seed {seed}: {down:?} down at {}", s.at_ms);
                if s.at_ms > 291_000 {
                    // The calm tail: only the ends of faults.
                    assert!(!matches!(
                        s.action,
                        Action::Kill { .. } | Action::Isolate { .. } | Action::Partition { .. }
                    ));
                }
            }
            assert!(down.is_empty() && !git, "seed {seed}: faults left on: {down:?}");
        }
    }

    #[test]
    fn loopback_schedules_only_kills_restarts_and_merges() {
        let steps = schedule(3, &nodes(), Duration::from_secs(600), Duration::from_secs(10), false);
        assert!(steps
            .iter()
            .all(|s| matches!(s.action, Action::Merge { .. } | Action::Kill { .. } | Action::Restart { .. })));
        assert!(steps.iter().any(|s| matches!(s.action, Action::Kill { .. })));
    }
}
