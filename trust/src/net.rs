//! Listening and dialing with the cluster's TLS.
//!
//! `incoming` turns a listener into a stream of connections whose TLS handshake is done and
//! whose peer is known (`Peer`), for tonic's `serve_with_incoming` and for hyper alike:
//! handshakes run concurrently with a deadline, so one slow client holds neither the accept
//! loop nor a connection slot for long. `channel` dials with the current client config and
//! checks the server's certificate against the name the caller expects.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tonic::transport::server::Connected;
use tonic::transport::{Channel, Endpoint};

use crate::material::{ClientAuth, Tls};

/// Who is at the other end of an accepted connection. Handlers find it in the request's
/// extensions (tonic puts it there; the admin listener passes it along).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub addr: SocketAddr,
    pub identity: Identity,
}

/// What the peer's client certificate proved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// Plaintext, or TLS without a client certificate.
    Anonymous,
    /// A certificate from the cluster CA naming this node id.
    Node(u64),
    /// A certificate from the cluster CA naming no node: an operator (its common name).
    Operator(String),
}

impl Identity {
    /// Whether a certificate from the cluster CA was presented.
    pub fn is_authenticated(&self) -> bool {
        !matches!(self, Identity::Anonymous)
    }
}

impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Identity::Anonymous => f.write_str("anonymous"),
            Identity::Node(id) => write!(f, "node {id}"),
            Identity::Operator(name) => write!(f, "operator `{name}`"),
        }
    }
}

/// How a listener takes connections.
#[derive(Debug, Clone)]
pub struct ListenOptions {
    /// For metrics and logs (`raft`, `admin`).
    pub name: &'static str,
    /// TLS, or plaintext when `None`.
    pub tls: Option<ListenTls>,
    /// Connections open at once; more are closed at accept.
    pub max_connections: usize,
    /// Time a client has to finish its TLS handshake.
    pub handshake_timeout: Duration,
}

/// The TLS a listener runs.
#[derive(Debug, Clone)]
pub enum ListenTls {
    /// The cluster's reloadable material and client-certificate policy: peers are known
    /// by their certificates.
    Cluster(Arc<Tls>, ClientAuth),
    /// A fixed server config without client certificates (a public listener): every peer
    /// is anonymous.
    Fixed(Arc<rustls::ServerConfig>),
}

/// One accepted connection, handshake done.
#[derive(Debug)]
pub struct Conn {
    io: Io,
    peer: Peer,
    _slot: OwnedSemaphorePermit,
}

#[derive(Debug)]
enum Io {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl Conn {
    pub fn peer(&self) -> &Peer {
        &self.peer
    }
}

impl Connected for Conn {
    type ConnectInfo = Peer;

    fn connect_info(&self) -> Peer {
        self.peer.clone()
    }
}

impl AsyncRead for Conn {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        match &mut self.io {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        match &mut self.io {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match &mut self.io {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match &mut self.io {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match &mut self.io {
            Io::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.io {
            Io::Plain(s) => s.is_write_vectored(),
            Io::Tls(s) => s.is_write_vectored(),
        }
    }
}

/// Accepts connections on `listener` until `shutdown` or until the stream is dropped.
pub fn incoming(
    listener: TcpListener,
    opts: ListenOptions,
    mut shutdown: watch::Receiver<bool>,
) -> tokio_stream::wrappers::ReceiverStream<std::io::Result<Conn>> {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let slots = Arc::new(Semaphore::new(opts.max_connections));
    // Handshakes in progress are bounded apart from connections: a client without a
    // certificate, stalling its handshake, must not hold the slots peers need.
    let handshakes = Arc::new(Semaphore::new(MAX_PENDING_HANDSHAKES));
    tokio::spawn(async move {
        loop {
            let (stream, addr) = tokio::select! {
                r = listener.accept() => match r {
                    Ok(s) => s,
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(listener = opts.name, error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = shutdown.changed() => return,
                _ = tx.closed() => return,
            };
            let Ok(pending) = handshakes.clone().try_acquire_owned() else {
                metrics::counter!("raftgate_connections_refused_total", "listener" => opts.name).increment(1);
                continue;
            };
            let _ = stream.set_nodelay(true);
            let (tx, opts, slots) = (tx.clone(), opts.clone(), slots.clone());
            tokio::spawn(async move {
                let io = handshake(stream, addr, &opts).await;
                drop(pending);
                let Some((io, peer)) = io else { return };
                let Ok(slot) = slots.try_acquire_owned() else {
                    metrics::counter!("raftgate_connections_refused_total", "listener" => opts.name).increment(1);
                    return;
                };
                let _ = tx.send(Ok(Conn { io, peer, _slot: slot })).await;
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// TLS handshakes in progress at once, per listener.
const MAX_PENDING_HANDSHAKES: usize = 64;

async fn handshake(stream: TcpStream, addr: SocketAddr, opts: &ListenOptions) -> Option<(Io, Peer)> {
    let acceptor = match &opts.tls {
        None => return Some((Io::Plain(stream), Peer { addr, identity: Identity::Anonymous })),
        Some(ListenTls::Cluster(tls, auth)) => tokio_rustls::TlsAcceptor::from(tls.server(*auth)),
        Some(ListenTls::Fixed(config)) => tokio_rustls::TlsAcceptor::from(config.clone()),
    };
    let failed = |reason: &'static str| {
        metrics::counter!("raftgate_tls_handshake_failures_total", "listener" => opts.name, "reason" => reason)
            .increment(1);
    };
    let stream = match tokio::time::timeout(opts.handshake_timeout, acceptor.accept(stream)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            failed("refused");
            tracing::debug!(listener = opts.name, peer = %addr, error = %e, "TLS handshake refused");
            return None;
        }
        Err(_) => {
            failed("timeout");
            tracing::debug!(listener = opts.name, peer = %addr, "TLS handshake timed out");
            return None;
        }
    };
    let identity = match (&opts.tls, stream.get_ref().1.peer_certificates().and_then(|c| c.first())) {
        (Some(ListenTls::Cluster(tls, _)), Some(der)) => classify(der, tls.cluster()),
        _ => Identity::Anonymous,
    };
    Some((Io::Tls(Box::new(stream)), Peer { addr, identity }))
}

/// Who a verified client certificate makes its holder: a node when it names exactly one
/// node of this cluster; an operator only when it names nothing at all (as `raftgate certs
/// client` issues them); anything else from the same CA (several node names, a node of
/// another cluster, a server certificate) is no one.
fn classify(der: &[u8], cluster: &str) -> Identity {
    match crate::identity::inspect(der, cluster) {
        Some(info) => match info.node_id() {
            Some(id) => Identity::Node(id),
            None if info.names.is_empty() => Identity::Operator(info.common_name.unwrap_or_else(|| "unnamed".into())),
            None => Identity::Anonymous,
        },
        None => Identity::Anonymous,
    }
}

// ---------------------------------------------------------------------------------------
// Dialing

/// The client side of TLS: a node's reloadable material, or a tool's fixed config.
#[derive(Debug, Clone)]
pub enum ClientTls {
    Node(Arc<Tls>),
    Fixed(Arc<ClientConfig>),
}

impl ClientTls {
    fn config(&self) -> Arc<ClientConfig> {
        match self {
            ClientTls::Node(t) => t.client(),
            ClientTls::Fixed(c) => c.clone(),
        }
    }
}

/// An address that is not `host:port`, or a server name that cannot be one.
#[derive(Debug, thiserror::Error)]
#[error("bad address `{addr}`: {reason}")]
pub struct BadAddress {
    pub addr: String,
    pub reason: String,
}

/// Splits `host:port` (an `http://` or `https://` prefix allowed) and returns
/// `(host_port, host)`.
pub fn split_addr(addr: &str) -> Result<(String, String), BadAddress> {
    let bad = |reason: &str| BadAddress { addr: addr.to_string(), reason: reason.to_string() };
    let host_port = addr.strip_prefix("https://").or_else(|| addr.strip_prefix("http://")).unwrap_or(addr);
    let host_port = host_port.trim_end_matches('/');
    let uri: http::uri::Authority = host_port.parse().map_err(|_| bad("expected host:port"))?;
    if uri.port_u16().is_none() {
        return Err(bad("expected host:port (the port is missing)"));
    }
    let host = uri.host().trim_start_matches('[').trim_end_matches(']').to_string();
    Ok((host_port.to_string(), host))
}

/// A lazily connected channel to `addr`. With `tls`, connections are TLS and the server's
/// certificate must be valid for `server_name` (default: the host of `addr`).
pub fn channel(
    addr: &str,
    tls: Option<(ClientTls, Option<String>)>,
    configure: impl FnOnce(Endpoint) -> Endpoint,
) -> Result<Channel, BadAddress> {
    let (host_port, host) = split_addr(addr)?;
    let endpoint = Endpoint::from_shared(format!("http://{host_port}"))
        .map_err(|e| BadAddress { addr: addr.to_string(), reason: e.to_string() })?;
    let endpoint = configure(endpoint);
    let Some((tls, name)) = tls else { return Ok(endpoint.connect_lazy()) };
    let name = name.unwrap_or(host);
    let server_name = ServerName::try_from(name.clone()).map_err(|e| BadAddress {
        addr: addr.to_string(),
        reason: format!("`{name}` cannot be a TLS server name: {e}"),
    })?;
    Ok(endpoint.connect_with_connector_lazy(Connector { tls, server_name }))
}

#[derive(Debug, Clone)]
struct Connector {
    tls: ClientTls,
    server_name: ServerName<'static>,
}

type Dialed = TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;

impl tower_service::Service<http::Uri> for Connector {
    type Response = Dialed;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = std::io::Result<Dialed>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let connector = tokio_rustls::TlsConnector::from(self.tls.config());
        let name = self.server_name.clone();
        Box::pin(async move {
            let authority = uri
                .authority()
                .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "no host:port"))?
                .as_str()
                .to_string();
            let tcp = TcpStream::connect(authority).await?;
            let _ = tcp.set_nodelay(true);
            let tls = connector.connect(name, tcp).await?;
            Ok(TokioIo::new(tls))
        })
    }
}
