//! `--join`: a new node asks a member (any member: followers forward to the leader) to add
//! it. The answer comes once the node has caught up and, unless `--learner`, been promoted,
//! which can take a while; transient failures (no leader yet, catch-up timeout, the member
//! unreachable) are retried with backoff, since the request is idempotent. A refusal that
//! retrying cannot fix (an address clash, a bad token) stops the node with that reason.

use std::sync::Arc;
use std::time::Duration;

use openraft::RaftMetrics;
use raft::{NodeId, NodeInfo};
use schemas::admin::{AddMemberRequest, Member};
use tokio::sync::watch;
use tonic::Code;

use schemas::admin_client;

/// Asks the member at `addr` to add `me` until it has, or refuses for good (then the
/// reason goes to `fatal`, which stops the node). `metrics` (this node's Raft) shows when
/// it has been added some other way meanwhile.
pub async fn join(
    me: Member,
    addr: String,
    metrics: watch::Receiver<RaftMetrics<NodeId, NodeInfo>>,
    token: Option<Arc<str>>,
    tls: Option<Arc<trust::Tls>>,
    fatal: tokio::sync::mpsc::Sender<anyhow::Error>,
    mut shutdown: watch::Receiver<bool>,
) {
    let learner = !me.voter;
    let mut backoff = Duration::from_millis(500);
    loop {
        tracing::info!(via = %addr, node = me.id, learner, "asking to join the cluster");
        // With TLS the node joins as itself, by its certificate; the token stays home.
        let token = if tls.is_some() { None } else { token.as_deref() };
        let request = admin_client::request(AddMemberRequest { member: Some(me.clone()), learner }, token, None);
        // The member's certificate must be valid for the address dialed (issue node
        // certificates with the addresses others reach them by: `raftgate certs node --ip`).
        let outcome = match super::dial::connect_member(tls.as_ref(), &addr, None) {
            Ok(mut c) => c.add_member(request).await.map(|_| ()),
            Err(status) => Err(status),
        };
        match outcome {
            Ok(()) => {
                tracing::info!(node = me.id, role = if learner { "learner" } else { "voter" }, "joined the cluster");
                return;
            }
            Err(status) if retryable(status.code()) => {
                tracing::warn!(via = %addr, error = %describe(&status), retry_in_ms = backoff.as_millis() as u64, "join not done yet; retrying");
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
            let m = metrics.borrow().membership_config.clone();
            let membership = m.membership();
            membership.get_node(&me.id).is_some() && (learner || membership.voter_ids().any(|v| v == me.id))
        };
        if member {
            tracing::info!(node = me.id, "this node is a member now");
            return;
        }
    }
}

/// A status with its causes: a failed TLS handshake says why only in its source chain
/// ("invalid peer certificate: UnknownIssuer").
fn describe(status: &tonic::Status) -> String {
    let mut text = status.message().to_string();
    let mut source = std::error::Error::source(status);
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}

/// Failures that go away by themselves: no leader yet, the member unreachable or slow.
fn retryable(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable | Code::DeadlineExceeded | Code::Aborted | Code::Unknown | Code::Internal | Code::Cancelled
    )
}
