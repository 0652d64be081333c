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
//! | GET | `/pre-stop` | FC's PreStop hook: starts the drain, answers 200 once in-flight RPCs have finished (or the drain timeout ran out) |
//! | GET | `/pre-freeze` | FC 2.0's PreFreeze hook: flushes the logs, answers 200 |

use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};

use crate::context::RequestContext;
use crate::lifecycle::{Lifecycle, Phase};
use crate::meter::Meter;
use crate::telemetry::Telemetry;

/// Longest a `/pre-freeze` waits for the log writer: a stuck stdout must not hang the hook.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(2);

/// What the endpoints read. Public so that an embedder serving its own HTTP front can mount the
/// same probes and hooks, and so that the fuzz targets can drive the router directly.
#[derive(Clone)]
pub struct Hooks {
    /// The phase `/readyz` reports, the initialiser `/initialize` runs and the drain `/pre-stop`
    /// starts (e.g. [`crate::Bootstrap::lifecycle`]).
    pub lifecycle: Lifecycle,
    /// The RPCs in flight that `/pre-stop` waits for.
    pub meter: Meter,
    /// The longest `/pre-stop` waits for those RPCs.
    pub drain_timeout: Duration,
    /// The log writer `/pre-freeze` flushes, when there is one.
    pub telemetry: Option<Telemetry>,
}

/// The router for every non-gRPC request: the endpoints in the table above, 404 for any other
/// path, 405 for a listed path with another method.
pub fn router(hooks: Hooks) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/initialize", post(initialize))
        .route("/pre-stop", get(pre_stop))
        .route("/pre-freeze", get(pre_freeze))
        .fallback(not_found)
        .with_state(hooks)
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(hooks): State<Hooks>) -> (StatusCode, String) {
    match hooks.lifecycle.phase() {
        Phase::Serving => (StatusCode::OK, "serving\n".into()),
        phase => (StatusCode::SERVICE_UNAVAILABLE, format!("{phase}\n")),
    }
}

/// FC's Initializer hook. FC calls it once per instance before any request; a failure makes FC
/// destroy the instance, which is right: the error text says why in FC's console.
async fn initialize(State(hooks): State<Hooks>, headers: HeaderMap) -> (StatusCode, String) {
    let context = RequestContext::from_headers(&headers);
    match hooks.lifecycle.initialize(&context.request_id).await {
        Ok(()) => (StatusCode::OK, "initialised\n".into()),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
    }
}

/// FC's PreStop hook: FC waits for the answer (up to the hook's own timeout) before it stops the
/// instance, so answering once the in-flight work is done makes FC wait exactly as long as needed.
async fn pre_stop(State(hooks): State<Hooks>) -> (StatusCode, String) {
    hooks.lifecycle.start_drain("FC PreStop hook");
    let finished = tokio::select! {
        () = hooks.meter.rpcs_done() => true,
        () = tokio::time::sleep(hooks.drain_timeout) => false,
    };
    if finished {
        (StatusCode::OK, "drained\n".into())
    } else {
        let left = hooks.meter.snapshot().rpcs_in_flight;
        (
            StatusCode::OK,
            format!("drain timeout: {left} RPCs ended with UNAVAILABLE\n"),
        )
    }
}

/// FC 2.0's PreFreeze hook: the instance is about to be frozen, so whatever sits in the log
/// queue must reach stdout now or be lost with the freeze.
async fn pre_freeze(State(hooks): State<Hooks>) -> (StatusCode, &'static str) {
    if let Some(telemetry) = &hooks.telemetry
        && tokio::time::timeout(FLUSH_TIMEOUT, telemetry.flush())
            .await
            .is_err()
    {
        tracing::warn!("log flush for /pre-freeze did not finish in time");
    }
    (StatusCode::OK, "flushed\n")
}

async fn not_found() -> (StatusCode, &'static str) {
    (StatusCode::NOT_FOUND, "not found\n")
}
