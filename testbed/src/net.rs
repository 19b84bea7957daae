//! Where testbed processes run and how they reach each other.
//!
//! Loopback mode: every process on 127.0.0.1, no latency, no partitions. Netns mode: each
//! node in its own network namespace (`rgt-n<id>`, address 10.77.<region>.<id>), the
//! control namespace `rgt-ctl` (10.77.0.1: the Git server, the CLI, the load generator),
//! all joined by TUN devices to the WAN emulator, which delays, drops and partitions.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::cluster::{Mode, NodeState};

/// Set in processes the testbed started inside the control namespace.
const IN_CONTROL: &str = "TESTBED_IN_CONTROL";
pub const CONTROL_NS: &str = "rgt-ctl";
pub const CONTROL_IP: &str = "10.77.0.1";

#[derive(Debug, Clone)]
pub struct Net {
    mode: Mode,
}

/// A node's address in netns mode: 10.77.<region index + 1>.<id>.
pub fn node_ip(region: usize, id: u64) -> String {
    format!("10.77.{}.{}", region + 1, id)
}

pub fn node_ns(id: u64) -> String {
    format!("rgt-n{id}")
}

impl Net {
    pub fn new(mode: Mode) -> Net {
        Net { mode }
    }

    pub fn is_netns(&self) -> bool {
        self.mode == Mode::Netns
    }

    /// Whether this process already runs inside the control namespace.
    pub fn inside_control(&self) -> bool {
        std::env::var_os(IN_CONTROL).is_some()
    }

    /// A command for `program` inside `node`'s namespace, or the control namespace when
    /// `node` is `None` (loopback mode: a plain command).
    pub fn command(&self, node: Option<&NodeState>, program: &Path) -> Command {
        match self.mode {
            Mode::Loopback => Command::new(program),
            Mode::Netns => {
                let ns = node.map_or_else(|| CONTROL_NS.to_string(), |n| node_ns(n.id));
                let mut c = Command::new("ip");
                c.args(["netns", "exec", &ns]).arg(program).env(IN_CONTROL, "1");
                c
            }
        }
    }
}

/// Why netns mode cannot run here, if it cannot.
pub fn netns_unavailable() -> Option<String> {
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

fn endpoint(name: &str, region: &str, addr: &str) -> anyhow::Result<crate::wanem::Endpoint> {
    Ok(crate::wanem::Endpoint {
        name: name.to_string(),
        region: region.to_string(),
        ip: addr.parse()?,
        netns: PathBuf::from("/run/netns").join(name),
    })
}

/// Creates the control namespace, starts the WAN emulator and the Git server.
pub fn setup(state: &mut crate::cluster::State) -> anyhow::Result<()> {
    use crate::cluster::{bin, spawn_detached};
    teardown();
    // Guard: while the testbed exists, 10.77/16 from the root namespace fails at once
    // instead of following the default route off the machine.
    ip(&["route", "replace", "unreachable", "10.77.0.0/16", "metric", "4095"])?;
    create_ns(CONTROL_NS, CONTROL_IP)?;
    let mut wan = crate::wanem::WanConfig {
        generation: 0,
        endpoints: vec![endpoint(CONTROL_NS, "control", CONTROL_IP)?],
        rtt: Vec::new(),
        drop: Vec::new(),
        jitter: Vec::new(),
        loss: Vec::new(),
    };
    for l in &state.topology.links {
        let [a, b] = &l.between;
        if !l.jitter.is_zero() {
            wan.jitter.push((a.clone(), b.clone(), u64::try_from(l.jitter.as_millis()).unwrap_or(u64::MAX)));
        }
        if l.loss_percent > 0.0 {
            wan.loss.push((a.clone(), b.clone(), l.loss_percent));
        }
    }
    let topo = &state.topology;
    for a in &topo.regions {
        for b in &topo.regions {
            let ms = u64::try_from(topo.rtt(&a.name, &b.name).as_millis()).unwrap_or(u64::MAX);
            if a.name <= b.name {
                wan.rtt.push((a.name.clone(), b.name.clone(), ms));
            }
        }
    }
    wan.publish(&state.dir, false)?;
    let log = std::fs::File::create(state.dir.join("wan.log"))?;
    let mut emu = Command::new(bin("testbed"));
    emu.arg("--state").arg(&state.dir).arg("wanem");
    state.helpers.push(("wanem".into(), spawn_detached(&mut emu, log)?));
    crate::wanem::WanConfig::wait_applied(&state.dir, wan.generation)?;

    // The Git server, in the control namespace: nodes fetch across the emulated WAN.
    let exec_path = Command::new("git").arg("--exec-path").output()?.stdout;
    let daemon = PathBuf::from(String::from_utf8_lossy(&exec_path).trim()).join("git-daemon");
    let log = std::fs::File::create(state.dir.join("git-daemon.log"))?;
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", CONTROL_NS])
        .arg(daemon)
        .args(["--reuseaddr", "--export-all", &format!("--listen={CONTROL_IP}"), "--port=9418"])
        .arg(format!("--base-path={}", state.dir.display()))
        .arg(&state.dir);
    state.helpers.push(("git-daemon".into(), spawn_detached(&mut cmd, log)?));
    state.git_url = format!("git://{CONTROL_IP}/repo");
    Ok(())
}

/// Gives a node its namespace and a place in the emulator (once).
pub fn ensure_node(dir: &Path, node: &NodeState) -> anyhow::Result<()> {
    let ns = node_ns(node.id);
    let mut wan = crate::wanem::WanConfig::load(dir)?;
    if wan.endpoints.iter().any(|e| e.name == node.name) {
        return Ok(());
    }
    create_ns(&ns, &node.ip)?;
    let mut e = endpoint(&ns, &node.region, &node.ip)?;
    e.name = node.name.clone();
    wan.endpoints.push(e);
    wan.publish(dir, true)
}

/// Removes every namespace the testbed created, after stopping what runs in them, and
/// the guard route.
pub fn teardown() {
    let _ = Command::new("ip").args(["route", "del", "unreachable", "10.77.0.0/16", "metric", "4095"]).output();
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else { return };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(name) = line.split_whitespace().next() else { continue };
        if !name.starts_with("rgt-") {
            continue;
        }
        if let Ok(pids) = Command::new("ip").args(["netns", "pids", name]).output() {
            for pid in String::from_utf8_lossy(&pids.stdout).split_whitespace().filter_map(|p| p.parse().ok()) {
                crate::cluster::stop(pid, std::time::Duration::from_secs(1));
            }
        }
        let _ = ip(&["netns", "del", name]);
    }
}

/// Partitions: drop everything between `a` and `b` (regions or node names), both ways.
pub fn partition(dir: &Path, a: &str, b: &str) -> anyhow::Result<()> {
    let mut wan = crate::wanem::WanConfig::load(dir)?;
    wan.drop.push((a.to_string(), b.to_string()));
    wan.drop.push((b.to_string(), a.to_string()));
    wan.publish(dir, true)
}

/// Removes every partition (or only those between `a` and `b`).
pub fn heal(dir: &Path, pair: Option<(&str, &str)>) -> anyhow::Result<()> {
    let mut wan = crate::wanem::WanConfig::load(dir)?;
    match pair {
        None => wan.drop.clear(),
        Some((a, b)) => wan.drop.retain(|(x, y)| !((x == a && y == b) || (x == b && y == a))),
    }
    wan.publish(dir, true)
}

/// Sets the round trip (and optionally jitter and loss) between two regions or nodes.
pub fn set_rtt(dir: &Path, a: &str, b: &str, ms: u64, jitter_ms: Option<u64>, loss: Option<f64>) -> anyhow::Result<()> {
    let mut wan = crate::wanem::WanConfig::load(dir)?;
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
