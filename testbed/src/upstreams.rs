//! Demo and benchmark upstreams: small hyper servers on loopback.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;

use anyhow::Context;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

/// Starts an echo server on every loopback endpoint of the config, named after its
/// upstream, and runs until interrupted.
pub(crate) fn serve_config(dir: &Path) -> anyhow::Result<()> {
    let snapshot = compile(dir)?;
    let mut targets = Vec::new();
    for u in &snapshot.upstreams {
        for e in &u.endpoints {
            if let Ok(addr) = e.address.parse::<SocketAddr>() {
                if addr.ip().is_loopback() {
                    targets.push((u.name.clone(), addr));
                }
            }
        }
    }
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    rt.block_on(async move {
        for (name, addr) in targets {
            let listener = TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr}"))?;
            println!("demo upstream `{name}` on http://{addr}");
            tokio::spawn(echo_server(listener, format!("{name} ({addr})")));
        }
        tokio::signal::ctrl_c().await?;
        Ok(())
    })
}

/// Reads and compiles a config directory.
pub(crate) fn compile(dir: &Path) -> anyhow::Result<schemas::ConfigSnapshot> {
    let files = schemas::source::read_dir(dir, &schemas::TreeLimits::default())?;
    schemas::compile_tree(&files)
        .map(|c| c.snapshot)
        .map_err(|d| anyhow::anyhow!("{}", d.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n")))
}

async fn echo_server(listener: TcpListener, name: String) {
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let name = name.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: Request<Incoming>| {
                let body = serde_json::json!({
                    "upstream": name,
                    "method": req.method().as_str(),
                    "path": req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/"),
                    "headers": req.headers().iter()
                        .map(|(k, v)| (k.as_str().to_string(), serde_json::Value::from(v.to_str().unwrap_or(""))))
                        .collect::<serde_json::Map<_, _>>(),
                });
                async move {
                    Ok::<_, Infallible>(
                        Response::builder()
                            .header("content-type", "application/json")
                            .body(Full::new(Bytes::from(format!("{body:#}\n"))))
                            .expect("static response"),
                    )
                }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

static BODY: &[u8] =
    b"hello from backend 0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz01234567\n";

/// 1 MiB of text, made once and shared by every response.
fn large_body() -> Bytes {
    static LARGE: std::sync::OnceLock<Bytes> = std::sync::OnceLock::new();
    LARGE.get_or_init(|| BODY.iter().copied().cycle().take(1 << 20).collect::<Vec<u8>>().into()).clone()
}

/// The upstream of `make bench`: the same single-threaded hyper server for every proxy.
pub(crate) fn bench_backend(addr: SocketAddr, delay: Option<std::time::Duration>) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async move {
        let listener = TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr}"))?;
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| async move {
                    if let Some(d) = delay {
                        tokio::time::sleep(d).await;
                    }
                    // `/1m`: a 1 MiB body, for the throughput row; anything else: 100 bytes.
                    let body = if req.uri().path() == "/1m" { large_body() } else { Bytes::from_static(BODY) };
                    Ok::<_, Infallible>(
                        Response::builder()
                            .header("content-type", "text/plain")
                            .body(Full::new(body))
                            .expect("static response"),
                    )
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .keep_alive(true)
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    })
}

/// `testbed otlp-sink`: an OTLP/gRPC trace receiver that accepts every export and counts
/// the spans (printed every ten seconds), for the tracing rows of `make bench`.
pub(crate) fn otlp_sink(addr: SocketAddr) -> anyhow::Result<()> {
    use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
    use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    #[derive(Default)]
    struct Sink(Arc<AtomicU64>);

    #[tonic::async_trait]
    impl TraceService for Sink {
        async fn export(
            &self,
            req: tonic::Request<ExportTraceServiceRequest>,
        ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
            let n: usize =
                req.get_ref().resource_spans.iter().flat_map(|r| r.scope_spans.iter()).map(|s| s.spans.len()).sum();
            self.0.fetch_add(n as u64, Ordering::Relaxed);
            Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
        }
    }

    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async move {
        let listener = TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr}"))?;
        let count = Arc::new(AtomicU64::new(0));
        let c = count.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(std::time::Duration::from_secs(10)).await;
                eprintln!("otlp-sink: {} spans received", c.load(Ordering::Relaxed));
            }
        });
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(Sink(count)))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await?;
        Ok(())
    })
}
