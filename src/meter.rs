//! The billing meter: the instance's billed time as Function Compute bills it, plus RPC counts,
//! peak concurrency and the number of RPCs in flight (which the drain waits on).
//!
//! FC bills unary RPCs from request start to end, counting overlapping requests once (the union
//! of the intervals), and streaming RPCs from the first connection established to the last one
//! closed — so an idle connection left open is billed. The meter keeps both figures, so the drain
//! summary (and a debug line every few seconds) shows what the instance cost and why.
//!
//! All times use tokio's clock, so the arithmetic is tested with a paused clock.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use http::Request;
use prost::Message;
use tokio::sync::watch;
use tokio::time::Instant;
use tonic::body::Body;

use crate::body::GuardLayer;

/// How an RPC is billed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RpcKind {
    /// Unary: billed from request start to end.
    Unary,
    /// Client, server or bidirectional streaming: billed by connection time.
    Streaming,
}

/// The meter; clones share it.
#[derive(Clone, Debug)]
pub struct Meter {
    state: Arc<Mutex<State>>,
    /// RPCs in flight, for anything that waits for them to finish.
    in_flight: Arc<watch::Sender<usize>>,
    /// Connections open, for anything that waits for none to be.
    connections: Arc<watch::Sender<usize>>,
}

/// A union of intervals, kept as "how many are open now, since when, and the closed total".
#[derive(Debug, Default)]
struct Union {
    open: usize,
    since: Option<Instant>,
    closed_total: Duration,
}

impl Union {
    fn open(&mut self, now: Instant) {
        if self.open == 0 {
            self.since = Some(now);
        }
        self.open += 1;
    }

    fn close(&mut self, now: Instant) {
        self.open = self.open.saturating_sub(1);
        if self.open == 0
            && let Some(since) = self.since.take()
        {
            self.closed_total += now - since;
        }
    }

    fn total(&self, now: Instant) -> Duration {
        self.closed_total + self.since.map_or(Duration::ZERO, |s| now - s)
    }
}

#[derive(Debug, Default)]
struct State {
    unary: Union,
    connected: Union,
    unary_rpcs: u64,
    streaming_rpcs: u64,
    rpcs_in_flight: usize,
    peak_rpcs: usize,
    connections_total: u64,
}

/// The meter's figures at one moment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    /// Billed time of unary RPCs: the union of their intervals.
    pub unary_billed: Duration,
    /// Billed time of streaming RPCs: the union of connection lifetimes.
    pub connection_billed: Duration,
    /// Unary RPCs started.
    pub unary_rpcs: u64,
    /// Streaming RPCs started.
    pub streaming_rpcs: u64,
    /// The most RPCs in flight at once.
    pub peak_rpcs: usize,
    /// RPCs in flight now.
    pub rpcs_in_flight: usize,
    /// Connections accepted in all.
    pub connections_total: u64,
    /// Connections open now.
    pub connections_open: usize,
}

impl Default for Meter {
    fn default() -> Self {
        Meter {
            state: Arc::default(),
            in_flight: Arc::new(watch::Sender::new(0)),
            connections: Arc::new(watch::Sender::new(0)),
        }
    }
}

impl Meter {
    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is plain counters: a panic elsewhere cannot leave it inconsistent.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records an RPC's start; the returned guard records its end when dropped.
    pub fn rpc_started(&self, kind: RpcKind) -> RpcGuard {
        let now = Instant::now();
        let mut s = self.lock();
        match kind {
            RpcKind::Unary => {
                s.unary.open(now);
                s.unary_rpcs += 1;
            }
            RpcKind::Streaming => s.streaming_rpcs += 1,
        }
        s.rpcs_in_flight += 1;
        s.peak_rpcs = s.peak_rpcs.max(s.rpcs_in_flight);
        publish_in_flight(&self.in_flight, s.rpcs_in_flight);
        RpcGuard {
            meter: self.clone(),
            kind,
        }
    }

    /// Records a connection's opening; the returned guard records its closing when dropped.
    pub fn connection_opened(&self) -> ConnectionGuard {
        let now = Instant::now();
        let mut s = self.lock();
        s.connected.open(now);
        s.connections_total += 1;
        self.connections.send_replace(s.connected.open);
        ConnectionGuard {
            meter: self.clone(),
        }
    }

    /// The figures now, open intervals counted up to now.
    pub fn snapshot(&self) -> Snapshot {
        let now = Instant::now();
        let s = self.lock();
        Snapshot {
            unary_billed: s.unary.total(now),
            connection_billed: s.connected.total(now),
            unary_rpcs: s.unary_rpcs,
            streaming_rpcs: s.streaming_rpcs,
            peak_rpcs: s.peak_rpcs,
            rpcs_in_flight: s.rpcs_in_flight,
            connections_total: s.connections_total,
            connections_open: s.connected.open,
        }
    }

    /// Resolves when no RPC is in flight (at once if none is).
    pub async fn rpcs_done(&self) {
        let mut rx = self.in_flight.subscribe();
        // The sender lives in `self`, so the channel cannot close while we wait.
        let _ = rx.wait_for(|n| *n == 0).await;
    }

    /// A receiver of the number of open connections.
    pub fn connections(&self) -> watch::Receiver<usize> {
        self.connections.subscribe()
    }
}

/// Stores the number of RPCs in flight, waking waiters only when it reaches zero: that is all
/// [`Meter::rpcs_done`] waits for, and waking every receiver on each RPC's start and end was a
/// measurable part of a unary RPC's cost.
fn publish_in_flight(in_flight: &watch::Sender<usize>, now: usize) {
    in_flight.send_if_modified(|n| {
        *n = now;
        now == 0
    });
}

/// Marks one RPC in flight.
#[derive(Debug)]
pub struct RpcGuard {
    meter: Meter,
    kind: RpcKind,
}

impl Drop for RpcGuard {
    fn drop(&mut self) {
        let now = Instant::now();
        let mut s = self.meter.lock();
        if self.kind == RpcKind::Unary {
            s.unary.close(now);
        }
        s.rpcs_in_flight = s.rpcs_in_flight.saturating_sub(1);
        publish_in_flight(&self.meter.in_flight, s.rpcs_in_flight);
    }
}

/// Marks one connection open.
#[derive(Debug)]
pub struct ConnectionGuard {
    meter: Meter,
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        let now = Instant::now();
        let mut s = self.meter.lock();
        s.connected.close(now);
        self.meter.connections.send_replace(s.connected.open);
    }
}

/// Which methods stream, by path (`/package.Service/Method`), from the descriptor sets.
#[derive(Clone, Debug, Default)]
pub struct MethodKinds(Arc<HashMap<String, RpcKind>>);

impl MethodKinds {
    /// Reads every service method of the encoded `FileDescriptorSet`s. Sets that fail to decode
    /// are skipped here; reflection reports them at start-up.
    pub fn from_descriptor_sets(sets: &[&[u8]]) -> MethodKinds {
        let mut kinds = HashMap::new();
        for set in sets {
            let Ok(set) = prost_types::FileDescriptorSet::decode(*set) else {
                continue;
            };
            for file in &set.file {
                for service in &file.service {
                    let prefix = match file.package() {
                        "" => service.name().to_string(),
                        p => format!("{p}.{}", service.name()),
                    };
                    for method in &service.method {
                        let kind = if method.client_streaming() || method.server_streaming() {
                            RpcKind::Streaming
                        } else {
                            RpcKind::Unary
                        };
                        kinds.insert(format!("/{prefix}/{}", method.name()), kind);
                    }
                }
            }
        }
        MethodKinds(Arc::new(kinds))
    }

    /// The kind of the method at `path`; unknown methods are unary (they end at once anyway).
    pub fn of(&self, path: &str) -> RpcKind {
        self.0.get(path).copied().unwrap_or(RpcKind::Unary)
    }
}

/// A layer that records every RPC in `meter`, telling unary from streaming by `kinds`.
pub fn layer(
    meter: Meter,
    kinds: MethodKinds,
) -> GuardLayer<impl Fn(&Request<Body>) -> RpcGuard + Clone> {
    GuardLayer::new(move |request: &Request<Body>| {
        meter.rpc_started(kinds.of(request.uri().path()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::advance;

    const MS: Duration = Duration::from_millis(1);

    #[tokio::test(start_paused = true)]
    async fn unary_time_is_the_union_of_intervals() {
        let meter = Meter::default();
        // [0, 100) and [50, 150) overlap: billed 150, not 200.
        let a = meter.rpc_started(RpcKind::Unary);
        advance(50 * MS).await;
        let b = meter.rpc_started(RpcKind::Unary);
        advance(50 * MS).await;
        drop(a);
        advance(50 * MS).await;
        drop(b);
        assert_eq!(meter.snapshot().unary_billed, 150 * MS);
        // A gap is not billed; [250, 260) adds 10.
        advance(100 * MS).await;
        let c = meter.rpc_started(RpcKind::Unary);
        advance(10 * MS).await;
        drop(c);
        let s = meter.snapshot();
        assert_eq!(s.unary_billed, 160 * MS);
        assert_eq!((s.unary_rpcs, s.peak_rpcs, s.rpcs_in_flight), (3, 2, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn open_intervals_count_up_to_now() {
        let meter = Meter::default();
        let _rpc = meter.rpc_started(RpcKind::Unary);
        let _conn = meter.connection_opened();
        advance(30 * MS).await;
        let s = meter.snapshot();
        assert_eq!((s.unary_billed, s.connection_billed), (30 * MS, 30 * MS));
    }

    #[tokio::test(start_paused = true)]
    async fn streaming_time_is_connection_time() {
        let meter = Meter::default();
        let c1 = meter.connection_opened();
        advance(100 * MS).await;
        let rpc = meter.rpc_started(RpcKind::Streaming);
        let c2 = meter.connection_opened();
        advance(100 * MS).await;
        drop(rpc);
        drop(c1);
        advance(100 * MS).await;
        drop(c2);
        advance(500 * MS).await;
        let s = meter.snapshot();
        assert_eq!(s.connection_billed, 300 * MS);
        assert_eq!(s.unary_billed, Duration::ZERO);
        assert_eq!(
            (s.streaming_rpcs, s.connections_total, s.connections_open),
            (1, 2, 0)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn rpcs_done_waits_for_the_last_rpc() {
        let meter = Meter::default();
        let rpc = meter.rpc_started(RpcKind::Streaming);
        let waiter = tokio::spawn({
            let meter = meter.clone();
            async move { meter.rpcs_done().await }
        });
        advance(10 * MS).await;
        assert!(!waiter.is_finished());
        drop(rpc);
        waiter.await.unwrap();
    }

    #[test]
    fn kinds_from_descriptors() {
        let kinds = MethodKinds::from_descriptor_sets(&[crate::proto::FILE_DESCRIPTOR_SET]);
        assert_eq!(
            kinds.of("/routeguide.RouteGuide/GetFeature"),
            RpcKind::Unary
        );
        assert_eq!(
            kinds.of("/routeguide.RouteGuide/ListFeatures"),
            RpcKind::Streaming
        );
        assert_eq!(
            kinds.of("/routeguide.RouteGuide/RecordRoute"),
            RpcKind::Streaming
        );
        assert_eq!(
            kinds.of("/routeguide.RouteGuide/RouteChat"),
            RpcKind::Streaming
        );
        assert_eq!(kinds.of("/helloworld.Greeter/SayHello"), RpcKind::Unary);
    }
}
