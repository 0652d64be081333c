//! Limits and exit triggers over real TCP: deadlines for every RPC kind, admission at the
//! instance concurrency, connection hygiene (idle, handshake, age, count), message sizes, panics,
//! the billing meter, and the binary's drain triggers (`--exit-on-goaway`, `--idle-exit-after`).
//!
//! The services here misbehave on request: a call's metadata says how long the handler stalls,
//! how often its stream yields, when it panics. Where a tonic client would hide what the server
//! did (its SETTINGS, a GOAWAY, a closed socket), the test speaks HTTP/2 frames itself.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bootstrap::proto::helloworld::greeter_client::GreeterClient;
use bootstrap::proto::helloworld::greeter_server::{Greeter, GreeterServer};
use bootstrap::proto::helloworld::{HelloReply, HelloRequest};
use bootstrap::proto::routeguide::route_guide_client::RouteGuideClient;
use bootstrap::proto::routeguide::route_guide_server::{RouteGuide, RouteGuideServer};
use bootstrap::proto::routeguide::{Feature, Point, Rectangle, RouteNote, RouteSummary};
use bootstrap::{Bootstrap, Config, Phase};
use futures_util::stream::{self, BoxStream, Stream, StreamExt};
use support::{Binary, TestServer, free_port, http, within};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tonic::metadata::MetadataMap;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Response, Status, Streaming};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

const MS: Duration = Duration::from_millis(1);

// === Misbehaving services ===

/// A numeric knob from the call's metadata.
fn knob(metadata: &MetadataMap, key: &str) -> Option<u64> {
    metadata.get(key)?.to_str().ok()?.parse().ok()
}

/// Stalls for the call's `delay-ms`, if it has one: a handler that takes that long to answer.
async fn stall(metadata: &MetadataMap) {
    if let Some(ms) = knob(metadata, "delay-ms") {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
}

/// Where held calls wait: each reports its arrival, then waits until the gate opens.
#[derive(Clone)]
struct Gate {
    arrived: mpsc::UnboundedSender<()>,
    open: watch::Receiver<bool>,
}

/// Answers `Hello <name>`, except that the name `panic` panics, the name `reply-bytes:N` is
/// answered with N bytes, metadata `delay-ms: N` stalls first and metadata `hold` waits at the
/// gate.
#[derive(Clone, Default)]
struct TestGreeter {
    gate: Option<Gate>,
}

#[tonic::async_trait]
impl Greeter for TestGreeter {
    async fn say_hello(
        &self,
        request: Request<HelloRequest>,
    ) -> Result<Response<HelloReply>, Status> {
        stall(request.metadata()).await;
        if request.metadata().contains_key("hold") {
            let gate = self
                .gate
                .clone()
                .expect("held calls need a server with a gate");
            let _ = gate.arrived.send(());
            let mut open = gate.open;
            let _ = open.wait_for(|open| *open).await;
        }
        let name = request.into_inner().name;
        if name == "panic" {
            panic!("the test greeter panics when asked to");
        }
        let message = match name.strip_prefix("reply-bytes:") {
            Some(n) => "x".repeat(n.parse().expect("reply-bytes:<number>")),
            None => format!("Hello {name}"),
        };
        Ok(Response::new(HelloReply { message }))
    }
}

type Replies<T> = BoxStream<'static, Result<T, Status>>;

/// Every method stalls for `delay-ms` first. Then `GetFeature` answers; `ListFeatures` yields a
/// feature every `interval-ms` (default 50), `count` of them (default: forever), and panics
/// instead of yielding feature number `panic-at` (1-based); `RecordRoute` counts points until the
/// client ends its stream; `RouteChat` echoes every note as it arrives.
#[derive(Clone, Default)]
struct TestGuide;

#[tonic::async_trait]
impl RouteGuide for TestGuide {
    async fn get_feature(&self, request: Request<Point>) -> Result<Response<Feature>, Status> {
        stall(request.metadata()).await;
        Ok(Response::new(Feature {
            name: "here".into(),
            location: Some(request.into_inner()),
        }))
    }

    type ListFeaturesStream = Replies<Feature>;

    async fn list_features(
        &self,
        request: Request<Rectangle>,
    ) -> Result<Response<Self::ListFeaturesStream>, Status> {
        stall(request.metadata()).await;
        let interval = Duration::from_millis(knob(request.metadata(), "interval-ms").unwrap_or(50));
        let count = knob(request.metadata(), "count").unwrap_or(u64::MAX);
        let panic_at = knob(request.metadata(), "panic-at");
        // Produced inline (polled by the response body), so a panic surfaces in the body's poll.
        let features = stream::unfold(0u64, move |n| async move {
            if n == count {
                return None;
            }
            if n > 0 {
                tokio::time::sleep(interval).await;
            }
            if panic_at == Some(n + 1) {
                panic!("the test route guide panics producing feature {}", n + 1);
            }
            let feature = Feature {
                name: format!("feature {n}"),
                location: None,
            };
            Some((Ok(feature), n + 1))
        });
        Ok(Response::new(features.boxed()))
    }

    async fn record_route(
        &self,
        request: Request<Streaming<Point>>,
    ) -> Result<Response<RouteSummary>, Status> {
        stall(request.metadata()).await;
        let mut points = request.into_inner();
        let mut point_count = 0;
        while points.message().await?.is_some() {
            point_count += 1;
        }
        Ok(Response::new(RouteSummary {
            point_count,
            ..RouteSummary::default()
        }))
    }

    type RouteChatStream = Replies<RouteNote>;

    async fn route_chat(
        &self,
        request: Request<Streaming<RouteNote>>,
    ) -> Result<Response<Self::RouteChatStream>, Status> {
        stall(request.metadata()).await;
        Ok(Response::new(request.into_inner().boxed()))
    }
}

/// Serves the test services with `config` and waits until they are SERVING.
async fn serve(config: Config, gate: Option<Gate>) -> TestServer {
    let bootstrap = Bootstrap::new(config)
        .add_service(GreeterServer::new(TestGreeter { gate }))
        .add_service(RouteGuideServer::new(TestGuide));
    let server = TestServer::start(bootstrap).await;
    within("serving", server.lifecycle.reached(Phase::Serving)).await;
    server
}

// === Client helpers ===

/// Runs `fut`, failing the test if it takes longer than `limit`.
async fn by<F: Future>(limit: Duration, what: &str, fut: F) -> F::Output {
    tokio::time::timeout(limit, fut)
        .await
        .unwrap_or_else(|_| panic!("not within {limit:?}: {what}"))
}

/// A request carrying `metadata`.
fn with_meta<T>(message: T, metadata: &[(&'static str, &str)]) -> Request<T> {
    let mut request = Request::new(message);
    for (key, value) in metadata {
        request
            .metadata_mut()
            .insert(*key, value.parse().expect("ASCII metadata"));
    }
    request
}

fn hello_request(name: &str) -> HelloRequest {
    HelloRequest { name: name.into() }
}

/// A normal call; the reply must be OK.
async fn hello(channel: &Channel) -> String {
    within(
        "SayHello",
        GreeterClient::new(channel.clone()).say_hello(hello_request("world")),
    )
    .await
    .expect("a normal call is answered OK")
    .into_inner()
    .message
}

/// A stream of `make(0)`, `make(1)`, ... one every `every`, that never ends.
fn slow<T: Send + 'static>(
    every: Duration,
    make: impl Fn(i32) -> T + Send + 'static,
) -> impl Stream<Item = T> + Send + 'static {
    stream::unfold(0, move |n| {
        let item = make(n);
        async move {
            if n > 0 {
                tokio::time::sleep(every).await;
            }
            Some((item, n + 1))
        }
    })
}

fn note(n: i32) -> RouteNote {
    RouteNote {
        location: Some(Point {
            latitude: n,
            longitude: n,
        }),
        message: format!("note {n}"),
    }
}

/// Runs a streaming call that must end with an error: returns the messages received before it,
/// the status, and the time from the call to the status.
async fn stream_outcome<T>(
    call: impl Future<Output = Result<Response<Streaming<T>>, Status>>,
) -> (Vec<T>, Status, Duration) {
    let started = Instant::now();
    within("the end of a streaming call", async {
        let mut stream = match call.await {
            Ok(response) => response.into_inner(),
            Err(status) => return (Vec::new(), status, started.elapsed()),
        };
        let mut received = Vec::new();
        loop {
            match stream.message().await {
                Ok(Some(message)) => received.push(message),
                Ok(None) => panic!("the stream ended OK after {} messages", received.len()),
                Err(status) => return (received, status, started.elapsed()),
            }
        }
    })
    .await
}

/// Asserts that `status` has `code` and is one the server sent (`grpc-status` in headers or
/// trailers), not a reset stream or a broken connection that tonic turned into a status: those
/// carry their transport error as the source.
fn assert_status(status: &Status, code: Code) {
    assert_eq!(status.code(), code, "{status:?}");
    assert!(
        std::error::Error::source(status).is_none(),
        "a transport failure, not a status sent by the server: {status:?}"
    );
}

/// Config for the deadline tests: a 1 s function timeout and a 100 ms margin, so every RPC ends
/// after 900 ms.
fn deadline_config() -> Config {
    let mut config = Config::for_tests();
    config.timeout = Duration::from_secs(1);
    config.timeout_margin = 100 * MS;
    config
}

/// Asserts DEADLINE_EXCEEDED from the server at about 900 ms.
fn assert_deadline(status: &Status, elapsed: Duration) {
    assert_status(status, Code::DeadlineExceeded);
    assert!(
        elapsed >= 800 * MS && elapsed < Duration::from_secs(3),
        "DEADLINE_EXCEEDED after {elapsed:?}, expected about 900 ms"
    );
}

// === Raw HTTP/2 ===

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// An empty SETTINGS frame: length 0, type 4, no flags, stream 0.
const EMPTY_SETTINGS: [u8; 9] = [0, 0, 0, 4, 0, 0, 0, 0, 0];

// Frame types and flags (RFC 9113 section 6).
const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const END_STREAM: u8 = 0x1;
const ACK: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const SETTINGS_MAX_CONCURRENT_STREAMS: u16 = 0x3;

#[derive(Debug)]
struct Frame {
    kind: u8,
    flags: u8,
    stream: u32,
    payload: Vec<u8>,
}

/// Whether a read or write error means the peer closed (or reset) the connection.
fn closed_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        UnexpectedEof | ConnectionReset | ConnectionAborted | BrokenPipe
    )
}

/// A hand-driven HTTP/2 client connection.
struct RawH2 {
    tcp: TcpStream,
}

impl RawH2 {
    /// Connects and sends the preface and an empty SETTINGS frame.
    async fn connect(addr: SocketAddr) -> RawH2 {
        let mut tcp = TcpStream::connect(addr).await.expect("connect");
        tcp.write_all(&[PREFACE, &EMPTY_SETTINGS].concat())
            .await
            .expect("write the preface");
        RawH2 { tcp }
    }

    /// Connects and completes the handshake: reads the server's SETTINGS (which must be its
    /// first frame) and acknowledges them. Returns the connection and the SETTINGS entries.
    async fn handshake(addr: SocketAddr) -> (RawH2, Vec<(u16, u32)>) {
        let mut h2 = RawH2::connect(addr).await;
        let first = within("the server's SETTINGS", h2.next())
            .await
            .expect("the server closed the connection instead of sending SETTINGS");
        assert_eq!(
            (first.kind, first.flags & ACK),
            (SETTINGS, 0),
            "the server's first frame must be its SETTINGS: {first:?}"
        );
        h2.send(SETTINGS, ACK, 0, &[])
            .await
            .expect("acknowledge SETTINGS");
        let entries = first
            .payload
            .chunks_exact(6)
            .map(|e| {
                (
                    u16::from_be_bytes([e[0], e[1]]),
                    u32::from_be_bytes([e[2], e[3], e[4], e[5]]),
                )
            })
            .collect();
        (h2, entries)
    }

    async fn send(
        &mut self,
        kind: u8,
        flags: u8,
        stream: u32,
        payload: &[u8],
    ) -> std::io::Result<()> {
        let len = u32::try_from(payload.len())
            .expect("small frame")
            .to_be_bytes();
        let mut frame = vec![len[1], len[2], len[3], kind, flags];
        frame.extend_from_slice(&stream.to_be_bytes());
        frame.extend_from_slice(payload);
        self.tcp.write_all(&frame).await
    }

    /// The next frame, or `None` once the server has closed (or reset) the connection.
    async fn next(&mut self) -> Option<Frame> {
        let mut head = [0u8; 9];
        match self.tcp.read_exact(&mut head).await {
            Ok(_) => {}
            Err(e) if closed_error(&e) => return None,
            Err(e) => panic!("reading a frame: {e}"),
        }
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let mut payload = vec![0; len];
        match self.tcp.read_exact(&mut payload).await {
            Ok(_) => {}
            Err(e) if closed_error(&e) => return None,
            Err(e) => panic!("reading a frame: {e}"),
        }
        Some(Frame {
            kind: head[3],
            flags: head[4],
            stream: u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff,
            payload,
        })
    }

    /// Reads frames until the server closes the connection, answering its PINGs as a client
    /// must (a graceful GOAWAY waits for that answer). Returns every frame with its arrival.
    async fn until_closed(&mut self) -> Vec<(Instant, Frame)> {
        let mut seen = Vec::new();
        while let Some(frame) = self.next().await {
            if frame.kind == PING && frame.flags & ACK == 0 {
                // The server may close first; then there is nobody to answer.
                let _ = self.send(PING, ACK, 0, &frame.payload).await;
            }
            seen.push((Instant::now(), frame));
        }
        seen
    }

    /// Reads frames, answering PINGs, up to and including the first that `wanted`; fails if
    /// the server closes the connection first.
    async fn until(&mut self, wanted: impl Fn(&Frame) -> bool) -> Vec<(Instant, Frame)> {
        let mut seen = Vec::new();
        loop {
            let frame = self.next().await.unwrap_or_else(|| {
                let kinds: Vec<_> = seen
                    .iter()
                    .map(|(_, f): &(Instant, Frame)| f.kind)
                    .collect();
                panic!("the server closed the connection; frame types seen: {kinds:?}")
            });
            if frame.kind == PING && frame.flags & ACK == 0 {
                self.send(PING, ACK, 0, &frame.payload)
                    .await
                    .expect("answer PING");
            }
            let done = wanted(&frame);
            seen.push((Instant::now(), frame));
            if done {
                return seen;
            }
        }
    }

    /// Sends a unary or server-streaming gRPC request on `stream`: HEADERS, then one DATA frame
    /// carrying `message` and END_STREAM.
    async fn grpc_call(
        &mut self,
        stream: u32,
        path: &str,
        metadata: &[(&str, &str)],
        message: &impl prost::Message,
    ) {
        let mut headers = vec![
            (":method", "POST"),
            (":scheme", "http"),
            (":path", path),
            (":authority", "localhost"),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
        ];
        headers.extend_from_slice(metadata);
        self.send(HEADERS, END_HEADERS, stream, &hpack(&headers))
            .await
            .expect("send HEADERS");
        let body = message.encode_to_vec();
        let mut data = vec![0u8];
        data.extend_from_slice(&u32::try_from(body.len()).expect("small").to_be_bytes());
        data.extend_from_slice(&body);
        self.send(DATA, END_STREAM, stream, &data)
            .await
            .expect("send DATA");
    }
}

/// Header fields as HPACK literals without indexing and without Huffman coding (RFC 7541
/// section 6.2.2), which every decoder accepts.
fn hpack(headers: &[(&str, &str)]) -> Vec<u8> {
    let mut block = Vec::new();
    for (name, value) in headers {
        block.push(0x00);
        for s in [name, value] {
            // A length below 127 fits the 7-bit prefix.
            block.push(
                u8::try_from(s.len())
                    .ok()
                    .filter(|n| *n < 127)
                    .expect("short"),
            );
            block.extend_from_slice(s.as_bytes());
        }
    }
    block
}

/// Connects, writes `sent`, and waits (5 s at most) for the server to close the connection.
/// Returns how long after the connect that was, and whatever the server sent before closing.
async fn closed_after(addr: SocketAddr, sent: &[u8]) -> (Duration, Vec<u8>) {
    let started = Instant::now();
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    tcp.write_all(sent).await.expect("write");
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    by(5000 * MS, "the server closes the connection", async {
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) => break,
                Ok(n) => received.extend_from_slice(&buf[..n]),
                Err(e) if closed_error(&e) => break,
                Err(e) => panic!("read: {e}"),
            }
        }
    })
    .await;
    (started.elapsed(), received)
}

/// The arrival of the first frame that `matches`, or a failure listing every frame seen.
fn arrival(frames: &[(Instant, Frame)], what: &str, matches: impl Fn(&Frame) -> bool) -> Instant {
    frames
        .iter()
        .find(|(_, f)| matches(f))
        .map(|(at, _)| *at)
        .unwrap_or_else(|| {
            let kinds: Vec<_> = frames
                .iter()
                .map(|(_, f)| (f.kind, f.flags, f.stream))
                .collect();
            panic!("no {what} among the frames (type, flags, stream): {kinds:?}")
        })
}

fn is_trailers_of(stream: u32) -> impl Fn(&Frame) -> bool {
    move |f| f.kind == HEADERS && f.stream == stream && f.flags & END_STREAM != 0
}

// === 1. Deadlines ===

#[tokio::test]
async fn unary_past_the_deadline_ends_with_deadline_exceeded() {
    let server = serve(deadline_config(), None).await;
    let channel = server.channel().await;
    let mut guide = RouteGuideClient::new(channel.clone());
    let started = Instant::now();
    let status = within(
        "GetFeature",
        guide.get_feature(with_meta(Point::default(), &[("delay-ms", "5000")])),
    )
    .await
    .unwrap_err();
    assert_deadline(&status, started.elapsed());
    assert_eq!(hello(&channel).await, "Hello world");
    server.stop().await;
}

#[tokio::test]
async fn server_stream_past_the_deadline_ends_with_deadline_exceeded() {
    let server = serve(deadline_config(), None).await;
    let channel = server.channel().await;
    let list = |metadata: &'static [(&'static str, &'static str)]| {
        let mut guide = RouteGuideClient::new(channel.clone());
        async move {
            stream_outcome(guide.list_features(with_meta(Rectangle::default(), metadata))).await
        }
    };
    let (stalled, endless) = tokio::join!(
        // The handler stalls before its response: no message, DEADLINE_EXCEEDED.
        list(&[("delay-ms", "5000")]),
        // The stream runs on: its messages arrive, then DEADLINE_EXCEEDED in the trailers.
        list(&[("interval-ms", "100")]),
    );
    let (messages, status, elapsed) = stalled;
    assert!(messages.is_empty());
    assert_deadline(&status, elapsed);
    let (features, status, elapsed) = endless;
    assert!(
        features.len() >= 3,
        "{} features before the deadline",
        features.len()
    );
    assert_eq!(features[0].name, "feature 0");
    assert_deadline(&status, elapsed);
    assert_eq!(hello(&channel).await, "Hello world");
    server.stop().await;
}

#[tokio::test]
async fn client_stream_past_the_deadline_ends_with_deadline_exceeded() {
    let server = serve(deadline_config(), None).await;
    let channel = server.channel().await;
    let mut guide = RouteGuideClient::new(channel.clone());
    // The client sends a point every 100 ms and never ends its stream.
    let points = slow(100 * MS, |n| Point {
        latitude: n,
        longitude: n,
    });
    let started = Instant::now();
    let status = within("RecordRoute", guide.record_route(points))
        .await
        .unwrap_err();
    assert_deadline(&status, started.elapsed());
    assert_eq!(hello(&channel).await, "Hello world");
    server.stop().await;
}

#[tokio::test]
async fn bidi_stream_past_the_deadline_ends_with_deadline_exceeded() {
    let server = serve(deadline_config(), None).await;
    let channel = server.channel().await;
    let chat = |metadata: &'static [(&'static str, &'static str)]| {
        let mut guide = RouteGuideClient::new(channel.clone());
        async move {
            let notes = with_meta(slow(100 * MS, note), metadata);
            stream_outcome(guide.route_chat(notes)).await
        }
    };
    let (stalled, echoing) = tokio::join!(
        // The handler stalls before its response while the client sends: DEADLINE_EXCEEDED.
        chat(&[("delay-ms", "5000")]),
        // The handler echoes: the echoes arrive, then DEADLINE_EXCEEDED in the trailers.
        chat(&[]),
    );
    let (messages, status, elapsed) = stalled;
    assert!(messages.is_empty());
    assert_deadline(&status, elapsed);
    let (echoes, status, elapsed) = echoing;
    assert!(
        echoes.len() >= 3,
        "{} echoes before the deadline",
        echoes.len()
    );
    assert_eq!(echoes[0].message, "note 0");
    assert_deadline(&status, elapsed);
    assert_eq!(hello(&channel).await, "Hello world");
    server.stop().await;
}

#[tokio::test]
async fn client_deadline_shorter_than_the_function_timeout_wins() {
    // A function timeout far away, so anything near 300 ms is the client's deadline.
    let mut config = Config::for_tests();
    config.timeout = Duration::from_secs(10);
    let server = serve(config, None).await;
    let channel = server.channel().await;
    let mut guide = RouteGuideClient::new(channel.clone());
    let mut request = with_meta(Rectangle::default(), &[("interval-ms", "50")]);
    // tonic's client enforces this only until the response headers, which come at once; the end
    // of the stream is the server's doing.
    request.set_timeout(300 * MS);
    let (features, status, elapsed) = stream_outcome(guide.list_features(request)).await;
    assert!(!features.is_empty(), "no feature before the deadline");
    assert_status(&status, Code::DeadlineExceeded);
    assert!(
        elapsed >= 250 * MS && elapsed < Duration::from_secs(3),
        "DEADLINE_EXCEEDED after {elapsed:?}, expected about 300 ms"
    );
    assert_eq!(hello(&channel).await, "Hello world");
    server.stop().await;
}

// === 2. Admission ===

#[tokio::test]
async fn admission_refuses_beyond_the_concurrency_but_not_health() {
    let mut config = Config::for_tests();
    config.concurrency = 2;
    let (arrived_tx, mut arrived) = mpsc::unbounded_channel();
    let (open, open_rx) = watch::channel(false);
    let gate = Gate {
        arrived: arrived_tx,
        open: open_rx,
    };
    let server = serve(config, Some(gate)).await;

    // (a) Every connection advertises the limit.
    let (_h2, settings) = RawH2::handshake(server.addr).await;
    let advertised = settings
        .iter()
        .find(|(id, _)| *id == SETTINGS_MAX_CONCURRENT_STREAMS)
        .map(|(_, value)| *value);
    assert_eq!(advertised, Some(2), "SETTINGS: {settings:?}");

    // (b) Two held calls, each on its own connection, fill the instance...
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut greeter = GreeterClient::new(server.channel().await);
        held.push(tokio::spawn(async move {
            greeter
                .say_hello(with_meta(hello_request("held"), &[("hold", "1")]))
                .await
        }));
    }
    for _ in 0..2 {
        within("a held call reaches its handler", arrived.recv())
            .await
            .expect("the server dropped the gate");
    }
    // ...so a third, on a third connection, is refused at once.
    let third = server.channel().await;
    let started = Instant::now();
    let status = within(
        "the third call",
        GreeterClient::new(third.clone()).say_hello(hello_request("third")),
    )
    .await
    .unwrap_err();
    assert_status(&status, Code::ResourceExhausted);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "refused only after {:?}",
        started.elapsed()
    );
    assert!(held.iter().all(|call| !call.is_finished()));

    // (c) A full instance is busy, not unhealthy.
    let health = within(
        "health Check while full",
        HealthClient::new(third.clone()).check(HealthCheckRequest {
            service: String::new(),
        }),
    )
    .await
    .expect("health Check is admitted while full");
    assert_eq!(health.into_inner().status(), ServingStatus::Serving);

    // (d) Once the held calls finish, calls are admitted again.
    open.send_replace(true);
    for call in held {
        let reply = within("a held call", call).await.expect("task");
        assert_eq!(reply.expect("held call").into_inner().message, "Hello held");
    }
    assert_eq!(hello(&third).await, "Hello world");
    server.stop().await;
}

// === 3. Idle timeout ===

#[tokio::test]
async fn idle_connection_gets_goaway_then_close() {
    let mut config = Config::for_tests();
    config.idle_timeout = Some(300 * MS);
    let server = serve(config, None).await;
    let started = Instant::now();
    let (mut h2, _) = RawH2::handshake(server.addr).await;
    h2.grpc_call(
        1,
        "/helloworld.Greeter/SayHello",
        &[],
        &hello_request("idle"),
    )
    .await;
    let frames = by(
        5000 * MS,
        "the server closes the idle connection",
        h2.until_closed(),
    )
    .await;
    let answered = arrival(&frames, "trailers of the call", is_trailers_of(1));
    let goaway = arrival(&frames, "GOAWAY", |f| f.kind == GOAWAY);
    assert!(
        goaway > answered,
        "GOAWAY came before the call was answered"
    );
    assert!(
        goaway - started >= 300 * MS,
        "GOAWAY {:?} after the connection opened",
        goaway - started
    );
    let (_, first) = frames
        .iter()
        .find(|(_, f)| f.kind == GOAWAY)
        .expect("GOAWAY");
    assert_eq!(
        first.payload[4..8],
        [0, 0, 0, 0],
        "GOAWAY's error code: NO_ERROR"
    );
    server.stop().await;
}

#[tokio::test]
async fn open_stream_keeps_its_connection_past_the_idle_timeout() {
    let mut config = Config::for_tests();
    config.idle_timeout = Some(300 * MS);
    let server = serve(config, None).await;
    let ten_features = [("interval-ms", "100"), ("count", "10")];

    // A tonic client's 1 s stream runs to its end, OK.
    let tonic_client = async {
        let mut guide = RouteGuideClient::new(server.channel().await);
        let started = Instant::now();
        let request = with_meta(Rectangle::default(), &ten_features);
        let mut stream = guide
            .list_features(request)
            .await
            .expect("ListFeatures")
            .into_inner();
        let mut features = 0;
        while stream
            .message()
            .await
            .expect("the stream runs to its end")
            .is_some()
        {
            features += 1;
        }
        (features, started.elapsed())
    };
    // On the wire: no GOAWAY while the stream is open; the idle timeout counts from its end.
    let raw_client = async {
        let (mut h2, _) = RawH2::handshake(server.addr).await;
        h2.grpc_call(
            1,
            "/routeguide.RouteGuide/ListFeatures",
            &ten_features,
            &Rectangle::default(),
        )
        .await;
        let during = h2.until(is_trailers_of(1)).await;
        let after = h2.until_closed().await;
        (during, after)
    };
    let ((features, elapsed), (during, after)) = within("two 1 s streams", async {
        tokio::join!(tonic_client, raw_client)
    })
    .await;

    assert_eq!(features, 10);
    assert!(elapsed >= 800 * MS, "the stream took {elapsed:?}");
    let data = during.iter().filter(|(_, f)| f.kind == DATA).count();
    assert!(data >= 10, "{data} DATA frames for 10 features");
    assert!(
        !during.iter().any(|(_, f)| f.kind == GOAWAY),
        "GOAWAY while a stream was open"
    );
    let ended = during.last().expect("trailers").0;
    let goaway = arrival(&after, "GOAWAY once idle", |f| f.kind == GOAWAY);
    assert!(
        goaway - ended >= 200 * MS,
        "GOAWAY {:?} after the stream ended, before the idle timeout",
        goaway - ended
    );
    server.stop().await;
}

// === 4. Handshake timeout ===

#[tokio::test]
async fn handshake_timeout_closes_connections_that_never_finish_it() {
    let mut config = Config::for_tests();
    config.handshake_timeout = 300 * MS;
    config.idle_timeout = Some(Duration::from_secs(5));
    let server = serve(config, None).await;
    let addr = server.addr;

    let completed = async {
        let started = Instant::now();
        let (mut h2, _) = RawH2::handshake(addr).await;
        tokio::time::sleep_until((started + 700 * MS).into()).await;
        h2.send(PING, 0, 0, b"stillup!").await.expect("send PING");
        by(2000 * MS, "the PING's answer", async {
            loop {
                let frame = h2
                    .next()
                    .await
                    .expect("the connection was closed despite its completed handshake");
                if frame.kind == PING && frame.flags & ACK != 0 {
                    assert_eq!(frame.payload, b"stillup!");
                    break;
                }
            }
        })
        .await;
    };
    let (silent, partial_preface, partial_head, ()) = tokio::join!(
        closed_after(addr, b""),
        closed_after(addr, b"PRI * HTTP/2.0\r\n"),
        closed_after(addr, b"GET /healthz HTTP/1.1\r\nHost: x\r\n"),
        completed,
    );
    for (what, (elapsed, received)) in [
        ("silent", silent),
        ("partial preface", partial_preface),
        ("partial HTTP/1.1 head", partial_head),
    ] {
        assert!(
            elapsed >= 300 * MS,
            "{what}: closed after {elapsed:?}, before the handshake timeout"
        );
        assert!(
            received.is_empty() || received.starts_with(b"HTTP/1.1 "),
            "{what}: the server sent {:?}",
            String::from_utf8_lossy(&received)
        );
    }
    server.stop().await;
}

// === 5. Max connection age ===

#[tokio::test]
async fn max_connection_age_ends_open_streams_with_unavailable() {
    let mut config = Config::for_tests();
    config.max_connection_age = Some(300 * MS);
    config.max_connection_age_grace = 300 * MS;
    let server = serve(config, None).await;
    let addr = server.addr;

    // A tonic client sees UNAVAILABLE, sent in trailers, at about age + grace.
    let tonic_client = async {
        let mut guide = RouteGuideClient::new(server.channel().await);
        let request = with_meta(Rectangle::default(), &[("interval-ms", "50")]);
        stream_outcome(guide.list_features(request)).await
    };
    // On the wire: messages, GOAWAY at the age, then the stream's trailers, then the close.
    let raw_client = async {
        let started = Instant::now();
        let (mut h2, _) = RawH2::handshake(addr).await;
        h2.grpc_call(
            1,
            "/routeguide.RouteGuide/ListFeatures",
            &[("interval-ms", "50")],
            &Rectangle::default(),
        )
        .await;
        let frames = by(5000 * MS, "the old connection closes", h2.until_closed()).await;
        (started, frames)
    };
    let ((features, status, elapsed), (started, frames)) = tokio::join!(tonic_client, raw_client);

    assert!(!features.is_empty(), "no feature before the age");
    assert_status(&status, Code::Unavailable);
    assert!(
        elapsed >= 500 * MS && elapsed < Duration::from_secs(3),
        "UNAVAILABLE after {elapsed:?}, expected about 600 ms"
    );

    let data = arrival(&frames, "DATA", |f| f.kind == DATA && f.stream == 1);
    let goaway = arrival(&frames, "GOAWAY", |f| f.kind == GOAWAY);
    let trailers = arrival(&frames, "trailers", is_trailers_of(1));
    assert!(
        data < goaway && goaway < trailers,
        "DATA, then GOAWAY, then trailers"
    );
    assert!(
        goaway - started >= 300 * MS,
        "GOAWAY after {:?}",
        goaway - started
    );
    assert!(
        trailers - started >= 600 * MS,
        "trailers after {:?}, before age + grace",
        trailers - started
    );
    assert!(
        !frames.iter().any(|(_, f)| f.kind == RST_STREAM),
        "the stream was reset instead of ended with trailers"
    );

    // The server serves new connections on.
    assert_eq!(hello(&server.channel().await).await, "Hello world");
    server.stop().await;
}

// === 6. Max connections ===

#[tokio::test]
async fn max_connections_closes_the_extra_connection_at_accept() {
    let mut config = Config::for_tests();
    config.max_connections = 2;
    let server = serve(config, None).await;

    let first = server.channel().await;
    assert_eq!(hello(&first).await, "Hello world");
    let (mut second, _) = RawH2::handshake(server.addr).await;

    // A third is closed before any frame: no SETTINGS, just the end of the connection.
    let (elapsed, received) = closed_after(server.addr, &[PREFACE, &EMPTY_SETTINGS].concat()).await;
    assert!(
        received.is_empty(),
        "the refused connection got {} bytes",
        received.len()
    );
    assert!(elapsed < Duration::from_secs(2), "closed after {elapsed:?}");

    // Once one of the two has closed, a new connection is served.
    second.tcp.shutdown().await.expect("close our side");
    by(
        5000 * MS,
        "the server closes its side",
        second.until_closed(),
    )
    .await;
    assert_eq!(hello(&server.channel().await).await, "Hello world");

    let summary = server.stop().await;
    assert!(summary.connections_refused >= 1, "{summary:?}");
}

// === 7. Message size ===

#[tokio::test]
async fn oversized_messages_get_a_clear_status() {
    let mut config = Config::for_tests();
    config.max_message_bytes = 1024;
    let server = serve(config, None).await;
    let channel = server.channel().await;
    let mut greeter = GreeterClient::new(channel.clone());

    let too_big = |status: &Status| {
        assert!(
            matches!(status.code(), Code::OutOfRange | Code::ResourceExhausted),
            "{status:?}"
        );
        assert_status(status, status.code());
        assert!(
            status.message().contains("1024"),
            "the message should name the limit: {status:?}"
        );
    };
    let request = within(
        "a 4 KiB request",
        greeter.say_hello(hello_request(&"x".repeat(4096))),
    )
    .await
    .unwrap_err();
    too_big(&request);
    assert_eq!(hello(&channel).await, "Hello world");

    let reply = within(
        "a 4 KiB reply",
        greeter.say_hello(hello_request("reply-bytes:4096")),
    )
    .await
    .unwrap_err();
    too_big(&reply);
    assert_eq!(hello(&channel).await, "Hello world");
    server.stop().await;
}

#[tokio::test]
async fn zero_message_limit_means_unlimited() {
    let mut config = Config::for_tests();
    config.max_message_bytes = 0;
    let server = serve(config, None).await;
    let mut greeter = GreeterClient::new(server.channel().await)
        .max_decoding_message_size(usize::MAX)
        .max_encoding_message_size(usize::MAX);
    let name = "x".repeat(5 * 1024 * 1024);
    let reply = within("a 5 MiB request", greeter.say_hello(hello_request(&name)))
        .await
        .expect("a 5 MiB message passes with no limit");
    assert_eq!(
        reply.into_inner().message.len(),
        "Hello ".len() + name.len()
    );
    server.stop().await;
}

// === 8. Panics ===

#[tokio::test]
async fn panics_end_the_rpc_with_internal_and_the_server_serves_on() {
    let server = serve(Config::for_tests(), None).await;
    let channel = server.channel().await;

    let status = within(
        "a panicking SayHello",
        GreeterClient::new(channel.clone()).say_hello(hello_request("panic")),
    )
    .await
    .unwrap_err();
    assert_status(&status, Code::Internal);

    let mut guide = RouteGuideClient::new(channel.clone());
    let request = with_meta(
        Rectangle::default(),
        &[("interval-ms", "10"), ("panic-at", "2")],
    );
    let (features, status, _) = stream_outcome(guide.list_features(request)).await;
    assert_eq!(features.len(), 1, "the message before the panic arrives");
    assert_status(&status, Code::Internal);

    assert_eq!(hello(&channel).await, "Hello world");
    server.stop().await;
}

// === 9, 10. The binary's exit triggers ===

/// The `reason` of the binary's JSON drain summary line.
async fn drain_reason(bin: &mut Binary) -> String {
    let line = bin.wait_for_line("drain summary").await;
    let json: serde_json::Value = serde_json::from_str(&line).expect("a JSON line");
    json["reason"].as_str().expect("a reason").to_string()
}

#[tokio::test]
async fn exit_on_goaway_exits_when_the_last_h2_connection_closes() {
    let port = free_port();
    let mut bin = Binary::start(
        &[
            "--exit-on-goaway",
            "--port",
            &port.to_string(),
            "--log-format",
            "json",
        ],
        &[],
    )
    .await;
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();

    // A probe's HTTP/1.1 connection coming and going is not the front end going away.
    assert_eq!(http(addr, "GET", "/healthz").await.0, 200);
    tokio::time::sleep(500 * MS).await;
    assert!(
        bin.child.try_wait().expect("try_wait").is_none(),
        "the binary exited after an HTTP/1.1 probe"
    );

    // The front end's HTTP/2 connection closing is.
    let channel = within(
        "connect",
        Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect(),
    )
    .await
    .expect("connect");
    assert_eq!(hello(&channel).await, "Hello world");
    drop(channel);
    let status = by(
        5000 * MS,
        "exit after the connection closed",
        bin.child.wait(),
    )
    .await
    .expect("wait");
    assert!(status.success(), "{status:?}");
    let reason = drain_reason(&mut bin).await;
    assert!(
        reason.contains("exit-on-goaway"),
        "drain reason: {reason:?}"
    );
}

#[tokio::test]
async fn idle_exit_after_exits_with_no_connection() {
    let started = Instant::now();
    let port = free_port().to_string();
    let mut bin = Binary::start(
        &[
            "--idle-exit-after",
            "500ms",
            "--port",
            &port,
            "--log-format",
            "json",
        ],
        &[],
    )
    .await;
    let status = by(5000 * MS, "exit with no connection", bin.child.wait())
        .await
        .expect("wait");
    assert!(status.success(), "{status:?}");
    assert!(started.elapsed() >= 500 * MS, "{:?}", started.elapsed());
    let reason = drain_reason(&mut bin).await;
    assert!(
        reason.contains("idle-exit-after"),
        "drain reason: {reason:?}"
    );
}

// === 11. The billing meter ===

#[tokio::test]
async fn idle_connection_is_billed_until_the_idle_timeout_closes_it() {
    let mut config = Config::for_tests();
    config.idle_timeout = Some(500 * MS);
    let started = Instant::now();
    let server = serve(config, None).await;
    let channel = server.channel().await;
    assert_eq!(hello(&channel).await, "Hello world");
    // Time for the idle timeout to close the connection, and a second more that must not be
    // billed.
    tokio::time::sleep(1500 * MS).await;
    let summary = server.stop().await;
    let elapsed = started.elapsed();
    let billed = summary.meter.connection_billed;
    assert!(
        billed >= 500 * MS,
        "billed {billed:?}: less than the idle timeout"
    );
    assert!(
        billed + 500 * MS < elapsed,
        "billed {billed:?} of {elapsed:?}: the idle connection was not closed at its timeout"
    );
    assert!(summary.meter.unary_rpcs >= 1, "{:?}", summary.meter);
    drop(channel);
}
