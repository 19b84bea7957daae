//! What a node says about itself. Each view is built once per call from the live state and
//! serialised as is into `/status`, and converted into the gRPC admin API's messages, so
//! the two never disagree; enums become words only at those edges.

use openraft::ServerState;
use schemas::admin::{Resilience, Role};
use serde::Serialize;

use crate::cluster::Cluster;
use crate::proxy::runtime::{Circuit, EndpointHealth, Runtime};

/// Facts about this node process that do not change while it runs.
#[derive(Debug, Clone, Serialize)]
pub struct NodeInfo {
    pub version: &'static str,
    pub started_at: u64,
    pub http_addr: Option<String>,
    pub https_addr: Option<String>,
    /// How the Raft and admin listeners are protected (`Transport::name`).
    pub transport: &'static str,
}

/// How a node's Raft and admin listeners are protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// mTLS with the cluster CA.
    Mtls,
    /// Plaintext on loopback addresses (a single machine).
    Plaintext,
    /// Plaintext where it is not safe, because the operator said so.
    InsecurePlaintext,
}

impl Transport {
    pub const fn name(self) -> &'static str {
        match self {
            Transport::Mtls => "mtls",
            Transport::Plaintext => "plaintext",
            Transport::InsecurePlaintext => "insecure-plaintext",
        }
    }
}

/// This node's place in the Raft cluster.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterView {
    pub id: u64,
    pub region: String,
    pub raft_addr: String,
    pub admin_addr: String,
    #[serde(serialize_with = "role_name")]
    pub role: Role,
    pub leader_id: Option<u64>,
    /// The leader's admin address, when a leader is known.
    pub leader_admin_addr: Option<String>,
    pub term: u64,
    pub last_log_index: u64,
    pub applied_index: u64,
    pub snapshot_index: u64,
    pub purged_index: u64,
    /// The log index of the config the state machine holds.
    pub config_log_index: Option<u64>,
    /// Why the latest applied config could not be served, if it could not.
    pub last_apply_error: Option<String>,
}

impl ClusterView {
    pub fn of(cluster: &Cluster) -> Self {
        let m = cluster.raft.metrics().borrow().clone();
        ClusterView {
            id: cluster.id,
            region: cluster.me.region.clone(),
            raft_addr: cluster.me.raft_addr.clone(),
            admin_addr: cluster.me.admin_addr.clone(),
            role: role(m.state),
            leader_id: m.current_leader,
            leader_admin_addr: m
                .current_leader
                .and_then(|l| m.membership_config.membership().get_node(&l).map(|n| n.admin_addr.clone())),
            term: m.current_term,
            last_log_index: m.last_log_index.unwrap_or(0),
            applied_index: m.last_applied.map_or(0, |l| l.index),
            snapshot_index: m.snapshot.map_or(0, |l| l.index),
            purged_index: m.purged.map_or(0, |l| l.index),
            config_log_index: cluster.sm.current().map(|c| c.log_index),
            last_apply_error: cluster.last_apply_error.lock().unwrap_or_else(|e| e.into_inner()).clone(),
        }
    }
}

/// Raft's state as Prometheus gauges, read at each scrape (the alert rules in
/// deploy/prometheus use them: no leader, a node without a leader, a node lagging).
pub fn raft_metrics(cluster: &Cluster) -> String {
    let m = cluster.raft.metrics().borrow().clone();
    let gauges: [(&str, &str, u64); 5] = [
        ("raftgate_raft_is_leader", "1 on the node that leads the cluster.", u64::from(m.state == ServerState::Leader)),
        ("raftgate_raft_has_leader", "1 while this node knows a leader.", u64::from(m.current_leader.is_some())),
        ("raftgate_raft_term", "The Raft term this node is in.", m.current_term),
        ("raftgate_raft_last_log_index", "The last log index this node holds.", m.last_log_index.unwrap_or(0)),
        ("raftgate_raft_applied_index", "The last log index this node applied.", m.last_applied.map_or(0, |l| l.index)),
    ];
    gauges.iter().map(|(name, help, v)| format!("# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}\n")).collect()
}

/// What the resilience policies are doing on this node.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ResilienceView {
    /// Upstreams whose breaker is open or half-open.
    pub open_circuits: Vec<String>,
    pub ejected_endpoints: u32,
    pub unhealthy_endpoints: u32,
    /// Requests refused by a rate limit since the node started.
    pub rate_limited: u64,
}

impl ResilienceView {
    pub fn of(rt: &Runtime) -> Self {
        let views = rt.upstream_views();
        let endpoints = || views.iter().flat_map(|u| u.endpoints.iter());
        ResilienceView {
            open_circuits: views
                .iter()
                .filter(|u| matches!(u.circuit, Circuit::Open | Circuit::HalfOpen))
                .map(|u| u.name.clone())
                .collect(),
            ejected_endpoints: endpoints().filter(|e| e.ejected_for_ms > 0).count() as u32,
            unhealthy_endpoints: endpoints().filter(|e| e.health == EndpointHealth::Unhealthy).count() as u32,
            rate_limited: crate::proxy::ratelimit::bucket::REJECTED.load(std::sync::atomic::Ordering::Relaxed),
        }
    }
}

impl From<ResilienceView> for Resilience {
    fn from(v: ResilienceView) -> Self {
        Resilience {
            open_circuits: v.open_circuits,
            ejected_endpoints: v.ejected_endpoints,
            unhealthy_endpoints: v.unhealthy_endpoints,
            rate_limited: v.rate_limited,
        }
    }
}

fn role(state: ServerState) -> Role {
    match state {
        ServerState::Leader => Role::Leader,
        ServerState::Follower => Role::Follower,
        ServerState::Learner => Role::Learner,
        ServerState::Candidate => Role::Candidate,
        ServerState::Shutdown => Role::Shutdown,
    }
}

/// `leader`, `follower` and so on, the words `raftgate status -o json` uses too.
fn role_name<S: serde::Serializer>(role: &Role, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(match role {
        Role::Leader => "leader",
        Role::Follower => "follower",
        Role::Learner => "learner",
        Role::Candidate => "candidate",
        Role::Shutdown => "shutdown",
        Role::Unknown => "unknown",
    })
}
