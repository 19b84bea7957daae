//! Body types. Request and response bodies are streamed frame by frame, never buffered
//! whole; the request body is counted against the size limit as it flows.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};

/// What a response carries: an upstream's streamed body or a body the gateway made.
pub type RespBody = Either<Incoming, Full<Bytes>>;

pub fn full(b: impl Into<Bytes>) -> RespBody {
    Either::Right(Full::new(b.into()))
}

/// The request body sent upstream: the client's body, cut off with an error once more than
/// `limit` bytes have passed (the upstream then sees an aborted request, never a truncated
/// one that looks complete).
#[derive(Debug)]
pub struct ReqBody {
    inner: Option<Inner>,
    seen: u64,
    limit: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("request body is larger than the limit of {0} bytes")]
    TooLarge(u64),
    #[error(transparent)]
    Client(#[from] hyper::Error),
}

impl ReqBody {
    pub fn limited(body: Incoming, limit: u64) -> Self {
        Self { inner: Some(Inner::Streaming(body)), seen: 0, limit }
    }

    /// A body read in full beforehand, so the request can be sent again.
    pub fn buffered(bytes: Bytes) -> Self {
        Self { inner: (!bytes.is_empty()).then_some(Inner::Buffered(bytes)), seen: 0, limit: u64::MAX }
    }

    pub fn empty() -> Self {
        Self { inner: None, seen: 0, limit: 0 }
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
        match Pin::new(inner).poll_frame(cx) {
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

/// Did an upstream call fail because the client's body went over the limit?
pub fn is_too_large(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if matches!(err.downcast_ref::<BodyError>(), Some(BodyError::TooLarge(_))) {
            return true;
        }
        cur = err.source();
    }
    false
}
