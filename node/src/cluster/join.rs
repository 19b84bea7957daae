//! `--join`: a new node asks a member (any member: followers forward to the leader) to add
//! it. The answer comes once the node has caught up and, unless `--learner`, been promoted,
//! which can take a while; transient failures (no leader yet, catch-up timeout, the member
//! unreachable) are retried with backoff, since the request is idempotent. A refusal that
//! retrying cannot fix (an address clash, a bad token) stops the node with that reason.

use std::sync::Arc;
use std::time::Duration;

use schemas::admin::{AddMemberRequest, Member};
use tokio::sync::watch;
use tonic::Code;

use super::Cluster;
use crate::admin::client;

pub async fn join(
    cluster: Cluster,
    addr: String,
    learner: bool,
    token: Option<Arc<str>>,
    fatal: tokio::sync::mpsc::Sender<anyhow::Error>,
    mut shutdown: watch::Receiver<bool>,
) {
    let me = Member {
        id: cluster.id,
        raft_addr: cluster.me.raft_addr.clone(),
        admin_addr: cluster.me.admin_addr.clone(),
        region: cluster.me.region.clone(),
        voter: !learner,
    };
    let mut backoff = Duration::from_millis(500);
    loop {
        tracing::info!(via = %addr, node = me.id, learner, "asking to join the cluster");
        let request = client::request(AddMemberRequest { member: Some(me.clone()), learner }, token.as_deref());
        let outcome = match client::connect(&addr) {
            Ok(mut c) => c.add_member(request).await.map(|_| ()),
            Err(e) => Err(e),
        };
        match outcome {
            Ok(()) => {
                tracing::info!(node = me.id, role = if learner { "learner" } else { "voter" }, "joined the cluster");
                return;
            }
            Err(status) if retryable(status.code()) => {
                tracing::warn!(via = %addr, error = %status.message(), retry_in_ms = backoff.as_millis() as u64, "join not done yet; retrying");
            }
            Err(status) => {
                let _ = fatal
                    .send(anyhow::anyhow!(
                        "the cluster (via {addr}) refused to add node {}: {}",
                        me.id,
                        status.message()
                    ))
                    .await;
                return;
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = shutdown.changed() => return,
        }
        backoff = (backoff * 2).min(Duration::from_secs(10));
        // Someone may have added this node by hand meanwhile.
        let member = {
            let m = cluster.raft.metrics().borrow().membership_config.clone();
            let membership = m.membership();
            membership.get_node(&me.id).is_some() && (learner || membership.voter_ids().any(|v| v == me.id))
        };
        if member {
            tracing::info!(node = me.id, "this node is a member now");
            return;
        }
    }
}

/// Failures that go away by themselves: no leader yet, the member unreachable or slow.
fn retryable(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable | Code::DeadlineExceeded | Code::Aborted | Code::Unknown | Code::Internal | Code::Cancelled
    )
}
