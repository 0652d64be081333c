"""Shared helpers for the packaging tests: where the static build is, free ports, starting the
bootstrap as a process, and waiting for it with explicit deadlines.

`make test-packaging` builds the static binaries first; these tests only use what it built.
"""

import os
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
STATIC_DIR = REPO / "target" / "x86_64-unknown-linux-musl" / "release"
# A generous bound for "at once" on a loaded 2-core machine.
PATIENCE_S = 15.0


def free_port():
    """A TCP port nobody listens on right now (the kernel's pick, released at once)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(what, check, timeout=PATIENCE_S, interval=0.05):
    """Polls `check` until it returns a true value, failing the test after `timeout`."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
        except (OSError, urllib.error.URLError) as err:
            last = err
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout} s waiting for {what} (last error: {last})")


def http(method, url, timeout=5.0):
    """(status, body) of an HTTP/1.1 request; error statuses are returned, not raised."""
    request = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def listening(port):
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


class Bootstrap:
    """The static bootstrap as a child process, its output collected in a file."""

    def __init__(self, args=(), env=None, port=None, tmp=None, argv0=None):
        self.port = port or free_port()
        self.log_path = Path(tmp) / f"bootstrap-{self.port}.log"
        full_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
        full_env.update(env or {})
        cmd = argv0 or [str(STATIC_DIR / "bootstrap")]
        if "FC_CUSTOM_LISTEN_PORT" not in full_env:
            cmd = cmd + ["--port", str(self.port)]
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            cmd + list(args), env=full_env, stdout=self._log, stderr=subprocess.STDOUT
        )
        wait_until(f"the bootstrap to listen on {self.port}", lambda: self._alive_and(self.port))

    def _alive_and(self, port):
        if self.proc.poll() is not None:
            pytest.fail(f"the bootstrap exited with {self.proc.returncode}:\n{self.log()}")
        return listening(port)

    def url(self, path):
        return f"http://127.0.0.1:{self.port}{path}"

    def log(self):
        return self.log_path.read_text(errors="replace")

    def wait(self, timeout=PATIENCE_S):
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the bootstrap did not exit within {timeout} s:\n{self.log()}")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=PATIENCE_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


@pytest.fixture(scope="session")
def static_bin():
    binary = STATIC_DIR / "bootstrap"
    if not binary.is_file():
        pytest.fail(f"{binary} is missing: run `make build` (make test-packaging does)")
    return binary


@pytest.fixture(scope="session")
def static_client():
    binary = STATIC_DIR / "client"
    if not binary.is_file():
        pytest.fail(f"{binary} is missing: run `make build` (make test-packaging does)")
    return binary


@pytest.fixture
def bootstrap_process(static_bin, tmp_path):
    """A factory for bootstrap processes; each is stopped at the end of the test."""
    started = []

    def start(*args, **kwargs):
        b = Bootstrap(*args, tmp=tmp_path, **kwargs)
        started.append(b)
        return b

    yield start
    for b in started:
        b.stop()
