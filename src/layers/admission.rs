//! `Admission`: at most N RPCs in the whole process; the next one is refused at once.
//!
//! The platform bills an instance for the time its requests are open and sizes the fleet by
//! instance concurrency; a request queued inside the instance is billed while it waits and shows
//! the platform a slower instance instead of a full one. So an RPC beyond the limit is answered
//! RESOURCE_EXHAUSTED straight away (the platform or the client retries elsewhere). Each
//! connection also advertises the limit as `SETTINGS_MAX_CONCURRENT_STREAMS`, so a well-behaved
//! client on one connection never goes over; this layer covers many connections together.
//!
//! Health checks are never refused: a full instance is busy, not unhealthy.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use pin_project_lite::pin_project;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::Status;
use tonic::body::Body;
use tower::{Layer, Service};

use crate::body::Guarded;
use crate::status;

/// The health service's path prefix; its RPCs bypass admission.
const HEALTH_PREFIX: &str = "/grpc.health.v1.Health/";

/// Limits the process to `limit` concurrent RPCs.
#[derive(Clone, Debug)]
pub struct AdmissionLayer {
    permits: Arc<Semaphore>,
    limit: usize,
}

impl AdmissionLayer {
    /// Admits at most `limit` RPCs at once across every connection.
    pub fn new(limit: usize) -> Self {
        AdmissionLayer {
            permits: Arc::new(Semaphore::new(limit)),
            limit,
        }
    }
}

impl<S> Layer<S> for AdmissionLayer {
    type Service = Admission<S>;
    fn layer(&self, inner: S) -> Admission<S> {
        Admission {
            inner,
            permits: self.permits.clone(),
            limit: self.limit,
        }
    }
}

/// See the module docs.
#[derive(Clone, Debug)]
pub struct Admission<S> {
    inner: S,
    permits: Arc<Semaphore>,
    limit: usize,
}

// === impl Admission ===

impl<S> Service<Request<Body>> for Admission<S>
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
        if request.uri().path().starts_with(HEALTH_PREFIX) {
            return ResponseFuture::Admitted {
                inner: self.inner.call(request),
                permit: None,
            };
        }
        match self.permits.clone().try_acquire_owned() {
            Ok(permit) => ResponseFuture::Admitted {
                inner: self.inner.call(request),
                permit: Some(permit),
            },
            Err(_) => {
                tracing::debug!(limit = self.limit, "refused: at the concurrency limit");
                ResponseFuture::Refused { limit: self.limit }
            }
        }
    }
}

pin_project! {
    /// Either the admitted RPC, holding its permit, or an immediate refusal.
    #[project = Projected]
    pub enum ResponseFuture<F> {
        /// Admitted: the permit moves into the response body and is freed when the body ends.
        Admitted { #[pin] inner: F, permit: Option<OwnedSemaphorePermit> },
        /// Refused at once.
        Refused { limit: usize },
    }
}

impl<F> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<Body>, Infallible>>,
{
    type Output = Result<Response<Body>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            Projected::Admitted { inner, permit } => match inner.poll(cx) {
                Poll::Ready(Ok(response)) => {
                    let permit = permit.take();
                    Poll::Ready(Ok(
                        response.map(|body| Body::new(Guarded::new(body, permit)))
                    ))
                }
                Poll::Pending => Poll::Pending,
            },
            Projected::Refused { limit } => {
                Poll::Ready(Ok(status::response(Status::resource_exhausted(format!(
                    "the instance is at its concurrency limit ({limit} RPCs): retry"
                )))))
            }
        }
    }
}
