//! Where testbed processes run and how they reach each other.
//!
//! Loopback mode: every process on 127.0.0.1, no latency, no partitions. Netns mode: each
//! node in its own network namespace (`rgt-n<id>`, address 10.77.<region>.<id>), the
//! control namespace `rgt-ctl` (10.77.0.1: the Git server, the CLI, the load generator),
//! all joined by TUN devices to the WAN emulator, which delays, drops and partitions.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::process::{bin, spawn_detached, stop};
use crate::topology::Topology;
use crate::wanem::{Endpoint, WanConfig};

/// Where a testbed's processes run (kept in its state).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Mode {
    Loopback,
    Netns,
}

/// Set in processes the testbed started inside the control namespace.
const IN_CONTROL: &str = "TESTBED_IN_CONTROL";
const CONTROL_NS: &str = "rgt-ctl";
const CONTROL_IP: &str = "10.77.0.1";

#[derive(Debug, Clone)]
pub(crate) struct Net {
    mode: Mode,
}

/// A node's address in netns mode: 10.77.<region index + 1>.<id>.
pub(crate) fn node_ip(region: usize, id: u64) -> String {
    format!("10.77.{}.{}", region + 1, id)
}

fn node_ns(id: u64) -> String {
    format!("rgt-n{id}")
}

impl Net {
    pub(crate) fn new(mode: Mode) -> Net {
        Net { mode }
    }

    pub(crate) fn is_netns(&self) -> bool {
        self.mode == Mode::Netns
    }

    /// Whether this process already runs inside the control namespace.
    pub(crate) fn inside_control(&self) -> bool {
        std::env::var_os(IN_CONTROL).is_some()
    }

    /// A command for `program` inside the namespace of the node with id `node`, or the
    /// control namespace when `node` is `None` (loopback mode: a plain command).
    pub(crate) fn command(&self, node: Option<u64>, program: &Path) -> Command {
        match self.mode {
            Mode::Loopback => Command::new(program),
            Mode::Netns => {
                let ns = node.map_or_else(|| CONTROL_NS.to_string(), node_ns);
                let mut c = Command::new("ip");
                c.args(["netns", "exec", &ns]).arg(program).env(IN_CONTROL, "1");
                c
            }
        }
    }
}

/// Why netns mode cannot run here, if it cannot.
pub(crate) fn netns_unavailable() -> Option<String> {
    if !nix::unistd::Uid::effective().is_root() {
        return Some("not running as root".into());
    }
    if !Path::new("/dev/net/tun").exists() {
        return Some("/dev/net/tun is missing".into());
    }
    None
}

/// Runs `ip <args>`; fails with its stderr.
fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip").args(args).output().map_err(|e| anyhow::anyhow!("running ip (iproute2): {e}"))?;
    if !out.status.success() {
        anyhow::bail!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// A namespace with `lo` up and a persistent TUN `wan0` holding `addr`/16 (so every
/// testbed address is on-link through the emulator, and nothing else is reachable).
fn create_ns(name: &str, addr: &str) -> anyhow::Result<()> {
    ip(&["netns", "add", name])?;
    ip(&["-n", name, "link", "set", "lo", "up"])?;
    ip(&["-n", name, "tuntap", "add", "dev", "wan0", "mode", "tun"])?;
    // No IPv6 link-local address: no router solicitations or MLD noise through the emulator.
    ip(&["-n", name, "link", "set", "wan0", "addrgenmode", "none"])?;
    ip(&["-n", name, "addr", "add", &format!("{addr}/16"), "dev", "wan0"])?;
    ip(&["-n", name, "link", "set", "wan0", "up"])?;
    Ok(())
}

fn endpoint(name: &str, region: &str, addr: &str) -> anyhow::Result<Endpoint> {
    Ok(Endpoint {
        name: name.to_string(),
        region: region.to_string(),
        ip: addr.parse()?,
        netns: PathBuf::from("/run/netns").join(name),
    })
}

/// What `setup` started.
#[derive(Debug)]
pub(crate) struct Control {
    /// Helper processes `(name, pid)`: the WAN emulator and the Git server.
    pub(crate) helpers: Vec<(String, u32)>,
    /// The address nodes fetch the config repository from.
    pub(crate) git_url: String,
}

/// Creates the control namespace, starts the WAN emulator (emulating `topology`) and the
/// Git server (serving `dir`/repo); their logs go into `dir`.
pub(crate) fn setup(dir: &Path, topology: &Topology) -> anyhow::Result<Control> {
    let mut helpers = Vec::new();
    teardown();
    // Guard: while the testbed exists, 10.77/16 from the root namespace fails at once
    // instead of following the default route off the machine.
    ip(&["route", "replace", "unreachable", "10.77.0.0/16", "metric", "4095"])?;
    create_ns(CONTROL_NS, CONTROL_IP)?;
    let mut wan = WanConfig {
        generation: 0,
        endpoints: vec![endpoint(CONTROL_NS, "control", CONTROL_IP)?],
        rtt: Vec::new(),
        drop: Vec::new(),
        jitter: Vec::new(),
        loss: Vec::new(),
    };
    for l in &topology.links {
        let [a, b] = &l.between;
        if !l.jitter.is_zero() {
            wan.jitter.push((a.clone(), b.clone(), u64::try_from(l.jitter.as_millis()).unwrap_or(u64::MAX)));
        }
        if l.loss_percent > 0.0 {
            wan.loss.push((a.clone(), b.clone(), l.loss_percent));
        }
    }
    for a in &topology.regions {
        for b in &topology.regions {
            let ms = u64::try_from(topology.rtt(&a.name, &b.name).as_millis()).unwrap_or(u64::MAX);
            if a.name <= b.name {
                wan.rtt.push((a.name.clone(), b.name.clone(), ms));
            }
        }
    }
    wan.publish(dir, false)?;
    let log = std::fs::File::create(dir.join("wan.log"))?;
    let mut emu = Command::new(bin("testbed"));
    emu.arg("--state").arg(dir).arg("wanem");
    helpers.push(("wanem".into(), spawn_detached(&mut emu, log)?));
    WanConfig::wait_applied(dir, wan.generation)?;

    // The Git server, in the control namespace: nodes fetch across the emulated WAN.
    helpers.push((GIT_DAEMON.into(), start_git_daemon(dir)?));
    Ok(Control { helpers, git_url: format!("git://{CONTROL_IP}/repo") })
}

/// The name of the Git server among a testbed's helpers.
pub(crate) const GIT_DAEMON: &str = "git-daemon";

/// Starts `git daemon` in the control namespace, serving the repositories under `dir`
/// (`git://10.77.0.1/repo`); its log is appended to `dir`/git-daemon.log. Returns its pid.
pub(crate) fn start_git_daemon(dir: &Path) -> anyhow::Result<u32> {
    let exec_path = Command::new("git").arg("--exec-path").output()?.stdout;
    let daemon = PathBuf::from(String::from_utf8_lossy(&exec_path).trim()).join("git-daemon");
    let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("git-daemon.log"))?;
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", CONTROL_NS])
        .arg(daemon)
        .args(["--reuseaddr", "--export-all", &format!("--listen={CONTROL_IP}"), "--port=9418"])
        .arg(format!("--base-path={}", dir.display()))
        .arg(dir);
    spawn_detached(&mut cmd, log)
}

/// Gives a node (`id`, `name` in `region`, at `ip`) its namespace and a place in the
/// emulator (once).
pub(crate) fn ensure_node(dir: &Path, id: u64, name: &str, region: &str, ip: &str) -> anyhow::Result<()> {
    let ns = node_ns(id);
    let mut wan = WanConfig::load(dir)?;
    if wan.endpoints.iter().any(|e| e.name == name) {
        return Ok(());
    }
    create_ns(&ns, ip)?;
    let mut e = endpoint(&ns, region, ip)?;
    e.name = name.to_string();
    wan.endpoints.push(e);
    wan.publish(dir, true)
}

/// Removes every namespace the testbed created, after stopping what runs in them, and
/// the guard route.
pub(crate) fn teardown() {
    let _ = Command::new("ip").args(["route", "del", "unreachable", "10.77.0.0/16", "metric", "4095"]).output();
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else { return };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(name) = line.split_whitespace().next() else { continue };
        if !name.starts_with("rgt-") {
            continue;
        }
        if let Ok(pids) = Command::new("ip").args(["netns", "pids", name]).output() {
            for pid in String::from_utf8_lossy(&pids.stdout).split_whitespace().filter_map(|p| p.parse().ok()) {
                stop(pid, Duration::from_secs(1));
            }
        }
        let _ = ip(&["netns", "del", name]);
    }
}

/// Partitions: drop everything between `a` and `b` (regions or node names), both ways.
pub(crate) fn partition(dir: &Path, a: &str, b: &str) -> anyhow::Result<()> {
    let mut wan = WanConfig::load(dir)?;
    wan.drop.push((a.to_string(), b.to_string()));
    wan.drop.push((b.to_string(), a.to_string()));
    wan.publish(dir, true)
}

/// Removes every partition (or only those between `a` and `b`).
pub(crate) fn heal(dir: &Path, pair: Option<(&str, &str)>) -> anyhow::Result<()> {
    let mut wan = WanConfig::load(dir)?;
    match pair {
        None => wan.drop.clear(),
        Some((a, b)) => wan.drop.retain(|(x, y)| !((x == a && y == b) || (x == b && y == a))),
    }
    wan.publish(dir, true)
}

/// Sets the round trip (and optionally jitter and loss) between two regions or nodes.
pub(crate) fn set_rtt(
    dir: &Path,
    a: &str,
    b: &str,
    ms: u64,
    jitter_ms: Option<u64>,
    loss: Option<f64>,
) -> anyhow::Result<()> {
    let mut wan = WanConfig::load(dir)?;
    let pair = |x: &String, y: &String| (x == a && y == b) || (x == b && y == a);
    wan.rtt.retain(|(x, y, _)| !pair(x, y));
    wan.rtt.push((a.to_string(), b.to_string(), ms));
    if let Some(j) = jitter_ms {
        wan.jitter.retain(|(x, y, _)| !pair(x, y));
        wan.jitter.push((a.to_string(), b.to_string(), j));
    }
    if let Some(l) = loss {
        wan.loss.retain(|(x, y, _)| !pair(x, y));
        wan.loss.push((a.to_string(), b.to_string(), l));
    }
    wan.publish(dir, true)
}
