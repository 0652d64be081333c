//! Shared test helpers: start the library's server on an ephemeral port, start the real binary,
//! and speak raw HTTP/1.1 to either. Every wait here has an explicit deadline.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use bootstrap::config::InitOn;
use bootstrap::{Bootstrap, Config, Lifecycle, Phase, services};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::{Channel, Endpoint};

/// A generous bound for anything that should happen "at once" on a loaded 2-core machine.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// Runs `fut`, failing the test if it takes longer than `PATIENCE`.
pub async fn within<F: Future>(what: &str, fut: F) -> F::Output {
    tokio::time::timeout(PATIENCE, fut)
        .await
        .unwrap_or_else(|_| panic!("timed out after {PATIENCE:?}: {what}"))
}

/// A library server on 127.0.0.1:<ephemeral>.
pub struct TestServer {
    pub addr: SocketAddr,
    pub lifecycle: Lifecycle,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<bootstrap::DrainSummary, bootstrap::Error>>,
}

/// The sample services with default test configuration, initialised at start-up.
pub fn sample(config: Config) -> Bootstrap {
    services::register(Bootstrap::new(config))
}

/// A test configuration whose initialiser waits for FC's `/initialize` hook.
pub fn hook_config() -> Config {
    let mut config = Config::for_tests();
    config.init_on = InitOn::Hook;
    config
}

impl TestServer {
    /// Starts `bootstrap` on an ephemeral loopback port.
    pub async fn start(bootstrap: Bootstrap) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let lifecycle = bootstrap.lifecycle();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(bootstrap.serve(listener, async move {
            let _ = rx.await;
        }));
        TestServer {
            addr,
            lifecycle,
            shutdown: Some(tx),
            task,
        }
    }

    /// Starts the sample services and waits until they are SERVING.
    pub async fn serving() -> TestServer {
        let server = TestServer::start(sample(Config::for_tests())).await;
        within("serving", server.lifecycle.reached(Phase::Serving)).await;
        server
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A connected tonic channel.
    pub async fn channel(&self) -> Channel {
        within(
            "connect",
            Endpoint::from_shared(self.url()).unwrap().connect(),
        )
        .await
        .expect("connect")
    }

    /// Asks the server to stop and waits for `serve` to return its drain summary.
    pub async fn stop(mut self) -> bootstrap::DrainSummary {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.finished().await
    }

    /// Waits for `serve` to return (after a drain started some other way).
    pub async fn finished(mut self) -> bootstrap::DrainSummary {
        within("server stop", &mut self.task)
            .await
            .expect("server task")
            .expect("serve result")
    }
}

/// One raw HTTP/1.1 request; returns the status code and the body.
pub async fn http(addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
    http_with(addr, method, path, &[]).await
}

/// One raw HTTP/1.1 request with extra headers; returns the status code and the body.
pub async fn http_with(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, String) {
    within("http request", async {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        let mut req = format!("{method} {path} HTTP/1.1\r\nhost: test\r\nconnection: close\r\n");
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        if method == "POST" {
            req.push_str("content-length: 0\r\n");
        }
        req.push_str("\r\n");
        stream.write_all(req.as_bytes()).await.expect("write");
        let mut raw = String::new();
        stream.read_to_string(&mut raw).await.expect("read");
        let status = raw
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("not an HTTP response: {raw:?}"));
        let body = raw.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
        (status, body.to_string())
    })
    .await
}

/// The real `bootstrap` binary, started with `args` and extra environment, stdout piped.
pub struct Binary {
    pub child: Child,
    pub stdout: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    /// Every stdout line read so far.
    pub seen: Vec<String>,
}

/// Environment variables that would change the binary's behaviour if inherited from the test
/// runner's environment.
const SCRUBBED: &[&str] = &[
    "PORT",
    "FC_CUSTOM_LISTEN_PORT",
    "FC_SERVER_PORT",
    "FC_FUNCTION_NAME",
    "FC_INSTANCE_ID",
    "K_SERVICE",
    "NVCF_FUNCTION_ID",
    "RUST_LOG",
    "GOOGLE_CLOUD_PROJECT",
];

/// A `Command` for the binary with a clean platform environment.
pub fn binary_command(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_bootstrap"));
    cmd.args(args);
    for k in SCRUBBED {
        cmd.env_remove(k);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

impl Binary {
    /// Starts the binary and waits for its "listening" line.
    pub async fn start(args: &[&str], env: &[(&str, &str)]) -> Binary {
        let mut child = binary_command(args, env).spawn().expect("spawn bootstrap");
        let stdout = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let mut bin = Binary {
            child,
            stdout,
            seen: Vec::new(),
        };
        bin.wait_for_line("bootstrap listening").await;
        bin
    }

    /// Reads stdout until a line contains `needle`; returns that line.
    pub async fn wait_for_line(&mut self, needle: &str) -> String {
        if let Some(line) = self.seen.iter().find(|l| l.contains(needle)) {
            return line.clone();
        }
        within(&format!("a log line containing {needle:?}"), async {
            loop {
                match self.stdout.next_line().await.expect("read stdout") {
                    Some(line) => {
                        self.seen.push(line.clone());
                        if line.contains(needle) {
                            return line;
                        }
                    }
                    None => panic!(
                        "stdout closed before {needle:?}; saw:\n{}",
                        self.seen.join("\n")
                    ),
                }
            }
        })
        .await
    }

    /// Sends SIGTERM and waits for the exit status; collects the rest of stdout.
    pub async fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().expect("running");
        signal(pid, "TERM");
        let status = within("exit after SIGTERM", self.child.wait())
            .await
            .expect("wait");
        while let Ok(Some(line)) = self.stdout.next_line().await {
            self.seen.push(line);
        }
        status
    }
}

/// Sends a signal by name with the system's `kill`, to avoid unsafe code in tests.
pub fn signal(pid: u32, name: &str) {
    let ok = std::process::Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status()
        .expect("run kill")
        .success();
    assert!(ok, "kill -{name} {pid} failed");
}

/// A TCP port that was free a moment ago (bind port 0, read it, release it).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("ephemeral port")
}
