//! `Interrupt`: ends an RPC early, with a status and trailers, when a trigger fires.
//!
//! The deadline and the drain both need the same thing: stop the handler (drop its future or its
//! response stream, which cancels it) and answer the client properly — a trailers-only response
//! if no response has started, or a trailers frame after the messages already sent. Ending the
//! stream any other way (resetting it, or closing the connection) shows the client "stream
//! closed without trailers" or an h2 protocol error, which is what this layer exists to prevent.
//!
//! What fires is a [`Trigger`]: [`crate::layers::deadline`] arms a timer, and
//! [`crate::layers::drain`] watches the connection's and the server's cancellation tokens.

use std::convert::Infallible;
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

/// The future a trigger arms for one RPC; it resolves with the status to end the RPC with.
pub type Fire = Pin<Box<dyn Future<Output = Status> + Send>>;

/// Decides, per request, what may end it early.
pub trait Trigger: Clone + Send + Sync + 'static {
    /// The future that fires for this request, or `None` if nothing can interrupt it.
    fn arm(&self, request: &Request<Body>) -> Option<Fire>;
}

/// Either trigger may end the RPC, whichever fires first (the first one if both have). One
/// layer racing two triggers costs an RPC one body wrapper and one future less than two layers.
impl<A: Trigger, B: Trigger> Trigger for (A, B) {
    fn arm(&self, request: &Request<Body>) -> Option<Fire> {
        match (self.0.arm(request), self.1.arm(request)) {
            (Some(a), Some(b)) => Some(Box::pin(async move {
                tokio::select! {
                    biased;
                    status = a => status,
                    status = b => status,
                }
            })),
            (a, b) => a.or(b),
        }
    }
}

/// Wraps a service so that `trigger` can end its RPCs.
#[derive(Clone, Debug)]
pub struct InterruptLayer<T> {
    trigger: T,
}

impl<T> InterruptLayer<T> {
    /// A layer that arms `trigger` for every request.
    pub fn new(trigger: T) -> Self {
        InterruptLayer { trigger }
    }
}

impl<S, T: Clone> Layer<S> for InterruptLayer<T> {
    type Service = Interrupt<S, T>;
    fn layer(&self, inner: S) -> Interrupt<S, T> {
        Interrupt {
            inner,
            trigger: self.trigger.clone(),
        }
    }
}

/// See the module docs.
#[derive(Clone, Debug)]
pub struct Interrupt<S, T> {
    inner: S,
    trigger: T,
}

// === impl Interrupt ===

impl<S, T> Service<Request<Body>> for Interrupt<S, T>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>,
    T: Trigger,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let fire = self.trigger.arm(&request);
        ResponseFuture {
            inner: self.inner.call(request),
            fire,
        }
    }
}

pin_project! {
    /// The handler's future, raced against the trigger.
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        fire: Option<Fire>,
    }
}

impl<F> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<Body>, Infallible>>,
{
    type Output = Result<Response<Body>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(Ok(response)) = this.inner.poll(cx) {
            let fire = this.fire.take();
            return Poll::Ready(Ok(match fire {
                Some(fire) => response.map(|inner| {
                    Body::new(InterruptBody {
                        inner: Some(inner),
                        fire: Some(fire),
                    })
                }),
                None => response,
            }));
        }
        if let Some(fire) = this.fire
            && let Poll::Ready(status) = fire.as_mut().poll(cx)
        {
            // Returning drops the handler's future, which cancels the handler.
            return Poll::Ready(Ok(status::response(status)));
        }
        Poll::Pending
    }
}

pin_project! {
    /// The response body, raced against the trigger.
    struct InterruptBody {
        // `None` once the body is over (ended, or cut short by the trigger).
        inner: Option<Body>,
        fire: Option<Fire>,
    }
}

impl http_body::Body for InterruptBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = self.project();
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        if let Poll::Ready(frame) = Pin::new(inner).poll_frame(cx) {
            let over = match &frame {
                None | Some(Err(_)) => true,
                Some(Ok(f)) => f.is_trailers(),
            };
            if over {
                *this.inner = None;
                *this.fire = None;
            }
            return Poll::Ready(frame);
        }
        if let Some(fire) = this.fire
            && let Poll::Ready(status) = fire.as_mut().poll(cx)
        {
            // Dropping the body drops the handler's response stream, which stops its work.
            *this.inner = None;
            *this.fire = None;
            return Poll::Ready(Some(Ok(status::trailers(&status))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        match (&self.inner, &self.fire) {
            // While the trigger may still add a trailers frame, the inner body's exact size is
            // not the whole story.
            (Some(_), Some(_)) => SizeHint::default(),
            (Some(b), None) => b.size_hint(),
            (None, _) => SizeHint::with_exact(0),
        }
    }
}
