//! `raftgate status` and `raftgate members ...`.

use schemas::admin::{
    AddMemberRequest, ClusterStatus, ClusterStatusRequest, ListMembersRequest, Member, Members, PromoteMemberRequest,
    RemoveMemberRequest, Role,
};
use serde::Serialize;

use crate::client::{CliError, Target};
use crate::output::{self, age, short, table, wrap, Format};

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusView {
    pub leader: Option<u64>,
    pub term: u64,
    pub commit_index: u64,
    /// A leader, every node reachable, and all serving the same commit.
    pub healthy: bool,
    /// Why not healthy, one line each.
    pub problems: Vec<String>,
    /// The latest commit the cluster refused, until a good one arrives.
    pub refused: Option<RefusalView>,
    pub nodes: Vec<NodeRow>,
    /// How many certificates the nodes serve and which expires first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub certificates: Option<String>,
    /// Worth knowing, not (yet) unhealthy: certificates expiring within 14 days.
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RefusalView {
    pub commit: String,
    pub step: String,
    pub errors: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeRow {
    pub id: u64,
    pub region: String,
    /// leader, follower, learner, candidate, shutdown; `unknown` when unreachable.
    pub role: String,
    pub voter: bool,
    pub reachable: bool,
    pub admin: String,
    pub applied_index: Option<u64>,
    pub commit: Option<String>,
    pub hash: Option<String>,
    /// Log entries behind the leader.
    pub lag: Option<u64>,
    /// The last sync, apply or reachability error.
    pub error: Option<String>,
    pub uptime_seconds: Option<u64>,
    pub version: Option<String>,
    /// The commit this node knows the cluster refused (replicated, so the same everywhere).
    pub refused: Option<String>,
    /// What the node's resilience policies are doing.
    pub resilience: Option<ResilienceView>,
    /// How its Raft and admin listeners are protected: mtls, plaintext (loopback) or
    /// insecure-plaintext.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transport: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ResilienceView {
    pub open_circuits: Vec<String>,
    pub ejected_endpoints: u32,
    pub unhealthy_endpoints: u32,
    pub rate_limited: u64,
}

impl ResilienceView {
    /// One line for the status table's footer; `None` when all is quiet.
    fn summary(&self) -> Option<String> {
        let mut parts = Vec::new();
        if !self.open_circuits.is_empty() {
            parts.push(format!("circuit open: {}", self.open_circuits.join(", ")));
        }
        if self.ejected_endpoints > 0 {
            parts.push(format!("{} endpoint(s) ejected", self.ejected_endpoints));
        }
        if self.unhealthy_endpoints > 0 {
            parts.push(format!("{} endpoint(s) unhealthy", self.unhealthy_endpoints));
        }
        if self.rate_limited > 0 {
            parts.push(format!("{} request(s) rate-limited", self.rate_limited));
        }
        (!parts.is_empty()).then(|| parts.join("; "))
    }
}

pub async fn status(target: &Target, format: Format) -> Result<(), CliError> {
    let s = target
        .client()?
        .get_cluster_status(target.request(ClusterStatusRequest {}))
        .await
        .map_err(|e| target.error(e))?
        .into_inner();
    let view = status_view(&s, output::now());
    output::print(format, &view, render_status);
    if view.healthy {
        Ok(())
    } else {
        Err(CliError::Failed(format!("cluster unhealthy: {}", view.problems.join("; "))))
    }
}

pub fn status_view(s: &ClusterStatus, now: u64) -> StatusView {
    let mut refused = None;
    let mut not_served = Vec::new();
    let nodes: Vec<NodeRow> = s
        .nodes
        .iter()
        .map(|n| {
            let m = n.member.clone().unwrap_or_default();
            let st = n.status.as_ref();
            if refused.is_none() {
                refused = st.and_then(|s| s.refusal.as_ref()).map(|r| RefusalView {
                    commit: r.commit.clone(),
                    step: r.step.clone(),
                    errors: r.errors.clone(),
                });
            }
            if let Some(s) = st.filter(|s| !s.last_apply_error.is_empty()) {
                not_served.push(format!("node {} cannot serve its config: {}", m.id, s.last_apply_error));
            }
            if let Some(s) = st.filter(|s| !s.raft_error.is_empty()) {
                not_served.push(format!(
                    "node {}: its Raft stopped ({}); it serves the config it applied but applies nothing newer: \
                     fix the cause (free disk space) and restart it",
                    m.id, s.raft_error
                ));
            }
            for w in st.map(|s| s.config_warnings.as_slice()).unwrap_or_default() {
                not_served.push(format!("node {}: {w}", m.id));
            }
            let error = if !n.reachable {
                Some(n.error.clone())
            } else {
                st.and_then(|s| {
                    [
                        s.raft_error.clone(),
                        s.last_apply_error.clone(),
                        s.sync.as_ref().map(|y| y.error.clone()).unwrap_or_default(),
                        s.config_warnings.first().cloned().unwrap_or_default(),
                    ]
                    .into_iter()
                    .find(|e| !e.is_empty())
                })
            };
            NodeRow {
                id: m.id,
                region: m.region.clone(),
                role: st
                    .map(|s| Role::try_from(s.role).map_or("unknown", role_name).to_string())
                    .unwrap_or_else(|| "unknown".into()),
                voter: m.voter,
                reachable: n.reachable,
                admin: m.admin_addr.clone(),
                applied_index: st.map(|s| s.applied_index),
                commit: st.and_then(|s| s.config.as_ref()).map(|c| c.commit.clone()),
                hash: st.and_then(|s| s.config.as_ref()).map(|c| c.hash.clone()),
                lag: n.lag,
                error,
                uptime_seconds: st.map(|s| now.saturating_sub(s.started_at)),
                version: st.map(|s| s.version.clone()),
                refused: st.and_then(|s| s.refusal.as_ref()).map(|r| r.commit.clone()),
                resilience: st.and_then(|s| s.resilience.as_ref()).map(|r| ResilienceView {
                    open_circuits: r.open_circuits.clone(),
                    ejected_endpoints: r.ejected_endpoints,
                    unhealthy_endpoints: r.unhealthy_endpoints,
                    rate_limited: r.rate_limited,
                }),
                transport: st.map(|s| s.transport.clone()).filter(|t| !t.is_empty()),
            }
        })
        .collect();
    let mut problems = Vec::new();
    if s.leader_id.is_none() {
        problems.push("no leader".to_string());
    }
    for n in nodes.iter().filter(|n| !n.reachable) {
        problems.push(format!("node {} unreachable", n.id));
    }
    let mut commits: Vec<&str> = nodes.iter().filter_map(|n| n.commit.as_deref()).collect();
    commits.sort_unstable();
    commits.dedup();
    if commits.len() > 1 {
        problems.push(format!("nodes serve {} different commits", commits.len()));
    }
    for n in nodes.iter().filter(|n| n.reachable && n.commit.is_none()) {
        problems.push(format!("node {} serves no config", n.id));
    }
    problems.extend(not_served);
    let statuses: Vec<(u64, &schemas::admin::NodeStatus)> =
        s.nodes.iter().filter_map(|n| Some((n.member.as_ref().map_or(0, |m| m.id), n.status.as_ref()?))).collect();
    let certs = crate::certificates::certificates_view(&statuses, now);
    // Files a node cannot use are already among its config warnings.
    problems.extend(certs.problems.iter().cloned());
    StatusView {
        certificates: certs.summary(),
        warnings: certs.warnings,
        leader: s.leader_id,
        term: s.term,
        commit_index: s.commit_index,
        healthy: problems.is_empty(),
        problems,
        refused,
        nodes,
    }
}

fn role_name(r: Role) -> &'static str {
    match r {
        Role::Leader => "leader",
        Role::Follower => "follower",
        Role::Learner => "learner",
        Role::Candidate => "candidate",
        Role::Shutdown => "shutdown",
        Role::Unknown => "unknown",
    }
}

pub fn render_status(v: &StatusView) -> String {
    let leader = v.leader.map_or("none".to_string(), |l| format!("node {l}"));
    let mut out = format!("leader {leader}, term {}, commit index {}\n\n", v.term, v.commit_index);
    let rows = v
        .nodes
        .iter()
        .map(|n| {
            vec![
                n.id.to_string(),
                n.region.clone(),
                n.role.clone(),
                if n.reachable { "yes" } else { "NO" }.to_string(),
                n.applied_index.map_or("-".into(), |i| i.to_string()),
                // Seven characters, as git abbreviates: the table must fit 80 columns.
                n.commit.as_deref().map_or("-".into(), |c| c.chars().take(7).collect()),
                n.hash.as_deref().map_or("-".into(), |h| h.chars().take(7).collect()),
                n.lag.map_or("-".into(), |l| l.to_string()),
                n.uptime_seconds.map_or("-".into(), age),
                n.version.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    out += &table(&["ID", "REGION", "ROLE", "UP", "APPLIED", "COMMIT", "HASH", "LAG", "UPTIME", "VERSION"], rows);
    for n in &v.nodes {
        if let Some(e) = &n.error {
            out += &format!("\n{}", wrap(&format!("node {}: {e}", n.id), 2));
        }
    }
    for n in &v.nodes {
        if let Some(line) = n.resilience.as_ref().and_then(ResilienceView::summary) {
            out += &format!("\n{}", wrap(&format!("node {}: {line}", n.id), 2));
        }
    }
    let insecure: Vec<String> = v
        .nodes
        .iter()
        .filter(|n| n.transport.as_deref() == Some("insecure-plaintext"))
        .map(|n| n.id.to_string())
        .collect();
    if !insecure.is_empty() {
        let line = format!(
            "warning: node(s) {} run with --insecure-plaintext: their Raft and admin traffic is neither encrypted nor authenticated",
            insecure.join(", ")
        );
        out += &format!("\n{}", wrap(&line, 2));
    }
    if let Some(line) = &v.certificates {
        out += &format!("\n{}", wrap(line, 2));
    }
    for w in &v.warnings {
        out += &format!("\n{}", wrap(&format!("warning: {w}"), 2));
    }
    if let Some(r) = &v.refused {
        out += &format!("\nrefused commit {} at step {}:", short(&r.commit), r.step);
        for e in &r.errors {
            out += &format!("\n  {}", wrap(e, 4));
        }
    }
    if !v.problems.is_empty() {
        out += &format!("\n{}", wrap(&format!("unhealthy: {}", v.problems.join("; ")), 2));
    }
    if !out.ends_with('\n') {
        out.push('\n');
    }
    out
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MembersView {
    pub leader: Option<u64>,
    pub term: u64,
    pub members: Vec<MemberRow>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MemberRow {
    pub id: u64,
    pub role: &'static str,
    pub region: String,
    pub raft_addr: String,
    pub admin_addr: String,
}

pub fn members_view(m: &Members) -> MembersView {
    MembersView {
        leader: m.leader_id,
        term: m.term,
        members: m
            .members
            .iter()
            .map(|x| MemberRow {
                id: x.id,
                role: if x.voter { "voter" } else { "learner" },
                region: x.region.clone(),
                raft_addr: x.raft_addr.clone(),
                admin_addr: x.admin_addr.clone(),
            })
            .collect(),
    }
}

pub fn render_members(v: &MembersView) -> String {
    let rows = v
        .members
        .iter()
        .map(|m| {
            let id = if Some(m.id) == v.leader { format!("{}*", m.id) } else { m.id.to_string() };
            vec![id, m.role.to_string(), m.region.clone(), m.raft_addr.clone(), m.admin_addr.clone()]
        })
        .collect();
    table(&["ID", "ROLE", "REGION", "RAFT", "ADMIN"], rows) + "(* leader)\n"
}

#[derive(Debug, clap::Subcommand)]
pub enum MembersCommand {
    /// List the members: id, voter or learner, region, addresses.
    List,
    /// Add a node that is already running (started without --join): as a learner, then,
    /// once caught up, as a voter.
    Add {
        id: u64,
        /// The node's Raft address (its --raft-addr or --advertise-raft-addr).
        raft_addr: String,
        /// The node's admin address (its --admin-addr or --advertise-admin-addr).
        #[arg(long)]
        admin_addr: String,
        #[arg(long, default_value = "default")]
        region: String,
        /// Keep it a learner.
        #[arg(long)]
        learner: bool,
    },
    /// Make a learner a voter.
    Promote { id: u64 },
    /// Remove a node (then stop its process).
    Remove { id: u64 },
}

/// Membership changes wait for learners to catch up: give them longer than reads.
const CHANGE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(180);

pub async fn members(target: &Target, format: Format, cmd: MembersCommand) -> Result<(), CliError> {
    let mut c = target.client()?;
    let slow = target.timeout.max(CHANGE_TIMEOUT);
    let (reply, done) = match cmd {
        MembersCommand::List => (c.list_members(target.request(ListMembersRequest {})).await, None),
        MembersCommand::Add { id, raft_addr, admin_addr, region, learner } => {
            let member = Member { id, raft_addr, admin_addr, region, voter: !learner };
            let req = target.request_for(AddMemberRequest { member: Some(member), learner }, slow);
            (
                c.add_member(req).await,
                Some(format!("node {id} added as a {}", if learner { "learner" } else { "voter" })),
            )
        }
        MembersCommand::Promote { id } => (
            c.promote_member(target.request_for(PromoteMemberRequest { id }, slow)).await,
            Some(format!("node {id} is a voter")),
        ),
        MembersCommand::Remove { id } => (
            c.remove_member(target.request_for(RemoveMemberRequest { id }, slow)).await,
            Some(format!("node {id} removed; stop its raftgated process")),
        ),
    };
    let m = reply.map_err(|e| target.error(e))?.into_inner();
    if let (Some(msg), Format::Table) = (&done, format) {
        println!("{msg}\n");
    }
    output::print(format, &members_view(&m), render_members);
    Ok(())
}

/// The admin address of node `id`, from the members `target` knows.
pub async fn node_admin(target: &Target, id: u64) -> Result<Target, CliError> {
    let m = target
        .client()?
        .list_members(target.request(ListMembersRequest {}))
        .await
        .map_err(|e| target.error(e))?
        .into_inner();
    let node = m.members.iter().find(|n| n.id == id).ok_or_else(|| {
        let ids: Vec<String> = m.members.iter().map(|n| n.id.to_string()).collect();
        CliError::Usage(format!("no node {id} in the cluster (members: {})", ids.join(", ")))
    })?;
    Ok(target.at(&node.admin_addr))
}
