"""A SIGTERM drain at the concurrency limit loses nothing: h2load and grpcio unary callers
(more than --concurrency at once) and grpcio RouteChat streams drive the binary, and every RPC
is accounted for on both sides: what the clients saw reach the server equals the drain
summary's counts, and the streams cut by the drain timeout equal rpcs_ended_unavailable.

tests/drain.rs holds the unary version in Rust; this one adds admission refusals and streams.
"""

import json
import signal
import subprocess
import threading

import grpc
import pytest
from conftest import PATIENCE_S, SCALE, Bootstrap, wait_until
from h2wire import (
    GRPC_OK,
    NO_ERROR,
    DataFrame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    RawH2,
    WindowUpdateFrame,
    grpc_frame,
    grpc_headers,
    hello_request,
)

CONCURRENCY = 16
UNARY_CALLERS = 24
STREAMS = 4
# The server's own UNAVAILABLE (drain timeout) says so; grpcio's own (no connection) does not.
SERVER_UNAVAILABLE = "the server closed this connection"


class Clients:
    """grpcio callers; each outcome is counted by (kind, status name, reached the server)."""

    def __init__(self, port):
        self.port = port
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.counts = {}
        self.details = []
        # Streams that have received a message: open on the server, not merely dialled.
        self.streams_open = 0

    def count(self, key):
        with self.lock:
            self.counts[key] = self.counts.get(key, 0) + 1

    def outcome(self, kind, err):
        if err is None:
            self.count((kind, "OK", True))
            return
        code = err.code().name
        reached = code in ("RESOURCE_EXHAUSTED", "OK") or (
            code == "UNAVAILABLE" and SERVER_UNAVAILABLE in (err.details() or "")
        )
        self.count((kind, code, reached))
        if not reached and kind == "stream":
            self.details.append(err.details())

    def unary(self):
        with grpc.insecure_channel(f"127.0.0.1:{self.port}") as channel:
            call = channel.unary_unary("/helloworld.Greeter/SayHello")
            while not self.stop.is_set():
                try:
                    call(hello_request("load"), timeout=5, wait_for_ready=False)
                    self.outcome("unary", None)
                except grpc.RpcError as err:
                    self.outcome("unary", err)
                    if err.code() == grpc.StatusCode.UNAVAILABLE:
                        return

    def stream(self):
        """One RouteChat kept open by sending a note every 100 ms until the server ends it."""
        note = b"\x12\x04soak"

        def notes():
            while not self.stop.wait(0.1):
                yield note

        with grpc.insecure_channel(f"127.0.0.1:{self.port}") as channel:
            chat = channel.stream_stream("/routeguide.RouteGuide/RouteChat")
            try:
                for i, _ in enumerate(chat(notes(), timeout=30)):
                    if i == 0:
                        with self.lock:
                            self.streams_open += 1
                self.outcome("stream", None)
            except grpc.RpcError as err:
                self.outcome("stream", err)


def h2load_counts(out):
    """h2load's `requests:` and `status codes:` lines as {name: n}."""
    counts = {}
    for line in out.splitlines():
        if line.startswith(("requests:", "status codes:")):
            for part in line.split(":", 1)[1].split(","):
                n, what = part.split()
                counts[what] = int(n)
    return counts


# The long run (ATTACK_SCALE=long) repeats the whole drain 100 times: each round is a fresh
# process, so a rare race in the accounting gets more chances to show.
@pytest.mark.parametrize("round_", range(SCALE))
def test_drain_at_the_concurrency_limit_accounts_for_every_rpc(tmp_path, round_):
    boot = Bootstrap(
        ["--concurrency", str(CONCURRENCY), "--drain-timeout", "2s", "--idle-timeout", "off"],
        tmp_path / "bootstrap.log",
    )
    body = tmp_path / "hello.grpc"
    body.write_bytes(grpc_frame(hello_request("x")))
    h2load = subprocess.Popen(
        [
            "h2load",
            "-n",
            "1000000",
            "-c",
            "2",
            "-m",
            "16",
            "-d",
            str(body),
            "-H",
            "content-type: application/grpc",
            "-H",
            "te: trailers",
            f"http://127.0.0.1:{boot.port}/helloworld.Greeter/SayHello",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    clients = Clients(boot.port)
    threads = [threading.Thread(target=clients.stream) for _ in range(STREAMS)]
    threads += [threading.Thread(target=clients.unary) for _ in range(UNARY_CALLERS)]
    for t in threads:
        t.start()
    # SIGTERM once every stream is open and the unary callers are at work.
    wait_until(
        "the streams to open and the unary load to run",
        lambda: clients.streams_open == STREAMS
        and clients.counts.get(("unary", "OK", True), 0) >= 100,
    )
    assert boot.stop(timeout=PATIENCE_S) == 0, boot.log()[-4000:]
    clients.stop.set()
    for t in threads:
        t.join(timeout=PATIENCE_S)
        assert not t.is_alive(), "a client is stuck after the server exited"
    out, _ = h2load.communicate(timeout=PATIENCE_S)
    loaded = h2load_counts(out)

    summary = next(
        json.loads(line) for line in boot.log().splitlines() if '"drain summary"' in line
    )
    reached = lambda kind: sum(  # noqa: E731
        n for (k, _, r), n in clients.counts.items() if k == kind and r
    )
    statuses = {code for (_, code, _) in clients.counts}
    # Only statuses that say "done" or "retry": nothing INTERNAL, no protocol error.
    assert statuses <= {"OK", "RESOURCE_EXHAUSTED", "UNAVAILABLE"}, clients.counts
    # Every unary RPC the server counted was answered to h2load (HTTP 200: OK or
    # RESOURCE_EXHAUSTED in trailers) or to a grpcio caller, and the other way round.
    assert summary["unary_rpcs"] == reached("unary") + loaded.get("2xx", 0), (
        summary,
        clients.counts,
        loaded,
    )
    assert summary["streaming_rpcs"] == reached("stream") == STREAMS, (
        summary,
        clients.counts,
        clients.details,
    )
    # The streams outlived the drain timeout: each was ended with UNAVAILABLE, and counted.
    assert clients.counts.get(("stream", "UNAVAILABLE", True), 0) == STREAMS
    assert summary["rpcs_ended_unavailable"] == STREAMS
    assert summary["rpcs_in_flight_at_start"] >= STREAMS


def test_window_update_on_a_stream_opened_after_the_goaway_is_ignored(tmp_path):
    """A client may open a stream while the server's final GOAWAY is on its way; the server
    ignores that stream's frames (RFC 9113, 6.8), WINDOW_UPDATE included, and the streams it did
    accept still end with their status. Unpatched h2 0.4.20 answered the WINDOW_UPDATE with
    GOAWAY PROTOCOL_ERROR and reset them (see vendor/h2/PATCHED.md)."""
    boot = Bootstrap(["--drain-timeout", "5s", "--idle-timeout", "off"], tmp_path / "boot.log")
    conn = RawH2(boot.port)
    try:
        chat = grpc_headers("/routeguide.RouteGuide/RouteChat", boot.port)
        conn.request_body(1, grpc_frame(b"\x12\x04note"), headers=chat, end_stream=False)
        conn.until(lambda f: isinstance(f, HeadersFrame) and f.stream_id == 1)

        boot.proc.send_signal(signal.SIGTERM)
        # The two-step GOAWAY: first 2^31-1 with a PING, then (once the PING is answered, which
        # RawH2 does) the last stream the server accepted.
        final = conn.until(lambda f: isinstance(f, GoAwayFrame) and f.last_stream_id == 1)
        assert final.error_code == NO_ERROR

        # Opened before we "saw" the GOAWAY, as a real client's would be, then its window grown.
        hello = grpc_headers("/helloworld.Greeter/SayHello", boot.port)
        conn.request_body(3, grpc_frame(hello_request("late")), headers=hello, end_stream=False)
        conn.send(WindowUpdateFrame(3, window_increment=65535))
        # A PING after them is answered only once the server has read them.
        conn.send(PingFrame(0, opaque_data=b"in-order"))
        conn.until(lambda f: isinstance(f, PingFrame) and f.opaque_data == b"in-order")

        # The accepted stream still runs, and ends with OK when the client ends it.
        conn.send(DataFrame(1, b"", flags=["END_STREAM"]))
        assert conn.grpc_status(1, timeout=PATIENCE_S) == GRPC_OK
        errors = [f.error_code for f in conn.frames if isinstance(f, GoAwayFrame)]
        assert errors == [NO_ERROR, NO_ERROR], errors
        assert conn.rst(1) is None
        assert 3 not in conn.headers, "the stream above the GOAWAY was served"
    finally:
        conn.close()
    assert boot.stop(timeout=PATIENCE_S) == 0, boot.log()[-4000:]
