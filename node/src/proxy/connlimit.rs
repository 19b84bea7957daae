//! The connection limits of an upstream's breaker: at most `maxConnections` open
//! connections, and at most `maxPendingRequests` requests waiting for one.
//!
//! A connector wrapped around the upstream's TLS/TCP connector: each connection holds a
//! semaphore permit until it closes. A request that needs a new connection while all are
//! in use waits for a permit (the pool may hand it an idle connection meanwhile); when
//! `maxPendingRequests` are already waiting, or no permit comes within the connect timeout,
//! the connect fails with [`ConnLimit`], which the proxy answers as overloaded.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper_util::client::legacy::connect::{Connected, Connection};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Why a connection was not opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ConnLimit {
    #[error("maxPendingRequests reached: too many requests wait for a connection")]
    Pending,
    #[error("maxConnections reached and none freed up within the connect timeout")]
    Connections,
}

impl ConnLimit {
    pub fn name(&self) -> &'static str {
        match self {
            ConnLimit::Pending => "maxPendingRequests",
            ConnLimit::Connections => "maxConnections",
        }
    }

    /// Finds a connection-limit refusal in an error chain.
    pub fn find(e: &(dyn std::error::Error + 'static)) -> Option<ConnLimit> {
        let mut cur = Some(e);
        while let Some(err) = cur {
            if let Some(l) = err.downcast_ref::<ConnLimit>() {
                return Some(*l);
            }
            cur = err.source();
        }
        None
    }
}

#[derive(Debug, Clone)]
pub struct Limited<C> {
    inner: C,
    connections: Arc<Semaphore>,
    pending: Arc<AtomicUsize>,
    max_pending: usize,
    wait: Duration,
}

impl<C> Limited<C> {
    pub fn new(inner: C, max_connections: u32, max_pending: u32, wait: Duration) -> Self {
        Self {
            inner,
            connections: Arc::new(Semaphore::new(max_connections as usize)),
            pending: Arc::default(),
            max_pending: max_pending as usize,
            wait,
        }
    }
}

/// Counts one waiting request until dropped.
struct Waiting(Arc<AtomicUsize>);

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl<C> tower_service::Service<Uri> for Limited<C>
where
    C: tower_service::Service<Uri> + Clone + Send + 'static,
    C::Error: Into<BoxError>,
    C::Future: Send,
    C::Response: Send,
{
    type Response = Counted<C::Response>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        let mut inner = self.inner.clone();
        let (sem, pending, max_pending, wait) =
            (self.connections.clone(), self.pending.clone(), self.max_pending, self.wait);
        Box::pin(async move {
            let permit = match sem.clone().try_acquire_owned() {
                Ok(p) => p,
                Err(_) => {
                    if pending.fetch_add(1, Ordering::Relaxed) >= max_pending {
                        pending.fetch_sub(1, Ordering::Relaxed);
                        return Err(ConnLimit::Pending.into());
                    }
                    let _waiting = Waiting(pending);
                    match tokio::time::timeout(wait, sem.acquire_owned()).await {
                        Ok(Ok(p)) => p,
                        _ => return Err(ConnLimit::Connections.into()),
                    }
                }
            };
            let io = inner.call(dst).await.map_err(Into::into)?;
            Ok(Counted { io, _permit: permit })
        })
    }
}

/// A connection that holds its place under `maxConnections` until it closes.
#[derive(Debug)]
pub struct Counted<T> {
    io: T,
    _permit: OwnedSemaphorePermit,
}

impl<T: Connection> Connection for Counted<T> {
    fn connected(&self) -> Connected {
        self.io.connected()
    }
}

impl<T: hyper::rt::Read + Unpin> hyper::rt::Read for Counted<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: hyper::rt::Write + Unpin> hyper::rt::Write for Counted<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
}
