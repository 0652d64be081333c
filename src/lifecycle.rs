//! The instance's lifecycle: Starting → Serving → Draining → Stopped.
//!
//! One [`Lifecycle`] is shared (cheaply cloned) by everything that needs to know or change the
//! phase: the health service and `/readyz` read it, the initialiser moves it to Serving, and the
//! server moves it to Draining and Stopped. Readers subscribe to a `watch` channel, so a health
//! `Watch` stream sees every change as it happens.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use tokio::sync::{OnceCell, watch};
use tokio_util::sync::CancellationToken;

/// A boxed error from user code (the initialiser).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The user's one-time initialiser, boxed.
pub(crate) type Initializer =
    Box<dyn FnOnce() -> Pin<Box<dyn Future<Output = Result<(), BoxError>> + Send>> + Send>;

/// Where the instance is in its life.
/// Phases only move forward, so they are ordered: `phase >= Phase::Draining` means "draining or
/// stopped".
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    /// Bound and answering probes, but the initialiser has not succeeded yet: NOT_SERVING.
    Starting,
    /// Ready for traffic: SERVING.
    Serving,
    /// Finishing in-flight work before exit: NOT_SERVING, no new connections.
    Draining,
    /// Every connection is closed.
    Stopped,
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Phase::Starting => "starting",
            Phase::Serving => "serving",
            Phase::Draining => "draining",
            Phase::Stopped => "stopped",
        })
    }
}

/// The initialiser failed; the instance stays not ready (FC then destroys it).
#[derive(Debug, Clone, thiserror::Error)]
#[error("initialiser failed: {0}")]
pub struct InitError(pub String);

/// The shared lifecycle state. Clones share it.
#[derive(Clone)]
pub struct Lifecycle {
    inner: Arc<Inner>,
}

struct Inner {
    phase: watch::Sender<Phase>,
    /// The initialiser's result, set exactly once however many callers race for it.
    init: OnceCell<Result<(), InitError>>,
    /// Taken by the one caller that runs it.
    initializer: Mutex<Option<Initializer>>,
    /// Print FC's `FC Initialize Start/End` lines around the initialiser.
    fc_lines: bool,
    /// Why the drain began, once it has.
    drain_reason: Mutex<Option<String>>,
    /// Cancelled when open RPCs must end now (drain timeout, or a second signal). The server's
    /// drain watches it, counts the RPCs still open, then ends them.
    force: CancellationToken,
}

impl Lifecycle {
    /// A lifecycle in the Starting phase, with no initialiser yet.
    pub(crate) fn new(fc_lines: bool) -> Lifecycle {
        Lifecycle {
            inner: Arc::new(Inner {
                phase: watch::Sender::new(Phase::Starting),
                init: OnceCell::new(),
                initializer: Mutex::new(None),
                fc_lines,
                drain_reason: Mutex::new(None),
                force: CancellationToken::new(),
            }),
        }
    }

    /// Sets the initialiser that [`Lifecycle::initialize`] runs.
    pub(crate) fn set_initializer(&self, init: Initializer) {
        *self
            .inner
            .initializer
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(init);
    }

    /// The current phase.
    pub fn phase(&self) -> Phase {
        *self.inner.phase.borrow()
    }

    /// A receiver that sees every later phase change.
    pub fn subscribe(&self) -> watch::Receiver<Phase> {
        self.inner.phase.subscribe()
    }

    /// Runs the initialiser if no one has yet, or waits for the run under way, and returns its
    /// result. On success the phase becomes Serving, unless a drain has already begun.
    pub async fn initialize(&self, request_id: &str) -> Result<(), InitError> {
        self.inner
            .init
            .get_or_init(|| self.run_initializer(request_id))
            .await
            .clone()
    }

    async fn run_initializer(&self, request_id: &str) -> Result<(), InitError> {
        let initializer = self
            .inner
            .initializer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if self.inner.fc_lines {
            tracing::info!(target: "fc", "FC Initialize Start RequestId: {request_id}");
        }
        let result = match initializer {
            Some(init) => init().await.map_err(|e| InitError(e.to_string())),
            None => Ok(()),
        };
        if self.inner.fc_lines {
            tracing::info!(target: "fc", "FC Initialize End RequestId: {request_id}");
        }
        match &result {
            Ok(()) => {
                self.inner.phase.send_if_modified(|p| {
                    let starting = *p == Phase::Starting;
                    if starting {
                        *p = Phase::Serving;
                    }
                    starting
                });
                tracing::info!("initialised: serving");
            }
            Err(e) => tracing::error!(error = %e, "initialiser failed: not ready"),
        }
        result
    }

    /// Moves to Draining for `reason`. Returns true for the call that started the drain, false
    /// when one had already begun (or everything has stopped).
    pub fn start_drain(&self, reason: &str) -> bool {
        // The reason is recorded (and logged) before the phase changes, while the watch is
        // locked: whoever wakes on Draining (the accept loop, which may finish the drain at
        // once) must find the reason already there.
        self.inner.phase.send_if_modified(|p| {
            let first = matches!(p, Phase::Starting | Phase::Serving);
            if first {
                *self
                    .inner
                    .drain_reason
                    .lock()
                    .unwrap_or_else(|p| p.into_inner()) = Some(reason.to_string());
                tracing::info!(reason, "draining");
                *p = Phase::Draining;
            }
            first
        })
    }

    /// Why the drain began, if it has.
    pub fn drain_reason(&self) -> Option<String> {
        self.inner
            .drain_reason
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Ends every open RPC now, with UNAVAILABLE and trailers (starting a drain if none has).
    pub fn force(&self, reason: &str) {
        self.start_drain(reason);
        if !self.inner.force.is_cancelled() {
            tracing::warn!(reason, "ending every open RPC now");
            self.inner.force.cancel();
        }
    }

    /// The token cancelled by [`Lifecycle::force`].
    pub(crate) fn force_token(&self) -> &CancellationToken {
        &self.inner.force
    }

    /// Resolves once the phase is `phase` or a later one (immediately if it already is).
    pub async fn reached(&self, phase: Phase) {
        let mut rx = self.subscribe();
        // The sender lives as long as `self`, so `wait_for` cannot see it closed.
        let _ = rx.wait_for(|p| *p >= phase).await;
    }

    pub(crate) fn stopped(&self) {
        self.inner.phase.send_replace(Phase::Stopped);
    }
}

impl fmt::Debug for Lifecycle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lifecycle")
            .field("phase", &self.phase())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn initialiser_runs_once_and_serves() {
        let runs = Arc::new(AtomicUsize::new(0));
        let counted = runs.clone();
        let life = Lifecycle::new(false);
        life.set_initializer(Box::new(move || {
            Box::pin(async move {
                counted.fetch_add(1, Ordering::SeqCst);
                tokio::task::yield_now().await;
                Ok(())
            })
        }));
        assert_eq!(life.phase(), Phase::Starting);
        let (a, b) = tokio::join!(life.initialize("a"), life.initialize("b"));
        assert!(a.is_ok() && b.is_ok());
        assert!(life.initialize("c").await.is_ok());
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert_eq!(life.phase(), Phase::Serving);
    }

    #[tokio::test]
    async fn failed_initialiser_stays_starting() {
        let life = Lifecycle::new(false);
        life.set_initializer(Box::new(|| Box::pin(async { Err("no database".into()) })));
        let err = life.initialize("a").await.unwrap_err();
        assert!(err.to_string().contains("no database"));
        assert!(life.initialize("b").await.is_err());
        assert_eq!(life.phase(), Phase::Starting);
    }

    #[tokio::test]
    async fn drain_starts_once_and_wins_over_late_init() {
        let life = Lifecycle::new(false);
        assert!(life.start_drain("test"));
        assert!(!life.start_drain("again"));
        assert_eq!(life.drain_reason().as_deref(), Some("test"));
        life.reached(Phase::Draining).await;
        assert!(life.initialize("a").await.is_ok());
        assert_eq!(life.phase(), Phase::Draining);
    }
}
