//! `grpc.health.v1.Health`, answered from the [`Lifecycle`].
//!
//! tonic-health's own service keeps every `Watch` stream open until its reporter is dropped, which
//! holds a graceful drain open forever (tonic issues #850 and #1820). This implementation of the
//! generated trait reads the lifecycle instead: NOT_SERVING while starting, SERVING once the
//! initialiser has succeeded, NOT_SERVING from the moment a drain begins — and a `Watch` stream
//! ends right after telling its client about the drain, so it never holds the drain open.
//!
//! Every registered service shares the instance's status; `""` is the instance as a whole.

use std::collections::HashSet;
use std::pin::Pin;
use std::sync::Arc;

use futures_util::Stream;
use tokio::sync::watch;
use tonic::{Request, Response, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_server::Health;
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

use crate::lifecycle::{Lifecycle, Phase};

/// The health service. Cheap to clone.
#[derive(Clone)]
pub struct HealthService {
    lifecycle: Lifecycle,
    /// Full names of the services that answer to Check, plus `""`.
    known: Arc<HashSet<String>>,
}

impl HealthService {
    /// A health service that knows `services` (full names) and the overall `""`.
    pub fn new(lifecycle: Lifecycle, services: impl IntoIterator<Item = String>) -> Self {
        let mut known: HashSet<String> = services.into_iter().collect();
        known.insert(String::new());
        HealthService {
            lifecycle,
            known: Arc::new(known),
        }
    }
}

/// What a known service reports in each phase.
fn serving_status(phase: Phase) -> ServingStatus {
    match phase {
        Phase::Serving => ServingStatus::Serving,
        Phase::Starting | Phase::Draining | Phase::Stopped => ServingStatus::NotServing,
    }
}

fn response(status: ServingStatus) -> HealthCheckResponse {
    HealthCheckResponse {
        status: status.into(),
    }
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<HealthCheckResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Health for HealthService {
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        let service = request.into_inner().service;
        if !self.known.contains(&service) {
            return Err(Status::not_found(format!("unknown service '{service}'")));
        }
        Ok(Response::new(response(serving_status(
            self.lifecycle.phase(),
        ))))
    }

    type WatchStream = WatchStream;

    async fn watch(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let known = self.known.contains(&request.into_inner().service);
        let stream = watch_stream(self.lifecycle.subscribe(), known);
        Ok(Response::new(Box::pin(stream)))
    }
}

/// Sends the current status, then each change; ends once a drain has begun and been reported.
fn watch_stream(
    rx: watch::Receiver<Phase>,
    known: bool,
) -> impl Stream<Item = Result<HealthCheckResponse, Status>> + Send {
    struct State {
        rx: watch::Receiver<Phase>,
        last: Option<ServingStatus>,
        done: bool,
    }
    let state = State {
        rx,
        last: None,
        done: false,
    };
    futures_util::stream::unfold(state, move |mut st| async move {
        loop {
            if st.done {
                return None;
            }
            let phase = *st.rx.borrow_and_update();
            let status = if known {
                serving_status(phase)
            } else {
                ServingStatus::ServiceUnknown
            };
            st.done = matches!(phase, Phase::Draining | Phase::Stopped);
            if st.last != Some(status) {
                st.last = Some(status);
                return Some((Ok(response(status)), st));
            }
            if st.done {
                return None;
            }
            // The sender lives in the lifecycle, which outlives every connection; if it is gone
            // the process is ending, and ending the stream is right.
            if st.rx.changed().await.is_err() {
                return None;
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    #[tokio::test]
    async fn watch_reports_changes_then_ends_on_drain() {
        let life = Lifecycle::new(false);
        let mut stream = Box::pin(watch_stream(life.subscribe(), true));
        let first = stream.next().await.unwrap().unwrap();
        assert_eq!(first.status(), ServingStatus::NotServing);
        life.initialize("t").await.unwrap();
        let second = stream.next().await.unwrap().unwrap();
        assert_eq!(second.status(), ServingStatus::Serving);
        life.start_drain("test");
        let third = stream.next().await.unwrap().unwrap();
        assert_eq!(third.status(), ServingStatus::NotServing);
        assert!(stream.next().await.is_none());
    }

    #[tokio::test]
    async fn unknown_service_watch_ends_on_drain() {
        let life = Lifecycle::new(false);
        let mut stream = Box::pin(watch_stream(life.subscribe(), false));
        let first = stream.next().await.unwrap().unwrap();
        assert_eq!(first.status(), ServingStatus::ServiceUnknown);
        life.start_drain("test");
        assert!(stream.next().await.is_none());
    }

    #[tokio::test]
    async fn check_knows_registered_services() {
        let life = Lifecycle::new(false);
        let health = HealthService::new(life.clone(), ["a.B".to_string()]);
        let ask = |s: &str| {
            Request::new(HealthCheckRequest {
                service: s.to_string(),
            })
        };
        let r = health.check(ask("")).await.unwrap().into_inner();
        assert_eq!(r.status(), ServingStatus::NotServing);
        life.initialize("t").await.unwrap();
        let r = health.check(ask("a.B")).await.unwrap().into_inner();
        assert_eq!(r.status(), ServingStatus::Serving);
        let e = health.check(ask("nope")).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::NotFound);
    }
}
