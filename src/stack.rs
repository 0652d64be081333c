//! Builds the service every request goes through, layer by layer; the order is explained here.
//!
//! A request is gRPC when its content type says so; everything else (HTTP/1.1 probes, FC's
//! lifecycle hooks, stray requests) goes to [`crate::hooks`]. The gRPC side is wrapped in the
//! bootstrap's layers, outermost first, so that what an outer layer sees includes what the inner
//! ones decided.

use std::convert::Infallible;
use std::time::Duration;

use http::{Request, Response};
use tonic::body::Body;
use tonic::service::Routes;
use tower::ServiceBuilder;
use tower::ServiceExt;
use tower::steer::Steer;
use tower::util::BoxCloneService;

use crate::layers::admission::AdmissionLayer;
use crate::layers::auth::{AuthLayer, Secret};
use crate::layers::catch_panic::CatchPanicLayer;
use crate::layers::deadline::Deadline;
use crate::layers::drain::Drain;
use crate::layers::interrupt::InterruptLayer;
use crate::layers::request_log::RequestLogLayer;
use crate::meter::{self, Meter, MethodKinds};
use crate::status;

/// The per-request service shared by every connection.
pub(crate) type AppService = BoxCloneService<Request<Body>, Response<Body>, Infallible>;

/// What the layers need to know.
pub(crate) struct StackSettings {
    /// Print FC's per-invocation lines.
    pub fc_lines: bool,
    /// The process-wide RPC limit.
    pub concurrency: usize,
    /// The function timeout and the margin kept before it.
    pub timeout: Duration,
    pub timeout_margin: Duration,
    /// Where RPCs are counted and billed, and which methods stream.
    pub meter: Meter,
    pub kinds: MethodKinds,
    /// The bearer token RPCs must carry, if any.
    pub auth_token: Option<Secret>,
}

/// Composes the gRPC routes and the HTTP router into one service.
pub(crate) fn build(grpc: Routes, http: axum::Router, settings: &StackSettings) -> AppService {
    let grpc = ServiceBuilder::new()
        // Outermost: every RPC gets its span and its finish line, including RPCs that an inner
        // layer refuses or ends early, so the log accounts for all of them with their status.
        .layer(RequestLogLayer::new(settings.fc_lines))
        // Next: a panic anywhere below becomes INTERNAL, logged inside the RPC's span.
        .layer(CatchPanicLayer)
        // Every RPC that reached us is in flight (the drain waits on it) and billed, refused
        // ones included: FC bills them too.
        .layer(meter::layer(settings.meter.clone(), settings.kinds.clone()))
        // Without the bearer token (when one is configured) nothing below runs, and no
        // concurrency permit is spent on the caller.
        .layer(AuthLayer::new(settings.auth_token.clone()))
        // Refuse beyond the instance concurrency at once, before any work is done.
        .layer(AdmissionLayer::new(settings.concurrency))
        // Innermost, so what ends an RPC early covers exactly the handler and its response
        // stream: the connection must close now (drain timeout, max connection age), which is
        // UNAVAILABLE, or the deadline passed, which is DEADLINE_EXCEEDED.
        .layer(InterruptLayer::new((
            Drain,
            Deadline::new(settings.timeout, settings.timeout_margin),
        )))
        .service(grpc);

    let http = ServiceExt::<Request<Body>>::map_response(http, |r: Response<axum::body::Body>| {
        r.map(Body::new)
    });

    let steer = Steer::new(
        [BoxCloneService::new(grpc), BoxCloneService::new(http)],
        |req: &Request<Body>, _: &[_]| usize::from(!status::is_grpc(req.headers())),
    );
    BoxCloneService::new(steer)
}
