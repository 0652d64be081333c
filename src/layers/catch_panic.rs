//! `CatchPanic`: a panic in a handler ends that RPC with INTERNAL and trailers; the server serves
//! on.
//!
//! Written here rather than taken from tower-http: its `CatchPanicLayer` catches panics in the
//! handler's future only, not while a streaming response body is polled, which is where a
//! server-streaming handler's code runs. This layer catches both. It relies on `panic = "unwind"`
//! (kept in Cargo.toml); with `abort` nothing can be caught.

use std::any::Any;
use std::convert::Infallible;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Frame, SizeHint};
use pin_project_lite::pin_project;
use tonic::Status;
use tonic::body::Body;
use tower::{Layer, Service};

use crate::status;

/// Adds panic catching to a gRPC service.
#[derive(Clone, Copy, Debug, Default)]
pub struct CatchPanicLayer;

impl<S> Layer<S> for CatchPanicLayer {
    type Service = CatchPanic<S>;
    fn layer(&self, inner: S) -> CatchPanic<S> {
        CatchPanic { inner }
    }
}

/// See the module docs.
#[derive(Clone, Debug)]
pub struct CatchPanic<S> {
    inner: S,
}

// === impl CatchPanic ===

impl<S> Service<Request<Body>> for CatchPanic<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        // A panic while the handler's future is created (before its first poll) is caught too.
        match catch_unwind(AssertUnwindSafe(|| self.inner.call(request))) {
            Ok(inner) => ResponseFuture { inner: Some(inner) },
            Err(payload) => {
                report(payload.as_ref());
                ResponseFuture { inner: None }
            }
        }
    }
}

/// Logs the panic inside the RPC's span (so it carries the request id) and builds the status.
fn report(payload: &(dyn Any + Send)) -> Status {
    let message = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a non-string panic payload".to_string());
    tracing::error!(panic = %message, "handler panicked: RPC ended with INTERNAL");
    Status::internal("the handler panicked")
}

pin_project! {
    /// The handler's future; `None` when creating it already panicked.
    pub struct ResponseFuture<F> {
        #[pin]
        inner: Option<F>,
    }
}

impl<F> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<Body>, Infallible>>,
{
    type Output = Result<Response<Body>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let Some(inner) = this.inner.as_mut().as_pin_mut() else {
            return Poll::Ready(Ok(status::response(Status::internal(
                "the handler panicked",
            ))));
        };
        match catch_unwind(AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(Ok(response))) => Poll::Ready(Ok(
                response.map(|inner| Body::new(CatchPanicBody { inner: Some(inner) }))
            )),
            Err(payload) => {
                // The future panicked mid-poll and must not be polled again: drop it now.
                this.inner.set(None);
                Poll::Ready(Ok(status::response(report(payload.as_ref()))))
            }
        }
    }
}

/// The response body; a panic while producing a message ends the stream with INTERNAL.
struct CatchPanicBody {
    inner: Option<Body>,
}

impl http_body::Body for CatchPanicBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let Some(inner) = self.inner.as_mut() else {
            return Poll::Ready(None);
        };
        match catch_unwind(AssertUnwindSafe(|| Pin::new(inner).poll_frame(cx))) {
            Ok(polled) => polled,
            Err(payload) => {
                self.inner = None;
                Poll::Ready(Some(Ok(status::trailers(&report(payload.as_ref())))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Some(b) => b.size_hint(),
            None => SizeHint::with_exact(0),
        }
    }
}
