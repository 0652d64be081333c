//! The listener and its connections: accept, serve each connection, drain.
//!
//! Laid out like mini-redis's server: [`Server::run`] accepts connections until a drain begins,
//! each connection is served by its own task, and shutdown is a broadcast that every connection
//! task watches. We run our own accept loop rather than tonic's `Server::serve*` because those
//! wait forever for open streams on shutdown and give no hold on each connection
//! (`../shared/TONIC.md`); here every connection gets its GOAWAY from us and we know when it ends.
//!
//! Each connection is served by hyper-util's auto builder: HTTP/2 with prior knowledge (gRPC) and
//! HTTP/1.1 (probes and FC's hooks) on the same port, told apart by the connection preface.
//! [`connection`] holds each connection's task and the reasons it may close.

pub(crate) mod connection;

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::lifecycle::{Lifecycle, Phase};
use crate::meter::{Meter, Snapshot};
use crate::stack::AppService;

/// hyper's guard against streams the server itself resets (RUSTSEC-2024-0003); tonic passes
/// `None`, which turns it off.
const MAX_LOCAL_ERROR_RESET_STREAMS: usize = 1024;
/// The largest request header list accepted over HTTP/2, advertised as
/// SETTINGS_MAX_HEADER_LIST_SIZE. hyper's default too, set here so the README's hostile-input
/// table has one place to point at: a larger list gets 431 and RST_STREAM, and a header block
/// needing more CONTINUATION frames than this allows gets GOAWAY ENHANCE_YOUR_CALM.
pub(crate) const MAX_HEADER_LIST_SIZE: u32 = 16 * 1024;

/// Binds `addr`. The unspecified IPv6 address is bound dual-stack (IPv4 too); where the host has
/// no IPv6 it falls back to every IPv4 interface.
pub(crate) fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    match bind_exact(addr) {
        Err(e) if addr.ip() == std::net::Ipv6Addr::UNSPECIFIED => {
            tracing::debug!(error = %e, "no IPv6 here: binding IPv4 only");
            bind_exact(SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), addr.port()))
        }
        other => other,
    }
}

fn bind_exact(addr: SocketAddr) -> io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(false)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    TcpListener::from_std(socket.into())
}

/// What the server needs from the configuration.
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    /// Advertised as SETTINGS_MAX_CONCURRENT_STREAMS on every connection.
    pub concurrency: u32,
    pub max_connections: usize,
    pub drain_timeout: Duration,
    pub exit_on_goaway: bool,
    pub idle_exit_after: Option<Duration>,
    pub connection: connection::Limits,
}

/// What happened during the drain, logged when it ends and returned by `serve`.
#[derive(Clone, Debug)]
pub struct DrainSummary {
    /// Why the drain began.
    pub reason: String,
    /// From the start of the drain to the last connection closed (or given up on).
    pub duration: Duration,
    /// RPCs open when the drain began.
    pub rpcs_in_flight_at_start: usize,
    /// RPCs still open at the drain timeout, ended with UNAVAILABLE.
    pub rpcs_ended_unavailable: usize,
    /// Connections open when the drain began.
    pub connections_at_start: usize,
    /// Connections that had not closed even after their streams were ended.
    pub connections_abandoned: usize,
    /// Connections refused at accept because --max-connections were open.
    pub connections_refused: u64,
    /// The billing meter at the end.
    pub meter: Snapshot,
}

/// Accepts and serves connections until the lifecycle starts draining, then drains.
pub(crate) struct Server {
    listener: TcpListener,
    http: Arc<auto::Builder<TokioExecutor>>,
    service: AppService,
    lifecycle: Lifecycle,
    meter: Meter,
    settings: Settings,
    /// Cancelled when every connection must send GOAWAY and let its streams finish.
    goaway: CancellationToken,
    /// Cancelled when every open RPC must end with UNAVAILABLE: by the drain, once it has
    /// counted them, after the drain timeout or the lifecycle's force.
    end_rpcs: CancellationToken,
    connections: TaskTracker,
    /// Admits at most --max-connections at once.
    connection_permits: Arc<Semaphore>,
}

impl Server {
    pub(crate) fn new(
        listener: TcpListener,
        service: AppService,
        lifecycle: Lifecycle,
        meter: Meter,
        settings: Settings,
    ) -> Server {
        let mut http = auto::Builder::new(TokioExecutor::new());
        http.http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(settings.concurrency)
            .max_local_error_reset_streams(MAX_LOCAL_ERROR_RESET_STREAMS)
            .max_header_list_size(MAX_HEADER_LIST_SIZE);
        // hyper enforces its HTTP/1.1 header read timeout only when it has a timer; a partial
        // request head is a handshake that did not complete.
        http.http1()
            .timer(TokioTimer::new())
            .header_read_timeout(settings.connection.handshake_timeout);
        Server {
            listener,
            http: Arc::new(http),
            service,
            lifecycle,
            meter,
            connection_permits: Arc::new(Semaphore::new(settings.max_connections)),
            settings,
            goaway: CancellationToken::new(),
            end_rpcs: CancellationToken::new(),
            connections: TaskTracker::new(),
        }
    }

    /// Serves until a drain begins, then drains: no new connections, GOAWAY on every open one,
    /// open RPCs run until they end or the drain timeout, then the rest end with UNAVAILABLE.
    pub(crate) async fn run(self) -> DrainSummary {
        let idle_exit = self.settings.idle_exit_after.map(|after| {
            tokio::spawn(exit_when_idle(
                self.meter.connections(),
                after,
                self.lifecycle.clone(),
            ))
        });
        let mut refused = 0u64;
        loop {
            tokio::select! {
                () = self.lifecycle.reached(Phase::Draining) => break,
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, _)) => match self.connection_permits.clone().try_acquire_owned() {
                        Ok(permit) => self.spawn_connection(stream, permit),
                        Err(_) => {
                            // Dropping the stream closes it: the client sees a reset connection
                            // at once and can go elsewhere, and we hold nothing for it.
                            refused += 1;
                            tracing::debug!("refused a connection: --max-connections are open");
                        }
                    },
                    Err(e) => accept_error(e).await,
                },
            }
        }
        if let Some(task) = idle_exit {
            task.abort();
        }
        self.drain(refused).await
    }

    async fn drain(self, connections_refused: u64) -> DrainSummary {
        let started = Instant::now();
        let at_start = self.meter.snapshot();
        // Closing the listening socket makes the kernel refuse new connections at once, rather
        // than completing handshakes that nobody will serve.
        drop(self.listener);
        self.goaway.cancel();
        self.connections.close();

        let force = self.lifecycle.force_token().clone();
        let in_time = tokio::select! {
            () = self.connections.wait() => true,
            () = tokio::time::sleep(self.settings.drain_timeout) => false,
            () = force.cancelled() => false,
        };
        let mut ended_unavailable = 0;
        let mut abandoned = 0;
        if !in_time {
            // Counted before they are ended: once `end_rpcs` is cancelled they finish on their
            // own connections' tasks, and a later count would miss them.
            ended_unavailable = self.meter.snapshot().rpcs_in_flight;
            self.lifecycle.force("drain timeout");
            self.end_rpcs.cancel();
            // Each connection drops itself if its streams' trailers cannot be delivered within
            // its close grace; this bound only guards against a bug there.
            let bound = connection::CLOSE_GRACE + Duration::from_millis(500);
            if tokio::time::timeout(bound, self.connections.wait())
                .await
                .is_err()
            {
                abandoned = self.connections.len();
            }
        }
        self.lifecycle.stopped();
        let summary = DrainSummary {
            reason: self.lifecycle.drain_reason().unwrap_or_default(),
            duration: started.elapsed(),
            rpcs_in_flight_at_start: at_start.rpcs_in_flight,
            rpcs_ended_unavailable: ended_unavailable,
            connections_at_start: at_start.connections_open,
            connections_abandoned: abandoned,
            connections_refused,
            meter: self.meter.snapshot(),
        };
        tracing::info!(
            reason = %summary.reason,
            drain_ms = summary.duration.as_millis() as u64,
            rpcs_in_flight_at_start = summary.rpcs_in_flight_at_start,
            rpcs_ended_unavailable = summary.rpcs_ended_unavailable,
            connections_at_start = summary.connections_at_start,
            connections_abandoned = summary.connections_abandoned,
            connections_refused = summary.connections_refused,
            unary_billed_ms = summary.meter.unary_billed.as_millis() as u64,
            connection_billed_ms = summary.meter.connection_billed.as_millis() as u64,
            unary_rpcs = summary.meter.unary_rpcs,
            streaming_rpcs = summary.meter.streaming_rpcs,
            peak_rpcs = summary.meter.peak_rpcs,
            connections_total = summary.meter.connections_total,
            "drain summary"
        );
        summary
    }

    fn spawn_connection(&self, stream: TcpStream, permit: OwnedSemaphorePermit) {
        // gRPC messages are small and latency-bound; Nagle's algorithm only adds delay.
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
        let serving = connection::serve(
            stream,
            self.http.clone(),
            self.service.clone(),
            self.settings.connection.clone(),
            self.goaway.clone(),
            self.end_rpcs.clone(),
            self.meter.clone(),
        );
        let exit_on_goaway = self.settings.exit_on_goaway;
        let lifecycle = self.lifecycle.clone();
        let meter = self.meter.clone();
        self.connections.spawn(async move {
            let closed_by = serving.await;
            drop(permit);
            // The front end closes its connections when it scales the instance in; once the
            // last is gone nothing will come back, and exiting now ends the billed time.
            if exit_on_goaway
                && closed_by == connection::ClosedBy::Peer
                && meter.snapshot().connections_open == 0
            {
                lifecycle.start_drain("the peer closed its last connection (--exit-on-goaway)");
            }
        });
    }
}

/// Starts a drain once no connection has been open for `after`.
async fn exit_when_idle(mut open: watch::Receiver<usize>, after: Duration, lifecycle: Lifecycle) {
    loop {
        // The sender lives in the meter, which outlives this task.
        let _ = open.wait_for(|n| *n == 0).await;
        tokio::select! {
            () = tokio::time::sleep(after) => {
                lifecycle.start_drain("no connection open for --idle-exit-after");
                return;
            }
            changed = open.changed() => if changed.is_err() { return },
        }
    }
}

/// Accepting fails when the process is out of file descriptors or memory, or when a client reset
/// before we accepted; none is a reason to stop serving the connections already open. Pausing
/// briefly keeps a descriptor shortage from turning into a busy loop.
async fn accept_error(e: io::Error) {
    tracing::warn!(error = %e, "accept failed");
    tokio::time::sleep(Duration::from_millis(50)).await;
}
