//! Membership changes, run on the leader: add (learner, catch up, promote), promote, remove.
//!
//! openraft refuses a change while another is uncommitted (`InProgress`) and its blocking
//! `add_learner` never times out. So changes on this node are serialized by a lock, a change
//! that still meets `InProgress` (one proposed by a previous leader) is retried with backoff
//! until a deadline, and catching up is awaited with a timeout, outside the lock, so one slow
//! learner never holds up the others joining at the same time.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use openraft::error::{ChangeMembershipError, ClientWriteError, RaftError};
use openraft::ChangeMembers;
use raft::{NodeId, NodeInfo};

use super::{leader_hint, Cluster};

/// How long a change may keep meeting `InProgress` before giving up.
const CHANGE_DEADLINE: Duration = Duration::from_secs(30);
/// How long a new learner may take to catch up before the call returns (it keeps
/// replicating; the caller may retry, which waits again, or promote later).
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(120);

/// Why a membership change did not happen. Mapped to an admin API status in one place.
#[derive(Debug, thiserror::Error)]
pub enum MembershipError {
    #[error("this node is not the leader{}", leader_hint(*.leader_id, .leader_admin.as_deref()))]
    NotLeader { leader_id: Option<NodeId>, leader_admin: Option<String> },
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Timeout(String),
    #[error("raft: {0}")]
    Raft(String),
}

impl Cluster {
    /// Adds `id` as a learner, waits until it holds the log up to its own addition, then
    /// promotes it unless `learner`. Idempotent for a node already added with the same
    /// addresses, so a joining node can simply retry.
    pub async fn add_member(&self, id: NodeId, info: NodeInfo, learner: bool) -> Result<(), MembershipError> {
        check_address(&info.raft_addr, "raft")?;
        check_address(&info.admin_addr, "admin")?;
        let target = {
            let _change = self.membership_lock.lock().await;
            self.ensure_leader()?;
            let m = self.raft.metrics().borrow().membership_config.clone();
            let membership = m.membership();
            for (other, node) in membership.nodes() {
                if *other != id && node.raft_addr == info.raft_addr {
                    return Err(MembershipError::Conflict(format!(
                        "raft address {} already belongs to node {other}; give each node its own address",
                        info.raft_addr
                    )));
                }
            }
            match membership.get_node(&id) {
                Some(existing) if *existing == info => {}
                Some(existing) => {
                    return Err(MembershipError::Conflict(format!(
                        "node {id} is already a member at {existing}; remove it first \
                         (raftgate members remove {id}) to add it with other addresses"
                    )))
                }
                None => {
                    let node = info.clone();
                    self.retry_in_progress(|| {
                        let raft = self.raft.clone();
                        let node = node.clone();
                        async move { raft.add_learner(id, node, false).await.map(|_| ()) }
                    })
                    .await?;
                    tracing::info!(node = id, addr = %info, "added a learner");
                }
            }
            self.raft.metrics().borrow().last_log_index.unwrap_or(0)
        };

        self.wait_caught_up(id, target).await?;
        if !learner {
            self.promote(id).await?;
        }
        Ok(())
    }

    /// Makes learner `id` a voter. A voter already is: nothing to do.
    pub async fn promote(&self, id: NodeId) -> Result<(), MembershipError> {
        let _change = self.membership_lock.lock().await;
        self.ensure_leader()?;
        let m = self.raft.metrics().borrow().membership_config.clone();
        if m.membership().get_node(&id).is_none() {
            return Err(MembershipError::NotFound(format!(
                "node {id} is not a member; add it first (raftgate members add)"
            )));
        }
        if m.membership().voter_ids().any(|v| v == id) {
            return Ok(());
        }
        self.retry_in_progress(|| {
            let raft = self.raft.clone();
            async move { raft.change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false).await.map(|_| ()) }
        })
        .await?;
        tracing::info!(node = id, "promoted to voter");
        Ok(())
    }

    /// Removes voter or learner `id` from the cluster. The last voter cannot be removed.
    pub async fn remove(&self, id: NodeId) -> Result<(), MembershipError> {
        let _change = self.membership_lock.lock().await;
        self.ensure_leader()?;
        let m = self.raft.metrics().borrow().membership_config.clone();
        let membership = m.membership();
        if membership.get_node(&id).is_none() {
            return Err(MembershipError::NotFound(format!("node {id} is not a member")));
        }
        let voters: Vec<NodeId> = membership.voter_ids().collect();
        let change = if voters.contains(&id) {
            if voters.len() == 1 {
                return Err(MembershipError::Invalid(format!(
                    "node {id} is the only voter; a cluster cannot remove its last voter"
                )));
            }
            ChangeMembers::RemoveVoters(BTreeSet::from([id]))
        } else {
            ChangeMembers::RemoveNodes(BTreeSet::from([id]))
        };
        self.retry_in_progress(|| {
            let raft = self.raft.clone();
            let change = change.clone();
            async move { raft.change_membership(change, false).await.map(|_| ()) }
        })
        .await?;
        tracing::info!(node = id, "removed from the cluster");
        Ok(())
    }

    fn ensure_leader(&self) -> Result<(), MembershipError> {
        if self.is_leader() {
            return Ok(());
        }
        Err(self.not_leader())
    }

    /// `NotLeader`, naming the leader this node knows of.
    fn not_leader(&self) -> MembershipError {
        let metrics = self.raft.metrics();
        let m = metrics.borrow();
        let leader_admin =
            m.current_leader.and_then(|l| m.membership_config.membership().get_node(&l).map(|n| n.admin_addr.clone()));
        MembershipError::NotLeader { leader_id: m.current_leader, leader_admin }
    }

    /// Runs a membership change, retrying while an earlier change is still uncommitted.
    async fn retry_in_progress<F, Fut>(&self, mut change: F) -> Result<(), MembershipError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<(), RaftError<NodeId, ClientWriteError<NodeId, NodeInfo>>>>,
    {
        let deadline = Instant::now() + CHANGE_DEADLINE;
        let mut backoff = Duration::from_millis(50);
        loop {
            match change().await {
                Ok(()) => return Ok(()),
                Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(
                    ChangeMembershipError::InProgress(p),
                ))) => {
                    if Instant::now() + backoff > deadline {
                        return Err(MembershipError::Timeout(format!(
                            "another membership change ({p}) stayed uncommitted for {}s; is a quorum of voters up?",
                            CHANGE_DEADLINE.as_secs()
                        )));
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
                Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                    return Err(MembershipError::NotLeader {
                        leader_id: f.leader_id,
                        leader_admin: f.leader_node.map(|n| n.admin_addr),
                    })
                }
                Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(e))) => {
                    return Err(MembershipError::Invalid(e.to_string()))
                }
                Err(e) => return Err(MembershipError::Raft(e.to_string())),
            }
        }
    }

    /// Waits until the leader has replicated the log up to `index` to `id`.
    async fn wait_caught_up(&self, id: NodeId, index: u64) -> Result<(), MembershipError> {
        let caught_up = |m: &openraft::RaftMetrics<NodeId, NodeInfo>| {
            m.replication
                .as_ref()
                .and_then(|r: &BTreeMap<NodeId, Option<raft::LogId>>| r.get(&id).cloned().flatten())
                .is_some_and(|matched| matched.index >= index)
        };
        let started = Instant::now();
        let result = self.raft.wait(Some(CATCH_UP_TIMEOUT)).metrics(caught_up, "learner catch-up").await;
        match result {
            Ok(_) => {
                tracing::info!(node = id, index, took_ms = started.elapsed().as_millis() as u64, "learner caught up");
                Ok(())
            }
            Err(e) => {
                if !self.is_leader() {
                    return Err(self.not_leader());
                }
                let m = self.raft.metrics().borrow().clone();
                let matched = m
                    .replication
                    .as_ref()
                    .and_then(|r| r.get(&id).cloned().flatten())
                    .map_or("nothing".to_string(), |l| format!("index {}", l.index));
                Err(MembershipError::Timeout(format!(
                    "node {id} was added as a learner but has not caught up ({matched} of {index}) after {}s: {e}; \
                     it keeps replicating: retry, or promote it later (raftgate members promote {id})",
                    CATCH_UP_TIMEOUT.as_secs()
                )))
            }
        }
    }
}

/// A member address must be something peers can dial: `host:port`, not a wildcard.
fn check_address(addr: &str, which: &str) -> Result<(), MembershipError> {
    let bad = |why: &str| MembershipError::Invalid(format!("{which} address `{addr}` {why}"));
    let (host, port) = addr.rsplit_once(':').ok_or_else(|| bad("is not host:port"))?;
    match port.parse::<u16>() {
        Ok(0) | Err(_) => return Err(bad("needs a port between 1 and 65535")),
        Ok(_) => {}
    }
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(bad("has no host"));
    }
    if host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_unspecified()) {
        return Err(bad("is a wildcard; advertise an address peers can reach"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check_address;

    #[test]
    fn member_addresses_must_be_dialable() {
        for ok in ["127.0.0.1:9800", "[::1]:9800", "node-1.example:9800"] {
            assert!(check_address(ok, "raft").is_ok(), "{ok}");
        }
        for bad in ["127.0.0.1", "127.0.0.1:0", "0.0.0.0:9800", "[::]:9800", ":9800", "host:http"] {
            assert!(check_address(bad, "raft").is_err(), "{bad}");
        }
    }
}
