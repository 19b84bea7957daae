//! The admin gRPC service (`schemas/proto/admin.proto`).
//!
//! Reads are answered from this node's own state. Calls only the leader can serve are run
//! here when this node leads, and otherwise forwarded once to the leader's admin address
//! (a forwarded call that lands on a non-leader, mid-election, is answered UNAVAILABLE with
//! the leader this node knows of).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use schemas::admin::admin_client::AdminClient;
use schemas::admin::admin_server::Admin as AdminApi;
use schemas::admin::*;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use schemas::admin_client;

use super::status::{ClusterView, NodeInfo, ResilienceView};
use crate::cluster::membership::MembershipError;
use crate::cluster::Cluster;
use crate::proxy::runtime::Engine;

/// Marks a call forwarded by another node, so it is never forwarded twice.
const FORWARDED: &str = "raftgate-forwarded";
/// How long the leader waits for each member's status.
const MEMBER_STATUS_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Clone)]
pub struct AdminService {
    pub cluster: Option<Cluster>,
    pub engine: Arc<Engine>,
    pub node: Arc<NodeInfo>,
    /// The admin token, for calls this node makes to other members without TLS.
    pub token: Option<Arc<str>>,
    /// The node's TLS material: with it, calls to other members authenticate with this
    /// node's certificate, and tokens never leave the node.
    pub tls: Option<Arc<trust::Tls>>,
    /// Admin clients of other members, by address and id (see `connect`).
    pub members: MemberClients,
    /// This node's Git sync loop, when it was started with --git-url.
    pub sync: Option<crate::gitops::GitSync>,
    /// The last minutes of this node's traffic, for the dashboard.
    pub traffic: Arc<super::traffic::TrafficLog>,
    /// The proxy's response cache, for purges.
    pub cache: Arc<crate::proxy::cache::ResponseCache>,
}

/// Cached admin clients of other members.
pub type MemberClients = Arc<std::sync::Mutex<std::collections::HashMap<(String, Option<u64>), AdminClient<Channel>>>>;

/// How long `ConfigSync { wait: true }` waits for the sync it started.
const SYNC_WAIT: Duration = Duration::from_secs(60);

/// Where a leader-only call runs.
enum Target<'a> {
    Here(&'a Cluster),
    Leader(AdminClient<Channel>),
}

impl AdminService {
    fn cluster(&self) -> Result<&Cluster, Status> {
        self.cluster.as_ref().ok_or_else(|| {
            Status::failed_precondition("this node runs without a cluster (started without --node-id/--data-dir)")
        })
    }

    fn target<T>(&self, req: &Request<T>) -> Result<Target<'_>, Status> {
        let cluster = self.cluster()?;
        if cluster.is_leader() {
            return Ok(Target::Here(cluster));
        }
        let m = cluster.raft.metrics().borrow().clone();
        let leader = m.current_leader.map(|l| (l, m.membership_config.membership().get_node(&l).cloned()));
        match leader {
            Some((id, Some(node))) if !req.metadata().contains_key(FORWARDED) => {
                Ok(Target::Leader(self.connect(&node.admin_addr, Some(id))?))
            }
            Some((id, node)) => Err(Status::unavailable(format!(
                "node {} is not the leader; the leader is node {id}{}",
                cluster.id,
                node.map(|n| format!(" (admin {})", n.admin_addr)).unwrap_or_default()
            ))),
            None => Err(Status::unavailable(format!(
                "node {} knows no leader right now (election in progress, or no quorum); retry in a few seconds",
                cluster.id
            ))),
        }
    }

    /// A client for a member's admin API, its channel kept for the next call: with TLS a new
    /// channel costs a handshake across the WAN, and the leader asks every member for its
    /// status on each `raftgate status`.
    fn connect(&self, addr: &str, id: Option<u64>) -> Result<AdminClient<Channel>, Status> {
        let key = (addr.to_string(), id);
        let mut members = self.members.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = members.get(&key) {
            return Ok(c.clone());
        }
        let client = crate::cluster::dial::connect_member(self.tls.as_ref(), addr, id)?;
        // Bounded by the addresses members ever had; a flood of made-up ones cannot come
        // from outside (only membership addresses are dialed).
        if members.len() >= 256 {
            members.clear();
        }
        members.insert(key, client.clone());
        Ok(client)
    }

    /// The token to send to other members: none with TLS (the certificate speaks for us).
    fn outbound_token(&self) -> Option<Arc<str>> {
        if self.tls.is_some() {
            None
        } else {
            self.token.clone()
        }
    }

    /// The same call, marked as forwarded. With TLS the caller's token is dropped: the
    /// leader authenticates this node by its certificate, and the token never travels.
    fn forwarded<T>(&self, req: Request<T>) -> Request<T> {
        let (mut meta, ext, msg) = req.into_parts();
        meta.insert(FORWARDED, tonic::metadata::MetadataValue::from_static("1"));
        if self.tls.is_some() {
            meta.remove("authorization");
        }
        Request::from_parts(meta, ext, msg)
    }

    /// Starts a sync on the leader (a webhook arrived). Returns the leader's id.
    pub async fn start_sync(&self) -> Result<u64, Status> {
        let req = admin_client::request(ConfigSyncRequest { wait: false }, self.token.as_deref(), None);
        AdminApi::config_sync(self, req).await.map(|r| r.into_inner().leader_id)
    }

    fn members(&self, cluster: &Cluster) -> Members {
        let m = cluster.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        let voters: Vec<u64> = membership.voter_ids().collect();
        Members {
            members: membership
                .nodes()
                .map(|(id, n)| Member {
                    id: *id,
                    raft_addr: n.raft_addr.clone(),
                    admin_addr: n.admin_addr.clone(),
                    region: n.region.clone(),
                    voter: voters.contains(id),
                })
                .collect(),
            leader_id: m.current_leader,
            term: m.current_term,
            membership_log_index: m.membership_config.log_id().map_or(0, |l| l.index),
        }
    }

    pub async fn node_status_now(&self) -> NodeStatus {
        let rt = self.engine.current();
        let mut status = NodeStatus {
            version: self.node.version.to_string(),
            started_at: self.node.started_at,
            serving_hash: if self.engine.is_loaded() { rt.hash.to_string() } else { String::new() },
            http_addr: self.node.http_addr.clone().unwrap_or_default(),
            transport: self.node.transport.to_string(),
            resilience: Some(ResilienceView::of(&rt).into()),
            config_warnings: rt.certs.errors(),
            certificates: rt
                .certs
                .views()
                .into_iter()
                .map(|c| CertificateState {
                    name: c.name,
                    hostnames: c.hostnames,
                    default: c.default,
                    not_after: c.not_after,
                    fingerprint: c.fingerprint,
                    loaded_at: c.loaded_at,
                    error: c.error,
                    ocsp: c.ocsp,
                })
                .collect(),
            ..NodeStatus::default()
        };
        let Some(cluster) = &self.cluster else { return status };
        let v = ClusterView::of(cluster);
        status.id = v.id;
        status.region = v.region;
        status.raft_addr = v.raft_addr;
        status.admin_addr = v.admin_addr;
        status.role = v.role as i32;
        status.leader_id = v.leader_id;
        status.leader_admin_addr = v.leader_admin_addr.unwrap_or_default();
        status.term = v.term;
        status.last_log_index = v.last_log_index;
        status.applied_index = v.applied_index;
        status.snapshot_index = v.snapshot_index;
        status.purged_index = v.purged_index;
        status.last_apply_error = v.last_apply_error.unwrap_or_default();
        if let Err(fatal) = &cluster.raft.metrics().borrow().running_state {
            status.raft_error = fatal.to_string();
        }
        let history = cluster.sm.history().await;
        status.config = cluster.sm.current().map(|c| {
            let applied_at = history.iter().rev().find(|h| h.log_index == c.log_index).map_or(0, |h| h.applied_at);
            AppliedConfig {
                commit: c.entry.commit.clone(),
                hash: c.entry.hash.to_string(),
                author: c.entry.author.clone(),
                message: c.entry.message.clone(),
                log_index: c.log_index,
                applied_at,
                covers: c.entry.covers.clone(),
            }
        });
        status.sync = self.sync.as_ref().map(|s| sync_state(&s.state())).filter(|s| s.runs > 0);
        status.refusal = cluster.sm.subscribe_refusal().borrow().as_deref().map(|r| Refusal {
            commit: r.commit.clone(),
            step: r.step_name().to_string(),
            errors: r.errors.clone(),
            at: r.at,
        });
        status
    }

    /// The leader's view of the cluster, with every member's own status fetched concurrently.
    async fn cluster_status(&self, cluster: &Cluster) -> ClusterStatus {
        let m = cluster.raft.metrics().borrow().clone();
        let members = self.members(cluster).members;
        let last = m.last_log_index.unwrap_or(0);
        let matched: BTreeMap<u64, u64> =
            m.replication.iter().flatten().map(|(id, l)| (*id, l.map_or(0, |l| l.index))).collect();
        let mut fetches = tokio::task::JoinSet::new();
        for (i, member) in members.iter().enumerate() {
            if member.id == cluster.id {
                continue;
            }
            let addr = member.admin_addr.clone();
            let token = self.outbound_token();
            let client = self.connect(&addr, Some(member.id));
            fetches.spawn(async move {
                let call = async {
                    let mut c = client?;
                    c.get_node_status(admin_client::request(NodeStatusRequest {}, token.as_deref(), None)).await
                };
                (i, ask_member(&addr, call).await)
            });
        }
        let mut nodes: Vec<MemberStatus> = members
            .into_iter()
            .map(|member| MemberStatus {
                lag: if member.id == cluster.id {
                    Some(0)
                } else {
                    matched.get(&member.id).map(|i| last.saturating_sub(*i))
                },
                member: Some(member),
                ..MemberStatus::default()
            })
            .collect();
        if let Some(me) = nodes.iter_mut().find(|n| n.member.as_ref().is_some_and(|m| m.id == cluster.id)) {
            me.reachable = true;
            me.status = Some(self.node_status_now().await);
        }
        while let Some(Ok((i, r))) = fetches.join_next().await {
            match r {
                Ok(s) => {
                    nodes[i].reachable = true;
                    nodes[i].status = Some(s);
                }
                Err(e) => nodes[i].error = e,
            }
        }
        ClusterStatus {
            leader_id: m.current_leader,
            term: m.current_term,
            // The leader applies what it commits at once: its applied index is its commit index.
            commit_index: m.last_applied.map_or(0, |l| l.index),
            nodes,
        }
    }
}

fn lb_name(lb: &schemas::snapshot::LoadBalancerSpec) -> String {
    use schemas::snapshot::{HashOn, LoadBalancerSpec as L};
    match lb {
        L::RoundRobin => "roundRobin".into(),
        L::LeastRequest => "leastRequest".into(),
        L::Random => "random".into(),
        L::ConsistentHash(on) => match on {
            HashOn::Header(h) => format!("consistentHash(header {h})"),
            HashOn::Cookie(c) => format!("consistentHash(cookie {c})"),
            other => format!("consistentHash({other:?})"),
        },
    }
}

fn sync_state(s: &crate::gitops::SyncState) -> SyncState {
    SyncState {
        head: s.head.clone().unwrap_or_default(),
        outcome: s.outcome.as_str().to_string(),
        error: s.error.clone().unwrap_or_default(),
        runs: s.finished,
        last_run_at: s.last_run_at,
    }
}

/// Every membership error becomes one gRPC status here.
fn status(e: MembershipError) -> Status {
    let msg = e.to_string();
    match e {
        MembershipError::NotLeader { .. } => Status::unavailable(msg),
        MembershipError::Invalid(_) => Status::invalid_argument(msg),
        MembershipError::NotFound(_) => Status::not_found(msg),
        MembershipError::Conflict(_) => Status::already_exists(msg),
        MembershipError::Timeout(_) => Status::deadline_exceeded(msg),
        MembershipError::Raft(_) => Status::internal(msg),
    }
}

#[tonic::async_trait]
impl AdminApi for AdminService {
    async fn get_node_status(&self, _req: Request<NodeStatusRequest>) -> Result<Response<NodeStatus>, Status> {
        Ok(Response::new(self.node_status_now().await))
    }

    async fn get_cluster_status(&self, req: Request<ClusterStatusRequest>) -> Result<Response<ClusterStatus>, Status> {
        match self.target(&req)? {
            Target::Here(c) => Ok(Response::new(self.cluster_status(c).await)),
            Target::Leader(mut l) => l.get_cluster_status(self.forwarded(req)).await,
        }
    }

    async fn list_members(&self, _req: Request<ListMembersRequest>) -> Result<Response<Members>, Status> {
        Ok(Response::new(self.members(self.cluster()?)))
    }

    async fn add_member(&self, req: Request<AddMemberRequest>) -> Result<Response<Members>, Status> {
        let joins_as = req.get_ref().member.as_ref().map(|m| m.id);
        check_node_caller(&req, self.cluster.as_ref(), joins_as)?;
        match self.target(&req)? {
            Target::Leader(mut l) => l.add_member(self.forwarded(req)).await,
            Target::Here(c) => {
                let r = req.into_inner();
                let m = r.member.ok_or_else(|| Status::invalid_argument("member is missing"))?;
                let info = raft::NodeInfo { raft_addr: m.raft_addr, admin_addr: m.admin_addr, region: m.region };
                c.add_member(m.id, info, r.learner).await.map_err(status)?;
                Ok(Response::new(self.members(c)))
            }
        }
    }

    async fn promote_member(&self, req: Request<PromoteMemberRequest>) -> Result<Response<Members>, Status> {
        check_node_caller(&req, self.cluster.as_ref(), None)?;
        match self.target(&req)? {
            Target::Leader(mut l) => l.promote_member(self.forwarded(req)).await,
            Target::Here(c) => {
                c.promote(req.get_ref().id).await.map_err(status)?;
                Ok(Response::new(self.members(c)))
            }
        }
    }

    async fn remove_member(&self, req: Request<RemoveMemberRequest>) -> Result<Response<Members>, Status> {
        check_node_caller(&req, self.cluster.as_ref(), None)?;
        match self.target(&req)? {
            Target::Leader(mut l) => l.remove_member(self.forwarded(req)).await,
            Target::Here(c) => {
                c.remove(req.get_ref().id).await.map_err(status)?;
                Ok(Response::new(self.members(c)))
            }
        }
    }

    async fn config_sync(&self, req: Request<ConfigSyncRequest>) -> Result<Response<ConfigSyncReply>, Status> {
        check_node_caller(&req, self.cluster.as_ref(), None)?;
        match self.target(&req)? {
            Target::Leader(mut l) => l.config_sync(self.forwarded(req)).await,
            Target::Here(c) => Ok(Response::new(self.config_sync_here(c, req.get_ref().wait).await?)),
        }
    }

    async fn get_config(&self, _req: Request<GetConfigRequest>) -> Result<Response<ConfigDump>, Status> {
        if !self.engine.is_loaded() {
            return Err(Status::failed_precondition("this node serves no config yet"));
        }
        let rt = self.engine.current();
        let snapshot_json =
            serde_json::to_string(&*rt.snapshot).map_err(|e| Status::internal(format!("encoding the config: {e}")))?;
        Ok(Response::new(ConfigDump {
            commit: rt.origin.commit.clone().unwrap_or_default(),
            hash: rt.hash.to_string(),
            snapshot_json,
        }))
    }

    async fn get_upstreams(&self, _req: Request<GetUpstreamsRequest>) -> Result<Response<UpstreamsDump>, Status> {
        Ok(Response::new(UpstreamsDump { upstreams: self.upstreams_now() }))
    }

    async fn get_node_dashboard(&self, _req: Request<NodeDashboardRequest>) -> Result<Response<NodeDashboard>, Status> {
        Ok(Response::new(self.node_dashboard_now().await))
    }

    async fn diff_configs(&self, req: Request<DiffConfigsRequest>) -> Result<Response<ConfigDiff>, Status> {
        let (from, to) = (req.get_ref().from.clone(), req.get_ref().to.clone());
        for rev in [&from, &to] {
            if rev.is_empty() || rev.len() > 256 || rev.starts_with('-') || rev.chars().any(char::is_control) {
                return Err(Status::invalid_argument(format!(
                    "`{}` is not a revision: give a commit sha (or a branch or tag) of the config repository",
                    rev.escape_debug()
                )));
            }
        }
        match self.target(&req)? {
            Target::Leader(mut l) => l.diff_configs(self.forwarded(req)).await,
            Target::Here(c) => Ok(Response::new(self.diff_here(c, from, to).await?)),
        }
    }

    async fn purge_cache(&self, req: Request<PurgeCacheRequest>) -> Result<Response<PurgeCacheReply>, Status> {
        check_node_caller(&req, self.cluster.as_ref(), None)?;
        let r = req.get_ref().clone();
        if r.route.is_empty() {
            return Err(Status::invalid_argument("name the route whose cached answers to purge"));
        }
        let here = self.cache.purge(&r.route, &r.prefix) as u64;
        let me = self.cluster.as_ref().map_or(0, |c| c.id);
        let members = self.members_now().members;
        let addr = members.iter().find(|m| m.id == me).map(|m| m.admin_addr.clone()).unwrap_or_default();
        let mut nodes = vec![NodePurge { node_id: me, admin_addr: addr, purged: here, error: String::new() }];
        if !r.this_node_only {
            let mut calls = tokio::task::JoinSet::new();
            for m in members.into_iter().filter(|m| m.id != me) {
                let (svc, req) = (self.clone(), PurgeCacheRequest { this_node_only: true, ..r.clone() });
                calls.spawn(async move {
                    let token = svc.outbound_token();
                    let call = async {
                        let mut c = svc.connect(&m.admin_addr, Some(m.id))?;
                        c.purge_cache(svc.forwarded(admin_client::request(req, token.as_deref(), None))).await
                    };
                    let got = ask_member(&m.admin_addr, call).await;
                    let (purged, error) = match got {
                        Ok(reply) => (reply.nodes.first().map_or(0, |n| n.purged), String::new()),
                        Err(e) => (0, e),
                    };
                    NodePurge { node_id: m.id, admin_addr: m.admin_addr, purged, error }
                });
            }
            while let Some(Ok(n)) = calls.join_next().await {
                nodes.push(n);
            }
        }
        nodes.sort_by_key(|n| n.node_id);
        Ok(Response::new(PurgeCacheReply { nodes }))
    }

    async fn get_config_history(&self, _req: Request<ConfigHistoryRequest>) -> Result<Response<ConfigHistory>, Status> {
        let cluster = self.cluster()?;
        let entries = cluster
            .sm
            .history()
            .await
            .into_iter()
            .rev()
            .map(|h| AppliedConfig {
                commit: h.commit,
                hash: h.hash.to_string(),
                author: h.author,
                message: h.message,
                log_index: h.log_index,
                applied_at: h.applied_at,
                covers: Vec::new(),
            })
            .collect();
        Ok(Response::new(ConfigHistory { entries }))
    }
}

impl AdminService {
    /// This node's upstreams as its proxy sees them.
    fn upstreams_now(&self) -> Vec<UpstreamState> {
        let rt = self.engine.current();
        rt.upstream_views()
            .into_iter()
            .map(|u| UpstreamState {
                load_balancer: rt.upstreams.get(&u.name).map(|x| lb_name(&x.spec.load_balancer)).unwrap_or_default(),
                circuit: u.circuit.as_str().to_string(),
                circuit_retry_after_ms: u.circuit_retry_after_ms,
                requests_in_flight: u.requests_in_flight as u64,
                retries_in_flight: u.retries_in_flight as u64,
                endpoints: u
                    .endpoints
                    .into_iter()
                    .map(|e| EndpointState {
                        address: e.address,
                        weight: e.weight,
                        in_flight: e.in_flight as u64,
                        health: e.health.as_str().to_string(),
                        circuit: u.circuit.as_str().to_string(),
                        ejected_for_ms: e.ejected_for_ms,
                        from_dns: e.from_dns,
                    })
                    .collect(),
                dns: u.dns.map(|d| DnsState {
                    name: d.name,
                    result: d.result.to_string(),
                    error: d.error,
                    last_ok_ago_ms: d.last_ok_ago_ms,
                    failures: d.failures,
                }),
                name: u.name,
            })
            .collect()
    }

    /// What the dashboard shows of this node.
    pub async fn node_dashboard_now(&self) -> NodeDashboard {
        NodeDashboard {
            status: Some(self.node_status_now().await),
            upstreams: self.upstreams_now(),
            traffic: Some(self.traffic.traffic()),
        }
    }

    /// The dashboard of member `id` at `addr`: asked over the admin API, within
    /// [`MEMBER_STATUS_TIMEOUT`].
    pub async fn member_dashboard(&self, addr: &str, id: u64) -> Result<NodeDashboard, String> {
        let token = self.outbound_token();
        let call = async {
            let mut c = self.connect(addr, Some(id))?;
            c.get_node_dashboard(admin_client::request(NodeDashboardRequest {}, token.as_deref(), None)).await
        };
        ask_member(addr, call).await
    }

    /// The members as this node knows them (itself alone without a cluster).
    pub fn members_now(&self) -> Members {
        match &self.cluster {
            Some(c) => self.members(c),
            None => Members::default(),
        }
    }

    /// `DiffConfigs` on the leader: both revisions compiled from its mirror of the repository.
    async fn diff_here(&self, cluster: &Cluster, from: String, to: String) -> Result<ConfigDiff, Status> {
        let sync = self.sync.as_ref().ok_or_else(|| {
            Status::failed_precondition(format!(
                "the leader (node {}) was started without --git-url: there are no commits to compare",
                cluster.id
            ))
        })?;
        // Each diff compiles two whole configs: at most two at once, so readers cannot keep
        // the leader's CPU busy with them.
        static DIFFS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);
        let _permit = DIFFS.try_acquire().map_err(|_| {
            Status::resource_exhausted("other diffs are being computed on the leader; retry in a moment")
        })?;
        let (dir, path) = (sync.mirror_dir.clone(), sync.path.clone());
        let diff = tokio::task::spawn_blocking(move || {
            let compile = |rev: &str| -> Result<schemas::ConfigSnapshot, Status> {
                let files = schemas::source::read_git(&dir, rev, path.as_deref(), &schemas::TreeLimits::default())
                    .map_err(|e| Status::not_found(format!("{rev}: {e}")))?;
                schemas::compile_tree(&files).map(|c| c.snapshot).map_err(|diags| {
                    let lines: Vec<String> = diags.iter().map(ToString::to_string).collect();
                    Status::failed_precondition(format!("the config at {rev} is invalid:\n{}", lines.join("\n")))
                })
            };
            let (a, b) = (compile(&from)?, compile(&to)?);
            let view = schemas::diff::diff(&from, &to, &a, &b);
            serde_json::to_string(&view).map_err(|e| Status::internal(format!("encoding the diff: {e}")))
        })
        .await
        .map_err(|e| Status::internal(format!("diff task: {e}")))??;
        Ok(ConfigDiff { diff_json: diff })
    }

    /// `ConfigSync` on the leader: trigger the sync loop, and wait for it when asked.
    async fn config_sync_here(&self, cluster: &Cluster, wait: bool) -> Result<ConfigSyncReply, Status> {
        let sync = self.sync.as_ref().ok_or_else(|| {
            Status::failed_precondition(format!("the leader (node {}) was started without --git-url", cluster.id))
        })?;
        let state = if wait {
            sync.sync_and_wait(SYNC_WAIT).await.map_err(|s| {
                Status::deadline_exceeded(format!(
                    "the sync did not finish within {}s (last: {} {})",
                    SYNC_WAIT.as_secs(),
                    s.outcome,
                    s.error.unwrap_or_default()
                ))
            })?
        } else {
            sync.trigger();
            sync.state()
        };
        Ok(ConfigSyncReply { state: Some(sync_state(&state)), leader_id: cluster.id })
    }
}

/// A call to the member at `addr`, within [`MEMBER_STATUS_TIMEOUT`]; a failure says which
/// member and why, as status views show it.
async fn ask_member<T>(
    addr: &str,
    call: impl std::future::Future<Output = Result<Response<T>, Status>>,
) -> Result<T, String> {
    match tokio::time::timeout(MEMBER_STATUS_TIMEOUT, call).await {
        Ok(Ok(r)) => Ok(r.into_inner()),
        Ok(Err(s)) => Err(format!("{addr}: {}", s.message())),
        Err(_) => Err(format!("{addr}: no answer within {}s", MEMBER_STATUS_TIMEOUT.as_secs())),
    }
}

/// What a node's certificate allows on mutating calls. A current member forwards calls it
/// authenticated itself (a member can already vote and append, so this grants nothing
/// more); any other node, a removed one included, may only ask to join as itself
/// (`--join`). Operators (token or operator certificate) may do anything. The forwarded
/// marker is metadata any caller can set, so it counts only from a member.
fn check_node_caller<T>(req: &Request<T>, cluster: Option<&Cluster>, joins_as: Option<u64>) -> Result<(), Status> {
    let Some(trust::Identity::Node(me)) = req.extensions().get::<trust::Peer>().map(|p| &p.identity) else {
        return Ok(());
    };
    let member =
        cluster.is_some_and(|c| c.raft.metrics().borrow().membership_config.membership().get_node(me).is_some());
    if member && req.metadata().contains_key(FORWARDED) {
        return Ok(());
    }
    if joins_as == Some(*me) {
        return Ok(());
    }
    metrics::counter!("raftgate_admin_unauthenticated_total").increment(1);
    Err(Status::permission_denied(match joins_as {
        Some(id) => format!("node {me} cannot add node {id}: a node's certificate lets it join only as itself"),
        None => format!("node {me}'s certificate cannot change the cluster: use an operator certificate or the token"),
    }))
}

/// Which admin methods change the cluster (these always need the token).
pub fn is_mutating(path: &str) -> bool {
    let method = path.rsplit('/').next().unwrap_or("");
    matches!(method, "AddMember" | "PromoteMember" | "RemoveMember" | "ConfigSync" | "PurgeCache")
}
