//! The dashboard at `/ui` on the admin listener: a page, its script and its style, all
//! compiled into the binary (no CDN, no fonts from elsewhere; it works offline), and the
//! JSON it polls:
//!
//! - `GET /ui/api/cluster`: every member's status, upstreams and traffic (this node asks
//!   each member over the admin API, concurrently, within two seconds; a member that does
//!   not answer is shown down), this node's config history and the latest refusal.
//! - `GET /ui/api/diff?from=A&to=B`: the route-level diff between two commits (the
//!   leader compiles them from its mirror of the repository).
//!
//! The page itself holds nothing secret and is served to anyone who reaches the admin
//! listener, as `/healthz` is; the API behind it is protected like `/status` (token,
//! client certificate, or `--admin-read-open`). The page asks for the token when the API
//! says 401 and keeps it in the tab's session storage only. A strict Content-Security-
//! Policy lets the page load and fetch from this node alone.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use schemas::admin::{DiffConfigsRequest, NodeDashboard};
use serde::Serialize;
use tokio::sync::Mutex;

use super::grpc::AdminService;
use super::reply::{json, text, AdminBody};

const INDEX: &str = include_str!("ui/index.html");
const SCRIPT: &str = include_str!("ui/app.js");
const STYLE: &str = include_str!("ui/app.css");
const ICON: &str = include_str!("ui/icon.svg");

/// Everything the page loads comes from this node; nothing may frame it.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; \
                   base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// How long one assembled cluster view is reused: several open dashboards (or one
/// polling fast) cost the members one round of calls per second at most.
const REUSE: Duration = Duration::from_secs(1);

/// Config history entries the page gets.
const HISTORY: usize = 25;

/// The dashboard's state on this node.
#[derive(Debug, Default)]
pub struct Ui {
    /// The last cluster view and when it was made. Held while a view is being made, so
    /// concurrent requests wait for that one rather than each asking every member.
    last: Mutex<Option<(Instant, Bytes)>>,
}

/// A static file of the page, if `path` names one.
pub fn asset(path: &str) -> Option<Response<AdminBody>> {
    let (body, ctype) = match path {
        "/ui" | "/ui/" => (INDEX, "text/html; charset=utf-8"),
        "/ui/app.js" => (SCRIPT, "text/javascript; charset=utf-8"),
        "/ui/app.css" => (STYLE, "text/css; charset=utf-8"),
        "/ui/icon.svg" => (ICON, "image/svg+xml"),
        _ => return None,
    };
    let mut r = text(StatusCode::OK, body.to_string(), ctype);
    harden(&mut r);
    Some(r)
}

/// Headers every dashboard response carries.
fn harden(r: &mut Response<AdminBody>) {
    let h = r.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

/// One member as the page sees it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct NodeView {
    id: u64,
    region: String,
    voter: bool,
    admin_addr: String,
    /// Whether the member answered just now; `error` says why not.
    reachable: bool,
    error: String,
    /// Entries behind the most advanced member's applied index.
    lag: Option<u64>,
    dashboard: Option<NodeDashboard>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ClusterPage {
    /// The node serving the page.
    this_node: Option<u64>,
    leader_id: Option<u64>,
    term: u64,
    /// Unix milliseconds when this view was made.
    generated_at: u64,
    nodes: Vec<NodeView>,
    history: Vec<schemas::admin::AppliedConfig>,
    refusal: Option<schemas::admin::Refusal>,
}

impl Ui {
    /// `GET /ui/api/cluster`.
    pub async fn cluster(&self, grpc: &AdminService) -> Response<AdminBody> {
        let mut last = self.last.lock().await;
        let body = match &*last {
            Some((at, body)) if at.elapsed() < REUSE => body.clone(),
            _ => {
                let body = Bytes::from(serde_json::to_vec(&cluster_page(grpc).await).unwrap_or_default());
                *last = Some((Instant::now(), body.clone()));
                body
            }
        };
        drop(last);
        let mut r = Response::new(AdminBody::new(http_body_util::Full::new(body)));
        r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        harden(&mut r);
        r
    }

    /// `GET /ui/api/diff?from=A&to=B`.
    pub async fn diff(&self, grpc: &AdminService, query: Option<&str>) -> Response<AdminBody> {
        let arg = |name: &str| {
            query.and_then(|q| {
                form_urlencoded::parse(q.as_bytes()).find(|(k, _)| k == name).map(|(_, v)| v.into_owned())
            })
        };
        let (Some(from), Some(to)) = (arg("from"), arg("to")) else {
            return json(
                StatusCode::BAD_REQUEST,
                serde_json::json!({"error": "give two commits: /ui/api/diff?from=<sha>&to=<sha>"}),
            );
        };
        let req = schemas::admin_client::request(DiffConfigsRequest { from, to }, grpc.token.as_deref(), None);
        let mut r = match schemas::admin::admin_server::Admin::diff_configs(grpc, req).await {
            Ok(d) => text(StatusCode::OK, d.into_inner().diff_json, "application/json"),
            Err(s) => {
                let status = match s.code() {
                    tonic::Code::InvalidArgument => StatusCode::BAD_REQUEST,
                    tonic::Code::NotFound => StatusCode::NOT_FOUND,
                    tonic::Code::FailedPrecondition => StatusCode::CONFLICT,
                    tonic::Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
                    _ => StatusCode::SERVICE_UNAVAILABLE,
                };
                json(status, serde_json::json!({"error": s.message()}))
            }
        };
        harden(&mut r);
        r
    }
}

/// Asks every member for its dashboard, concurrently.
async fn cluster_page(grpc: &AdminService) -> ClusterPage {
    let members = grpc.members_now();
    let me = grpc.cluster.as_ref().map(|c| c.id);
    let mine = grpc.node_dashboard_now().await;
    let mut calls = tokio::task::JoinSet::new();
    for m in members.members.iter().filter(|m| Some(m.id) != me) {
        let (grpc, addr, id) = (grpc.clone(), m.admin_addr.clone(), m.id);
        calls.spawn(async move { (id, grpc.member_dashboard(&addr, id).await) });
    }
    let mut answers = std::collections::HashMap::new();
    while let Some(Ok((id, r))) = calls.join_next().await {
        answers.insert(id, r);
    }
    let mut nodes: Vec<NodeView> = members
        .members
        .iter()
        .map(|m| {
            let answer = if Some(m.id) == me {
                Ok(mine.clone())
            } else {
                answers.remove(&m.id).unwrap_or_else(|| Err("no answer".into()))
            };
            let (reachable, error, dashboard) = match answer {
                Ok(d) => (true, String::new(), Some(d)),
                Err(e) => (false, e, None),
            };
            NodeView {
                id: m.id,
                region: m.region.clone(),
                voter: m.voter,
                admin_addr: m.admin_addr.clone(),
                reachable,
                error,
                lag: None,
                dashboard,
            }
        })
        .collect();
    if nodes.is_empty() {
        // A single node without a cluster.
        nodes.push(NodeView {
            id: 0,
            region: String::new(),
            voter: false,
            admin_addr: String::new(),
            reachable: true,
            error: String::new(),
            lag: Some(0),
            dashboard: Some(mine.clone()),
        });
    }
    let applied = |n: &NodeView| n.dashboard.as_ref().and_then(|d| d.status.as_ref()).map(|s| s.applied_index);
    let front = nodes.iter().filter_map(applied).max().unwrap_or(0);
    for n in &mut nodes {
        n.lag = applied(n).map(|a| front.saturating_sub(a));
    }
    nodes.sort_by_key(|n| (n.region.clone(), n.id));
    let history = match &grpc.cluster {
        Some(_) => {
            let req = tonic::Request::new(schemas::admin::ConfigHistoryRequest {});
            schemas::admin::admin_server::Admin::get_config_history(grpc, req)
                .await
                .map(|r| r.into_inner().entries.into_iter().take(HISTORY).collect())
                .unwrap_or_default()
        }
        None => Vec::new(),
    };
    let status = mine.status.unwrap_or_default();
    ClusterPage {
        this_node: me,
        leader_id: status.leader_id,
        term: status.term,
        generated_at: SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0),
        nodes,
        history,
        refusal: status.refusal,
    }
}
