//! `RequestLog`: one span per RPC, carrying its request id, and one line when it finishes.
//!
//! The span wraps the handler and every poll of the response body, so anything a handler or its
//! stream logs carries the request id (and the trace id, which Cloud Logging links to the
//! request's trace). The finish line is written when the response body ends — that is when the
//! real gRPC status is known (it travels in trailers) — or, if the client went away first, when
//! the body is dropped, as CANCELLED. On FC the `FC Invoke Start/End RequestId:` lines bracket
//! the RPC, as FC's console expects from a custom runtime.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderValue, Request, Response};
use http_body::{Frame, SizeHint};
use pin_project_lite::pin_project;
use tonic::Code;
use tonic::body::Body;
use tower::{Layer, Service};
use tracing::Span;
use tracing::field::Empty;

use crate::context::{self, RequestContext};
use crate::status;

/// The peer's address as the finish line shows it, put in each request's extensions by its
/// connection: formatted once per connection rather than once per RPC.
#[derive(Clone, Debug)]
pub struct PeerAddr(Arc<str>);

impl PeerAddr {
    /// An IPv4 peer reaching a dual-stack listener shows as IPv4 (`1.2.3.4:5`, not
    /// `[::ffff:1.2.3.4]:5`).
    pub fn new(addr: SocketAddr) -> PeerAddr {
        let addr = SocketAddr::new(addr.ip().to_canonical(), addr.port());
        PeerAddr(addr.to_string().into())
    }
}

/// Adds request logging to a gRPC service.
#[derive(Clone, Debug)]
pub struct RequestLogLayer {
    fc_lines: bool,
}

impl RequestLogLayer {
    /// `fc_lines`: print FC's `FC Invoke Start/End` lines around every RPC.
    pub fn new(fc_lines: bool) -> Self {
        RequestLogLayer { fc_lines }
    }
}

impl<S> Layer<S> for RequestLogLayer {
    type Service = RequestLog<S>;
    fn layer(&self, inner: S) -> RequestLog<S> {
        RequestLog {
            inner,
            fc_lines: self.fc_lines,
        }
    }
}

/// See the module docs.
#[derive(Clone, Debug)]
pub struct RequestLog<S> {
    inner: S,
    fc_lines: bool,
}

// === impl RequestLog ===

impl<S> Service<Request<Body>> for RequestLog<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let context = RequestContext::from_headers(req.headers());
        let peer = req.extensions().get::<PeerAddr>().map(|p| p.0.clone());
        // Fields are recorded as `&str` where they can be: a `%` (Display) field is formatted
        // into a fresh string first, and this runs for every RPC.
        let span = tracing::info_span!(
            "rpc",
            request_id = context.request_id.as_str(),
            method = req.uri().path(),
            trace_id = Empty,
            span_id = Empty,
            trace_sampled = Empty,
        );
        if let Some(trace) = &context.trace {
            span.record("trace_id", trace.trace_id.as_str());
            if let Some(span_id) = &trace.span_id {
                span.record("span_id", span_id.as_str());
            }
            span.record("trace_sampled", trace.sampled);
        }
        if self.fc_lines {
            tracing::info!(target: "fc", parent: &span, "FC Invoke Start RequestId: {}", context.request_id);
        }
        let future = {
            let _entered = span.enter();
            self.inner.call(req)
        };
        ResponseFuture {
            inner: future,
            finish: Some(Finish {
                span,
                start: Instant::now(),
                peer,
                request_id: context.request_id,
                fc_lines: self.fc_lines,
            }),
        }
    }
}

/// What the finish line needs, carried from the request to the end of the response body.
struct Finish {
    span: Span,
    start: Instant,
    peer: Option<Arc<str>>,
    request_id: String,
    fc_lines: bool,
}

impl Finish {
    fn log(self, code: Code) {
        let duration_ms = self.start.elapsed().as_secs_f64() * 1000.0;
        tracing::info!(
            parent: &self.span,
            code = code as i32,
            status = status::code_name(code),
            duration_ms = (duration_ms * 1000.0).round() / 1000.0,
            peer = self.peer.as_deref(),
            "rpc finished"
        );
        if self.fc_lines {
            tracing::info!(target: "fc", parent: &self.span, "FC Invoke End RequestId: {}", self.request_id);
        }
    }
}

pin_project! {
    /// The handler's future, inside the RPC's span.
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        finish: Option<Finish>,
    }
}

impl<F> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<Body>, Infallible>>,
{
    type Output = Result<Response<Body>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = match this.finish {
            Some(finish) => finish.span.in_scope(|| this.inner.poll(cx)),
            None => this.inner.poll(cx),
        };
        let Ok(mut response) = ready!(result);
        let finish = this.finish.take();
        if let Some(finish) = &finish
            && let Ok(mut value) = HeaderValue::from_str(&finish.request_id)
        {
            // Every id is new, so HPACK indexing it would only push useful entries out of both
            // sides' tables (and cost a table update per response): send it as never indexed.
            value.set_sensitive(true);
            response.headers_mut().insert(context::REQUEST_ID, value);
        }
        // A trailers-only response (an error before any message) has its status in the headers.
        let code = status::code_in(response.headers());
        Poll::Ready(Ok(response.map(|inner| {
            Body::new(LoggedBody {
                inner,
                code,
                finish,
            })
        })))
    }
}

pin_project! {
    /// The response body, inside the RPC's span; logs the finish line when it ends or is dropped.
    struct LoggedBody {
        #[pin]
        inner: Body,
        code: Option<Code>,
        finish: Option<Finish>,
    }

    impl PinnedDrop for LoggedBody {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some(finish) = this.finish.take() {
                // Dropped before its end: the client reset the stream or the connection went.
                finish.log(this.code.unwrap_or(Code::Cancelled));
            }
        }
    }
}

impl http_body::Body for LoggedBody {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, tonic::Status>>> {
        let this = self.project();
        let polled = match this.finish {
            Some(finish) => finish.span.in_scope(|| this.inner.poll_frame(cx)),
            None => this.inner.poll_frame(cx),
        };
        let frame = ready!(polled);
        match &frame {
            Some(Ok(f)) => {
                if let Some(trailers) = f.trailers_ref() {
                    *this.code = status::code_in(trailers).or(*this.code);
                }
            }
            Some(Err(s)) => *this.code = Some(s.code()),
            None => {}
        }
        let ended = match &frame {
            None | Some(Err(_)) => true,
            Some(Ok(f)) => f.is_trailers(),
        };
        if ended && let Some(finish) = this.finish.take() {
            // A body that ends with neither trailers nor a status in its headers broke the gRPC
            // protocol; say so rather than guess OK.
            finish.log(this.code.unwrap_or(Code::Unknown));
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_addresses_show_ipv4_peers_as_ipv4() {
        let shown = |addr: &str| PeerAddr::new(addr.parse().unwrap()).0.to_string();
        assert_eq!(shown("[::ffff:10.1.2.3]:443"), "10.1.2.3:443");
        assert_eq!(shown("10.1.2.3:443"), "10.1.2.3:443");
        assert_eq!(shown("[2001:db8::1]:8089"), "[2001:db8::1]:8089");
    }
}
