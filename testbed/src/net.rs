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
/// Namespaces and the emulator land in the next step of issue #7.
const NETNS_BUILT: bool = false;

#[derive(Debug, Clone)]
pub struct Net {
    mode: Mode,
    #[allow(dead_code)]
    dir: PathBuf,
}

/// A node's address in netns mode: 10.77.<region index + 1>.<id>.
pub fn node_ip(region: usize, id: u64) -> String {
    format!("10.77.{}.{}", region + 1, id)
}

pub fn node_ns(id: u64) -> String {
    format!("rgt-n{id}")
}

impl Net {
    pub fn new(mode: Mode, dir: &Path) -> Net {
        Net { mode, dir: dir.to_path_buf() }
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
    if !NETNS_BUILT {
        return Some("network-namespace mode is not built yet".into());
    }
    if !nix::unistd::Uid::effective().is_root() {
        return Some("not running as root".into());
    }
    if !Path::new("/dev/net/tun").exists() {
        return Some("/dev/net/tun is missing".into());
    }
    None
}

/// Creates the namespaces, TUN devices and WAN emulator for `state`'s nodes.
pub fn setup(_state: &mut crate::cluster::State) -> anyhow::Result<()> {
    anyhow::bail!("network-namespace mode is not built yet; run with --loopback")
}

/// Removes every namespace and device the testbed created (none in loopback mode).
pub fn teardown() {}
