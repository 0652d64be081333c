//! `make bench`: measures the bootstrap against a bare tonic server (the floor, `floor` in this
//! package) and grpc-go, on one machine in one run, and writes a markdown table with each figure
//! as a ratio to the floor and the project's targets marked met or not.
//!
//! The machines this runs on are small and shared, so absolute figures are noisy: servers are
//! measured in interleaved rounds (A B C D A B C D ...), medians are reported, and the targets are
//! ratios wherever the issue allows. `bench/run.sh` builds everything and calls this binary with
//! the paths of the servers; see `--help`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bootstrap::proto::helloworld::HelloRequest;
use bootstrap::proto::helloworld::greeter_client::GreeterClient;
use bootstrap::proto::routeguide::route_guide_client::RouteGuideClient;
use bootstrap::proto::routeguide::{Point, Rectangle, RouteNote};
use futures_util::StreamExt;
use tokio::process::{Child, Command};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

mod drain_load;

type Result<T, E = Box<dyn std::error::Error + Send + Sync>> = std::result::Result<T, E>;

const USAGE: &str = "usage: bench --bootstrap BIN --static BIN --floor BIN [--go BIN] [--zip FILE] \
[--out FILE] [--rounds N] [--seconds N] [--starts N]";

/// SayHello(HelloRequest { name: "x" }) as one uncompressed gRPC message, for h2load.
const SAY_HELLO_X: [u8; 8] = [0, 0, 0, 0, 3, 0x0a, 0x01, b'x'];

/// The fixed request rate of the latency measurement: moderate, well below every server's peak.
const LATENCY_RATE: u32 = 2000;

/// The servers compared. The order is the table's column order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// The bootstrap's glibc (dynamic) release build, everything on.
    Bootstrap,
    /// The static musl build `make build` ships, everything on.
    Static,
    /// The bare tonic server.
    Floor,
    /// grpc-go's helloworld server.
    Go,
}

impl Kind {
    const ALL: [Kind; 4] = [Kind::Bootstrap, Kind::Static, Kind::Floor, Kind::Go];

    fn label(self) -> &'static str {
        match self {
            Kind::Bootstrap => "bootstrap (glibc)",
            Kind::Static => "bootstrap static (musl)",
            Kind::Floor => "tonic floor",
            Kind::Go => "grpc-go",
        }
    }

    fn is_bootstrap(self) -> bool {
        matches!(self, Kind::Bootstrap | Kind::Static)
    }
}

/// Where the binaries are and how long to measure.
#[derive(Debug, Clone)]
struct Args {
    bootstrap: PathBuf,
    static_bin: PathBuf,
    floor: PathBuf,
    go: Option<PathBuf>,
    zip: Option<PathBuf>,
    out: PathBuf,
    rounds: usize,
    seconds: u64,
    starts: usize,
    work: PathBuf,
}

impl Args {
    fn parse() -> Result<Args> {
        let mut it = std::env::args().skip(1);
        let get = |name: &str, it: &mut dyn Iterator<Item = String>| {
            it.next()
                .ok_or_else(|| format!("{name} needs a value\n{USAGE}"))
        };
        let (mut bootstrap, mut static_bin, mut floor) = (None, None, None);
        let mut args = Args {
            bootstrap: PathBuf::new(),
            static_bin: PathBuf::new(),
            floor: PathBuf::new(),
            go: None,
            zip: None,
            out: PathBuf::from("bench/RESULTS.md"),
            rounds: 5,
            seconds: 3,
            starts: 20,
            work: std::env::temp_dir().join(format!("bench-{}", std::process::id())),
        };
        while let Some(flag) = it.next() {
            if flag == "--help" || flag == "-h" {
                println!("{USAGE}");
                std::process::exit(0);
            }
            let value = get(&flag, &mut it)?;
            match flag.as_str() {
                "--bootstrap" => bootstrap = Some(PathBuf::from(value)),
                "--static" => static_bin = Some(PathBuf::from(value)),
                "--floor" => floor = Some(PathBuf::from(value)),
                "--go" => args.go = Some(PathBuf::from(value)),
                "--zip" => args.zip = Some(PathBuf::from(value)),
                "--out" => args.out = PathBuf::from(value),
                "--rounds" => args.rounds = value.parse()?,
                "--seconds" => args.seconds = value.parse()?,
                "--starts" => args.starts = value.parse()?,
                _ => return Err(format!("unknown flag {flag:?}\n{USAGE}").into()),
            }
        }
        let missing = || format!("--bootstrap, --static and --floor are required\n{USAGE}");
        args.bootstrap = bootstrap.ok_or_else(missing)?;
        args.static_bin = static_bin.ok_or_else(missing)?;
        args.floor = floor.ok_or_else(missing)?;
        Ok(args)
    }

    /// The servers this run can start: grpc-go only when its binary was given.
    fn kinds(&self) -> Vec<Kind> {
        Kind::ALL
            .into_iter()
            .filter(|k| *k != Kind::Go || self.go.is_some())
            .collect()
    }

    fn binary(&self, kind: Kind) -> &Path {
        match kind {
            Kind::Bootstrap => &self.bootstrap,
            Kind::Static => &self.static_bin,
            Kind::Floor => &self.floor,
            Kind::Go => self
                .go
                .as_deref()
                .expect("grpc-go is only started when given"),
        }
    }
}

/// A running server process.
struct Server {
    kind: Kind,
    port: u16,
    child: Child,
    /// Where a bootstrap's log goes (its own file, so its drain summary can be read).
    log: Option<PathBuf>,
    /// Health Checks answered while waiting for SERVING: RPCs the bootstrap counts too.
    checks_answered: u64,
}

impl Server {
    /// Starts `kind` on a free port. The bootstrap runs with everything on: deadline layer and
    /// admission (concurrency high enough that admission never refuses the load), request ids,
    /// and info-level JSON logs written to a file.
    fn spawn(args: &Args, kind: Kind, extra: &[&str]) -> Result<Server> {
        let port = free_port()?;
        let mut command = Command::new(args.binary(kind));
        command
            .arg("--port")
            .arg(port.to_string())
            .stdin(Stdio::null())
            .kill_on_drop(true);
        let mut log_path = None;
        if kind.is_bootstrap() {
            let path = args.work.join(format!("bootstrap-{port}.log"));
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)?;
            log_path = Some(path);
            command.args(["--log-level", "info", "--log-format", "json"]);
            // clap refuses a flag given twice, so a caller's own --concurrency replaces ours.
            if !extra.contains(&"--concurrency") {
                command.args(["--concurrency", "10000"]);
            }
            command.args(extra).stdout(log.try_clone()?).stderr(log);
        } else {
            command.stdout(Stdio::null()).stderr(Stdio::null());
        }
        let child = command.spawn()?;
        Ok(Server {
            kind,
            port,
            child,
            log: log_path,
            checks_answered: 0,
        })
    }

    /// Starts `kind` and waits until health says SERVING; returns the time from exec.
    async fn start(args: &Args, kind: Kind, extra: &[&str]) -> Result<(Server, Duration)> {
        let began = Instant::now();
        let mut server = Server::spawn(args, kind, extra)?;
        server.wait_serving().await?;
        Ok((server, began.elapsed()))
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn pid(&self) -> i32 {
        self.child
            .id()
            .and_then(|id| i32::try_from(id).ok())
            .expect("a running child has a pid")
    }

    /// Polls grpc.health.v1 Check until the overall service is SERVING.
    async fn wait_serving(&mut self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                return Err(format!("{} exited at start: {status}", self.kind.label()).into());
            }
            let endpoint =
                Endpoint::from_shared(self.url())?.connect_timeout(Duration::from_millis(200));
            if let Ok(channel) = endpoint.connect().await {
                let reply = HealthClient::new(channel)
                    .check(HealthCheckRequest {
                        service: String::new(),
                    })
                    .await;
                self.checks_answered += u64::from(reply.is_ok());
                if reply.is_ok_and(|r| r.into_inner().status == ServingStatus::Serving as i32) {
                    return Ok(());
                }
            }
            tokio::time::sleep(Duration::from_micros(500)).await;
        }
        Err(format!("{} never reported SERVING", self.kind.label()).into())
    }

    async fn channel(&self) -> Result<Channel> {
        Ok(Endpoint::from_shared(self.url())?.connect().await?)
    }

    /// Resident set size from /proc, in bytes.
    fn rss(&self) -> Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))?;
        let kb = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .ok_or("no VmRSS in /proc/<pid>/status")?;
        Ok(kb * 1024)
    }

    fn signal(&self, signal: i32) {
        // SAFETY: kill(2) with the pid of a child we still own (not yet reaped) has no memory
        // effects; the worst case is an error return, which the exit wait reports.
        unsafe {
            libc::kill(self.pid(), signal);
        }
    }

    /// SIGTERM, then the time until the process has exited.
    async fn drain(mut self) -> Result<Duration> {
        let began = Instant::now();
        self.signal(libc::SIGTERM);
        let status = tokio::time::timeout(Duration::from_secs(15), self.child.wait()).await??;
        let took = began.elapsed();
        if !status.success() {
            return Err(format!("{} exited with {status} after SIGTERM", self.kind.label()).into());
        }
        Ok(took)
    }

    async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }
}

fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

fn median(values: &[f64]) -> f64 {
    percentile(values, 50.0)
}

/// Nearest-rank percentile; NaN for no values.
fn percentile(values: &[f64], p: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// h2load's counts for one run.
#[derive(Debug, Default, Clone, Copy)]
struct H2load {
    rps: f64,
    started: u64,
    done: u64,
    succeeded: u64,
    ok_2xx: u64,
    not_2xx: u64,
}

fn parse_h2load(out: &str) -> Result<H2load> {
    let line = |prefix: &str| {
        out.lines()
            .find(|l| l.starts_with(prefix))
            .map(|l| l[prefix.len()..].to_string())
            .ok_or_else(|| format!("no {prefix:?} in h2load's output:\n{out}"))
    };
    let pairs = |text: String| -> Vec<(String, f64)> {
        text.split(',')
            .filter_map(|part| {
                let (n, what) = part.trim().split_once(' ')?;
                Some((what.to_string(), n.parse().ok()?))
            })
            .collect()
    };
    let mut counts = H2load::default();
    for (what, n) in pairs(line("finished in")?) {
        if what == "req/s" {
            counts.rps = n;
        }
    }
    for (what, n) in pairs(line("requests:")?) {
        match what.as_str() {
            "started" => counts.started = n as u64,
            "done" => counts.done = n as u64,
            "succeeded" => counts.succeeded = n as u64,
            _ => {}
        }
    }
    for (what, n) in pairs(line("status codes:")?) {
        if what == "2xx" {
            counts.ok_2xx = n as u64;
        } else {
            counts.not_2xx += n as u64;
        }
    }
    Ok(counts)
}

/// One h2load run of SayHello: 8 connections with 16 streams each, one client thread (the other
/// core is the server's), a second of warm-up, then `seconds` measured.
async fn h2load(args: &Args, server: &Server) -> Result<H2load> {
    let body = args.work.join("say-hello.grpc");
    let out = Command::new("h2load")
        .args([
            "-t",
            "1",
            "-c",
            "8",
            "-m",
            "16",
            "--warm-up-time",
            "1",
            "-D",
        ])
        .arg(args.seconds.to_string())
        .arg("-d")
        .arg(&body)
        .args(["-H", "content-type: application/grpc", "-H", "te: trailers"])
        .arg(format!("{}/helloworld.Greeter/SayHello", server.url()))
        .output()
        .await?;
    if !out.status.success() {
        return Err(format!("h2load failed: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    parse_h2load(&String::from_utf8_lossy(&out.stdout))
}

/// h2load cannot read grpc-status, so after each run a sample of SayHello calls must all come
/// back OK with the right reply: an error storm cannot pass as speed. Returns the failures.
async fn grpc_status_sample(server: &Server, calls: usize) -> Result<usize> {
    let mut client = GreeterClient::new(server.channel().await?);
    let mut failed = 0;
    for _ in 0..calls {
        let reply = client.say_hello(HelloRequest { name: "x".into() }).await;
        if !reply.is_ok_and(|r| r.into_inner().message == "Hello x") {
            failed += 1;
        }
    }
    Ok(failed)
}

/// Server-streaming messages per second: 8 callers on 2 connections, each calling ListFeatures
/// over the whole map back to back.
async fn list_features_rate(server: &Server, seconds: u64) -> Result<f64> {
    let messages = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for _ in 0..2 {
        let channel = server.channel().await?;
        for _ in 0..4 {
            let mut client = RouteGuideClient::new(channel.clone());
            let messages = messages.clone();
            tasks.push(tokio::spawn(async move {
                let everywhere = Rectangle {
                    lo: Some(Point {
                        latitude: -900_000_000,
                        longitude: -1_800_000_000,
                    }),
                    hi: Some(Point {
                        latitude: 900_000_000,
                        longitude: 1_800_000_000,
                    }),
                };
                while Instant::now() < deadline {
                    let mut stream = client.list_features(everywhere).await?.into_inner();
                    while let Some(feature) = stream.next().await {
                        feature?;
                        messages.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Ok::<_, tonic::Status>(())
            }));
        }
    }
    let began = Instant::now();
    for task in tasks {
        task.await??;
    }
    Ok(messages.load(Ordering::Relaxed) as f64 / began.elapsed().as_secs_f64())
}

/// Locations for RouteChat notes, unique across the whole run: the sample service answers a note
/// with the earlier notes at the same location, so a fresh location per round trip keeps every
/// reply one note long however long the server has been running.
static NEXT_LOCATION: AtomicI32 = AtomicI32::new(1);

fn note_at(latitude: i32) -> RouteNote {
    RouteNote {
        location: Some(Point {
            latitude,
            longitude: 0,
        }),
        message: "n".into(),
    }
}

/// Bidirectional round trips per second: 8 RouteChat streams on 2 connections. One round trip
/// sends two notes at a fresh location and waits for the reply (the first note, echoed when the
/// second arrives).
async fn route_chat_rate(server: &Server, seconds: u64) -> Result<f64> {
    let trips = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for _ in 0..2 {
        let channel = server.channel().await?;
        for _ in 0..4 {
            let mut client = RouteGuideClient::new(channel.clone());
            let trips = trips.clone();
            tasks.push(tokio::spawn(async move {
                let (notes, outbound) = tokio::sync::mpsc::channel(4);
                let mut replies = client
                    .route_chat(ReceiverStream::new(outbound))
                    .await?
                    .into_inner();
                while Instant::now() < deadline {
                    let at = NEXT_LOCATION.fetch_add(1, Ordering::Relaxed);
                    for _ in 0..2 {
                        notes
                            .send(note_at(at))
                            .await
                            .map_err(|_| tonic::Status::internal("request stream closed"))?;
                    }
                    match replies.next().await {
                        Some(reply) => {
                            reply?;
                            trips.fetch_add(1, Ordering::Relaxed);
                        }
                        None => return Err(tonic::Status::internal("reply stream ended")),
                    }
                }
                Ok(())
            }));
        }
    }
    let began = Instant::now();
    for task in tasks {
        task.await??;
    }
    Ok(trips.load(Ordering::Relaxed) as f64 / began.elapsed().as_secs_f64())
}

/// SayHello at a fixed rate for `seconds`; latencies in milliseconds, measured from each call's
/// scheduled start so a stalled server cannot hide its queue (no coordinated omission).
async fn latencies(server: &Server, seconds: u64) -> Result<(Vec<f64>, usize)> {
    let channel = server.channel().await?;
    let total = LATENCY_RATE as u64 * seconds;
    let interval = Duration::from_secs(1) / LATENCY_RATE;
    let began = tokio::time::Instant::now();
    let mut calls = Vec::with_capacity(total as usize);
    for i in 0..total {
        let at = began + interval * i as u32;
        tokio::time::sleep_until(at).await;
        let mut client = GreeterClient::new(channel.clone());
        calls.push(tokio::spawn(async move {
            let reply = client.say_hello(HelloRequest { name: "x".into() }).await;
            (reply.is_ok(), at.elapsed())
        }));
    }
    let mut samples = Vec::with_capacity(calls.len());
    let mut errors = 0;
    for call in calls {
        let (ok, took) = call.await?;
        if ok {
            samples.push(took.as_secs_f64() * 1e3);
        } else {
            errors += 1;
        }
    }
    Ok((samples, errors))
}

/// Opens `count` RouteChat streams over 10 connections, each having sent one note, and keeps
/// them open while the caller reads the server's RSS.
async fn open_streams(server: &Server, count: usize) -> Result<Vec<Box<dyn std::any::Any>>> {
    let mut held: Vec<Box<dyn std::any::Any>> = Vec::with_capacity(count * 2);
    let mut channels = Vec::new();
    for _ in 0..10 {
        channels.push(server.channel().await?);
    }
    let mut opening = Vec::with_capacity(count);
    for i in 0..count {
        let mut client = RouteGuideClient::new(channels[i % channels.len()].clone());
        opening.push(tokio::spawn(async move {
            let (notes, outbound) = tokio::sync::mpsc::channel(1);
            notes
                .send(note_at(NEXT_LOCATION.fetch_add(1, Ordering::Relaxed)))
                .await
                .map_err(|_| tonic::Status::internal("request stream closed"))?;
            let replies = client.route_chat(ReceiverStream::new(outbound)).await?;
            Ok::<_, tonic::Status>((notes, replies))
        }));
    }
    for stream in opening {
        let (notes, replies) = stream.await??;
        held.push(Box::new(notes));
        held.push(Box::new(replies));
    }
    Ok(held)
}

/// `count` connections that each completed one call and stay open, idle.
async fn idle_connections(server: &Server, count: usize) -> Result<Vec<Channel>> {
    let mut channels = Vec::with_capacity(count);
    for _ in 0..count {
        let channel = server.channel().await?;
        GreeterClient::new(channel.clone())
            .say_hello(HelloRequest { name: "x".into() })
            .await?;
        channels.push(channel);
    }
    Ok(channels)
}

fn stripped_size(path: &Path, work: &Path) -> Result<u64> {
    let copy = work.join(format!(
        "stripped-{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("bin")
    ));
    std::fs::copy(path, &copy)?;
    let status = std::process::Command::new("strip").arg(&copy).status()?;
    if !status.success() {
        return Err(format!("strip {} failed", copy.display()).into());
    }
    Ok(std::fs::metadata(&copy)?.len())
}

/// Everything measured, per server where it applies.
#[derive(Debug, Default)]
struct Figures {
    unary: Vec<(Kind, Vec<f64>)>,
    unary_failures: Vec<(Kind, u64)>,
    list_features: Vec<(Kind, Vec<f64>)>,
    route_chat: Vec<(Kind, Vec<f64>)>,
    latency: Vec<(Kind, Vec<f64>, usize)>,
    cold_start: Vec<(Kind, Vec<f64>)>,
    idle_rss: Vec<(Kind, Vec<f64>)>,
    streams_rss: Vec<(Kind, f64)>,
    stripped: Vec<(Kind, f64)>,
    zip: Option<f64>,
    drain_idle: Vec<(Kind, Vec<f64>)>,
    drain_conns: Vec<(Kind, Vec<f64>)>,
    drain_load: Vec<(Kind, Vec<drain_load::DrainLoad>)>,
}

fn entry<T: Default>(list: &mut Vec<(Kind, T)>, kind: Kind) -> &mut T {
    if let Some(i) = list.iter().position(|(k, _)| *k == kind) {
        return &mut list[i].1;
    }
    list.push((kind, T::default()));
    &mut list.last_mut().expect("just pushed").1
}

fn get<T: Copy>(list: &[(Kind, T)], kind: Kind) -> Option<T> {
    list.iter().find(|(k, _)| *k == kind).map(|(_, v)| *v)
}

fn medians(list: &[(Kind, Vec<f64>)]) -> Vec<(Kind, f64)> {
    list.iter().map(|(k, v)| (*k, median(v))).collect()
}

fn log(line: &str) {
    eprintln!("[bench] {line}");
}

async fn measure(args: &Args) -> Result<Figures> {
    let kinds = args.kinds();
    let mut f = Figures::default();

    // Unary: one long-lived process per server, rounds interleaved.
    let mut servers = Vec::new();
    for &kind in &kinds {
        servers.push(Server::start(args, kind, &[]).await?.0);
    }
    for round in 0..args.rounds {
        for server in &servers {
            let run = h2load(args, server).await?;
            let sample_failures = grpc_status_sample(server, 200).await?;
            let failures =
                run.done.saturating_sub(run.succeeded) + run.not_2xx + sample_failures as u64;
            log(&format!(
                "unary round {round} {}: {:.0} req/s, {failures} failures",
                server.kind.label(),
                run.rps
            ));
            entry(&mut f.unary, server.kind).push(run.rps);
            *entry(&mut f.unary_failures, server.kind) += failures;
        }
    }

    // Streaming, bootstrap against the floor (grpc-go's server has no RouteGuide).
    for round in 0..args.rounds {
        for server in servers.iter().filter(|s| s.kind != Kind::Go) {
            let lf = list_features_rate(server, args.seconds).await?;
            let rc = route_chat_rate(server, args.seconds).await?;
            log(&format!(
                "streaming round {round} {}: {lf:.0} msg/s, {rc:.0} round trips/s",
                server.kind.label()
            ));
            entry(&mut f.list_features, server.kind).push(lf);
            entry(&mut f.route_chat, server.kind).push(rc);
        }
    }

    // Latency at a fixed moderate rate: two interleaved rounds, samples pooled.
    let mut latency: Vec<(Kind, (Vec<f64>, usize))> = Vec::new();
    for _ in 0..2 {
        for server in &servers {
            let (samples, errors) = latencies(server, args.seconds).await?;
            let slot = entry(&mut latency, server.kind);
            slot.0.extend(samples);
            slot.1 += errors;
        }
    }
    for (kind, (samples, errors)) in latency {
        log(&format!(
            "latency {}: p50 {:.3} ms, p99 {:.3} ms, {errors} errors",
            kind.label(),
            percentile(&samples, 50.0),
            percentile(&samples, 99.0)
        ));
        f.latency.push((kind, samples, errors));
    }
    for server in servers {
        server.stop().await;
    }

    // Cold start and idle RSS: fresh processes, interleaved.
    for _ in 0..args.starts {
        for &kind in &kinds {
            let (server, took) = Server::start(args, kind, &[]).await?;
            // Let the health check's connection close before reading the idle footprint.
            tokio::time::sleep(Duration::from_millis(100)).await;
            let rss = server.rss()? as f64;
            entry(&mut f.cold_start, kind).push(took.as_secs_f64() * 1e3);
            entry(&mut f.idle_rss, kind).push(rss);
            server.stop().await;
        }
    }
    for (kind, ms) in medians(&f.cold_start) {
        log(&format!("cold start {}: median {ms:.2} ms", kind.label()));
    }

    // RSS with 1,000 open bidi streams.
    for &kind in kinds.iter().filter(|k| **k != Kind::Go) {
        let (server, _) = Server::start(args, kind, &["--concurrency", "2000"]).await?;
        let held = open_streams(&server, 1000).await?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let rss = server.rss()? as f64;
        log(&format!(
            "1000 streams {}: {:.1} MiB",
            kind.label(),
            rss / 1048576.0
        ));
        f.streams_rss.push((kind, rss));
        drop(held);
        server.stop().await;
    }

    // Drain: SIGTERM to exit, with nothing open, then with 500 idle connections.
    for _ in 0..5 {
        for kind in [Kind::Bootstrap, Kind::Static] {
            let (server, _) = Server::start(args, kind, &[]).await?;
            tokio::time::sleep(Duration::from_millis(100)).await;
            let took = server.drain().await?;
            entry(&mut f.drain_idle, kind).push(took.as_secs_f64() * 1e3);
        }
    }
    for _ in 0..3 {
        for kind in [Kind::Bootstrap, Kind::Static] {
            let (server, _) = Server::start(args, kind, &[]).await?;
            let channels = idle_connections(&server, 500).await?;
            tokio::time::sleep(Duration::from_millis(200)).await;
            let took = server.drain().await?;
            entry(&mut f.drain_conns, kind).push(took.as_secs_f64() * 1e3);
            drop(channels);
        }
    }

    // Drain under load, at the concurrency limit.
    for round in 0..args.rounds {
        for kind in [Kind::Bootstrap, Kind::Static] {
            let run = drain_load::measure(args, kind).await?;
            log(&format!(
                "drain under load round {round} {}: {run:?}",
                kind.label()
            ));
            entry(&mut f.drain_load, kind).push(run);
        }
    }

    // Sizes.
    for &kind in &kinds {
        let size = stripped_size(args.binary(kind), &args.work)? as f64;
        f.stripped.push((kind, size));
    }
    if let Some(zip) = &args.zip {
        f.zip = Some(std::fs::metadata(zip)?.len() as f64);
    }
    Ok(f)
}

/// One table row: the figure for each server, with its ratio to the floor's.
fn row(
    out: &mut String,
    kinds: &[Kind],
    name: &str,
    values: &[(Kind, f64)],
    show: &dyn Fn(f64) -> String,
) {
    let floor = get(values, Kind::Floor);
    let cells: Vec<String> = kinds
        .iter()
        .map(|k| cell(get(values, *k), floor, show))
        .collect();
    let _ = writeln!(out, "| {name} | {} |", cells.join(" | "));
}

/// A figure, with its ratio to the floor's when both exist.
fn cell(value: Option<f64>, floor: Option<f64>, show: impl Fn(f64) -> String) -> String {
    match (value, floor) {
        (Some(v), Some(fl)) if fl > 0.0 => format!("{} ({:.2}×)", show(v), v / fl),
        (Some(v), _) => show(v),
        (None, _) => "—".into(),
    }
}

fn mib(bytes: f64) -> String {
    format!("{:.1} MiB", bytes / 1048576.0)
}

fn ms(v: f64) -> String {
    if v < 10.0 {
        format!("{v:.2} ms")
    } else {
        format!("{v:.1} ms")
    }
}

fn per_s(v: f64) -> String {
    format!("{v:.0}/s")
}

fn met(ok: bool) -> &'static str {
    if ok { "met" } else { "**not met**" }
}

fn render(args: &Args, f: &Figures) -> String {
    let kinds = args.kinds();
    let mut out = String::new();
    let header: Vec<&str> = kinds.iter().map(|k| k.label()).collect();
    let _ = writeln!(out, "| Measure | {} |", header.join(" | "));
    let _ = writeln!(out, "| --- |{}", " ---: |".repeat(kinds.len()));
    let fails: Vec<(Kind, f64)> = f
        .unary_failures
        .iter()
        .map(|(k, n)| (*k, *n as f64))
        .collect();
    let latency_p = |p: f64| -> Vec<(Kind, f64)> {
        f.latency
            .iter()
            .map(|(k, s, _)| (*k, percentile(s, p)))
            .collect()
    };
    let latency_errors: Vec<(Kind, f64)> =
        f.latency.iter().map(|(k, _, e)| (*k, *e as f64)).collect();
    let plain = |v: f64| format!("{v:.0}");
    row(
        &mut out,
        &kinds,
        "Unary SayHello, h2load (median req/s)",
        &medians(&f.unary),
        &per_s,
    );
    let _ = writeln!(
        out,
        "| Unary failures (h2load non-OK + bad grpc-status in samples) | {} |",
        kinds
            .iter()
            .map(|k| get(&fails, *k).map_or("—".into(), plain))
            .collect::<Vec<_>>()
            .join(" | ")
    );
    row(
        &mut out,
        &kinds,
        "ListFeatures, server-streamed messages/s",
        &medians(&f.list_features),
        &per_s,
    );
    row(
        &mut out,
        &kinds,
        "RouteChat, bidi round trips/s",
        &medians(&f.route_chat),
        &per_s,
    );
    row(
        &mut out,
        &kinds,
        &format!("Latency p50 at {LATENCY_RATE} req/s"),
        &latency_p(50.0),
        &ms,
    );
    row(
        &mut out,
        &kinds,
        &format!("Latency p99 at {LATENCY_RATE} req/s"),
        &latency_p(99.0),
        &ms,
    );
    let _ = writeln!(
        out,
        "| Latency run errors | {} |",
        kinds
            .iter()
            .map(|k| get(&latency_errors, *k).map_or("—".into(), plain))
            .collect::<Vec<_>>()
            .join(" | ")
    );
    row(
        &mut out,
        &kinds,
        &format!(
            "Cold start, exec to health SERVING (median of {})",
            args.starts
        ),
        &medians(&f.cold_start),
        &ms,
    );
    row(
        &mut out,
        &kinds,
        "RSS idle (median)",
        &medians(&f.idle_rss),
        &mib,
    );
    row(
        &mut out,
        &kinds,
        "RSS with 1,000 open RouteChat streams",
        &f.streams_rss,
        &mib,
    );
    row(&mut out, &kinds, "Binary, stripped", &f.stripped, &|v| {
        format!("{:.2} MiB", v / 1048576.0)
    });
    row(
        &mut out,
        &kinds,
        "Drain: SIGTERM to exit, nothing open (median of 5)",
        &medians(&f.drain_idle),
        &ms,
    );
    row(
        &mut out,
        &kinds,
        "Drain: SIGTERM to exit, 500 idle connections (median of 3)",
        &medians(&f.drain_conns),
        &ms,
    );
    let load_sum = |figure: &dyn Fn(&drain_load::DrainLoad) -> f64| -> Vec<(Kind, f64)> {
        f.drain_load
            .iter()
            .map(|(k, runs)| (*k, runs.iter().map(figure).sum()))
            .collect()
    };
    let load_ms: Vec<(Kind, Vec<f64>)> = f
        .drain_load
        .iter()
        .map(|(k, runs)| (*k, runs.iter().map(|r| r.drain_ms).collect()))
        .collect();
    let rounds = f.drain_load.first().map_or(0, |(_, runs)| runs.len());
    row(
        &mut out,
        &kinds,
        &format!("Drain under load: SIGTERM to exit (median of {rounds})"),
        &medians(&load_ms),
        &ms,
    );
    type Figure = fn(&drain_load::DrainLoad) -> f64;
    let load_rows: [(&str, Figure); 6] = [
        ("RPCs the server counted", |r| r.server_rpcs as f64),
        ("RPCs answered to the clients with a status", |r| {
            r.answered as f64
        }),
        (
            "calls refused before reaching the server (retry-safe)",
            |r| r.refused as f64,
        ),
        ("streams the drain timeout ended, server's count", |r| {
            r.server_unavailable as f64
        }),
        ("streams the drain timeout ended, as the clients saw", |r| {
            r.streams_unavailable as f64
        }),
        ("other outcomes (errors, cut without trailers)", |r| {
            r.bad as f64
        }),
    ];
    for (name, figure) in load_rows {
        row(
            &mut out,
            &kinds,
            &format!("Drain under load, {rounds} rounds: {name}"),
            &load_sum(&figure),
            &plain,
        );
    }
    if let Some(zip) = f.zip {
        let _ = writeln!(out, "\nbootstrap.zip: {zip:.0} bytes ({}).", mib(zip));
    }

    // The targets.
    let _ = writeln!(out, "\n| Target | Measured | Result |\n| --- | --- | --- |");
    let target = |name: &str, measured: Option<(String, bool)>| {
        let (text, result) = match measured {
            Some((text, ok)) => (text, met(ok)),
            None => ("not measured".into(), "**not measured**"),
        };
        format!("| {name} | {text} | {result} |\n")
    };
    let unary = medians(&f.unary);
    let ratio = |a: Kind, b: Kind, list: &[(Kind, f64)]| Some(get(list, a)? / get(list, b)?);
    let at_least = |r: Option<f64>, min: f64| r.map(|r| (format!("{r:.2}×"), r >= min));
    out.push_str(&target(
        "Unary, everything on ≥ 0.90 × floor",
        at_least(ratio(Kind::Bootstrap, Kind::Floor, &unary), 0.90),
    ));
    out.push_str(&target(
        "Unary, everything on ≥ 1.0 × grpc-go",
        at_least(ratio(Kind::Bootstrap, Kind::Go, &unary), 1.0),
    ));
    out.push_str(&target(
        "Unary, static ≥ 0.95 × dynamic",
        at_least(ratio(Kind::Static, Kind::Bootstrap, &unary), 0.95),
    ));
    let cold = medians(&f.cold_start);
    for kind in [Kind::Bootstrap, Kind::Static] {
        out.push_str(&target(
            &format!("Cold start, {} ≤ 1.5 × floor", kind.label()),
            ratio(kind, Kind::Floor, &cold).map(|r| (format!("{r:.2}×"), r <= 1.5)),
        ));
        out.push_str(&target(
            &format!("Cold start, {} < grpc-go", kind.label()),
            ratio(kind, Kind::Go, &cold).map(|r| (format!("{r:.2}×"), r < 1.0)),
        ));
    }
    let idle = medians(&f.idle_rss);
    for kind in [Kind::Bootstrap, Kind::Static] {
        out.push_str(&target(
            &format!("RSS idle, {} ≤ 8 MiB", kind.label()),
            get(&idle, kind).map(|v| (mib(v), v <= 8.0 * 1048576.0)),
        ));
        out.push_str(&target(
            &format!("RSS at 1,000 open streams, {} ≤ 64 MiB", kind.label()),
            get(&f.streams_rss, kind).map(|v| (mib(v), v <= 64.0 * 1048576.0)),
        ));
    }
    out.push_str(&target(
        "bootstrap.zip ≤ 3 MiB",
        f.zip.map(|v| (mib(v), v <= 3.0 * 1048576.0)),
    ));
    let (drain_idle, drain_conns) = (medians(&f.drain_idle), medians(&f.drain_conns));
    for kind in [Kind::Bootstrap, Kind::Static] {
        out.push_str(&target(
            &format!("Drain, nothing in flight, {} ≤ 50 ms", kind.label()),
            get(&drain_idle, kind).map(|v| (ms(v), v <= 50.0)),
        ));
        out.push_str(&target(
            &format!("Drain, 500 idle connections, {} ≤ 200 ms", kind.label()),
            get(&drain_conns, kind).map(|v| (ms(v), v <= 200.0)),
        ));
        let load = f.drain_load.iter().find(|(k, _)| *k == kind);
        out.push_str(&target(
            &format!(
                "Drain under load, {}: every RPC accounted for",
                kind.label()
            ),
            load.map(|(_, runs)| {
                let good = runs.iter().filter(|r| r.accounted()).count();
                (
                    format!("{good} of {} rounds", runs.len()),
                    good == runs.len(),
                )
            }),
        ));
    }
    out
}

fn shell(cmd: &str, args: &[&str]) -> String {
    std::process::Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}

fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_else(|| "unknown".into());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let memory = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or("unknown".into(), |kb| format!("{:.1} GiB", kb / 1048576.0));
    format!(
        "- CPUs: {} × {model}\n- Memory: {memory}\n- Kernel: {}\n- Rust: {}\n- Date: {}\n",
        shell("nproc", &[]),
        shell("uname", &["-r"]),
        shell("rustc", &["-V"]),
        shell("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
    )
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse()?;
    std::fs::create_dir_all(&args.work)?;
    std::fs::write(args.work.join("say-hello.grpc"), SAY_HELLO_X)?;
    let figures = measure(&args).await?;
    let table = render(&args, &figures);
    println!("{table}");
    let report = format!(
        "# Benchmark results\n\nWritten by `make bench` (bench/run.sh); see the README's \
\"Benchmark\" for what each row measures. Servers were measured in interleaved rounds on one \
machine whose cores the load generator shares; ratios (to the tonic floor, in brackets) are the \
figures to compare, absolute numbers move with the machine.\n\n## Machine\n\n{}\n## Results\n\n\
{}\n## How it was measured\n\n\
- bootstrap: `--log-level info --log-format json` with logs to a file, `--concurrency 10000` \
(admission on but never refusing), default deadline, request ids, every layer on.\n\
- Unary: `h2load -t 1 -c 8 -m 16 --warm-up-time 1 -D {}` per round, {} rounds per server, \
interleaved; after each round 200 tonic SayHello calls must all return OK.\n\
- Streaming: 8 callers on 2 connections for {} s per round; a RouteChat round trip is two notes \
at a fresh location and the one-note reply.\n\
- Latency: one connection, calls started on a fixed {} req/s schedule, latency counted from the \
scheduled start.\n\
- Cold start: from spawn to the first grpc.health.v1 Check answering SERVING (polled every \
0.5 ms over a new connection); idle RSS read 100 ms later.\n\
- 1,000 streams: 10 connections, each stream has sent one note; bootstrap with \
`--concurrency 2000`.\n\
- Drain: SIGTERM to process exit; 500 idle connections each made one call first.\n\
- Drain under load: bootstrap at `--concurrency 16 --drain-timeout 2s`; h2load (2 connections \
× 16 streams), 8 tonic SayHello callers and 4 RouteChat streams (a note every 100 ms) drive it, \
then SIGTERM. \"Answered\" is every OK, RESOURCE_EXHAUSTED and server UNAVAILABLE the clients \
saw (h2load's HTTP 200s); it must equal the RPCs the drain summary counted. \"Refused\" calls \
(REFUSED_STREAM, GOAWAY, a closed connection) never reached the server.\n\
- Soak: `make soak` runs 10 minutes of mixed load and attacks and writes `bench/SOAK.md` (RSS \
and open descriptors over time, the drain summary at the end).\n",
        machine(),
        table,
        args.seconds,
        args.rounds,
        args.seconds,
        LATENCY_RATE,
    );
    std::fs::write(&args.out, report)?;
    log(&format!("wrote {}", args.out.display()));
    let _ = std::fs::remove_dir_all(&args.work);
    Ok(())
}
