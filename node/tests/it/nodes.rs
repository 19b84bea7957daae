//! A cluster of real `raftgated` processes for the multi-node and GitOps tests.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use http::StatusCode;
use schemas::admin::admin_client::AdminClient;
use schemas::admin::*;
use tonic::transport::Channel;

use crate::harness::*;

pub struct Node {
    pub data: tempfile::TempDir,
    pub raft: u16,
    pub admin: u16,
    pub gw: Option<Gateway>,
}

/// A cluster of `raftgated` processes with one config source: a directory every node
/// watches (only the leader proposes it), or a Git repository URL.
pub struct TestCluster {
    pub config: tempfile::TempDir,
    pub up: Upstream,
    pub nodes: BTreeMap<u64, Node>,
    pub extra: Vec<String>,
    /// `Some(url)`: nodes sync from Git instead of watching `config`.
    pub git: Option<String>,
    /// `Some(dir)`: nodes run mTLS with `dir/node-<id>.pem` (cluster `itest`), and the
    /// test talks to them as operator `it` (`dir/it.pem`).
    pub tls: Option<std::path::PathBuf>,
    /// Extra environment variables for a node's process.
    pub env: BTreeMap<u64, Vec<(String, String)>>,
}

/// The cluster name of TLS test clusters.
pub const TLS_CLUSTER: &str = "itest";

/// A client config trusting the CA in `dir` and presenting `dir/<name>.pem`.
pub fn operator_tls(dir: &std::path::Path, name: &str) -> std::sync::Arc<rustls::ClientConfig> {
    let (cert, key) = (dir.join(format!("{name}.pem")), dir.join(format!("{name}-key.pem")));
    trust::material::client_config_from_files(&dir.join("ca.pem"), Some((&cert, &key))).unwrap()
}

/// Polls `check` until it returns `Some`, or fails with `what` after `limit`.
pub async fn eventually<T, F, Fut>(limit: Duration, what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    testkit::eventually_async(what, limit, check).await
}

/// A config of upstream `up` and one route per name, serving `/<name>`.
pub fn routes_config(up: &Upstream, names: &[&str]) -> String {
    let mut text = upstreams(&[("up", up)]);
    for n in names {
        text += &format!(
            "---\nkind: Route\nname: {n}\nrules:\n  - matches: [{{ path: {{ value: /{n} }} }}]\n    backendRefs: [{{ upstream: up }}]\n"
        );
    }
    text
}

impl TestCluster {
    /// Node 1 bootstraps a cluster serving route `/r0`.
    pub async fn bootstrap(extra: &[&str]) -> TestCluster {
        let c = Self::new(extra, None).await;
        c.set_routes(&["r0"]);
        c.start().await
    }

    /// A cluster syncing from the Git repository at `url` (its first commit must serve
    /// `/r0`).
    pub async fn from_git(url: &str, up: Upstream, extra: &[&str]) -> TestCluster {
        let mut c = Self::new(extra, Some(url.to_string())).await;
        c.up = up;
        c.start().await
    }

    async fn new(extra: &[&str], git: Option<String>) -> TestCluster {
        TestCluster {
            config: tempfile::tempdir().unwrap(),
            up: Upstream::start("up", Behaviour::Echo).await,
            nodes: BTreeMap::new(),
            extra: extra.iter().map(ToString::to_string).collect(),
            git,
            tls: None,
            env: BTreeMap::new(),
        }
    }

    /// Node 1 bootstraps an mTLS cluster serving `/r0`, with certificates from the CA in
    /// `certs` (`node-<id>.pem` for each node that starts; `it.pem` for the test).
    pub async fn bootstrap_tls(certs: &std::path::Path, extra: &[&str]) -> TestCluster {
        let mut c = Self::new(extra, None).await;
        c.tls = Some(certs.to_path_buf());
        c.set_routes(&["r0"]);
        c.start().await
    }

    async fn start(mut self) -> TestCluster {
        self.launch(1, &["--bootstrap"]);
        self.wait_serving(&[1], "/r0").await;
        self
    }

    /// Writes the config the leader will propose: one route per name.
    pub fn set_routes(&self, names: &[&str]) {
        self.write_config(&routes_config(&self.up, names));
    }

    /// Replaces the config the leader will propose with `text`.
    pub fn write_config(&self, text: &str) {
        let tmp = self.config.path().join(".c.yaml.tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(tmp, self.config.path().join("c.yaml")).unwrap();
    }

    /// Starts node `id` (again, from its data directory, if it ran before).
    pub fn launch(&mut self, id: u64, extra: &[&str]) {
        let node = self.nodes.entry(id).or_insert_with(|| Node {
            data: tempfile::tempdir().unwrap(),
            raft: free_port(),
            admin: free_port(),
            gw: None,
        });
        assert!(node.gw.is_none(), "node {id} is running already");
        let id_s = id.to_string();
        let data = node.data.path().to_str().unwrap().to_string();
        let raft = format!("127.0.0.1:{}", node.raft);
        let admin = format!("127.0.0.1:{}", node.admin);
        let region = format!("region-{}", id % 3);
        let mut args: Vec<&str> = vec![
            "--node-id",
            &id_s,
            "--data-dir",
            &data,
            "--raft-addr",
            &raft,
            "--admin-addr",
            &admin,
            "--region",
            &region,
            "--raft-profile",
            "lan",
        ];
        if let Some(url) = &self.git {
            args.extend(["--git-url", url.as_str(), "--git-poll-interval", "300ms"]);
        }
        let tls_args: Vec<String> = match &self.tls {
            Some(dir) => {
                let f = |name: String| dir.join(name).to_str().unwrap().to_string();
                vec![
                    "--cluster-name".into(),
                    TLS_CLUSTER.into(),
                    "--tls-ca".into(),
                    f("ca.pem".into()),
                    "--tls-cert".into(),
                    f(format!("node-{id}.pem")),
                    "--tls-key".into(),
                    f(format!("node-{id}-key.pem")),
                    "--tls-reload-interval".into(),
                    "200ms".into(),
                ]
            }
            None => Vec::new(),
        };
        args.extend(tls_args.iter().map(String::as_str));
        args.extend(self.extra.iter().map(String::as_str));
        args.extend(extra);
        let dir = if self.git.is_some() { None } else { Some(self.config.path()) };
        let env = self.env.get(&id).cloned().unwrap_or_default();
        node.gw = Some(Gateway::launch_env(dir, &args, &env));
    }

    /// Starts node `id` joining through node `via`.
    pub fn join(&mut self, id: u64, via: u64, learner: bool) {
        let addr = format!("127.0.0.1:{}", self.nodes[&via].admin);
        let mut extra = vec!["--join", addr.as_str()];
        if learner {
            extra.push("--learner");
        }
        self.launch(id, &extra);
    }

    pub fn kill(&mut self, id: u64) {
        self.nodes.get_mut(&id).unwrap().gw.take().expect("node runs").kill();
    }

    pub fn gw(&self, id: u64) -> &Gateway {
        self.nodes[&id].gw.as_ref().expect("node runs")
    }

    pub fn running(&self) -> Vec<u64> {
        self.nodes.iter().filter(|(_, n)| n.gw.is_some()).map(|(id, _)| *id).collect()
    }

    pub async fn admin(&self, id: u64) -> AdminClient<Channel> {
        let addr = format!("127.0.0.1:{}", self.nodes[&id].admin);
        match &self.tls {
            None => AdminClient::connect(format!("http://{addr}")).await.expect("admin API reachable"),
            Some(dir) => {
                let tls = operator_tls(dir, "it");
                let channel = trust::channel(&addr, Some((trust::ClientTls::Fixed(tls), None)), |e| e).unwrap();
                schemas::admin_client::client(channel)
            }
        }
    }

    pub async fn status(&self, id: u64) -> NodeStatus {
        self.admin(id).await.get_node_status(NodeStatusRequest {}).await.unwrap().into_inner()
    }

    /// The leader every running node agrees on.
    pub async fn leader(&self) -> u64 {
        eventually(Duration::from_secs(20), "an agreed leader", || async {
            let mut seen = None;
            for id in self.running() {
                let s = self.status(id).await;
                match (seen, s.leader_id) {
                    (_, None) => return None,
                    (None, l) => seen = l,
                    (Some(a), Some(b)) if a != b => return None,
                    _ => {}
                }
            }
            seen.filter(|l| self.running().contains(l))
        })
        .await
    }

    /// Waits until each of `ids` answers 200 on `path` (the config reached its proxy).
    pub async fn wait_serving(&self, ids: &[u64], path: &str) {
        for id in ids {
            let url = self.gw(*id).url(path);
            eventually(Duration::from_secs(20), &format!("node {id} serving {path}"), || async {
                (get(&url, &[]).await.0 == StatusCode::OK).then_some(())
            })
            .await;
        }
    }

    pub async fn members(&self, via: u64) -> Members {
        self.admin(via).await.list_members(ListMembersRequest {}).await.unwrap().into_inner()
    }

    /// Waits until the members are exactly `voters` and `learners`.
    pub async fn wait_members(&self, via: u64, voters: &[u64], learners: &[u64]) {
        eventually(Duration::from_secs(30), &format!("voters {voters:?}, learners {learners:?}"), || async {
            let m = self.members(via).await;
            let v: Vec<u64> = m.members.iter().filter(|m| m.voter).map(|m| m.id).collect();
            let l: Vec<u64> = m.members.iter().filter(|m| !m.voter).map(|m| m.id).collect();
            (v == voters && l == learners).then_some(())
        })
        .await;
    }

    /// The ordering guarantee, on every running node: applied commits carry strictly
    /// increasing log indexes, and any two nodes agree on every log index both applied.
    pub async fn check_history_order(&self) {
        let mut all: BTreeMap<u64, BTreeMap<u64, String>> = BTreeMap::new();
        for id in self.running() {
            let h = self.admin(id).await.get_config_history(ConfigHistoryRequest {}).await.unwrap().into_inner();
            assert!(!h.entries.is_empty(), "node {id} applied nothing");
            // Newest first: indexes strictly decrease.
            for pair in h.entries.windows(2) {
                assert!(pair[0].log_index > pair[1].log_index, "node {id} applied out of order: {:?}", h.entries);
            }
            all.insert(id, h.entries.into_iter().map(|e| (e.log_index, e.commit)).collect());
        }
        let ids: Vec<u64> = all.keys().copied().collect();
        for a in &ids {
            for b in &ids {
                for (index, commit) in &all[a] {
                    if let Some(other) = all[b].get(index) {
                        assert_eq!(commit, other, "nodes {a} and {b} applied different commits at log index {index}");
                    }
                }
            }
        }
    }
}
