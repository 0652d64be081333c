//! `Guarded`: a response body that holds something until the body is done.
//!
//! Several layers own a resource for exactly as long as an RPC is open — an admission permit, a
//! meter entry, a connection's active-stream count — and an RPC is open until its response body
//! has been sent or dropped, well after the handler's future returned. Holding the guard in the
//! body ties the two together without each layer writing its own body type.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use tonic::Status;
use tonic::body::Body;

/// A body that drops `G` when it is dropped.
pub struct Guarded<G> {
    inner: Body,
    _guard: G,
}

impl<G> Guarded<G> {
    /// Wraps `inner`, keeping `guard` alive until the body is dropped.
    pub fn new(inner: Body, guard: G) -> Self {
        Guarded {
            inner,
            _guard: guard,
        }
    }
}

impl<G: Unpin> http_body::Body for Guarded<G> {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
