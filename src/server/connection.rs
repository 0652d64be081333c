//! One connection's task: serve it, and close it when it should close.
//!
//! A connection ends in one of these ways, each of which keeps the platform's billing honest or
//! the instance safe:
//! - the peer closes it (the front end's GOAWAY on scale-in, or a client going away);
//! - it never completes its handshake (HTTP/2 preface, or an HTTP/1.1 request head) within
//!   `--handshake-timeout`: it is dropped, since there is no protocol yet to say goodbye in;
//! - it has no open stream for `--idle-timeout`: GOAWAY (or `connection: close`), so an idle
//!   client does not keep the instance billed;
//! - it reaches `--max-connection-age`: GOAWAY, then after the grace its open streams end with
//!   UNAVAILABLE and trailers (its own force token) and it closes;
//! - the server drains: GOAWAY, and if the drain times out the streams end with UNAVAILABLE
//!   (the server's token that ends every RPC, this connection's token's parent).
//!
//! After its streams have been ended with trailers, a connection gets a moment to deliver them;
//! one that still has not closed after that is dropped.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use http::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use pin_project_lite::pin_project;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;
use tonic::body::Body;
use tonic::transport::server::Connected;
use tower::ServiceBuilder;

use crate::body::GuardLayer;
use crate::layers::deadline::{STALL_GRACE, StallWatch};
use crate::layers::drain::ForceClose;
use crate::layers::request_log::PeerAddr;
use crate::meter::Meter;
use crate::stack::AppService;

/// The HTTP/2 client connection preface.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// The preface plus a frame header (the client's SETTINGS must follow at once).
const H2_HANDSHAKE_BYTES: usize = H2_PREFACE.len() + 9;
/// After its streams were ended with trailers, how long a connection may take to deliver them
/// and close before it is dropped.
pub(crate) const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// The per-connection limits, from the configuration.
#[derive(Clone, Debug)]
pub(crate) struct Limits {
    pub handshake_timeout: Duration,
    pub idle_timeout: Option<Duration>,
    pub max_age: Option<Duration>,
    pub max_age_grace: Duration,
}

/// How a connection ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ClosedBy {
    /// The peer closed an HTTP/2 connection (its GOAWAY, or its close).
    Peer,
    /// Anything else: the peer closed an HTTP/1.1 connection (a probe), or we closed it.
    Other,
}

/// What the connection's task and its requests share.
struct Shared {
    /// Streams (requests) open now, and since when none has been. Nothing is woken when these
    /// change: the idle timer reads them when it fires, so an RPC costs no wake-up of the
    /// connection's task (a `watch` of the count woke it twice per RPC).
    streams: Mutex<Streams>,
    /// The handshake completed: a full HTTP/2 preface, or a first HTTP/1.1 request.
    handshaken: watch::Sender<bool>,
    /// The connection speaks HTTP/2.
    h2: AtomicBool,
}

impl Shared {
    fn stream_started(self: &Arc<Self>) -> StreamGuard {
        self.handshaken
            .send_if_modified(|done| !std::mem::replace(done, true));
        self.streams().open += 1;
        StreamGuard(self.clone())
    }

    fn streams(&self) -> MutexGuard<'_, Streams> {
        // Two plain values: a panic elsewhere cannot leave them inconsistent.
        self.streams.lock().unwrap_or_else(|p| p.into_inner())
    }
}

struct Streams {
    open: usize,
    idle_since: Instant,
}

/// Marks one stream open on its connection.
struct StreamGuard(Arc<Shared>);

impl Drop for StreamGuard {
    fn drop(&mut self) {
        let mut streams = self.0.streams();
        streams.open = streams.open.saturating_sub(1);
        if streams.open == 0 {
            streams.idle_since = Instant::now();
        }
    }
}

/// Serves one accepted connection to its end.
pub(crate) async fn serve(
    stream: TcpStream,
    http: Arc<auto::Builder<TokioExecutor>>,
    app: AppService,
    limits: Limits,
    goaway: CancellationToken,
    force_all: CancellationToken,
    meter: Meter,
) -> ClosedBy {
    let _open = meter.connection_opened();
    let shared = Arc::new(Shared {
        streams: Mutex::new(Streams {
            open: 0,
            idle_since: Instant::now(),
        }),
        handshaken: watch::Sender::new(false),
        h2: AtomicBool::new(false),
    });
    // This connection's streams end when the server forces every RPC to end, or when this
    // connection alone is past its age and grace.
    let force = force_all.child_token();

    // tonic's `Request::remote_addr()` reads the connect info from the request's extensions.
    let info = stream.connect_info();
    let peer = info.remote_addr().map(PeerAddr::new);
    let stalls = StallWatch::default();
    let service = {
        let shared = shared.clone();
        let force = ForceClose(force.clone());
        let stalls = stalls.clone();
        ServiceBuilder::new()
            .map_request(|request: Request<Incoming>| request.map(Body::new))
            .layer(GuardLayer::new(move |_: &Request<Body>| {
                shared.stream_started()
            }))
            .map_request(move |mut request: Request<Body>| {
                request.extensions_mut().insert(info.clone());
                request.extensions_mut().insert(force.clone());
                request.extensions_mut().insert(stalls.clone());
                if let Some(peer) = &peer {
                    request.extensions_mut().insert(peer.clone());
                }
                request
            })
            .service(app)
    };
    let io = TokioIo::new(Watched {
        io: stream,
        seen: 0,
        shared: shared.clone(),
    });
    let conn = http.serve_connection(io, TowerToHyperService::new(service));
    tokio::pin!(conn);

    let opened = Instant::now();
    let handshake_deadline = opened + limits.handshake_timeout;
    let age_deadline = limits.max_age.map(|age| opened + age);
    let mut shutting_down = false;
    let mut force_at: Option<Instant> = None;
    let mut drop_at: Option<Instant> = None;

    let by_peer = loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                break !shutting_down && drop_at.is_none();
            }
            () = goaway.cancelled(), if !shutting_down => {
                // HTTP/2: the two-step GOAWAY, then open streams run to their end.
                // HTTP/1.1: the response in flight goes out with `connection: close`.
                conn.as_mut().graceful_shutdown();
                shutting_down = true;
            }
            () = sleep_until(handshake_deadline), if !*shared.handshaken.borrow() => {
                if !*shared.handshaken.borrow() {
                    tracing::debug!("handshake not completed in time: closing");
                    break false;
                }
            }
            () = idle(&shared, limits.idle_timeout), if !shutting_down => {
                tracing::debug!("idle: GOAWAY");
                conn.as_mut().graceful_shutdown();
                shutting_down = true;
            }
            () = sleep_until_opt(age_deadline), if !shutting_down => {
                tracing::debug!("max connection age: GOAWAY");
                conn.as_mut().graceful_shutdown();
                shutting_down = true;
                force_at = Some(Instant::now() + limits.max_age_grace);
            }
            () = sleep_until_opt(force_at), if !force.is_cancelled() => {
                tracing::debug!("max connection age grace over: ending open streams");
                force.cancel();
            }
            () = stalls.overdue(), if !force.is_cancelled() => {
                tracing::warn!(
                    "an RPC is still open {STALL_GRACE:?} past its deadline (the client does not \
                     read): closing its connection"
                );
                force.cancel();
            }
            () = force.cancelled(), if drop_at.is_none() => {
                drop_at = Some(Instant::now() + CLOSE_GRACE);
            }
            () = sleep_until_opt(drop_at) => {
                tracing::debug!("connection did not close after its streams ended: dropping");
                break false;
            }
        }
    };
    if by_peer && shared.h2.load(Ordering::Relaxed) {
        ClosedBy::Peer
    } else {
        ClosedBy::Other
    }
}

/// Resolves once no stream has been open for `timeout` (never, without a timeout).
async fn idle(shared: &Shared, timeout: Option<Duration>) {
    let Some(timeout) = timeout else {
        return std::future::pending().await;
    };
    loop {
        // Streams open now: the connection cannot be idle before `timeout` from now. Otherwise
        // it is idle at `timeout` after the last one ended, unless one starts before then.
        let at = {
            let streams = shared.streams();
            if streams.open > 0 {
                Instant::now() + timeout
            } else {
                streams.idle_since + timeout
            }
        };
        if at <= Instant::now() {
            return;
        }
        sleep_until(at).await;
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => sleep_until(at).await,
        None => std::future::pending().await,
    }
}

pin_project! {
    /// The TCP stream, watched for the end of the HTTP/2 handshake.
    ///
    /// hyper has no handshake timeout for HTTP/2 (a connection that sends part of a preface, or
    /// nothing, stays open forever), so we look at the first bytes ourselves.
    struct Watched {
        #[pin]
        io: TcpStream,
        // Bytes seen so far, up to `H2_HANDSHAKE_BYTES`.
        seen: usize,
        shared: Arc<Shared>,
    }
}

impl AsyncRead for Watched {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let polled = this.io.poll_read(cx, buf);
        if *this.seen < H2_HANDSHAKE_BYTES {
            for &byte in &buf.filled()[before..] {
                let at = *this.seen;
                if at < H2_PREFACE.len() && byte != H2_PREFACE[at] {
                    // Not HTTP/2: HTTP/1.1's handshake is its first request, seen by the service.
                    *this.seen = H2_HANDSHAKE_BYTES;
                    break;
                }
                *this.seen += 1;
                if *this.seen == H2_HANDSHAKE_BYTES {
                    this.shared.h2.store(true, Ordering::Relaxed);
                    this.shared.handshaken.send_replace(true);
                    break;
                }
            }
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.project().io.poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        self.project().io.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.project().io.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.project().io.poll_shutdown(cx)
    }
}
