//! Body types. Request and response bodies are streamed frame by frame, never buffered
//! whole; the request body is counted against the size limit as it flows.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::Full;
use hyper::body::{Body, Frame, Incoming, SizeHint};

/// What a response carries: an upstream's streamed body, a body the gateway made, or an
/// upstream's body transformed on its way out (compressed).
#[derive(Debug)]
pub enum RespBody {
    Upstream(Incoming),
    Full(Full<Bytes>),
    /// Rare, so boxed: an upstream body passed through a transformation (`compress`).
    Transformed(UnsyncBoxBody<Bytes, BoxError>),
}

/// Errors of a response body: the upstream's, or a transformation's.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

pub fn full(b: impl Into<Bytes>) -> RespBody {
    RespBody::Full(Full::new(b.into()))
}

impl Body for RespBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            RespBody::Upstream(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            RespBody::Full(b) => Pin::new(b).poll_frame(cx).map_err(|never| match never {}),
            RespBody::Transformed(b) => Pin::new(b).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RespBody::Upstream(b) => b.is_end_stream(),
            RespBody::Full(b) => b.is_end_stream(),
            RespBody::Transformed(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RespBody::Upstream(b) => b.size_hint(),
            RespBody::Full(b) => b.size_hint(),
            RespBody::Transformed(b) => b.size_hint(),
        }
    }
}

/// The request body sent upstream: the client's body, cut off with an error once more than
/// `limit` bytes have passed or once the client has sent nothing for `idle` (the upstream
/// then sees an aborted request, never a truncated one that looks complete).
#[derive(Debug)]
pub struct ReqBody {
    inner: Option<Inner>,
    seen: u64,
    limit: u64,
    idle: Option<Duration>,
    /// Armed while the client keeps the body waiting; reset, not reallocated, on progress.
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    armed: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("request body is larger than the limit of {0} bytes")]
    TooLarge(u64),
    #[error("the client sent no body data for {} s", .0.as_secs())]
    Idle(Duration),
    #[error(transparent)]
    Client(#[from] hyper::Error),
}

impl ReqBody {
    pub fn limited(body: Incoming, limit: u64, idle: Duration) -> Self {
        Self { inner: Some(Inner::Streaming(body)), seen: 0, limit, idle: Some(idle), timer: None, armed: false }
    }

    /// A body read in full beforehand, so the request can be sent again.
    pub fn buffered(bytes: Bytes) -> Self {
        let inner = (!bytes.is_empty()).then_some(Inner::Buffered(bytes));
        Self { inner, seen: 0, limit: u64::MAX, idle: None, timer: None, armed: false }
    }

    pub fn empty() -> Self {
        Self { inner: None, seen: 0, limit: 0, idle: None, timer: None, armed: false }
    }

    /// Called while the client keeps the body waiting: true once it has waited `idle`.
    fn stalled(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(idle) = self.idle else { return false };
        let deadline = tokio::time::Instant::now() + idle;
        let timer = self.timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if !self.armed {
            timer.as_mut().reset(deadline);
            self.armed = true;
        }
        timer.as_mut().poll(cx).is_ready()
    }
}

#[derive(Debug)]
enum Inner {
    Streaming(Incoming),
    Buffered(Bytes),
}

impl Body for ReqBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        let inner = match this.inner.as_mut() {
            None => return Poll::Ready(None),
            Some(Inner::Buffered(_)) => {
                let Some(Inner::Buffered(b)) = this.inner.take() else { unreachable!() };
                return Poll::Ready(Some(Ok(Frame::data(b))));
            }
            Some(Inner::Streaming(inner)) => inner,
        };
        let polled = Pin::new(inner).poll_frame(cx);
        if polled.is_ready() {
            this.armed = false;
        }
        match polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.seen += data.len() as u64;
                    if this.seen > this.limit {
                        this.inner = None;
                        return Poll::Ready(Some(Err(BodyError::TooLarge(this.limit))));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending if this.stalled(cx) => {
                let idle = this.idle.unwrap_or_default();
                this.inner = None;
                Poll::Ready(Some(Err(BodyError::Idle(idle))))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            None => true,
            Some(Inner::Buffered(_)) => false,
            Some(Inner::Streaming(b)) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            None => SizeHint::with_exact(0),
            Some(Inner::Buffered(b)) => SizeHint::with_exact(b.len() as u64),
            Some(Inner::Streaming(b)) => b.size_hint(),
        }
    }
}

/// The client's fault behind a failed upstream call, if it was one: its body went over the
/// limit, stalled, or could not be read (malformed chunked framing, a client that went
/// away mid-body). Never the upstream's: such failures must not count against its circuit
/// breaker or eject its endpoints, or any client could trip them at will.
pub fn client_fault<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a BodyError> {
    let mut cur: Option<&'a (dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        match err.downcast_ref::<BodyError>() {
            Some(b) => return Some(b),
            None => cur = err.source(),
        }
    }
    None
}
