//! The admin listener: the gRPC admin API (`grpc`) and, on the same port, plain HTTP for
//! probes, curl and browsers: `/healthz`, `/readyz`, `/metrics`, `/status` and the dashboard
//! at `/ui` (`ui`). Requests are told apart by
//! content type. It never serves proxy traffic, and the raft listener never serves it.

pub mod auth;
pub mod grpc;
mod reply;
pub mod status;
pub mod traffic;
pub mod ui;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use http::{header, Method, Request, Response, StatusCode};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio::sync::watch;

use schemas::admin::admin_server::AdminServer;
use tonic::codegen::Service;

use crate::proxy::runtime::Engine;
pub use status::NodeInfo;

use reply::{json, text, AdminBody};

#[derive(Debug, Clone)]
pub struct Admin {
    pub engine: Arc<Engine>,
    pub metrics: PrometheusHandle,
    pub node: Arc<NodeInfo>,
    pub auth: auth::Auth,
    pub grpc: grpc::AdminService,
    /// The tonic service around `grpc`, built once (a clone is a reference-count bump).
    pub grpc_server: AdminServer<grpc::AdminService>,
    /// POST /webhook, when a secret is configured.
    pub webhook: Option<Webhook>,
    /// Webhooks arrive on their own listener (`--webhook-addr`), not on this one.
    pub webhook_elsewhere: bool,
    /// The dashboard (`/ui`).
    pub ui: Arc<ui::Ui>,
}

#[derive(Debug, Clone)]
pub struct Webhook {
    pub secret: crate::gitops::webhook::Secret,
    /// Pushes to other branches are acknowledged and ignored.
    pub branch: String,
}

/// The admin gRPC service with its message limits.
pub fn grpc_server(svc: grpc::AdminService) -> AdminServer<grpc::AdminService> {
    AdminServer::new(svc)
        .max_decoding_message_size(schemas::admin_client::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(schemas::admin_client::MAX_MESSAGE_BYTES)
}

impl Admin {
    /// A push webhook: checked against the secret, then the leader's sync is started (here,
    /// or on the leader through the admin API). Answers before the sync finishes.
    async fn webhook(&self, req: Request<hyper::body::Incoming>) -> Response<AdminBody> {
        use crate::gitops::webhook;
        use http_body_util::BodyExt;
        let Some(hook) = &self.webhook else {
            return json(
                StatusCode::NOT_FOUND,
                serde_json::json!({"error": "no webhook is configured on this node: start raftgated with --git-webhook-secret-file"}),
            );
        };
        let (parts, body) = req.into_parts();
        let body = match http_body_util::Limited::new(body, webhook::MAX_BODY_BYTES).collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => {
                return json(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    serde_json::json!({"error": format!("webhook bodies are limited to {} bytes", webhook::MAX_BODY_BYTES)}),
                )
            }
        };
        let provider = match webhook::verify(&parts.headers, &body, &hook.secret) {
            Ok(p) => p,
            Err(e) => {
                metrics::counter!("raftgate_webhook_rejected_total").increment(1);
                tracing::warn!(error = %e, "webhook refused");
                return json(StatusCode::UNAUTHORIZED, serde_json::json!({"error": e.to_string()}));
            }
        };
        let event = ["x-github-event", "x-gitea-event", "x-gitlab-event"]
            .iter()
            .find_map(|h| parts.headers.get(*h).and_then(|v| v.to_str().ok()))
            .unwrap_or("push");
        if event.eq_ignore_ascii_case("ping") {
            return json(StatusCode::OK, serde_json::json!({"ok": "pong"}));
        }
        if let Some(branch) = webhook::pushed_branch(&body) {
            if branch != hook.branch {
                return json(
                    StatusCode::ACCEPTED,
                    serde_json::json!({"ignored": format!("push to `{branch}`; this cluster follows `{}`", hook.branch)}),
                );
            }
        }
        match self.grpc.start_sync().await {
            Ok(leader) => {
                tracing::info!(?provider, leader, "webhook: sync started");
                json(StatusCode::ACCEPTED, serde_json::json!({"sync": "started", "leader": leader}))
            }
            Err(status) => json(StatusCode::SERVICE_UNAVAILABLE, serde_json::json!({"error": status.message()})),
        }
    }

    async fn handle(&self, mut req: Request<hyper::body::Incoming>, peer: &trust::Peer) -> Response<AdminBody> {
        let grpc =
            req.headers().get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
        if grpc {
            if let Err(e) = self.auth.check(req.headers(), grpc::is_mutating(req.uri().path()), &peer.identity) {
                metrics::counter!("raftgate_admin_unauthenticated_total").increment(1);
                return tonic::Status::unauthenticated(e.to_string()).into_http();
            }
            // The handlers see who called (a node may only join as itself).
            req.extensions_mut().insert(peer.clone());
            return match self.grpc_server.clone().call(req).await {
                Ok(r) => r,
                Err(never) => match never {},
            };
        }
        if req.uri().path() == "/webhook" && req.method() == Method::POST {
            if self.webhook_elsewhere {
                return json(
                    StatusCode::NOT_FOUND,
                    serde_json::json!({"error": "webhooks are served on this node's --webhook-addr, not on the admin listener"}),
                );
            }
            return self.webhook(req).await;
        }
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n".into(), "text/plain");
        }
        let path = req.uri().path();
        if let Some(page) = ui::asset(path) {
            return page;
        }
        match path {
            "/healthz" => text(StatusCode::OK, "ok\n".into(), "text/plain"),
            "/metrics" | "/status" | "/ui/api/cluster" | "/ui/api/diff"
                if let Err(e) = self.auth.check(req.headers(), false, &peer.identity) =>
            {
                let mut r = text(StatusCode::UNAUTHORIZED, format!("{e}\n"), "text/plain");
                r.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
                r
            }
            "/readyz" => {
                if self.engine.is_loaded() {
                    text(StatusCode::OK, "ready\n".into(), "text/plain")
                } else {
                    text(StatusCode::SERVICE_UNAVAILABLE, "no config loaded yet\n".into(), "text/plain")
                }
            }
            "/metrics" => {
                self.engine.refresh_gauges();
                let mut body = self.metrics.render();
                if self.engine.is_loaded() {
                    body += &crate::proxy::runtime::config_info(&self.engine.current());
                }
                if let Some(c) = &self.grpc.cluster {
                    body += &status::raft_metrics(c);
                }
                text(StatusCode::OK, body, "text/plain; version=0.0.4")
            }
            "/ui/api/cluster" => self.ui.cluster(&self.grpc).await,
            "/ui/api/diff" => self.ui.diff(&self.grpc, req.uri().query()).await,
            "/status" => {
                let rt = self.engine.current();
                let body = serde_json::json!({
                    "node": &*self.node,
                    "cluster": self.grpc.cluster.as_ref().map(status::ClusterView::of),
                    "ready": self.engine.is_loaded(),
                    "config": {
                        "hash": rt.hash.to_string(),
                        "commit": rt.origin.commit,
                        "source": rt.origin.source,
                        "loadedAt": rt.loaded_at.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
                        "upstreams": rt.snapshot.upstreams.len(),
                        "routes": rt.snapshot.routes.len(),
                        "rules": rt.router.rule_count(),
                        "certificates": rt.snapshot.certificates.len(),
                        "certificateErrors": rt.certs.errors(),
                        "certificateStates": rt.certs.views(),
                    },
                    "upstreams": rt.upstream_views(),
                    "resilience": status::ResilienceView::of(&rt),
                });
                text(StatusCode::OK, format!("{body:#}\n"), "application/json")
            }
            _ => text(
                StatusCode::NOT_FOUND,
                "not found: try /ui, /healthz, /readyz, /metrics or /status (or the gRPC admin API: raftgate)\n".into(),
                "text/plain",
            ),
        }
    }
}

/// Admin connections open at once; more are refused at accept (the admin listener should
/// sit on a private network, but a flood must not exhaust the node).
const MAX_ADMIN_CONNECTIONS: usize = 256;
/// Largest admin request head (HTTP/1.1 buffer, HTTP/2 header list).
const MAX_ADMIN_HEADER_BYTES: usize = 64 * 1024;

fn builder() -> hyper_util::server::conn::auto::Builder<TokioExecutor> {
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(std::time::Duration::from_secs(10))
        .max_buf_size(MAX_ADMIN_HEADER_BYTES);
    builder.http2().max_header_list_size(MAX_ADMIN_HEADER_BYTES as u32).max_concurrent_streams(64);
    builder
}

/// Serves the admin API. With `tls`, the listener runs TLS with the node's certificate and
/// verifies client certificates when offered (operators and other nodes authenticate with
/// them; the token works too).
pub async fn serve(
    listener: TcpListener,
    admin: Arc<Admin>,
    tls: Option<Arc<trust::Tls>>,
    shutdown: watch::Receiver<bool>,
) {
    let tls = tls.map(|t| trust::ListenTls::Cluster(t, trust::ClientAuth::Optional));
    serve_as(Role::Admin, listener, admin, tls, shutdown).await;
}

/// Serves `POST /webhook` alone on its own listener (`--webhook-addr`), which may face the
/// internet while the admin listener stays private. Always TLS.
pub async fn serve_webhooks(
    listener: TcpListener,
    admin: Arc<Admin>,
    tls: Arc<rustls::ServerConfig>,
    shutdown: watch::Receiver<bool>,
) {
    serve_as(Role::Webhooks, listener, admin, Some(trust::ListenTls::Fixed(tls)), shutdown).await;
}

/// What a listener of the admin kind answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// Everything: gRPC, probes, metrics, status (and webhooks unless they have their own).
    Admin,
    /// `POST /webhook` only.
    Webhooks,
}

async fn serve_as(
    role: Role,
    listener: TcpListener,
    admin: Arc<Admin>,
    tls: Option<trust::ListenTls>,
    shutdown: watch::Receiver<bool>,
) {
    use tokio_stream::StreamExt;
    let builder = Arc::new(builder());
    let opts = trust::ListenOptions {
        name: if role == Role::Admin { "admin" } else { "webhook" },
        tls,
        max_connections: MAX_ADMIN_CONNECTIONS,
        handshake_timeout: std::time::Duration::from_secs(10),
    };
    let mut incoming = trust::incoming(listener, opts, shutdown);
    while let Some(Ok(conn)) = incoming.next().await {
        let admin = admin.clone();
        let builder = builder.clone();
        let peer = conn.peer().clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                let admin = admin.clone();
                let peer = peer.clone();
                async move {
                    Ok::<_, Infallible>(match role {
                        Role::Admin => admin.handle(req, &peer).await,
                        Role::Webhooks if req.uri().path() == "/webhook" && req.method() == Method::POST => {
                            admin.webhook(req).await
                        }
                        Role::Webhooks => {
                            text(StatusCode::NOT_FOUND, "only POST /webhook is served here\n".into(), "text/plain")
                        }
                    })
                }
            });
            let _ = builder.serve_connection(TokioIo::new(conn), svc).await;
        });
    }
}
