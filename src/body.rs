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

/// A layer that takes a guard for each request (from `make(&request)`) and holds it in the
/// response body, so the guard lives exactly as long as the RPC.
#[derive(Clone, Debug)]
pub struct GuardLayer<F> {
    make: F,
}

impl<F> GuardLayer<F> {
    /// A layer calling `make` for every request.
    pub fn new(make: F) -> Self {
        GuardLayer { make }
    }
}

impl<S, F: Clone> tower::Layer<S> for GuardLayer<F> {
    type Service = Guard<S, F>;
    fn layer(&self, inner: S) -> Guard<S, F> {
        Guard {
            inner,
            make: self.make.clone(),
        }
    }
}

/// See [`GuardLayer`].
#[derive(Clone, Debug)]
pub struct Guard<S, F> {
    inner: S,
    make: F,
}

impl<S, F, G> tower::Service<http::Request<Body>> for Guard<S, F>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>>,
    F: Fn(&http::Request<Body>) -> G,
    G: Unpin + Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = GuardFuture<S::Future, G>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let guard = (self.make)(&request);
        GuardFuture {
            inner: self.inner.call(request),
            guard: Some(guard),
        }
    }
}

pin_project_lite::pin_project! {
    /// The inner future; its response body takes the guard.
    pub struct GuardFuture<F, G> {
        #[pin]
        inner: F,
        guard: Option<G>,
    }
}

impl<F, G, E> Future for GuardFuture<F, G>
where
    F: Future<Output = Result<http::Response<Body>, E>>,
    G: Unpin + Send + 'static,
{
    type Output = Result<http::Response<Body>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = std::task::ready!(this.inner.poll(cx))?;
        let guard = this.guard.take();
        Poll::Ready(Ok(response.map(|body| Body::new(Guarded::new(body, guard)))))
    }
}
