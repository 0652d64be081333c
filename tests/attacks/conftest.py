"""Fixtures for the attack suite: the real bootstrap binary on a free port with small limits, and
the checks every case ends with (alive, still serving a well-behaved client, memory bounded).

ATTACK_SCALE=long (`make bench-attacks`) multiplies every attack's count by 100: frames in a
flood, connections, malformed requests, drain rounds. The cases bound by the server's own timers
(a zero-window stall cut at the deadline, an idle connection's GOAWAY, the header-size limit)
run once either way: repeating them would measure the same timer again. The default is the
fast run `make test` does.
"""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

sys.path.insert(0, str(Path(__file__).resolve().parent))
from h2wire import hello_request  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
SCALE = 100 if os.environ.get("ATTACK_SCALE") == "long" else 1
# The limits the suite's server runs with: small, so the attacks reach them quickly.
MAX_CONNECTIONS = 50
HANDSHAKE_TIMEOUT_S = 1.0
CONCURRENCY = 16
TIMEOUT_S = 2.0
IDLE_TIMEOUT_S = 3.0
# The bounds every case is held to: the whole process under RSS_LIMIT_KIB, and no case leaving
# it more than RSS_GROWTH_KIB larger than it found it.
RSS_LIMIT_KIB = 64 * 1024
RSS_GROWTH_KIB = 8 * 1024
# How long "at once" may take on a loaded 2-core machine.
PATIENCE_S = 10.0


def binary():
    """BOOTSTRAP_BIN, else the static release build (`make build`), else the debug build."""
    if os.environ.get("BOOTSTRAP_BIN"):
        return Path(os.environ["BOOTSTRAP_BIN"])
    static = REPO / "target" / "x86_64-unknown-linux-musl" / "release" / "bootstrap"
    return static if static.exists() else REPO / "target" / "debug" / "bootstrap"


def free_port():
    """A TCP port nobody listens on right now (the kernel's pick, released at once)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(port, path, timeout=5.0):
    """(status, raw response) of one HTTP/1.1 GET on its own connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    return int(data.split(b" ", 2)[1]), data


class Bootstrap:
    """The bootstrap binary as a child process; its log goes to a file for the drain summary."""

    def __init__(self, args, log_path):
        self.port = free_port()
        self.log_path = log_path
        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen(
            [str(binary()), "--port", str(self.port), "--log-format", "json", *args],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self.wait_ready()

    @property
    def pid(self):
        return self.proc.pid

    def wait_ready(self):
        """Waits for GET /readyz 200, failing after PATIENCE_S."""
        deadline = time.monotonic() + PATIENCE_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"the bootstrap exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if http_get(self.port, "/readyz", timeout=1)[0] == 200:
                    return
            except (OSError, ValueError, IndexError):
                pass
            time.sleep(0.05)
        pytest.fail(f"the bootstrap was not ready within {PATIENCE_S} s:\n{self.log()}")

    def rss_kib(self):
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError("no VmRSS in /proc/PID/status")

    def fds(self):
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def log(self):
        return self.log_path.read_text(errors="replace")

    def assert_healthy(self):
        """Alive; /readyz 200 over HTTP/1.1; gRPC health SERVING and SayHello over grpcio."""
        assert self.proc.poll() is None, f"the bootstrap died:\n{self.log()[-4000:]}"
        status, raw = http_get(self.port, "/readyz")
        assert status == 200, raw
        with grpc.insecure_channel(f"127.0.0.1:{self.port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            reply = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=PATIENCE_S)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
            say = channel.unary_unary("/helloworld.Greeter/SayHello")
            reply = say(hello_request("after the attack"), timeout=PATIENCE_S)
            assert b"Hello after the attack" in reply

    def stop(self, timeout=PATIENCE_S):
        """SIGTERM, then wait for the exit; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=timeout)
                pytest.fail("the bootstrap did not exit within the drain")
        self._log.close()
        return self.proc.returncode


def wait_until(what, check, timeout=PATIENCE_S, interval=0.05):
    """Polls `check` until it returns a true value; fails the test after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout} s waiting for {what}")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One bootstrap per test module, with the suite's small limits."""
    log = tmp_path_factory.mktemp("bootstrap") / "bootstrap.log"
    boot = Bootstrap(
        [
            "--max-connections",
            str(MAX_CONNECTIONS),
            "--handshake-timeout",
            f"{HANDSHAKE_TIMEOUT_S}s",
            "--concurrency",
            str(CONCURRENCY),
            "--timeout",
            f"{TIMEOUT_S}s",
            "--idle-timeout",
            f"{IDLE_TIMEOUT_S}s",
        ],
        log,
    )
    boot.assert_healthy()
    yield boot
    assert boot.stop() == 0, boot.log()[-4000:]


@pytest.fixture
def survives(server):
    """Every attack case ends here: the server is alive, serves a well-behaved client over
    HTTP/1.1 and gRPC, and its memory stayed within the suite's bounds."""
    before = server.rss_kib()
    yield server
    server.assert_healthy()
    after = server.rss_kib()
    assert after < RSS_LIMIT_KIB, f"VmRSS {after} KiB over the {RSS_LIMIT_KIB} KiB bound"
    assert after - before < RSS_GROWTH_KIB, f"VmRSS grew from {before} to {after} KiB"
