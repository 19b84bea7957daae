//! A testbed cluster: its state on disk, and the processes it runs (nodes, demo upstreams,
//! the Git server). Every command is a separate `testbed` invocation, so all of it lives
//! in the state directory (`state.json`, the Git repository, node data and logs).
//!
//! Two modes: `loopback` (plain processes on 127.0.0.1, one port set per node, no latency;
//! no root needed) and `netns` (each node in its own network namespace behind the WAN
//! emulator; see `net`).
//!
//! A testbed runs mTLS unless `up --plaintext` says otherwise: Raft between the nodes,
//! and every admin call (the testbed's own and the `raftgate` CLI's) with the operator
//! certificate from `certs`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

use crate::certs;
use crate::http;
use crate::net::{self, Mode, Net};
use crate::process::{alive, bin, spawn_detached};
use crate::repo::Repo;
use crate::topology::Topology;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct NodeState {
    pub(crate) id: u64,
    /// `<region>-<n>`.
    pub(crate) name: String,
    pub(crate) region: String,
    /// The node's IP: 127.0.0.1, or its namespace address.
    pub(crate) ip: String,
    pub(crate) http: String,
    pub(crate) admin: String,
    pub(crate) raft: String,
    pub(crate) data: PathBuf,
    pub(crate) log: PathBuf,
    pub(crate) pid: Option<u32>,
    /// Per-node demo upstreams (netns mode: every namespace has its own loopback).
    pub(crate) upstreams_pid: Option<u32>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct State {
    pub(crate) dir: PathBuf,
    pub(crate) topology: Topology,
    pub(crate) mode: Mode,
    pub(crate) nodes: Vec<NodeState>,
    pub(crate) next_id: u64,
    /// Helper processes: shared demo upstreams, git daemon, WAN emulator.
    pub(crate) helpers: Vec<(String, u32)>,
    /// The address nodes fetch the config repository from.
    pub(crate) git_url: String,
    /// The Raft timing profile the nodes run with.
    pub(crate) raft_profile: String,
    /// Log entries between Raft snapshots (`--raft-snapshot-every`), when not the default.
    #[serde(default)]
    pub(crate) raft_snapshot_every: Option<u64>,
    /// Loopback mode: added to every node port (8080+, 9800+, 9900+), so two testbeds
    /// (or a test beside `make run`) do not collide.
    #[serde(default)]
    pub(crate) port_offset: u16,
    /// mTLS between the nodes and on their admin listeners (certificates in `certs/`).
    /// Off in testbeds started with `--plaintext`, and in state files older than TLS.
    #[serde(default)]
    pub(crate) tls: bool,
}

pub(crate) fn default_state_dir() -> PathBuf {
    std::env::var_os("TESTBED_STATE").map_or_else(|| std::env::temp_dir().join("raftgate-testbed"), PathBuf::from)
}

/// The webhook secret every node checks and `testbed merge --webhook` signs with. A
/// testbed-only value, kept in the state directory (never in Git).
/// The admin token file in the testbed's directory (TLS testbeds: for the dashboard).
pub(crate) const ADMIN_TOKEN_FILE: &str = "admin-token";
pub(crate) const WEBHOOK_SECRET: &str = "testbed-webhook-secret-0123456789";

impl State {
    pub(crate) fn path(dir: &Path) -> PathBuf {
        dir.join("state.json")
    }

    pub(crate) fn load(dir: &Path) -> anyhow::Result<State> {
        let text = std::fs::read_to_string(Self::path(dir))
            .with_context(|| format!("no testbed is up in {} (run `testbed up <topology>`)", dir.display()))?;
        serde_json::from_str(&text)
            .with_context(|| format!("{} is damaged; run `testbed down`", Self::path(dir).display()))
    }

    pub(crate) fn save(&self) -> anyhow::Result<()> {
        let tmp = self.dir.join("state.json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(self)?)?;
        std::fs::rename(tmp, Self::path(&self.dir))?;
        Ok(())
    }

    pub(crate) fn repo(&self) -> Repo {
        Repo::at(self.dir.join("repo"))
    }

    pub(crate) fn net(&self) -> Net {
        Net::new(self.mode)
    }

    /// The certificate directory, when the testbed runs TLS.
    pub(crate) fn tls_dir(&self) -> Option<PathBuf> {
        self.tls.then(|| certs::dir(&self.dir))
    }

    /// The URL of `path` on the admin listener at `admin` (https when the testbed runs TLS).
    pub(crate) fn admin_url(&self, admin: &str, path: &str) -> String {
        format!("{}://{admin}{path}", if self.tls { "https" } else { "http" })
    }

    /// The kubectl-style context file `up` writes, so `raftgate` finds node 1 and the
    /// certificates with only `RAFTGATE_CONFIG` set.
    pub(crate) fn context_file(&self) -> PathBuf {
        self.dir.join("raftgate-config.yaml")
    }

    /// Writes the context file: node 1's admin address and, with TLS, the CA and the
    /// operator certificate, relative to the file (the state directory can move).
    pub(crate) fn write_context(&self) -> anyhow::Result<()> {
        let admin = self.nodes.first().map(|n| n.admin.as_str()).context("no node to point the context at")?;
        let mut text = format!(
            "# Written by `testbed up`: export RAFTGATE_CONFIG={}\ncurrent-context: testbed\ncontexts:\n  - name: testbed\n    admin: {admin}\n",
            self.context_file().display()
        );
        if self.tls {
            text += "    ca: certs/ca.pem\n    cert: certs/testbed.pem\n    key: certs/testbed-key.pem\n";
        }
        let tmp = self.dir.join("raftgate-config.yaml.tmp");
        std::fs::write(&tmp, text)?;
        std::fs::rename(tmp, self.context_file())?;
        Ok(())
    }

    pub(crate) fn node(&self, name: &str) -> anyhow::Result<&NodeState> {
        self.nodes.iter().find(|n| n.name == name || n.id.to_string() == name).with_context(|| {
            format!(
                "no node `{name}` (nodes: {})",
                self.nodes.iter().map(|n| n.name.as_str()).collect::<Vec<_>>().join(", ")
            )
        })
    }

    /// The admin address of the first running node.
    pub(crate) fn live_admin(&self) -> anyhow::Result<String> {
        self.nodes.iter().find(|n| n.pid.is_some_and(alive)).map(|n| n.admin.clone()).context("no node is running")
    }

    /// A new node in `region`, with its addresses.
    pub(crate) fn plan_node(&mut self, region: &str) -> anyhow::Result<NodeState> {
        let r = self.topology.region_index(region).with_context(|| {
            format!(
                "no region `{region}` (regions: {})",
                self.topology.regions.iter().map(|r| r.name.as_str()).collect::<Vec<_>>().join(", ")
            )
        })?;
        let id = self.next_id;
        self.next_id += 1;
        let index = (1..).find(|i| !self.nodes.iter().any(|n| n.name == format!("{region}-{i}"))).unwrap_or(1);
        let name = format!("{region}-{index}");
        let (ip, http, admin, raft) = match self.mode {
            // Node 1 gets raftgated's default ports, so `raftgate` needs no --admin.
            Mode::Loopback => {
                let offset = u64::from(self.port_offset);
                let p = |base: u64| format!("127.0.0.1:{}", base + offset + id - 1);
                ("127.0.0.1".to_string(), p(8080), p(9900), p(9800))
            }
            Mode::Netns => {
                let ip = net::node_ip(r, id);
                (ip.clone(), format!("{ip}:8080"), format!("{ip}:9900"), format!("{ip}:9800"))
            }
        };
        let node = NodeState {
            id,
            name: name.clone(),
            region: region.to_string(),
            ip,
            http,
            admin,
            raft,
            data: self.dir.join("nodes").join(&name),
            log: self.dir.join("logs").join(format!("{name}.log")),
            pid: None,
            upstreams_pid: None,
        };
        Ok(node)
    }

    /// Starts (or restarts) a node's process. `join`: the admin address to join through;
    /// `bootstrap`: start a new cluster.
    pub(crate) fn launch(&self, node: &mut NodeState, bootstrap: bool, join: Option<&str>) -> anyhow::Result<()> {
        std::fs::create_dir_all(&node.data)?;
        std::fs::create_dir_all(node.log.parent().unwrap_or(Path::new(".")))?;
        if self.mode == Mode::Netns {
            net::ensure_node(&self.dir, node.id, &node.name, &node.region, &node.ip)?;
        }
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&node.log)?;
        let secret = self.dir.join("webhook-secret");
        let mut cmd = self.net().command(Some(node.id), &bin("raftgated"));
        cmd.args(["--node-id", &node.id.to_string(), "--data-dir"])
            .arg(&node.data)
            .args(["--http-addr", &node.http, "--admin-addr", &node.admin, "--raft-addr", &node.raft])
            .args(["--region", &node.region, "--raft-profile", &self.raft_profile])
            .args(self.raft_snapshot_every.iter().flat_map(|n| ["--raft-snapshot-every".to_string(), n.to_string()]))
            .args(["--git-url", &self.git_url, "--git-poll-interval", "2s", "--git-webhook-secret-file"])
            .arg(&secret)
            .args(["--access-log", "off", "--workers", "1"]);
        if self.tls {
            let dir = certs::dir(&self.dir);
            let (cert, key) = certs::ensure_node(&dir, node.id, &node.ip)?;
            cmd.args(["--cluster-name", certs::CLUSTER, "--tls-ca"])
                .arg(certs::ca(&dir))
                .arg("--tls-cert")
                .arg(cert)
                .arg("--tls-key")
                .arg(key);
            let token = self.dir.join(ADMIN_TOKEN_FILE);
            if token.exists() {
                cmd.arg("--admin-token-file").arg(token);
            }
        } else {
            // Netns addresses are not loopback, and there is no admin token: an open
            // cluster, on purpose.
            cmd.arg("--insecure-plaintext");
        }
        if bootstrap {
            cmd.arg("--bootstrap");
        }
        if let Some(j) = join {
            cmd.args(["--join", j]);
        }
        let child = spawn_detached(&mut cmd, log)?;
        node.pid = Some(child);
        if self.mode == Mode::Netns {
            self.start_upstreams(node)?;
        }
        Ok(())
    }

    /// In netns mode each node's namespace runs its own demo upstreams (the config's
    /// loopback endpoints); starts them unless they run.
    pub(crate) fn start_upstreams(&self, node: &mut NodeState) -> anyhow::Result<()> {
        if node.upstreams_pid.is_none_or(|p| !alive(p)) {
            let ulog = std::fs::OpenOptions::new().create(true).append(true).open(&node.log)?;
            let mut up = self.net().command(Some(node.id), &bin("testbed"));
            up.arg("upstreams").arg(&self.topology.config);
            node.upstreams_pid = Some(spawn_detached(&mut up, ulog)?);
        }
        Ok(())
    }

    /// Waits until the node's admin API answers /readyz (it serves a config).
    pub(crate) fn wait_ready(&self, node: &NodeState, limit: Duration) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let (net, tls, url) = (self.net(), self.tls_dir(), self.admin_url(&node.admin, "/readyz"));
        loop {
            let last = match http::get_status(&net, tls.as_deref(), &url) {
                Ok(200) => return Ok(started.elapsed()),
                Ok(status) => format!("{url}: {status}"),
                Err(e) => format!("{e:#}"),
            };
            if node.pid.is_some_and(|p| !alive(p)) {
                bail!("{} exited; its log: {}", node.name, node.log.display());
            }
            if started.elapsed() > limit {
                bail!(
                    "{} not ready after {}s (last: {last}); its log: {}",
                    node.name,
                    limit.as_secs(),
                    node.log.display()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Runs `raftgate <args>` against the cluster (inside the control namespace in netns mode).
    pub(crate) fn raftgate(&self, args: &[&str]) -> anyhow::Result<std::process::Output> {
        self.raftgate_at(&self.live_admin()?, args)
    }

    /// Runs `raftgate <args>` against the node with admin address `admin`, with the
    /// operator certificate when the testbed runs TLS. The testbed's own context file
    /// stands in for the user's, and their connection variables are dropped, so nothing of
    /// theirs changes what is called (or is sent to a testbed node).
    pub(crate) fn raftgate_at(&self, admin: &str, args: &[&str]) -> anyhow::Result<std::process::Output> {
        let mut cmd = self.net().command(None, &bin("raftgate"));
        cmd.env("RAFTGATE_CONFIG", self.context_file());
        for var in [
            "RAFTGATE_CONTEXT",
            "RAFTGATE_CA",
            "RAFTGATE_CERT",
            "RAFTGATE_KEY",
            "RAFTGATE_TLS_SERVER_NAME",
            "RAFTGATE_TOKEN",
            "RAFTGATE_TOKEN_FILE",
        ] {
            cmd.env_remove(var);
        }
        cmd.args(["--admin", admin]);
        if let Some(dir) = self.tls_dir() {
            let (cert, key) = certs::client(&dir);
            cmd.arg("--ca").arg(certs::ca(&dir)).arg("--cert").arg(cert).arg("--key").arg(key);
        }
        cmd.args(args);
        cmd.output().context("running raftgate")
    }
}
