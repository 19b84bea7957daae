//! Protocol upgrades (WebSocket): when the upstream agrees (101), the client's and the
//! upstream's upgraded connections are joined and copied both ways until either side
//! ends or the tunnel has carried nothing for the idle timeout. The tunnel holds the client
//! connection's slot, so it counts against the connection caps for as long as it lives.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Response, StatusCode};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::clock;
use super::context::ConnSlot;

/// Joins the two sides of an upgrade in a task of its own, when `resp` is a 101 and the
/// client asked for one.
pub fn splice(client: Option<OnUpgrade>, resp: &mut Response<Incoming>, slot: Option<ConnSlot>, idle: Duration) {
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        return;
    }
    let Some(client) = client else { return };
    let upstream = hyper::upgrade::on(resp);
    tokio::spawn(async move {
        let _slot = slot;
        match tokio::try_join!(client, upstream) {
            Ok((client, server)) => {
                let last = Arc::new(AtomicU64::new(clock::now_ms()));
                let mut client = Touch { inner: TokioIo::new(client), last: last.clone() };
                let mut server = Touch { inner: TokioIo::new(server), last: last.clone() };
                tokio::select! {
                    _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                    () = crate::conn::quiet_for(&last, idle, || false) => tracing::debug!("tunnel closed after {} s without traffic", idle.as_secs()),
                }
            }
            Err(e) => tracing::debug!(error = %e, "upgrade failed"),
        }
    });
}

/// A stream that notes when it last read something.
struct Touch<S> {
    inner: S,
    last: Arc<AtomicU64>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Touch<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.last.store(clock::now_ms(), Ordering::Relaxed);
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Touch<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
