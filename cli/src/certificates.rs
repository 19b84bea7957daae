//! `raftgate certificates`: the TLS certificates the nodes serve to clients, as each node
//! serves them: which one, until when, and whether the nodes agree. A renewal reaches
//! each node through its files, not through Git, so nodes can disagree for a while (one
//! renewed, another not yet); that, expiry, and files a node cannot use are reported here
//! and in `raftgate status`.

use std::collections::BTreeMap;

use schemas::admin::{ClusterStatusRequest, NodeStatus, NodeStatusRequest};
use serde::Serialize;

use crate::client::{CliError, Target};
use crate::output::{self, table, wrap, Format};

/// Fewer days left than this is a warning.
pub const WARN_DAYS: i64 = 14;

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CertificatesView {
    pub certificates: Vec<CertRow>,
    /// Certificates expiring within `WARN_DAYS`.
    pub warnings: Vec<String>,
    /// Expired, or nodes that disagree.
    pub problems: Vec<String>,
    /// Certificates a node does not serve, or serves although its files changed, and why
    /// (also in `raftgate status` as the node's config warnings).
    pub file_errors: Vec<String>,
}

impl CertificatesView {
    /// `raftgate status`'s line: how many certificates, and the one expiring first.
    pub fn summary(&self) -> Option<String> {
        let soonest = self.certificates.iter().filter(|c| c.days_left.is_some()).min_by_key(|c| c.not_after)?;
        let mut names: Vec<&str> = self.certificates.iter().map(|c| c.name.as_str()).collect();
        names.dedup();
        let when = match soonest.days_left.unwrap_or_default() {
            d if d < 0 => "has EXPIRED".to_string(),
            d => format!("expires in {d} day(s)"),
        };
        Some(format!("certificates: {}; the first to expire is `{}`, which {when}", names.len(), soonest.name))
    }
}

/// One certificate as a group of nodes serves it (one row when every node agrees).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CertRow {
    pub name: String,
    pub hostnames: Vec<String>,
    pub default: bool,
    pub nodes: Vec<u64>,
    /// Empty when these nodes serve nothing for it.
    pub fingerprint: String,
    pub not_after: i64,
    /// Whole days left (negative once expired); `None` when nothing is served.
    pub days_left: Option<i64>,
    /// What the nodes say is wrong with its files.
    pub errors: Vec<String>,
}

/// Groups each certificate's nodes by what they serve, and finds what needs attention.
pub fn certificates_view(nodes: &[(u64, &NodeStatus)], now: u64) -> CertificatesView {
    // name -> fingerprint -> row
    let mut by_name: BTreeMap<String, BTreeMap<String, CertRow>> = BTreeMap::new();
    for (id, status) in nodes {
        for c in &status.certificates {
            let row =
                by_name.entry(c.name.clone()).or_default().entry(c.fingerprint.clone()).or_insert_with(|| CertRow {
                    name: c.name.clone(),
                    hostnames: c.hostnames.clone(),
                    default: c.default,
                    nodes: Vec::new(),
                    fingerprint: c.fingerprint.clone(),
                    not_after: c.not_after,
                    // Whole days left, rounded down (negative once expired).
                    days_left: (!c.fingerprint.is_empty()).then(|| (c.not_after - now as i64).div_euclid(86_400)),
                    errors: Vec::new(),
                });
            row.nodes.push(*id);
            if !c.error.is_empty() {
                row.errors.push(format!("node {id}: {}", c.error));
            }
        }
    }
    let (mut warnings, mut problems, mut file_errors) = (Vec::new(), Vec::new(), Vec::new());
    for (name, rows) in &by_name {
        let served: Vec<&CertRow> = rows.values().filter(|r| !r.fingerprint.is_empty()).collect();
        if served.len() > 1 {
            let who: Vec<String> = served
                .iter()
                .map(|r| format!("{} on node(s) {}", &r.fingerprint[..12.min(r.fingerprint.len())], ids(&r.nodes)))
                .collect();
            problems.push(format!(
                "certificate `{name}` differs between nodes: {} (renewed files have not reached every node)",
                who.join(", ")
            ));
        }
        for r in rows.values() {
            match r.days_left {
                None => {
                    let why: Vec<&str> = r.errors.iter().map(String::as_str).collect();
                    file_errors.push(format!(
                        "certificate `{name}` is not served on node(s) {}: {}",
                        ids(&r.nodes),
                        why.join("; ")
                    ));
                    continue;
                }
                Some(_) if r.not_after < now as i64 => problems.push(format!(
                    "certificate `{name}` expired on {} on node(s) {}: renew it",
                    output::utc(r.not_after.max(0) as u64),
                    ids(&r.nodes)
                )),
                Some(d) if d < WARN_DAYS => warnings
                    .push(format!("certificate `{name}` expires in {d} day(s) on node(s) {}: renew it", ids(&r.nodes))),
                Some(_) => {}
            }
            file_errors.extend(r.errors.iter().map(|e| format!("certificate `{name}`, {e}")));
        }
    }
    let certificates = by_name.into_values().flat_map(BTreeMap::into_values).collect();
    CertificatesView { certificates, warnings, problems, file_errors }
}

fn ids(nodes: &[u64]) -> String {
    nodes.iter().map(u64::to_string).collect::<Vec<_>>().join(",")
}

pub fn render(v: &CertificatesView) -> String {
    if v.certificates.is_empty() {
        return "no certificates: the config has no `kind: Certificate`, or no node serves HTTPS (--https-addr)\n"
            .into();
    }
    let rows = v
        .certificates
        .iter()
        .map(|c| {
            let mut hosts = c.hostnames.join(", ");
            if c.default {
                hosts = if hosts.is_empty() { "(default)".into() } else { format!("{hosts} (default)") };
            }
            vec![
                c.name.clone(),
                hosts,
                ids(&c.nodes),
                if c.fingerprint.is_empty() {
                    "-".into()
                } else {
                    output::utc(c.not_after.max(0) as u64)[..10].to_string()
                },
                c.days_left.map_or("-".into(), |d| d.to_string()),
                c.fingerprint.chars().take(12).collect::<String>(),
            ]
        })
        .collect();
    let mut out = table(&["NAME", "HOSTNAMES", "NODES", "EXPIRES", "DAYS", "SHA-256"], rows);
    for w in &v.warnings {
        out += &format!("{}\n", wrap(&format!("warning: {w}"), 2));
    }
    for p in v.problems.iter().chain(&v.file_errors) {
        out += &format!("{}\n", wrap(&format!("problem: {p}"), 2));
    }
    out
}

/// Every node's status: the cluster's, or the one node's when it runs alone.
async fn node_statuses(target: &Target) -> Result<Vec<(u64, NodeStatus)>, CliError> {
    let mut client = target.client()?;
    match client.get_cluster_status(target.request(ClusterStatusRequest {})).await {
        Ok(s) => Ok(s
            .into_inner()
            .nodes
            .into_iter()
            .filter_map(|n| Some((n.member.as_ref().map_or(0, |m| m.id), n.status?)))
            .collect()),
        Err(e) if e.code() == tonic::Code::FailedPrecondition => {
            let s = client.get_node_status(target.request(NodeStatusRequest {})).await.map_err(|e| target.error(e))?;
            Ok(vec![(0, s.into_inner())])
        }
        Err(e) => Err(target.error(e)),
    }
}

pub async fn run(target: &Target, format: Format) -> Result<(), CliError> {
    let statuses = node_statuses(target).await?;
    let nodes: Vec<(u64, &NodeStatus)> = statuses.iter().map(|(id, s)| (*id, s)).collect();
    let view = certificates_view(&nodes, output::now());
    output::print(format, &view, render);
    let problems: Vec<&str> = view.problems.iter().chain(&view.file_errors).map(String::as_str).collect();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(CliError::Failed(format!("certificates need attention: {}", problems.join("; "))))
    }
}
