//! Shutdown and drain over real TCP: SIGTERM on the real binary (streams that finish within the
//! drain, streams that outlast it, a second signal), the listener closing at once, health Watch,
//! FC's /pre-stop and /pre-freeze hooks, and a drain under load (h2load plus tonic clients).
//!
//! The binary serves only the sample services, whose one long-lived stream is `RouteChat`: its
//! response stream lasts as long as the client keeps its side open, so the client decides how
//! long the RPC runs. In-process servers register [`SlowGuide`], whose `ListFeatures` streams at a
//! pace given in the request.

mod support;

use std::process::ExitStatus;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bootstrap::proto::helloworld::HelloRequest;
use bootstrap::proto::helloworld::greeter_client::GreeterClient;
use bootstrap::proto::routeguide::route_guide_client::RouteGuideClient;
use bootstrap::proto::routeguide::route_guide_server::{RouteGuide, RouteGuideServer};
use bootstrap::proto::routeguide::{Feature, Point, Rectangle, RouteNote, RouteSummary};
use bootstrap::{Bootstrap, Config, Phase};
use futures_util::stream::{self, BoxStream, StreamExt};
use support::{Binary, TestServer, free_port, http, signal, within};
use tokio::process::Child;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Response, Status, Streaming};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// The status message of an RPC ended by the drain (`src/layers/drain.rs`): seeing it proves the
/// status came from the server's trailers, not from a broken connection.
const DRAIN_MESSAGE: &str = "before the RPC finished";

// === helpers: a RouteGuide whose ListFeatures streams slowly ===

/// A `RouteGuide` whose `ListFeatures` sends `lo.latitude` features (0: forever), one every
/// `lo.longitude` ms, the first at once. It records when its stream ended or was dropped.
#[derive(Clone, Default)]
struct SlowGuide {
    ended: Arc<Mutex<Option<Instant>>>,
}

impl SlowGuide {
    fn ended_at(&self) -> Option<Instant> {
        *self.ended.lock().unwrap()
    }
}

/// Records the first moment the stream ended (its last item) or was dropped.
struct EndMark(Arc<Mutex<Option<Instant>>>);

impl EndMark {
    fn mark(&self) {
        self.0.lock().unwrap().get_or_insert_with(Instant::now);
    }
}

impl Drop for EndMark {
    fn drop(&mut self) {
        self.mark();
    }
}

#[tonic::async_trait]
impl RouteGuide for SlowGuide {
    async fn get_feature(&self, _: Request<Point>) -> Result<Response<Feature>, Status> {
        Err(Status::unimplemented("not in this test service"))
    }

    type ListFeaturesStream = BoxStream<'static, Result<Feature, Status>>;

    async fn list_features(
        &self,
        request: Request<Rectangle>,
    ) -> Result<Response<Self::ListFeaturesStream>, Status> {
        let lo = request.into_inner().lo.unwrap_or_default();
        let count = u32::try_from(lo.latitude).unwrap_or(0);
        let interval = Duration::from_millis(u64::try_from(lo.longitude).unwrap_or(0));
        let mark = EndMark(self.ended.clone());
        let features = stream::unfold((0u32, mark), move |(i, mark)| async move {
            if count > 0 && i >= count {
                mark.mark();
                return None;
            }
            if i > 0 {
                tokio::time::sleep(interval).await;
            }
            let feature = Feature {
                name: format!("feature {i}"),
                location: None,
            };
            Some((Ok(feature), (i + 1, mark)))
        });
        Ok(Response::new(features.boxed()))
    }

    async fn record_route(
        &self,
        _: Request<Streaming<Point>>,
    ) -> Result<Response<RouteSummary>, Status> {
        Err(Status::unimplemented("not in this test service"))
    }

    type RouteChatStream = BoxStream<'static, Result<RouteNote, Status>>;

    async fn route_chat(
        &self,
        _: Request<Streaming<RouteNote>>,
    ) -> Result<Response<Self::RouteChatStream>, Status> {
        Err(Status::unimplemented("not in this test service"))
    }
}

/// The request for `count` features (0: forever), one every `interval_ms`.
fn slow(count: i32, interval_ms: i32) -> Rectangle {
    Rectangle {
        lo: Some(Point {
            latitude: count,
            longitude: interval_ms,
        }),
        hi: None,
    }
}

/// An in-process server with [`SlowGuide`] (and health), SERVING.
async fn slow_server(config: Config) -> (TestServer, SlowGuide) {
    let guide = SlowGuide::default();
    let server =
        TestServer::start(Bootstrap::new(config).add_service(RouteGuideServer::new(guide.clone())))
            .await;
    within("serving", server.lifecycle.reached(Phase::Serving)).await;
    (server, guide)
}

// === helpers: the binary, its stdout read continuously, and RouteChat as a long stream ===

/// The real binary with its stdout forwarded by a task, so the pipe never fills however much
/// it logs.
struct Running {
    child: Child,
    lines: mpsc::UnboundedReceiver<String>,
    seen: Vec<String>,
    port: u16,
}

impl Running {
    async fn start(args: &[&str]) -> Running {
        let port = free_port();
        let port_s = port.to_string();
        let mut all = vec!["--port", &port_s, "--log-format", "json"];
        all.extend_from_slice(args);
        let Binary {
            child,
            mut stdout,
            seen,
        } = Binary::start(&all, &[]).await;
        let (tx, lines) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok(Some(line)) = stdout.next_line().await {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Running {
            child,
            lines,
            seen,
            port,
        }
    }

    async fn channel(&self) -> Channel {
        let url = format!("http://127.0.0.1:{}", self.port);
        within("connect", Endpoint::from_shared(url).unwrap().connect())
            .await
            .expect("connect")
    }

    fn signal(&self, name: &str) {
        signal(self.child.id().expect("running"), name);
    }

    /// Reads stdout until a line contains `needle`.
    async fn wait_for_line(&mut self, needle: &str) -> String {
        if let Some(line) = self.seen.iter().find(|l| l.contains(needle)) {
            return line.clone();
        }
        within(&format!("a log line containing {needle:?}"), async {
            loop {
                let line = self.lines.recv().await.unwrap_or_else(|| {
                    panic!(
                        "stdout closed before {needle:?}; saw:\n{}",
                        self.seen.join("\n")
                    )
                });
                self.seen.push(line.clone());
                if line.contains(needle) {
                    return line;
                }
            }
        })
        .await
    }

    /// Waits for the process to exit, then reads the rest of its stdout.
    async fn exited(&mut self) -> ExitStatus {
        let status = within("process exit", self.child.wait())
            .await
            .expect("wait");
        while let Some(line) = within("rest of stdout", self.lines.recv()).await {
            self.seen.push(line);
        }
        status
    }

    /// The fields of the JSON "drain summary" line (after [`Running::exited`]).
    fn drain_summary(&self) -> serde_json::Value {
        self.seen
            .iter()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|v| v["message"] == "drain summary")
            .unwrap_or_else(|| panic!("no drain summary line in:\n{}", self.seen.join("\n")))
    }
}

/// A `RouteChat` call on the binary's sample service, driven one step at a time: each step sends
/// two notes at a location no earlier step used, and the server answers the second with the
/// first, so every step yields exactly one reply, `"seed <i>"`.
struct Chat {
    tx: mpsc::Sender<RouteNote>,
    replies: Streaming<RouteNote>,
}

fn note(i: i32, message: String) -> RouteNote {
    RouteNote {
        location: Some(Point {
            latitude: i + 1,
            longitude: 4242,
        }),
        message,
    }
}

impl Chat {
    async fn open(channel: Channel) -> Chat {
        let (tx, rx) = mpsc::channel(16);
        let mut guide = RouteGuideClient::new(channel);
        let replies = within("RouteChat", guide.route_chat(ReceiverStream::new(rx)))
            .await
            .expect("RouteChat")
            .into_inner();
        Chat { tx, replies }
    }

    /// Sends step `i` and checks its reply.
    async fn step(&mut self, i: i32) {
        send_step(&self.tx, i).await.expect("send notes");
        let reply = within("chat reply", self.replies.message())
            .await
            .unwrap_or_else(|s| panic!("step {i}: {s:?}"))
            .unwrap_or_else(|| panic!("step {i}: the stream ended"));
        assert_eq!(reply.message, format!("seed {i}"));
    }
}

async fn send_step(tx: &mpsc::Sender<RouteNote>, i: i32) -> Result<(), ()> {
    tx.send(note(i, format!("seed {i}")))
        .await
        .map_err(|_| ())?;
    tx.send(note(i, format!("ask {i}"))).await.map_err(|_| ())
}

/// Keeps sending chat steps from `first` on, every 50 ms, until the call is gone.
fn keep_chatting(tx: mpsc::Sender<RouteNote>, first: i32) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut i = first;
        while send_step(&tx, i).await.is_ok() {
            i += 1;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
}

/// Reads replies until the call ends; returns how many arrived and how it ended.
async fn read_until_end(replies: &mut Streaming<RouteNote>) -> (usize, Result<(), Status>) {
    let mut n = 0;
    loop {
        match within("chat reply or end", replies.message()).await {
            Ok(Some(_)) => n += 1,
            Ok(None) => return (n, Ok(())),
            Err(status) => return (n, Err(status)),
        }
    }
}

fn assert_drain_status(status: &Status) {
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        status.message().contains(DRAIN_MESSAGE),
        "not the drain's own status (from trailers): {status:?}"
    );
}

// === SIGTERM on the binary ===

#[tokio::test]
async fn sigterm_lets_a_stream_that_ends_within_the_drain_complete() {
    let mut bin = Running::start(&["--drain-timeout", "5s"]).await;
    let mut chat = Chat::open(bin.channel().await).await;
    for i in 0..3 {
        chat.step(i).await;
    }

    bin.signal("TERM");
    bin.wait_for_line("\"draining\"").await;
    // The stream goes on during the drain, both ways.
    for i in 3..10 {
        tokio::time::sleep(Duration::from_millis(30)).await;
        chat.step(i).await;
    }
    drop(chat.tx);
    let end = within("end of the chat", chat.replies.message()).await;
    assert!(matches!(end, Ok(None)), "the stream ended with {end:?}");

    let status = bin.exited().await;
    assert!(status.success(), "{status:?}");
    let summary = bin.drain_summary();
    assert!(
        summary["reason"].as_str().unwrap().contains("SIGTERM"),
        "{summary}"
    );
    assert_eq!(summary["rpcs_in_flight_at_start"], 1, "{summary}");
    assert_eq!(summary["rpcs_ended_unavailable"], 0, "{summary}");
}

#[tokio::test]
async fn sigterm_ends_a_stream_longer_than_the_drain_with_unavailable() {
    let mut bin = Running::start(&["--drain-timeout", "1s"]).await;
    let mut chat = Chat::open(bin.channel().await).await;
    for i in 0..3 {
        chat.step(i).await;
    }
    let sender = keep_chatting(chat.tx.clone(), 3);

    let signalled = Instant::now();
    bin.signal("TERM");
    let (more, end) = read_until_end(&mut chat.replies).await;
    let ended_after = signalled.elapsed();
    let status = end.expect_err("the stream must be ended by the drain");
    assert_drain_status(&status);
    assert!(
        more > 0,
        "replies stopped at the signal, not at the drain timeout"
    );
    assert!(
        ended_after >= Duration::from_millis(900),
        "ended {ended_after:?} after the signal, before the 1 s drain timeout"
    );

    let exit = bin.exited().await;
    let exited_after = signalled.elapsed();
    sender.abort();
    assert!(exit.success(), "{exit:?}");
    println!("stream ended {ended_after:?}, process exited {exited_after:?} after SIGTERM");
    assert!(
        exited_after < Duration::from_millis(2500),
        "exit took {exited_after:?} (drain timeout 1 s)"
    );
    let summary = bin.drain_summary();
    assert_eq!(summary["rpcs_in_flight_at_start"], 1, "{summary}");
    assert_eq!(summary["rpcs_ended_unavailable"], 1, "{summary}");
}

#[tokio::test]
async fn a_second_sigterm_ends_the_drain_at_once() {
    let mut bin = Running::start(&["--drain-timeout", "30s"]).await;
    let mut chat = Chat::open(bin.channel().await).await;
    chat.step(0).await;
    let sender = keep_chatting(chat.tx.clone(), 1);

    bin.signal("TERM");
    bin.wait_for_line("\"draining\"").await;
    // Still streaming during the drain.
    for _ in 0..2 {
        let reply = within("reply during the drain", chat.replies.message()).await;
        assert!(matches!(reply, Ok(Some(_))), "{reply:?}");
    }

    let second = Instant::now();
    bin.signal("TERM");
    let (_, end) = read_until_end(&mut chat.replies).await;
    let ended_after = second.elapsed();
    assert_drain_status(&end.expect_err("the second signal must end the stream"));
    let exit = bin.exited().await;
    let exited_after = second.elapsed();
    sender.abort();
    assert!(exit.success(), "{exit:?}");
    println!("after the second SIGTERM: stream ended in {ended_after:?}, exit in {exited_after:?}");
    assert!(ended_after < Duration::from_secs(3), "{ended_after:?}");
    assert!(exited_after < Duration::from_secs(3), "{exited_after:?}");
    let summary = bin.drain_summary();
    assert!(
        summary["reason"].as_str().unwrap().contains("SIGTERM"),
        "{summary}"
    );
    assert_eq!(summary["rpcs_ended_unavailable"], 1, "{summary}");
}

/// With no connection open the drain is over the instant the accept loop sees Draining, on
/// another thread than the signal handler: the summary must still say why it drained.
#[tokio::test]
async fn sigterm_on_an_idle_binary_exits_at_once_and_says_why() {
    for _ in 0..10 {
        let mut bin = Running::start(&[]).await;
        let signalled = Instant::now();
        bin.signal("TERM");
        let exit = bin.exited().await;
        assert!(exit.success(), "{exit:?}");
        let summary = bin.drain_summary();
        assert_eq!(summary["reason"], "SIGTERM received", "{summary}");
        assert_eq!(summary["connections_at_start"], 0, "{summary}");
        let elapsed = signalled.elapsed();
        assert!(elapsed < Duration::from_secs(2), "exit took {elapsed:?}");
    }
}

// === in-process drains ===

#[tokio::test]
async fn new_connections_are_refused_once_the_drain_starts() {
    let (server, guide) = slow_server(Config::for_tests()).await;
    let (addr, lifecycle) = (server.addr, server.lifecycle.clone());
    let mut client = RouteGuideClient::new(server.channel().await);
    // 20 features 100 ms apart: the drain lasts about 2 s.
    let mut stream = client
        .list_features(slow(20, 100))
        .await
        .unwrap()
        .into_inner();
    let first = within("first feature", stream.message()).await.unwrap();
    assert_eq!(first.unwrap().name, "feature 0");

    let stop = tokio::spawn(server.stop());
    within("draining", lifecycle.reached(Phase::Draining)).await;
    // The accept loop closes the listener right after it sees Draining; poll for the refusal,
    // with a deadline well inside the stream's remaining 1.9 s.
    let mut attempts = 0;
    tokio::time::timeout(Duration::from_secs(1), async {
        loop {
            attempts += 1;
            match tokio::net::TcpStream::connect(addr).await {
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => break,
                Err(e) => panic!("unexpected connect error: {e}"),
                Ok(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("still accepting connections 1 s into the drain"));
    assert!(
        guide.ended_at().is_none(),
        "the stream ended before the listener closed"
    );
    println!("connection refused after {attempts} attempt(s)");

    // The stream that was open goes on to its end.
    let mut names = vec!["feature 0".to_string()];
    while let Some(feature) = within("next feature", stream.message()).await.unwrap() {
        names.push(feature.name);
    }
    assert_eq!(names.len(), 20, "{names:?}");
    let summary = within("drain", stop).await.unwrap();
    assert_eq!(summary.rpcs_in_flight_at_start, 1, "{summary:?}");
    assert_eq!(summary.rpcs_ended_unavailable, 0, "{summary:?}");
}

fn ask(service: &str) -> HealthCheckRequest {
    HealthCheckRequest {
        service: service.to_string(),
    }
}

#[tokio::test]
async fn watch_sees_not_serving_then_ends_without_holding_the_drain() {
    let server = TestServer::serving().await;
    let mut health = HealthClient::new(server.channel().await);
    let mut watch = health.watch(ask("")).await.unwrap().into_inner();
    let first = within("first watch message", watch.message()).await;
    assert_eq!(first.unwrap().unwrap().status(), ServingStatus::Serving);

    let stop = tokio::spawn(server.stop());
    let next = within("watch update", watch.message()).await;
    assert_eq!(next.unwrap().unwrap().status(), ServingStatus::NotServing);
    let end = within("watch end", watch.message()).await;
    assert!(matches!(end, Ok(None)), "the watch ended with {end:?}");

    let summary = within("drain", stop).await.unwrap();
    println!("drain with a Watch open: {:?}", summary.duration);
    assert!(summary.duration < Duration::from_secs(1), "{summary:?}");
    assert_eq!(summary.rpcs_ended_unavailable, 0, "{summary:?}");
}

#[tokio::test]
async fn a_drain_with_nothing_in_flight_is_fast() {
    let server = TestServer::serving().await;
    let channel = server.channel().await;
    let mut greeter = GreeterClient::new(channel.clone());
    greeter
        .say_hello(HelloRequest { name: "x".into() })
        .await
        .unwrap();

    let summary = server.stop().await;
    println!("idle drain: {:?}", summary.duration);
    assert_eq!(summary.connections_at_start, 1, "{summary:?}");
    assert_eq!(summary.rpcs_in_flight_at_start, 0, "{summary:?}");
    // The issue says "well under 100 ms"; the bound is generous for a loaded 2-core machine.
    assert!(summary.duration < Duration::from_millis(500), "{summary:?}");
    drop(channel);
}

#[tokio::test]
async fn pre_stop_answers_once_the_stream_in_flight_has_finished() {
    let (server, guide) = slow_server(Config::for_tests()).await;
    let channel = server.channel().await;
    let mut health = HealthClient::new(channel.clone());
    let mut watch = health.watch(ask("")).await.unwrap().into_inner();
    let first = within("first watch message", watch.message()).await;
    assert_eq!(first.unwrap().unwrap().status(), ServingStatus::Serving);

    // 6 features 100 ms apart: about 500 ms left after the first.
    let mut client = RouteGuideClient::new(channel);
    let mut stream = client
        .list_features(slow(6, 100))
        .await
        .unwrap()
        .into_inner();
    let first = within("first feature", stream.message()).await.unwrap();
    assert!(first.is_some());

    let addr = server.addr;
    let pre_stop = tokio::spawn(async move {
        let answer = http(addr, "GET", "/pre-stop").await;
        (answer, Instant::now())
    });

    // The drain begins at once: NOT_SERVING while the stream is still running.
    within("draining", server.lifecycle.reached(Phase::Draining)).await;
    let update = within("watch update", watch.message()).await;
    assert_eq!(update.unwrap().unwrap().status(), ServingStatus::NotServing);
    assert_eq!(server.lifecycle.phase(), Phase::Draining);
    assert!(
        guide.ended_at().is_none(),
        "the stream ended before readiness turned"
    );
    assert!(!pre_stop.is_finished(), "/pre-stop answered mid-stream");

    let mut n = 1;
    while within("next feature", stream.message())
        .await
        .unwrap()
        .is_some()
    {
        n += 1;
    }
    assert_eq!(n, 6);

    let ((code, body), answered_at) = within("/pre-stop", pre_stop).await.unwrap();
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("drained"), "{body}");
    let ended_at = guide.ended_at().expect("the stream ended");
    assert!(
        answered_at > ended_at,
        "/pre-stop answered {:?} before the stream ended",
        ended_at - answered_at
    );

    let summary = server.finished().await;
    assert!(summary.reason.contains("PreStop"), "{summary:?}");
    assert_eq!(summary.rpcs_ended_unavailable, 0, "{summary:?}");
}

#[tokio::test]
async fn pre_freeze_answers_and_the_server_keeps_serving() {
    let server = TestServer::serving().await;
    let mut greeter = GreeterClient::new(server.channel().await);
    let (code, body) = http(server.addr, "GET", "/pre-freeze").await;
    assert_eq!(code, 200, "{body}");

    assert_eq!(server.lifecycle.phase(), Phase::Serving);
    let reply = greeter
        .say_hello(HelloRequest { name: "x".into() })
        .await
        .unwrap();
    assert_eq!(reply.into_inner().message, "Hello x");
    assert_eq!(http(server.addr, "GET", "/readyz").await.0, 200);
    let summary = server.stop().await;
    assert!(summary.reason.contains("shutdown"), "{summary:?}");
}

// === a drain under load ===

/// h2load's summary: `requests: N total, N started, N done, N succeeded, N failed, N errored,
/// N timeout` and `status codes: N 2xx, N 3xx, N 4xx, N 5xx`.
#[derive(Debug, Default)]
struct H2loadCounts {
    total: u64,
    started: u64,
    done: u64,
    succeeded: u64,
    timeout: u64,
    not_2xx: u64,
}

fn parse_h2load(out: &str) -> H2loadCounts {
    let numbers = |prefix: &str| -> Vec<(String, u64)> {
        let line = out
            .lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix:?} line in h2load's output:\n{out}"));
        line[prefix.len()..]
            .split(',')
            .filter_map(|part| {
                let (n, what) = part.trim().split_once(' ')?;
                Some((what.to_string(), n.parse().ok()?))
            })
            .collect()
    };
    let mut counts = H2loadCounts::default();
    for (what, n) in numbers("requests:") {
        match what.as_str() {
            "total" => counts.total = n,
            "started" => counts.started = n,
            "done" => counts.done = n,
            "succeeded" => counts.succeeded = n,
            "timeout" => counts.timeout = n,
            _ => {}
        }
    }
    for (what, n) in numbers("status codes:") {
        if what != "2xx" {
            counts.not_2xx += n;
        }
    }
    counts
}

/// The tonic side of the load: OKs, and every error by code and message.
#[derive(Debug, Default)]
struct TonicTally {
    ok: AtomicUsize,
    errors: Mutex<Vec<Status>>,
}

/// A request that hyper's client had queued on a connection that closed (after the server's
/// GOAWAY) before the request was written: hyper fails it as canceled, "connection closed", and
/// tonic reports that as CANCELLED. The request never reached the server (the count check in the
/// test proves it), so it is as safe to retry as a refused stream.
fn never_sent(status: &Status) -> bool {
    let mut source = std::error::Error::source(status);
    while let Some(e) = source {
        if let Some(e) = e.downcast_ref::<hyper::Error>() {
            return status.code() == Code::Cancelled && e.is_canceled();
        }
        source = e.source();
    }
    false
}

/// Calls SayHello in a loop on `channel` until `stop` is set.
fn hammer(
    channel: Channel,
    tally: Arc<TonicTally>,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut greeter = GreeterClient::new(channel);
        while !stop.load(Ordering::Relaxed) {
            match greeter.say_hello(HelloRequest { name: "x".into() }).await {
                Ok(_) => {
                    tally.ok.fetch_add(1, Ordering::Relaxed);
                }
                Err(status) => {
                    tally.errors.lock().unwrap().push(status);
                    // Once the listener has closed every call fails at connect: do not spin.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    })
}

/// SIGTERM while h2load and four tonic clients call SayHello: the binary exits 0, no RPC that
/// reached the server is lost, and the clients see only statuses that say "retry elsewhere".
#[tokio::test]
async fn a_drain_under_load_loses_no_rpc() {
    // CI installs it (`apt-get install -y nghttp2-client`); a missing tool is a failure, not a
    // skip, so the test cannot pass by not running.
    let h2load = std::process::Command::new("h2load")
        .arg("--version")
        .output();
    assert!(
        h2load.is_ok_and(|o| o.status.success()),
        "h2load is needed: apt-get install -y nghttp2-client"
    );
    // SayHello(HelloRequest { name: "x" }) as one gRPC message: uncompressed, 3 bytes.
    let body = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("drain-say-hello.grpc");
    std::fs::write(&body, [0, 0, 0, 0, 3, 0x0a, 0x01, b'x']).unwrap();

    let mut bin = Running::start(&["--concurrency", "1000", "--drain-timeout", "5s"]).await;
    let url = format!("http://127.0.0.1:{}/helloworld.Greeter/SayHello", bin.port);
    let load = tokio::process::Command::new("h2load")
        .args(["-n", "10000", "-c", "4", "-m", "8", "-d"])
        .arg(&body)
        .args(["-H", "content-type: application/grpc", "-H", "te: trailers"])
        .arg(&url)
        .kill_on_drop(true)
        .output();
    let load = tokio::spawn(load);
    let tally = Arc::new(TonicTally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let channel = bin.channel().await;
    let clients: Vec<_> = (0..4)
        .map(|_| hammer(channel.clone(), tally.clone(), stop.clone()))
        .collect();

    // Let the load run for a while, then stop the server in the middle of it.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let signalled = Instant::now();
    bin.signal("TERM");
    let exit = bin.exited().await;
    println!("exited {:?} after SIGTERM", signalled.elapsed());
    stop.store(true, Ordering::Relaxed);
    let out = within("h2load", load).await.unwrap().expect("run h2load");
    for client in clients {
        within("tonic client", client).await.unwrap();
    }
    assert!(exit.success(), "{exit:?}");

    let out = String::from_utf8_lossy(&out.stdout).to_string();
    let h2 = parse_h2load(&out);
    let ok = tally.ok.load(Ordering::Relaxed);
    let errors = tally.errors.lock().unwrap();
    let mut by_code = std::collections::BTreeMap::<String, usize>::new();
    for status in errors.iter() {
        *by_code
            .entry(format!("{:?}: {}", status.code(), status.message()))
            .or_default() += 1;
    }
    println!("h2load: {h2:?}\ntonic: {ok} OK, errors: {by_code:#?}");

    // h2load: stopped mid-run by the drain, every stream it started was closed, none with a
    // non-2xx status, none timed out. Started streams that did not succeed are the requests it
    // had queued but not yet sent when the GOAWAY came, which nghttp2 refuses itself: at most
    // one window of 4 connections x 8 streams.
    assert!(h2.succeeded > 0, "{out}");
    assert!(
        h2.started < h2.total,
        "the signal came after h2load had finished:\n{out}"
    );
    assert_eq!(h2.started, h2.done, "{out}");
    assert_eq!(h2.not_2xx, 0, "{out}");
    assert_eq!(h2.timeout, 0, "{out}");
    assert!(h2.started - h2.succeeded <= 32, "{out}");

    // tonic: OKs before the drain, then only UNAVAILABLE (a refused stream or connection),
    // RESOURCE_EXHAUSTED, or a request hyper never sent (see `never_sent`).
    assert!(ok > 0);
    let unexpected: Vec<_> = errors
        .iter()
        .filter(|s| {
            !matches!(s.code(), Code::Unavailable | Code::ResourceExhausted) && !never_sent(s)
        })
        .collect();
    assert!(
        unexpected.is_empty(),
        "unexpected statuses: {unexpected:#?}"
    );
    let exhausted = errors
        .iter()
        .filter(|s| s.code() == Code::ResourceExhausted)
        .count();

    // The server: nothing cut off, and every RPC it started was answered to a client that got
    // it — the RPCs refused on the way (GOAWAY, closed listener) never reached it.
    let summary = bin.drain_summary();
    assert_eq!(summary["rpcs_ended_unavailable"], 0, "{summary}");
    assert_eq!(summary["connections_abandoned"], 0, "{summary}");
    let served = summary["unary_rpcs"].as_u64().unwrap();
    assert_eq!(
        served,
        h2.succeeded + (ok + exhausted) as u64,
        "RPCs the server started vs. answers the clients received: {summary}"
    );
    // Every RPC the server logged ended OK (h2load cannot read grpc-status; the log can).
    let not_ok: Vec<_> = bin
        .seen
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["message"] == "rpc finished" && v["code"] != 0)
        .collect();
    assert!(not_ok.is_empty(), "RPCs that did not end OK: {not_ok:#?}");
}
