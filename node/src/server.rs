//! Listeners: accept loops for the proxy (plain and TLS) with connection limits (in all
//! and per client IP), slow-client timeouts (request heads, unread responses, idle
//! connections) and graceful shutdown.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

use crate::coarse_timer::CoarseTimer;
use crate::conn::{Activity, PerIp, Tracked, WriteDeadline};
use crate::proxy::clientip::TrustedProxies;
use crate::proxy::{ConnInfo, Proxy};

/// Limits and timeouts of client connections.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// Most client connections open at once; more wait in the kernel's backlog.
    pub max_connections: usize,
    /// Largest request head (request line and headers), in bytes; larger gets 431.
    pub max_header_bytes: usize,
    /// Most header fields in one request.
    pub max_headers: usize,
    /// Time a client has to send a complete request head; also bounds idle keep-alive.
    pub header_timeout: Duration,
    /// Time a client has to finish the TLS handshake.
    pub tls_handshake_timeout: Duration,
    /// How long shutdown waits for requests in flight.
    pub drain_timeout: Duration,
    /// Most connections open at once from one client IP (0: no cap).
    pub max_connections_per_ip: usize,
    /// A connection with no request in flight for this long is closed (HTTP/2 with a
    /// GOAWAY; HTTP/1.1 keep-alive is also bounded by `header_timeout`).
    pub idle_timeout: Duration,
    /// A write to the client that makes no progress for this long ends the connection.
    pub write_timeout: Duration,
    /// Peers whose connections carry many clients: the per-IP cap applies to the clients
    /// they name, and only they may send a PROXY protocol header.
    pub trusted_proxies: Arc<TrustedProxies>,
    /// Every connection starts with a PROXY protocol header (`--proxy-protocol`).
    pub proxy_protocol: bool,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            max_connections: 10_000,
            max_header_bytes: 64 * 1024,
            max_headers: 100,
            header_timeout: Duration::from_secs(30),
            tls_handshake_timeout: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(30),
            max_connections_per_ip: 1_000,
            idle_timeout: Duration::from_secs(300),
            write_timeout: Duration::from_secs(60),
            trusted_proxies: Arc::default(),
            proxy_protocol: false,
        }
    }
}

/// hyper's built-in HTTP/1 header count limit.
const HYPER_MAX_HEADERS: usize = 100;

fn builder(settings: &ServerSettings) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    let mut h1 = b.http1();
    // Request-head deadlines are per request: a coarse timer keeps them cheap.
    h1.timer(CoarseTimer::start())
        .header_read_timeout(settings.header_timeout)
        .max_buf_size(settings.max_header_bytes.max(8192))
        .keep_alive(true);
    // hyper's own limit is 100 headers, kept on the stack; naming any limit, even 100, makes
    // it allocate and fill a header array per request (about 2 % of a request's CPU), so
    // only another limit is passed on.
    if settings.max_headers != HYPER_MAX_HEADERS {
        h1.max_headers(settings.max_headers);
    }
    b.http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(settings.max_header_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(256)
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(20));
    b
}

/// Serves the proxy on `listener` until `shutdown` turns true, then stops accepting, asks
/// every connection to finish its requests in flight, and waits for them (up to the drain
/// timeout).
pub async fn serve(
    listener: TcpListener,
    tls: Option<TlsListener>,
    proxy: Arc<Proxy>,
    settings: ServerSettings,
    mut shutdown: watch::Receiver<bool>,
) {
    let builder = Arc::new(builder(&settings));
    let limit = Arc::new(Semaphore::new(settings.max_connections));
    let per_ip = PerIp::new(settings.max_connections_per_ip);
    let local_port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
    let name = if tls.is_some() { "https" } else { "http" };
    let open = metrics::gauge!("raftgate_open_connections", "listener" => name);
    let refused = metrics::counter!("raftgate_connections_refused_total", "listener" => name, "reason" => "per_ip");
    loop {
        let permit = tokio::select! {
            p = limit.clone().acquire_owned() => p.expect("semaphore is never closed"),
            _ = shutdown.changed() => break,
        };
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        // A trusted proxy carries many clients: the cap applies to each client it names
        // (after the PROXY header), never to the proxy itself.
        let trusted_peer = settings.trusted_proxies.contains(peer.ip());
        let ip_slot = if trusted_peer { None } else { per_ip.admit(peer.ip()) };
        if ip_slot.is_none() && !trusted_peer {
            // Closed at once: one address cannot take every connection slot.
            refused.increment(1);
            tracing::debug!(%peer, "refused: too many connections from this address");
            continue;
        }
        let _ = stream.set_nodelay(true);
        let (per_ip, refused) = (per_ip.clone(), refused.clone());
        let proxy_protocol = settings.proxy_protocol;
        let proxy = proxy.clone();
        let builder = builder.clone();
        let tls = tls.clone();
        let mut stop = shutdown.clone();
        let open = open.clone();
        let handshake_timeout = settings.tls_handshake_timeout;
        let timers = Timers { idle: settings.idle_timeout, stall: settings.write_timeout };
        tokio::spawn(async move {
            let mut stream = stream;
            let (peer, ip_slot) = if proxy_protocol {
                let Some(client) = proxy_header(&mut stream, peer, trusted_peer, handshake_timeout).await else {
                    return;
                };
                match per_ip.admit(client.ip()) {
                    Some(slot) => (client, Some(slot)),
                    None => {
                        refused.increment(1);
                        tracing::debug!(%client, "refused: too many connections from this address");
                        return;
                    }
                }
            } else {
                (peer, ip_slot)
            };
            let stream = WriteDeadline::new(stream, timers.stall);
            // The connection's slots go with every tunnel it hands off, so an upgraded
            // connection counts against the caps until the tunnel ends.
            let slot: crate::proxy::ConnSlot = Arc::new((permit, ip_slot));
            let mut conn = ConnInfo::new(peer, tls.is_some(), local_port, Some(slot));
            open.increment(1.0);
            match tls {
                None => drive(&builder, TokioIo::new(stream), proxy, conn, timers, &mut stop).await,
                Some(tls) => match tokio::time::timeout(handshake_timeout, tls.accept(stream)).await {
                    Ok(Ok(tls_stream)) => {
                        let session = tls_stream.get_ref().1;
                        conn.client_cert = session.peer_certificates().and_then(|c| client_cert_header(c.first()?));
                        conn.sni = session.server_name().map(Arc::from);
                        drive(&builder, TokioIo::new(tls_stream), proxy, conn, timers, &mut stop).await;
                    }
                    Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                    Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                },
            }
            open.decrement(1.0);
        });
    }
    // Draining: every permit comes back when its connection ends.
    let all = u32::try_from(settings.max_connections).unwrap_or(u32::MAX);
    let _ = tokio::time::timeout(settings.drain_timeout, limit.acquire_many(all)).await;
}

/// The TLS side of a proxy listener: the server config for a handshake, chosen from the
/// ClientHello's SNI (`Engine::tls_lookup`): the current config's `TLSPolicy` and
/// certificates, or, for a host name whose certificate verifies client certificates, that
/// certificate's own config (so each host name can ask for one or not).
#[derive(Clone)]
pub struct TlsListener {
    pub config_for: ConfigByName,
}

/// The server config of a host name (`None`: the client sent no SNI).
pub type ConfigByName = Arc<dyn Fn(Option<&str>) -> Option<Arc<rustls::ServerConfig>> + Send + Sync>;

impl TlsListener {
    async fn accept<IO>(&self, io: IO) -> std::io::Result<tokio_rustls::server::TlsStream<IO>>
    where
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let start = tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), io).await?;
        let Some(config) = (self.config_for)(start.client_hello().server_name()) else {
            return Err(std::io::Error::other("no TLS config loaded"));
        };
        start.into_stream(config).await
    }
}

/// `x-forwarded-client-cert` for a verified client certificate, in Envoy's format:
/// `Hash=<sha-256 of the DER>;Subject="CN=…";DNS=…` (a SAN per `DNS=`).
fn client_cert_header(cert: &rustls_pki_types::CertificateDer<'_>) -> Option<http::HeaderValue> {
    use sha2::{Digest, Sha256};
    let info = trust::identity::inspect(cert.as_ref(), "")?;
    let mut v = format!("Hash={}", hex::encode(Sha256::digest(cert.as_ref())));
    if let Some(cn) = info.common_name.filter(|cn| !cn.contains(['"', ';', ','])) {
        v += &format!(";Subject=\"CN={cn}\"");
    }
    for name in info.names.iter().filter(|n| !n.contains(['"', ';', ','])) {
        v += &format!(";DNS={name}");
    }
    http::HeaderValue::from_str(&v).ok()
}

/// The client a PROXY protocol header names (the TCP peer for a header that names none),
/// or `None` when the connection must be closed: not from a trusted proxy, no valid header
/// in time.
async fn proxy_header(
    stream: &mut tokio::net::TcpStream,
    peer: std::net::SocketAddr,
    trusted_peer: bool,
    limit: Duration,
) -> Option<std::net::SocketAddr> {
    if !trusted_peer {
        tracing::debug!(%peer, "refused: PROXY protocol from an address not in --trusted-proxies");
        return None;
    }
    match tokio::time::timeout(limit, crate::proxy_protocol::read_header(stream)).await {
        Ok(Ok(client)) => Some(client.unwrap_or(peer)),
        Ok(Err(why)) => {
            tracing::debug!(%peer, %why, "refused: bad PROXY protocol header");
            None
        }
        Err(_) => {
            tracing::debug!(%peer, "refused: no PROXY protocol header in time");
            None
        }
    }
}

/// When a connection is closed for doing nothing: no request for `idle`, or response
/// data its client has not taken for `stall` (the write timeout).
#[derive(Debug, Clone, Copy)]
struct Timers {
    idle: Duration,
    stall: Duration,
}

/// Serves one connection; closes it once idle, or at once when its client stalls; on
/// shutdown, lets its requests in flight finish (unless the client stalls them).
async fn drive<I>(
    builder: &auto::Builder<TokioExecutor>,
    io: I,
    proxy: Arc<Proxy>,
    info: ConnInfo,
    timers: Timers,
    stop: &mut watch::Receiver<bool>,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let activity = Activity::new();
    let seen = activity.clone();
    let peer = info.peer;
    let svc = service_fn(move |req| {
        let proxy = proxy.clone();
        let info = info.clone();
        let seen = seen.clone();
        async move {
            // Ended on drop: a request whose stream the client resets is dropped mid-way,
            // and must not keep the connection busy forever. Otherwise it lasts until the
            // response body is sent.
            let busy = seen.busy();
            let resp = proxy.handle(req, info).await;
            Ok::<_, Infallible>(resp.map(|body| Tracked::new(body, busy)))
        }
    });
    let conn = builder.serve_connection_with_upgrades(io, svc);
    tokio::pin!(conn);
    let finish = tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            return;
        }
        _ = stop.changed() => true,
        _ = activity.idle_for(timers.idle) => true,
        _ = activity.stalled_for(timers.stall) => false,
    };
    if finish {
        conn.as_mut().graceful_shutdown();
        tokio::select! {
            _ = conn.as_mut() => return,
            _ = activity.stalled_for(timers.stall) => {}
        }
    }
    tracing::debug!(%peer, "closing a connection whose client takes no response data");
}
