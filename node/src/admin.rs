//! The admin listener's plain-HTTP endpoints: `/healthz`, `/readyz`, `/metrics`, `/status`.
//! It never serves proxy traffic.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use http::{header, Method, Request, Response, StatusCode};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::proxy::runtime::Engine;
use crate::proxy::{full, RespBody};

#[derive(Debug, Clone)]
pub struct Admin {
    pub engine: Arc<Engine>,
    pub metrics: PrometheusHandle,
    pub node: Arc<NodeInfo>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct NodeInfo {
    pub version: &'static str,
    pub started_at: u64,
    pub http_addr: Option<String>,
    pub https_addr: Option<String>,
}

impl Admin {
    async fn handle(&self, req: Request<hyper::body::Incoming>) -> Response<RespBody> {
        let text = |status: StatusCode, body: String, ctype: &'static str| {
            let mut r = Response::new(full(body));
            *r.status_mut() = status;
            r.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static(ctype));
            r
        };
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n".into(), "text/plain");
        }
        match req.uri().path() {
            "/healthz" => text(StatusCode::OK, "ok\n".into(), "text/plain"),
            "/readyz" => {
                if self.engine.is_loaded() {
                    text(StatusCode::OK, "ready\n".into(), "text/plain")
                } else {
                    text(StatusCode::SERVICE_UNAVAILABLE, "no config loaded yet\n".into(), "text/plain")
                }
            }
            "/metrics" => text(StatusCode::OK, self.metrics.render(), "text/plain; version=0.0.4"),
            "/status" => {
                let rt = self.engine.current();
                let certs = self.engine.certs.load();
                let body = serde_json::json!({
                    "node": &*self.node,
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
                        "certificateErrors": certs.errors,
                    },
                });
                text(StatusCode::OK, format!("{body:#}\n"), "application/json")
            }
            _ => text(
                StatusCode::NOT_FOUND,
                "not found: try /healthz, /readyz, /metrics or /status\n".into(),
                "text/plain",
            ),
        }
    }
}

pub async fn serve(listener: TcpListener, admin: Admin, mut shutdown: watch::Receiver<bool>) {
    let admin = Arc::new(admin);
    loop {
        let (stream, _) = tokio::select! {
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(_) => continue,
            },
            _ = shutdown.changed() => return,
        };
        let admin = admin.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let admin = admin.clone();
                async move { Ok::<_, Infallible>(admin.handle(req).await) }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}
