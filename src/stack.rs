//! Builds the service every request goes through, layer by layer; the order is explained here.
//!
//! A request is gRPC when its content type says so; everything else (HTTP/1.1 probes, FC's
//! lifecycle hooks, stray requests) goes to [`crate::hooks`]. The gRPC side is wrapped in the
//! bootstrap's layers, outermost first, so that what an outer layer sees includes what the inner
//! ones decided.

use std::convert::Infallible;

use http::{Request, Response};
use tonic::body::Body;
use tonic::service::Routes;
use tower::ServiceBuilder;
use tower::ServiceExt;
use tower::steer::Steer;
use tower::util::BoxCloneService;

use crate::layers::request_log::RequestLogLayer;
use crate::status;

/// The per-request service shared by every connection.
pub(crate) type AppService = BoxCloneService<Request<Body>, Response<Body>, Infallible>;

/// What the layers need to know.
pub(crate) struct StackSettings {
    /// Print FC's per-invocation lines.
    pub fc_lines: bool,
}

/// Composes the gRPC routes and the HTTP router into one service.
pub(crate) fn build(grpc: Routes, http: axum::Router, settings: &StackSettings) -> AppService {
    let grpc = ServiceBuilder::new()
        // Outermost: every RPC gets its span and its finish line, including RPCs that an inner
        // layer refuses, so the log accounts for all of them.
        .layer(RequestLogLayer::new(settings.fc_lines))
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
