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

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use http::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::body::Body;
use tonic::transport::server::Connected;
use tower::ServiceExt;

use crate::lifecycle::{Lifecycle, Phase};
use crate::stack::AppService;

/// hyper's guard against streams the server itself resets (RUSTSEC-2024-0003); tonic passes
/// `None`, which turns it off.
const MAX_LOCAL_ERROR_RESET_STREAMS: usize = 1024;

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

/// Accepts and serves connections until the lifecycle starts draining.
pub(crate) struct Server {
    listener: TcpListener,
    http: Arc<auto::Builder<TokioExecutor>>,
    service: AppService,
    lifecycle: Lifecycle,
    /// Cancelled when every connection must send GOAWAY and finish its streams.
    goaway: CancellationToken,
    connections: TaskTracker,
}

impl Server {
    pub(crate) fn new(listener: TcpListener, service: AppService, lifecycle: Lifecycle) -> Server {
        let mut http = auto::Builder::new(TokioExecutor::new());
        http.http2()
            .timer(TokioTimer::new())
            .max_local_error_reset_streams(MAX_LOCAL_ERROR_RESET_STREAMS);
        // hyper enforces its HTTP/1.1 header read timeout only when it has a timer.
        http.http1().timer(TokioTimer::new());
        Server {
            listener,
            http: Arc::new(http),
            service,
            lifecycle,
            goaway: CancellationToken::new(),
            connections: TaskTracker::new(),
        }
    }

    /// Serves until a drain begins, then lets every connection finish and returns.
    pub(crate) async fn run(self) {
        loop {
            tokio::select! {
                () = self.lifecycle.reached(Phase::Draining) => break,
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, _)) => self.spawn_connection(stream),
                    Err(e) => accept_error(e).await,
                },
            }
        }
        // Closing the listening socket makes the kernel refuse new connections at once, rather
        // than completing handshakes that nobody will serve.
        drop(self.listener);
        self.goaway.cancel();
        self.connections.close();
        self.connections.wait().await;
        self.lifecycle.stopped();
    }

    fn spawn_connection(&self, stream: TcpStream) {
        // gRPC messages are small and latency-bound; Nagle's algorithm only adds delay.
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
        // tonic's `Request::remote_addr()` reads this from the request's extensions.
        let info = stream.connect_info();
        let service = self
            .service
            .clone()
            .map_request(move |req: Request<Incoming>| {
                let mut req = req.map(Body::new);
                req.extensions_mut().insert(info.clone());
                req
            });
        let http = self.http.clone();
        let goaway = self.goaway.clone();
        self.connections.spawn(async move {
            let io = TokioIo::new(stream);
            let conn = http.serve_connection(io, TowerToHyperService::new(service));
            tokio::pin!(conn);
            let result = tokio::select! {
                result = conn.as_mut() => result,
                () = goaway.cancelled() => {
                    // HTTP/2: GOAWAY, then the open streams run to their end. HTTP/1.1: the
                    // response in flight gets `connection: close`.
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = result {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
}

/// Accepting fails when the process is out of file descriptors or memory, or when a client reset
/// before we accepted; none is a reason to stop serving the connections already open. Pausing
/// briefly keeps a descriptor shortage from turning into a busy loop.
async fn accept_error(e: io::Error) {
    tracing::warn!(error = %e, "accept failed");
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
}
