//! The testbed commands: up, down, status, scale, kill, start, merge.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::certs;
use crate::cluster::{NodeState, State, ADMIN_TOKEN_FILE, WEBHOOK_SECRET};
use crate::net::{self, Mode};
use crate::process::{self, alive};
use crate::repo::Repo;
use crate::topology::Topology;
use crate::{http, upstreams};

/// How long a node may take to serve its first config.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy)]
pub(crate) struct UpOptions {
    /// Plain processes on loopback even where namespaces would work.
    pub(crate) loopback: bool,
    /// Less output (tests, scenarios).
    pub(crate) quiet: bool,
    /// Loopback mode: shift every node port by this much.
    pub(crate) port_offset: u16,
    /// mTLS between the nodes and on their admin listeners (`--plaintext` turns it off).
    pub(crate) tls: bool,
    /// Log entries between Raft snapshots on every node (`None`: raftgated's default).
    pub(crate) snapshot_every: Option<u64>,
}

/// Brings a topology up: the certificates (with TLS), the Git repository, demo upstreams,
/// and every node (the first bootstraps, the rest join). Idempotent: a testbed already up
/// is taken down first.
pub(crate) fn up(topology: &Path, dir: &Path, opts: UpOptions) -> anyhow::Result<State> {
    let topo = Topology::load(topology)?;
    if State::path(dir).exists() || dir.join("nodes").exists() {
        down(dir, true)?;
    }
    let mode = match (opts.loopback, net::netns_unavailable()) {
        (true, _) => Mode::Loopback,
        (false, Some(why)) => {
            eprintln!("testbed: {why}: running every node on loopback, with no WAN latency and no partitions");
            Mode::Loopback
        }
        (false, None) => Mode::Netns,
    };
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let dir = dir.canonicalize()?;
    write_secret(&dir.join("webhook-secret"))?;
    // The CA and the operator certificate now; each node's certificate when it launches
    // (`scale` adds nodes later).
    if opts.tls {
        certs::create(&certs::dir(&dir))?;
        // A token for the dashboard: a browser has no operator certificate.
        write_token(&dir.join(ADMIN_TOKEN_FILE))?;
    }

    let compiled = upstreams::compile(&topo.config)?;
    let first_upstream =
        compiled.upstreams.first().map(|u| u.name.clone()).context("the topology's config defines no upstream")?;
    let repo = Repo::create(dir.join("repo"), &topo.config, &first_upstream)?;
    let max_rtt = topo.regions.iter().flat_map(|a| topo.regions.iter().map(|b| topo.rtt(&a.name, &b.name))).max();
    let mut state = State {
        dir: dir.clone(),
        topology: topo.clone(),
        mode,
        nodes: Vec::new(),
        next_id: 1,
        helpers: Vec::new(),
        git_url: repo.dir.display().to_string(),
        // Beyond a LAN's round trips, the WAN timings (see raft::config) keep elections calm.
        port_offset: opts.port_offset,
        raft_profile: if max_rtt.unwrap_or_default() > Duration::from_millis(10) { "wan" } else { "lan" }.into(),
        tls: opts.tls,
        raft_snapshot_every: opts.snapshot_every,
    };
    if mode == Mode::Netns {
        let control = net::setup(&state.dir, &state.topology)?;
        state.helpers.extend(control.helpers);
        state.git_url = control.git_url;
    } else {
        let log = std::fs::File::create(dir.join("upstreams.log"))?;
        let mut cmd = std::process::Command::new(process::bin("testbed"));
        cmd.arg("upstreams").arg(&topo.config);
        state.helpers.push(("upstreams".into(), process::spawn_detached(&mut cmd, log)?));
    }
    state.save()?;

    let plan: Vec<String> = topo.regions.iter().flat_map(|r| std::iter::repeat_n(r.name.clone(), r.nodes)).collect();
    let mut first_admin = None;
    for region in plan {
        let mut node = state.plan_node(&region)?;
        state.launch(&mut node, first_admin.is_none(), first_admin.as_deref())?;
        let admin = node.admin.clone();
        state.nodes.push(node);
        state.save()?;
        if first_admin.is_none() {
            state.write_context()?;
            state.wait_ready(&state.nodes[0], READY_TIMEOUT)?;
            first_admin = Some(admin);
        }
    }
    for n in &state.nodes {
        state.wait_ready(n, READY_TIMEOUT)?;
    }
    wait_voters(&state, state.nodes.len(), READY_TIMEOUT)?;
    if !opts.quiet {
        print_summary(&state);
    }
    Ok(state)
}

/// Runs `f` on the testbed in `dir`, bringing `topology` up first when none is, and taking
/// what it brought up down afterwards (unless `keep`).
pub(crate) fn on_testbed<T>(
    dir: &Path,
    topology: &Path,
    opts: UpOptions,
    keep: bool,
    f: impl FnOnce() -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let started_here = State::load(dir).is_err();
    if started_here {
        up(topology, dir, opts)?;
    }
    let result = f();
    if started_here && !keep {
        down(dir, true)?;
    }
    result
}

fn write_secret(path: &Path) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new().create(true).truncate(true).write(true).mode(0o600).open(path)?;
    f.write_all(WEBHOOK_SECRET.as_bytes())?;
    Ok(())
}

/// A random admin token (32 hex digits from the kernel's generator), readable by its owner.
fn write_token(path: &Path) -> anyhow::Result<()> {
    use std::io::{Read, Write};
    use std::os::unix::fs::OpenOptionsExt;
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    let token = hex::encode(bytes);
    let mut f = std::fs::OpenOptions::new().create(true).truncate(true).write(true).mode(0o600).open(path)?;
    f.write_all(token.as_bytes())?;
    Ok(())
}

/// Waits until the cluster has `voters` voters.
fn wait_voters(state: &State, voters: usize, limit: Duration) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        let out = state.raftgate(&["-o", "json", "members", "list"])?;
        if out.status.success() {
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
            let n = v["members"].as_array().map_or(0, |m| m.iter().filter(|m| m["role"] == "voter").count());
            if n == voters {
                return Ok(());
            }
        }
        if started.elapsed() > limit {
            bail!(
                "the cluster did not reach {voters} voters in {}s: {}",
                limit.as_secs(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn print_summary(state: &State) {
    let mode = match state.mode {
        Mode::Loopback => "loopback (no latency)".to_string(),
        Mode::Netns => "network namespaces behind the WAN emulator".to_string(),
    };
    let transport = if state.tls { "mTLS" } else { "plaintext" };
    println!(
        "\ntestbed `{}` is up: {} nodes, {mode}, {transport}, state in {}\n",
        state.topology.name,
        state.nodes.len(),
        state.dir.display()
    );
    println!("{:<12} {:<4} {:<22} {:<22}", "NODE", "ID", "HTTP", "ADMIN");
    for n in &state.nodes {
        println!("{:<12} {:<4} {:<22} {:<22}", n.name, n.id, n.http, n.admin);
    }
    // The context names node 1's admin address and, with TLS, the CA and the operator
    // certificate, so the CLI needs nothing else.
    match state.tls_dir() {
        Some(certs) => {
            println!("\nThe CLI, over mTLS with the operator certificate (certificates in {}):\n", certs.display())
        }
        None => println!("\nThe CLI:\n"),
    }
    println!("  export RAFTGATE_CONFIG={}", state.context_file().display());
    let raftgate = process::bin("raftgate");
    if state.mode == Mode::Netns {
        // Node addresses exist only in the control namespace.
        println!("  ip netns exec rgt-ctl {} status", raftgate.display());
    } else {
        println!("  {} status", raftgate.display());
    }
}

/// Stops everything the testbed started and removes its state. Idempotent.
pub(crate) fn down(dir: &Path, quiet: bool) -> anyhow::Result<()> {
    let state = State::load(dir).ok();
    let existed = dir.exists();
    let mut stopped = 0;
    if let Some(s) = &state {
        for n in &s.nodes {
            for pid in [n.pid, n.upstreams_pid].into_iter().flatten() {
                if alive(pid) {
                    process::stop(pid, Duration::from_secs(3));
                    stopped += 1;
                }
            }
        }
        for (_, pid) in &s.helpers {
            if alive(*pid) {
                process::stop(*pid, Duration::from_secs(1));
                stopped += 1;
            }
        }
    }
    // Anything else started from this state directory (a lost or damaged state file).
    stopped += sweep(dir);
    // Namespaces are machine-wide: only a netns testbed removes them (a loopback testbed
    // coming down must not touch another testbed's namespaces).
    if state.as_ref().is_some_and(|s| s.mode == Mode::Netns) {
        net::teardown();
    }
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("cannot remove {}", dir.display()))?;
    }
    if !quiet {
        if existed {
            println!("testbed down: {stopped} processes stopped, {} removed", dir.display());
        } else {
            println!("testbed down: nothing was up in {}", dir.display());
        }
    }
    Ok(())
}

/// Stops every process whose command line names `dir`, except this one and its
/// ancestors (a `timeout` or `sudo` wrapping `testbed --state DIR ...` names it too).
fn sweep(dir: &Path) -> usize {
    let needle = dir.display().to_string();
    let spared = ancestors();
    let mut n = 0;
    let Ok(entries) = std::fs::read_dir("/proc") else { return 0 };
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        if spared.contains(&pid) {
            continue;
        }
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let text = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if text.contains(&needle) && alive(pid) {
            process::stop(pid, Duration::from_secs(1));
            n += 1;
        }
    }
    n
}

/// This process and every process above it, up to init.
fn ancestors() -> Vec<u32> {
    let mut chain = vec![std::process::id()];
    while let Some(parent) = chain.last().and_then(|pid| parent_of(*pid)).filter(|p| *p > 1 && !chain.contains(p)) {
        chain.push(parent);
    }
    chain
}

fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the command name in parentheses: state, then the parent's pid.
    stat.rsplit_once(") ")?.1.split_whitespace().nth(1)?.parse().ok()
}

/// `testbed status`: the processes, then `raftgate status`.
pub(crate) fn status(dir: &Path) -> anyhow::Result<bool> {
    let state = State::load(dir)?;
    println!("{:<12} {:<4} {:<10} {:<8} {:<22} {:<22}", "NODE", "ID", "REGION", "PROCESS", "HTTP", "ADMIN");
    for n in &state.nodes {
        let p = match n.pid {
            Some(p) if alive(p) => format!("{p}"),
            _ => "stopped".into(),
        };
        println!("{:<12} {:<4} {:<10} {:<8} {:<22} {:<22}", n.name, n.id, n.region, p, n.http, n.admin);
    }
    println!();
    let out = state.raftgate(&["status"])?;
    print!("{}", String::from_utf8_lossy(&out.stdout));
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    Ok(out.status.success())
}

/// Kills a node (SIGKILL, as a crash).
pub(crate) fn kill(dir: &Path, name: &str) -> anyhow::Result<()> {
    let mut state = State::load(dir)?;
    let id = state.node(name)?.id;
    let node = state.nodes.iter_mut().find(|n| n.id == id).expect("found above");
    match node.pid.take() {
        Some(p) if alive(p) => process::crash(p),
        _ => bail!("{} is not running", node.name),
    }
    state.save()
}

/// Restarts a stopped node from its data directory.
pub(crate) fn start(dir: &Path, name: &str) -> anyhow::Result<Duration> {
    let mut state = State::load(dir)?;
    let id = state.node(name)?.id;
    let mut node = state.nodes.iter().find(|n| n.id == id).cloned().expect("found above");
    if node.pid.is_some_and(alive) {
        bail!("{} is running already", node.name);
    }
    let started = Instant::now();
    state.launch(&mut node, false, None)?;
    // Recorded before waiting: a node that runs but cannot be reached (cut off) is still
    // known, so it is neither lost nor started twice.
    *state.nodes.iter_mut().find(|n| n.id == id).expect("found above") = node.clone();
    state.save()?;
    state.wait_ready(&node, READY_TIMEOUT)?;
    Ok(started.elapsed())
}

/// Restarts a stopped node from its data directory without waiting for it (it may be cut
/// off from the testbed).
pub(crate) fn launch(dir: &Path, name: &str) -> anyhow::Result<()> {
    let mut state = State::load(dir)?;
    let id = state.node(name)?.id;
    let mut node = state.nodes.iter().find(|n| n.id == id).cloned().expect("found above");
    if node.pid.is_some_and(alive) {
        bail!("{} is running already", node.name);
    }
    state.launch(&mut node, false, None)?;
    *state.nodes.iter_mut().find(|n| n.id == id).expect("found above") = node;
    state.save()
}

/// Grows or shrinks a region to `count` nodes: new nodes join (learner, then voter);
/// removed nodes leave the membership before they stop.
pub(crate) fn scale(dir: &Path, region: &str, count: usize) -> anyhow::Result<Vec<(String, Duration)>> {
    let mut state = State::load(dir)?;
    if state.topology.region_index(region).is_none() {
        state.plan_node(region)?; // names the known regions in the error
    }
    let current: Vec<u64> = state.nodes.iter().filter(|n| n.region == region).map(|n| n.id).collect();
    let mut timings = Vec::new();
    if count > current.len() {
        for _ in current.len()..count {
            let via = state.live_admin()?;
            let mut node = state.plan_node(region)?;
            let started = Instant::now();
            state.launch(&mut node, false, Some(&via))?;
            let name = node.name.clone();
            state.nodes.push(node);
            state.save()?;
            state.wait_ready(state.nodes.last().expect("just pushed"), READY_TIMEOUT)?;
            timings.push((name, started.elapsed()));
        }
        let voters = state.nodes.len();
        wait_voters(&state, voters, READY_TIMEOUT)?;
    } else {
        for id in current.iter().rev().take(current.len() - count) {
            let out = state.raftgate(&["members", "remove", &id.to_string()])?;
            if !out.status.success() {
                bail!("removing node {id}: {}", String::from_utf8_lossy(&out.stderr).trim());
            }
            let node = state.nodes.iter().find(|n| n.id == *id).cloned().expect("listed above");
            for pid in [node.pid, node.upstreams_pid].into_iter().flatten() {
                process::stop(pid, Duration::from_secs(3));
            }
            let _ = std::fs::remove_dir_all(&node.data);
            state.nodes.retain(|n| n.id != *id);
            state.save()?;
            timings.push((node.name, Duration::ZERO));
        }
    }
    Ok(timings)
}

/// Merges a change into the testbed repository (as a pull request would); with
/// `webhook`, tells a node at once. Returns the merge commit.
pub(crate) fn merge(dir: &Path, webhook: bool, invalid: bool) -> anyhow::Result<String> {
    let state = State::load(dir)?;
    let repo = state.repo();
    let sha = if invalid {
        repo.merge_invalid()?
    } else {
        let upstream = upstreams::compile(&state.topology.config)?
            .upstreams
            .first()
            .map(|u| u.name.clone())
            .context("no upstream")?;
        repo.merge_change(&upstream)?.0
    };
    if webhook {
        notify(&state)?;
    }
    Ok(sha)
}

/// Posts a signed GitHub push webhook to a running node.
pub(crate) fn notify(state: &State) -> anyhow::Result<()> {
    notify_at(state, &state.live_admin()?)
}

/// Posts a signed GitHub push webhook to the node with admin address `admin`.
pub(crate) fn notify_at(state: &State, admin: &str) -> anyhow::Result<()> {
    use hmac::{Hmac, Mac};
    let body = br#"{"ref":"refs/heads/main"}"#;
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(WEBHOOK_SECRET.as_bytes()).expect("any key length");
    mac.update(body);
    let sig = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    let headers = [("x-github-event".to_string(), "push".to_string()), ("x-hub-signature-256".to_string(), sig)];
    let url = state.admin_url(admin, "/webhook");
    match http::request(&state.net(), state.tls_dir().as_deref(), "POST", &url, &headers, body) {
        Ok((202, _)) => Ok(()),
        Ok((s, text)) => bail!("webhook to {admin}: {s} {text}"),
        Err(e) => bail!("webhook to {admin}: {e:#}"),
    }
}

/// The node names that run.
pub(crate) fn running(state: &State) -> Vec<&NodeState> {
    state.nodes.iter().filter(|n| n.pid.is_some_and(alive)).collect()
}
