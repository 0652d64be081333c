//! The deadline trigger: every RPC ends with DEADLINE_EXCEEDED, with trailers, at the earlier of
//! the client's `grpc-timeout` and the function timeout minus a margin.
//!
//! FC kills a request that outlives the function's execution timeout, and its client then sees
//! "server closed the stream without sending trailers". Ending the RPC ourselves a little before
//! that (`--timeout-margin`) turns the kill into a clean status. tonic's own `timeout()` covers
//! only the time to response headers and answers CANCELLED, so it cannot do this.
//!
//! The timer only acts when hyper polls the response body, and hyper stops polling it while a
//! chunk waits for flow-control window: a client that never opens its window (or never reads)
//! would keep the RPC, its admission slot and the connection forever. So each RPC is also entered
//! in its connection's [`StallWatch`] at its deadline plus [`STALL_GRACE`]; if one is still open
//! then, the connection's task cancels its [`crate::layers::drain::ForceClose`] token, and the
//! connection ends its other RPCs with UNAVAILABLE and is dropped (the way
//! `--max-connection-age` ends one), which frees the stalled stream. One watch per connection,
//! rather than a timer task per RPC, because an RPC's cost is what the bootstrap is measured by.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use http::Request;
use tokio::sync::Notify;
use tokio::time::{Instant, sleep_until};
use tonic::Status;
use tonic::body::Body;

use crate::layers::interrupt::{Fire, Trigger};

/// How long past its deadline an RPC may stay open (its trailers stuck behind a closed
/// flow-control window) before its connection is closed to free it.
pub const STALL_GRACE: Duration = Duration::from_secs(1);

/// When each of one connection's open RPCs must be over at the latest (its deadline plus
/// [`STALL_GRACE`]). The connection puts it in its requests' extensions and waits on
/// [`StallWatch::overdue`]; clones share it.
#[derive(Clone, Debug, Default)]
pub struct StallWatch(Arc<Stalls>);

#[derive(Debug, Default)]
struct Stalls {
    state: Mutex<StallState>,
    /// Woken when an RPC is entered that must end before the time the watcher sleeps until.
    earlier: Notify,
}

#[derive(Debug, Default)]
struct StallState {
    /// (time, sequence number): the sequence number keeps RPCs with the same time apart.
    open: BTreeSet<(Instant, u64)>,
    /// The next sequence number.
    next: u64,
    /// The time the watcher sleeps until, if it sleeps on a timer. It is kept even when the
    /// RPC it was for has ended, so that the usual case (RPCs one after another, all with the
    /// function's limit) enters them without waking the connection's task each time: the
    /// watcher wakes then, finds the next one, and sleeps again.
    armed: Option<Instant>,
}

/// One RPC's entry in its connection's [`StallWatch`]; dropping it removes the entry.
struct Entered {
    watch: StallWatch,
    key: (Instant, u64),
}

impl Drop for Entered {
    fn drop(&mut self) {
        self.watch.lock().open.remove(&self.key);
    }
}

impl StallWatch {
    fn lock(&self) -> MutexGuard<'_, StallState> {
        // Times only: a panic elsewhere cannot leave them inconsistent.
        self.0.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Enters an RPC that must be over by `at`.
    fn enter(&self, at: Instant) -> Entered {
        let (key, wake) = {
            let mut state = self.lock();
            let key = (at, state.next);
            state.next += 1;
            state.open.insert(key);
            (key, state.armed.is_none_or(|armed| at < armed))
        };
        if wake {
            self.0.earlier.notify_waiters();
        }
        Entered {
            watch: self.clone(),
            key,
        }
    }

    /// Resolves once an RPC entered here is still open past the time it was entered with.
    pub async fn overdue(&self) {
        loop {
            // Registered before the state is read, so an earlier entry in between is not missed.
            let earlier = self.0.earlier.notified();
            tokio::pin!(earlier);
            earlier.as_mut().enable();
            let wake_at = {
                let mut state = self.lock();
                let now = Instant::now();
                let first = state.open.first().map(|(at, _)| *at);
                if first.is_some_and(|at| at <= now) {
                    return;
                }
                state.armed = first.or(state.armed.filter(|armed| *armed > now));
                state.armed
            };
            match wake_at {
                Some(at) => tokio::select! {
                    () = sleep_until(at) => {}
                    () = earlier => {}
                },
                None => earlier.await,
            }
        }
    }
}

/// The client's deadline, as a `HeaderName` so it is not parsed for every lookup.
const GRPC_TIMEOUT: http::HeaderName = http::HeaderName::from_static("grpc-timeout");

/// Arms a timer per RPC.
#[derive(Clone, Debug)]
pub struct Deadline {
    /// The longest any RPC may run: the function timeout minus the margin.
    limit: Duration,
}

impl Deadline {
    /// RPCs end by `timeout - margin` at the latest (never less than 1 ms).
    pub fn new(timeout: Duration, margin: Duration) -> Deadline {
        Deadline {
            limit: timeout.saturating_sub(margin).max(Duration::from_millis(1)),
        }
    }
}

impl Trigger for Deadline {
    fn arm(&self, request: &Request<Body>) -> Option<Fire> {
        let client = request
            .headers()
            .get(GRPC_TIMEOUT)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_grpc_timeout);
        let (after, whose) = match client {
            Some(c) if c < self.limit => (c, "the client's deadline"),
            _ => (self.limit, "the function timeout"),
        };
        let sleep = tokio::time::sleep(after);
        // Requests from a connection carry its watch; in-process callers (unit tests) may not.
        let entered = request
            .extensions()
            .get::<StallWatch>()
            .map(|watch| watch.enter(Instant::now() + after + STALL_GRACE));
        Some(Box::pin(async move {
            let _entered = entered;
            sleep.await;
            Status::deadline_exceeded(format!("{whose} of {after:?} expired"))
        }))
    }
}

/// Parses a `grpc-timeout` header value: at most 8 digits and one unit letter
/// (H hours, M minutes, S seconds, m milliseconds, u microseconds, n nanoseconds).
pub fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    let value = value.trim();
    if value.len() < 2 || !value.is_ascii() {
        return None;
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    if digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeout_units() {
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_grpc_timeout("2M"), Some(Duration::from_secs(120)));
        assert_eq!(parse_grpc_timeout("3S"), Some(Duration::from_secs(3)));
        assert_eq!(parse_grpc_timeout("100m"), Some(Duration::from_millis(100)));
        assert_eq!(parse_grpc_timeout("5u"), Some(Duration::from_micros(5)));
        assert_eq!(
            parse_grpc_timeout("99999999n"),
            Some(Duration::from_nanos(99_999_999))
        );
    }

    #[test]
    fn grpc_timeout_rejects_malformed() {
        for bad in [
            "",
            "m",
            "10",
            "123456789S",
            "1x",
            "-1S",
            "1.5S",
            "१S",
            "1 S",
            "S1",
        ] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn earlier_of_client_and_function_deadline() {
        let deadline = Deadline::new(Duration::from_secs(60), Duration::from_millis(100));
        let start = tokio::time::Instant::now();
        let req = |t: Option<&str>| {
            let mut b = Request::builder();
            if let Some(t) = t {
                b = b.header("grpc-timeout", t);
            }
            b.body(Body::empty()).unwrap()
        };

        let status = deadline.arm(&req(Some("250m"))).unwrap().await;
        assert_eq!(status.code(), tonic::Code::DeadlineExceeded);
        assert_eq!(start.elapsed(), Duration::from_millis(250));

        let start = tokio::time::Instant::now();
        deadline.arm(&req(Some("2H"))).unwrap().await;
        assert_eq!(start.elapsed(), Duration::from_millis(59_900));

        let start = tokio::time::Instant::now();
        deadline.arm(&req(None)).unwrap().await;
        assert_eq!(start.elapsed(), Duration::from_millis(59_900));
    }

    #[tokio::test(start_paused = true)]
    async fn stall_watch_fires_at_the_earliest_open_entry() {
        let watch = StallWatch::default();
        let start = Instant::now();
        let s = Duration::from_secs(1);

        // Nothing entered: never overdue.
        assert!(tokio::time::timeout(10 * s, watch.overdue()).await.is_err());

        // An entry made while the watch already waits, earlier than the one it waits for.
        let late = watch.enter(Instant::now() + 30 * s);
        let waiting = tokio::spawn({
            let watch = watch.clone();
            async move { watch.overdue().await }
        });
        tokio::time::sleep(s).await;
        let early = watch.enter(Instant::now() + 5 * s);
        waiting.await.unwrap();
        assert_eq!(start.elapsed(), 16 * s);

        // An entry that ended no longer counts: the next one does.
        drop(early);
        let before = Instant::now();
        watch.overdue().await;
        assert_eq!(before.elapsed(), 24 * s);
        drop(late);
        assert!(tokio::time::timeout(10 * s, watch.overdue()).await.is_err());
    }
}
