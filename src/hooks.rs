//! The HTTP/1.1 endpoints that share the gRPC port: probes and FC's lifecycle hooks.
//!
//! Platforms probe with plain HTTP GETs (FC has no gRPC probe at all) and FC calls its lifecycle
//! hooks as HTTP/1.1 requests on the same port, so every non-gRPC request lands on this router.
//! Any path not listed here is a 404 — never tonic's gRPC-shaped "200 + UNIMPLEMENTED", which a
//! probe would read as healthy.
//!
//! | method | path | answer |
//! | --- | --- | --- |
//! | GET | `/healthz` | 200 while the process runs (liveness) |
//! | GET | `/readyz` | 200 when SERVING, 503 otherwise (readiness) |
//! | POST | `/initialize` | runs the initialiser once; 200, or 500 with its error |

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};

use crate::context::RequestContext;
use crate::lifecycle::{Lifecycle, Phase};

/// The router for every non-gRPC request.
pub(crate) fn router(lifecycle: Lifecycle) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/initialize", post(initialize))
        .fallback(not_found)
        .with_state(lifecycle)
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(lifecycle): State<Lifecycle>) -> (StatusCode, String) {
    match lifecycle.phase() {
        Phase::Serving => (StatusCode::OK, "serving\n".into()),
        phase => (StatusCode::SERVICE_UNAVAILABLE, format!("{phase}\n")),
    }
}

/// FC's Initializer hook. FC calls it once per instance before any request; a failure makes FC
/// destroy the instance, which is right: the error text says why in FC's console.
async fn initialize(
    State(lifecycle): State<Lifecycle>,
    headers: HeaderMap,
) -> (StatusCode, String) {
    let context = RequestContext::from_headers(&headers);
    match lifecycle.initialize(&context.request_id).await {
        Ok(()) => (StatusCode::OK, "initialised\n".into()),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
    }
}

async fn not_found() -> (StatusCode, &'static str) {
    (StatusCode::NOT_FOUND, "not found\n")
}
