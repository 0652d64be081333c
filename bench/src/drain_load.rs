//! The drain under load: a SIGTERM while the bootstrap is driven past its concurrency limit,
//! and whether every RPC is accounted for afterwards.
//!
//! h2load keeps 2 × 16 unary streams open against `--concurrency 16` (so admission refuses some
//! with RESOURCE_EXHAUSTED), 8 tonic callers add unary calls of their own, and 4 RouteChat
//! streams stay open past the 2 s drain timeout (so the drain ends them with UNAVAILABLE). What
//! the clients saw reach the server must equal what the server's drain summary counted: every
//! RPC is completed, or answered with a status, or refused before it reached the server
//! (REFUSED_STREAM, a closed connection) where retrying it is safe. `tests/attacks` asserts the
//! same on every `make test`; this records the figures.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bootstrap::proto::helloworld::HelloRequest;
use bootstrap::proto::helloworld::greeter_client::GreeterClient;
use bootstrap::proto::routeguide::RouteNote;
use bootstrap::proto::routeguide::route_guide_client::RouteGuideClient;
use futures_util::StreamExt;
use tokio::process::Command;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;

use crate::{Args, Kind, Result, Server};

/// The concurrency the server runs with, and what drives it.
const CONCURRENCY: &str = "16";
const UNARY_CALLERS: usize = 8;
const STREAMS: u64 = 4;
/// The server's own UNAVAILABLE says this; a client's (no connection) does not.
const SERVER_UNAVAILABLE: &str = "the server closed this connection";

/// One drain's accounting.
#[derive(Debug, Default, Clone, Copy)]
pub struct DrainLoad {
    /// SIGTERM to process exit.
    pub drain_ms: f64,
    /// RPCs the server counted (its drain summary: unary plus streaming).
    pub server_rpcs: u64,
    /// RPCs the clients saw answered by the server: OK, RESOURCE_EXHAUSTED or the server's
    /// UNAVAILABLE (h2load's HTTP 200s, whose grpc-status it cannot read, are one of those).
    pub answered: u64,
    /// Calls that never reached the server (REFUSED_STREAM, GOAWAY, closed connection).
    pub refused: u64,
    /// Streams the drain timeout ended with UNAVAILABLE, as the server counted them and as the
    /// streams' clients saw it.
    pub server_unavailable: u64,
    pub streams_unavailable: u64,
    /// Answers with any other status: errors, protocol errors, streams cut without trailers.
    pub bad: u64,
}

impl DrainLoad {
    /// Every RPC the server counted was answered, and nothing went wrong.
    pub fn accounted(&self) -> bool {
        self.server_rpcs == self.answered
            && self.bad == 0
            && self.server_unavailable == STREAMS
            && self.streams_unavailable == STREAMS
    }
}

/// Outcomes counted by the tonic clients.
#[derive(Default)]
struct Counts {
    answered: AtomicU64,
    refused: AtomicU64,
    streams_unavailable: AtomicU64,
    bad: AtomicU64,
    unary_ok: AtomicU64,
    streams_open: AtomicU64,
}

impl Counts {
    /// Counts one outcome; returns whether the caller should stop (the server is going).
    fn outcome(&self, status: Option<&tonic::Status>) -> bool {
        let Some(status) = status else {
            self.answered.fetch_add(1, Ordering::Relaxed);
            return false;
        };
        if refused_by_goaway(status) {
            self.refused.fetch_add(1, Ordering::Relaxed);
            return true;
        }
        match status.code() {
            Code::ResourceExhausted => {
                self.answered.fetch_add(1, Ordering::Relaxed);
                false
            }
            Code::Unavailable if status.message().contains(SERVER_UNAVAILABLE) => {
                self.answered.fetch_add(1, Ordering::Relaxed);
                true
            }
            // Refused before it reached the server: GOAWAY, the listener closed, or a request
            // hyper had queued on a connection that then closed ("operation was canceled").
            Code::Unavailable | Code::Cancelled => {
                self.refused.fetch_add(1, Ordering::Relaxed);
                true
            }
            _ => {
                self.bad.fetch_add(1, Ordering::Relaxed);
                true
            }
        }
    }
}

/// A call the server's GOAWAY (NO_ERROR) refused: sent on a stream above the GOAWAY's last
/// stream id, so never processed and safe to retry. tonic reports it as INTERNAL ("h2 protocol
/// error"), which is why the error chain is read rather than the code.
fn refused_by_goaway(status: &tonic::Status) -> bool {
    let mut source = std::error::Error::source(status);
    while let Some(error) = source {
        if let Some(h2) = error.downcast_ref::<h2::Error>() {
            return h2.is_go_away() && h2.is_remote() && h2.reason() == Some(h2::Reason::NO_ERROR);
        }
        source = error.source();
    }
    false
}

/// One drain of `kind` under load.
pub async fn measure(args: &Args, kind: Kind) -> Result<DrainLoad> {
    let extra = [
        "--concurrency",
        CONCURRENCY,
        "--drain-timeout",
        "2s",
        "--idle-timeout",
        "off",
    ];
    let (server, _) = Server::start(args, kind, &extra).await?;
    let log = server.log.clone().ok_or("the bootstrap has a log file")?;
    // The health Checks that saw it start are RPCs it counted, and answered.
    let checks = server.checks_answered;
    let h2load = Command::new("h2load")
        .args(["-n", "100000000", "-c", "2", "-m", "16", "-d"])
        .arg(args.work.join("say-hello.grpc"))
        .args(["-H", "content-type: application/grpc", "-H", "te: trailers"])
        .arg(format!("{}/helloworld.Greeter/SayHello", server.url()))
        .kill_on_drop(true)
        .output();
    let h2load = tokio::spawn(h2load);

    let counts = Arc::new(Counts::default());
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for _ in 0..UNARY_CALLERS {
        let mut client = GreeterClient::new(server.channel().await?);
        let (counts, stop) = (counts.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let reply = client.say_hello(HelloRequest { name: "x".into() }).await;
                if reply.is_ok() {
                    counts.unary_ok.fetch_add(1, Ordering::Relaxed);
                }
                if counts.outcome(reply.as_ref().err()) {
                    return;
                }
            }
        }));
    }
    for _ in 0..STREAMS {
        let mut client = RouteGuideClient::new(server.channel().await?);
        let counts = counts.clone();
        tasks.push(tokio::spawn(async move {
            let (notes, outbound) = tokio::sync::mpsc::channel(4);
            // Notes at one location: from the second on, each is answered with the ones before.
            tokio::spawn(async move {
                let note = RouteNote {
                    location: None,
                    message: "drain".into(),
                };
                while notes.send(note.clone()).await.is_ok() {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            });
            let mut replies = match client.route_chat(ReceiverStream::new(outbound)).await {
                Ok(replies) => replies.into_inner(),
                Err(status) => {
                    counts.outcome(Some(&status));
                    return;
                }
            };
            let mut open = false;
            loop {
                match replies.next().await {
                    Some(Ok(_)) if !open => {
                        open = true;
                        counts.streams_open.fetch_add(1, Ordering::Relaxed);
                    }
                    Some(Ok(_)) => {}
                    Some(Err(status)) => {
                        if status.code() == Code::Unavailable
                            && status.message().contains(SERVER_UNAVAILABLE)
                        {
                            counts.streams_unavailable.fetch_add(1, Ordering::Relaxed);
                        }
                        counts.outcome(Some(&status));
                        return;
                    }
                    // The server must end these streams with a status, never just close them.
                    None => {
                        counts.bad.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                }
            }
        }));
    }

    // SIGTERM once every stream is open and the unary load runs.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while counts.streams_open.load(Ordering::Relaxed) < STREAMS
        || counts.unary_ok.load(Ordering::Relaxed) < 100
    {
        if tokio::time::Instant::now() > deadline {
            return Err("the drain-under-load clients never got going".into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let drain = server.drain().await?;
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        tokio::time::timeout(Duration::from_secs(10), task).await??;
    }
    let loaded = tokio::time::timeout(Duration::from_secs(10), h2load).await???;
    let loaded = String::from_utf8_lossy(&loaded.stdout);

    let summary = std::fs::read_to_string(&log)?
        .lines()
        .rev()
        .find_map(|line| {
            let line: serde_json::Value = serde_json::from_str(line).ok()?;
            (line["message"] == "drain summary").then_some(line)
        })
        .ok_or("no drain summary in the bootstrap's log")?;
    let number = |key: &str| {
        summary[key]
            .as_u64()
            .ok_or_else(|| format!("no {key} in the drain summary"))
    };
    let loaded = crate::parse_h2load(&loaded)?;
    // h2load's requests that got no HTTP 200: refused streams, the GOAWAY, the closed socket.
    let h2load_refused = loaded.started.saturating_sub(loaded.ok_2xx);
    Ok(DrainLoad {
        drain_ms: drain.as_secs_f64() * 1e3,
        server_rpcs: number("unary_rpcs")? + number("streaming_rpcs")?,
        answered: counts.answered.load(Ordering::Relaxed) + loaded.ok_2xx + checks,
        refused: counts.refused.load(Ordering::Relaxed) + h2load_refused,
        server_unavailable: number("rpcs_ended_unavailable")?,
        streams_unavailable: counts.streams_unavailable.load(Ordering::Relaxed),
        bad: counts.bad.load(Ordering::Relaxed),
    })
}
