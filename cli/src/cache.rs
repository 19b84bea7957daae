//! `raftgate cache purge`: removes a route's answers from the response cache of every node
//! (the node asked fans the purge out to the members; the Raft log is not involved).

use schemas::admin::{PurgeCacheReply, PurgeCacheRequest};
use serde::Serialize;

use crate::client::{CliError, Target};
use crate::output::{self, Format};

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PurgeView {
    pub route: String,
    pub prefix: String,
    pub nodes: Vec<NodePurgeView>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodePurgeView {
    pub node: u64,
    pub admin: String,
    pub purged: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

pub fn purge_view(route: &str, prefix: &str, r: &PurgeCacheReply) -> PurgeView {
    PurgeView {
        route: route.to_string(),
        prefix: prefix.to_string(),
        nodes: r
            .nodes
            .iter()
            .map(|n| NodePurgeView {
                node: n.node_id,
                admin: n.admin_addr.clone(),
                purged: n.purged,
                error: Some(n.error.clone()).filter(|e| !e.is_empty()),
            })
            .collect(),
    }
}

pub fn render_purge(v: &PurgeView) -> String {
    let rows = v
        .nodes
        .iter()
        .map(|n| {
            vec![
                n.node.to_string(),
                n.admin.clone(),
                n.error.as_ref().map_or_else(|| n.purged.to_string(), |_| "-".into()),
                n.error.clone().unwrap_or_else(|| "purged".into()),
            ]
        })
        .collect();
    let what = if v.prefix.is_empty() {
        format!("route {}", v.route)
    } else {
        format!("route {} under {}", v.route, v.prefix)
    };
    format!("cache purge of {what}\n{}", output::table(&["NODE", "ADMIN", "ENTRIES", "RESULT"], rows))
}

/// Purges on every node; exits 1 when a node could not be reached (its cache may still
/// hold the answers).
pub async fn purge(target: &Target, format: Format, route: &str, prefix: &str) -> Result<(), CliError> {
    let req = PurgeCacheRequest { route: route.to_string(), prefix: prefix.to_string(), this_node_only: false };
    let r = target.client()?.purge_cache(target.request(req)).await.map_err(|e| target.error(e))?.into_inner();
    let view = purge_view(route, prefix, &r);
    output::print(format, &view, render_purge);
    let failed: Vec<String> = view.nodes.iter().filter(|n| n.error.is_some()).map(|n| n.node.to_string()).collect();
    if failed.is_empty() {
        Ok(())
    } else {
        Err(CliError::Failed(format!("node(s) {} were not purged: run the purge again", failed.join(", "))))
    }
}
