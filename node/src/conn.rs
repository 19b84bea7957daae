//! What bounds one client connection beyond its requests: a cap on connections per client
//! IP, a deadline on writes the client does not read, an idle timer that closes
//! connections (HTTP/2 ones especially) that carry no request, and a stall timer that
//! closes connections whose client stops taking response data it could take (an HTTP/2
//! flow-control window left at zero never blocks a socket write, so the write deadline
//! alone would not see it).

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

use crate::proxy::clock;

/// Open connections per client IP, on one listener.
#[derive(Debug)]
pub struct PerIp {
    max: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One connection's place in `PerIp`, given back when dropped.
#[derive(Debug)]
pub struct IpSlot {
    ip: IpAddr,
    owner: Arc<PerIp>,
}

impl PerIp {
    /// `max` 0 means no cap.
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Self { max, open: Mutex::new(HashMap::new()) })
    }

    /// A slot for one more connection from `ip`, unless it has `max` open already.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<IpSlot> {
        if self.max == 0 {
            return Some(IpSlot { ip, owner: self.clone() });
        }
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let n = open.entry(ip).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(IpSlot { ip, owner: self.clone() })
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        if self.owner.max == 0 {
            return;
        }
        let mut open = self.owner.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// A stream whose writes fail once they have made no progress for `limit`: a client that
/// stops reading (slow read) cannot hold a connection, an upstream response or a tunnel
/// open by leaving its receive window shut.
#[derive(Debug)]
pub struct WriteDeadline<S> {
    inner: S,
    limit: Duration,
    stalled: Option<Pin<Box<Sleep>>>,
}

impl<S> WriteDeadline<S> {
    pub fn new(inner: S, limit: Duration) -> Self {
        Self { inner, limit, stalled: None }
    }

    fn progress<T>(&mut self, cx: &mut Context<'_>, r: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        match r {
            Poll::Ready(r) => {
                self.stalled = None;
                Poll::Ready(r)
            }
            Poll::Pending => {
                let limit = self.limit;
                let timer = self.stalled.get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("the client read nothing for {} s", limit.as_secs()),
                    ))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for WriteDeadline<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WriteDeadline<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.progress(cx, r)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.progress(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_flush(cx);
        self.progress(cx, r)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A request in flight on a connection (see `Activity::busy`).
#[derive(Debug)]
pub struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.last_ms.store(clock::now_ms(), Ordering::Relaxed);
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Requests in flight on one connection (a response counts until its body is sent), when
/// the last one ended, and how the client takes response data.
#[derive(Debug, Default)]
pub struct Activity {
    in_flight: AtomicUsize,
    last_ms: AtomicU64,
    /// Responses holding data the client has not pulled yet.
    waiting: AtomicUsize,
    /// When the connection last pulled response data.
    pulled_ms: AtomicU64,
}

impl Activity {
    pub fn new() -> Arc<Self> {
        let now = clock::now_ms();
        Arc::new(Self {
            in_flight: AtomicUsize::new(0),
            last_ms: AtomicU64::new(now),
            waiting: AtomicUsize::new(0),
            pulled_ms: AtomicU64::new(now),
        })
    }

    /// Resolves once a response has had data ready for `limit` while the connection pulled
    /// none: the client stopped reading (or keeps its HTTP/2 window shut).
    pub async fn stalled_for(&self, limit: Duration) {
        let limit_ms = limit.as_millis() as u64;
        loop {
            let since = clock::now_ms().saturating_sub(self.pulled_ms.load(Ordering::Relaxed));
            if since >= limit_ms && self.waiting.load(Ordering::Relaxed) > 0 {
                return;
            }
            let wait = if since >= limit_ms { limit_ms } else { limit_ms - since };
            tokio::time::sleep(Duration::from_millis(wait.max(50))).await;
        }
    }

    /// One request in flight until the guard is dropped.
    pub fn busy(self: Arc<Self>) -> Busy {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        Busy(self)
    }

    /// Resolves once the connection has had no request for `idle`.
    pub async fn idle_for(&self, idle: Duration) {
        quiet_for(&self.last_ms, idle, || self.in_flight.load(Ordering::Relaxed) > 0).await;
    }
}

/// A response body on its way to the client: its request stays in flight until the body
/// ends (a long download is not an idle connection), and while it holds data the client
/// has not pulled, the connection's stall timer runs.
#[derive(Debug)]
pub struct Tracked<B> {
    inner: B,
    /// `None` once the body ended.
    busy: Option<Busy>,
    /// Counted in `Activity::waiting`.
    waiting: bool,
}

impl<B> Tracked<B> {
    /// A response just made: its data is ready for the client.
    pub fn new(inner: B, busy: Busy) -> Self {
        busy.0.waiting.fetch_add(1, Ordering::Relaxed);
        Tracked { inner, busy: Some(busy), waiting: true }
    }

    fn not_waiting(&mut self) {
        if let (true, Some(b)) = (self.waiting, &self.busy) {
            b.0.waiting.fetch_sub(1, Ordering::Relaxed);
            self.waiting = false;
        }
    }
}

impl<B: hyper::body::Body + Unpin> hyper::body::Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<B::Data>, B::Error>>> {
        let this = &mut *self;
        if let Some(b) = &this.busy {
            b.0.pulled_ms.store(clock::now_ms(), Ordering::Relaxed);
        }
        this.not_waiting();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(_))) => {
                if let Some(b) = &this.busy {
                    b.0.waiting.fetch_add(1, Ordering::Relaxed);
                    this.waiting = true;
                }
            }
            // Waiting for the upstream is not the client's stall.
            Poll::Pending => {}
            Poll::Ready(_) => this.busy = None,
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

impl<B> Drop for Tracked<B> {
    fn drop(&mut self) {
        self.not_waiting();
    }
}

/// Resolves once `last` (a `clock::now_ms` stamp) is `idle` old while `busy` says no: the
/// one idle timer of connections and of tunnels.
pub async fn quiet_for(last: &AtomicU64, idle: Duration, busy: impl Fn() -> bool) {
    let idle_ms = idle.as_millis() as u64;
    loop {
        let since = clock::now_ms().saturating_sub(last.load(Ordering::Relaxed));
        if since >= idle_ms && !busy() {
            return;
        }
        let wait = if since >= idle_ms { idle_ms } else { idle_ms - since };
        tokio::time::sleep(Duration::from_millis(wait.max(50))).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_ip_slots_are_counted_and_given_back() {
        let p = PerIp::new(2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let s1 = p.admit(a).unwrap();
        let _s2 = p.admit(a).unwrap();
        assert!(p.admit(a).is_none(), "a third from one IP");
        assert!(p.admit(b).is_some(), "another IP has its own count");
        drop(s1);
        assert!(p.admit(a).is_some(), "a slot came back");
        assert!(PerIp::new(0).admit(a).is_some());
    }
}
