"""Hostile input against the real binary: HTTP/2 floods and resets, slow and silent clients,
too many connections, malformed gRPC, and garbage on the port.

Each case asserts its own outcome (a status, a GOAWAY code, a closed connection: the README's
"Hostile input" table), and the `survives` fixture then checks that the server is alive, still
answers HTTP/1.1 and gRPC, and kept its memory bounded.
"""

import random
import socket
import time

import pytest
from conftest import (
    HANDSHAKE_TIMEOUT_S,
    IDLE_TIMEOUT_S,
    MAX_CONNECTIONS,
    PATIENCE_S,
    SCALE,
    TIMEOUT_S,
)
from h2wire import (
    CANCEL,
    ENHANCE_YOUR_CALM,
    FLOW_CONTROL_ERROR,
    GRPC_INTERNAL,
    GRPC_OK,
    GRPC_UNIMPLEMENTED,
    NO_ERROR,
    PREFACE,
    PROTOCOL_ERROR,
    ContinuationFrame,
    HeadersFrame,
    PingFrame,
    RawH2,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
    grpc_frame,
    grpc_headers,
    hello_request,
)

SAY_HELLO = "/helloworld.Greeter/SayHello"
# The SETTINGS_MAX_HEADER_LIST_SIZE the server advertises (src/server.rs).
MAX_HEADER_LIST_SIZE = 16 * 1024


def closed_within(sock, seconds):
    """Reads until the peer closes; returns (seconds it took, bytes received) or fails."""
    sock.settimeout(seconds)
    started = time.monotonic()
    data = b""
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    except ConnectionResetError:
        pass
    except socket.timeout:
        pytest.fail(f"still open after {seconds} s (received {data[:200]!r})")
    return time.monotonic() - started, data


def connect(port):
    return socket.create_connection(("127.0.0.1", port), timeout=PATIENCE_S)


# HTTP/2 resets and floods.


def test_rapid_reset_gets_goaway_enhance_your_calm(survives):
    """CVE-2023-44487: streams opened and cancelled at once, in bulk. h2 counts streams the
    peer reset before the server accepted them and answers GOAWAY ENHANCE_YOUR_CALM."""
    conn = RawH2(survives.port)
    sid = 1
    for _ in range(50 * SCALE):
        frames = []
        for _ in range(100):
            block = conn.header_block(grpc_headers(SAY_HELLO, survives.port))
            frames += [
                HeadersFrame(sid, block, flags=["END_HEADERS"]),
                RstStreamFrame(sid, error_code=CANCEL),
            ]
            sid += 2
        if not conn.send(*frames):
            break
    assert conn.until_closed(PATIENCE_S), "the connection stayed open"
    goaway = conn.goaway()
    assert goaway is not None and goaway.error_code == ENHANCE_YOUR_CALM, conn.frames[-5:]
    assert bytes(goaway.additional_data) == b"too_many_resets"


def test_continuation_flood_gets_goaway_enhance_your_calm(survives):
    """A header block that never ends: CONTINUATION frames without END_HEADERS."""
    conn = RawH2(survives.port)
    conn.send(HeadersFrame(1, conn.header_block(grpc_headers(SAY_HELLO, survives.port))))
    junk = conn.header_block([("x-junk", "j" * 16000)])
    for _ in range(2000 * SCALE):
        if not conn.send(ContinuationFrame(1, junk)):
            break
    assert conn.until_closed(PATIENCE_S), "the connection stayed open"
    goaway = conn.goaway()
    assert goaway is not None and goaway.error_code == ENHANCE_YOUR_CALM
    assert bytes(goaway.additional_data) == b"too_many_continuations"


def split_headers(conn, sid, headers, end_stream=False):
    """A header block too big for one frame: HEADERS then CONTINUATION, 16 KiB each."""
    block = conn.header_block(headers)
    pieces = [block[i : i + 16000] for i in range(0, len(block), 16000)]
    frames = []
    for i, piece in enumerate(pieces):
        flags = ["END_HEADERS"] if i == len(pieces) - 1 else []
        if i == 0:
            frames.append(
                HeadersFrame(sid, piece, flags=flags + (["END_STREAM"] if end_stream else []))
            )
        else:
            frames.append(ContinuationFrame(sid, piece, flags=flags))
    return frames


def test_header_list_limit_is_advertised_and_enforced(survives):
    """SETTINGS_MAX_HEADER_LIST_SIZE = 16 KiB. A request under it works; one over it gets a
    431 response and RST_STREAM PROTOCOL_ERROR, and the connection serves on."""
    conn = RawH2(survives.port)
    settings = conn.until(lambda f: isinstance(f, SettingsFrame) and "ACK" not in f.flags)
    assert settings.settings[SettingsFrame.MAX_HEADER_LIST_SIZE] == MAX_HEADER_LIST_SIZE
    body = grpc_frame(hello_request("x"))
    under = grpc_headers(SAY_HELLO, survives.port, extra=[("x-big", "a" * 12000)])
    conn.send(*split_headers(conn, 1, under))
    conn.request_body(1, body)
    assert conn.grpc_status(1) == GRPC_OK
    over = grpc_headers(SAY_HELLO, survives.port, extra=[("x-big", "a" * 17000)])
    conn.send(*split_headers(conn, 3, over))
    conn.request_body(3, body)
    head, _, _ = conn.response(3)
    assert head.get(":status") == "431", head
    if conn.rst(3) is None:
        conn.until(lambda f: isinstance(f, RstStreamFrame) and f.stream_id == 3)
    assert conn.rst(3).error_code == PROTOCOL_ERROR
    conn.request_body(5, body, headers=grpc_headers(SAY_HELLO, survives.port))
    assert conn.grpc_status(5) == GRPC_OK
    assert conn.goaway() is None
    conn.close()


def test_header_block_far_over_the_limit_gets_goaway(survives):
    """A header block several times the limit needs more CONTINUATION frames than h2 allows for
    it: GOAWAY ENHANCE_YOUR_CALM, as for the CONTINUATION flood. The long run sends 100 of them,
    each on its own connection (the first one ends its connection)."""
    for _ in range(SCALE):
        conn = RawH2(survives.port)
        over = grpc_headers(SAY_HELLO, survives.port, extra=[("x-big", "a" * 100_000)])
        conn.send(*split_headers(conn, 1, over))
        assert conn.until_closed(PATIENCE_S)
        goaway = conn.goaway()
        assert goaway is not None and goaway.error_code == ENHANCE_YOUR_CALM, goaway
        conn.close()


def is_ack(kind):
    return lambda f: isinstance(f, kind) and "ACK" in f.flags


def flood(conn, frame, batches, answer=None):
    """Sends `frame` 1000 times per batch; with `answer`, reads the 1000 answers after each
    batch, as a client that reads would, then makes a call on the flooded connection (which
    also keeps it from going idle through a long flood)."""
    raw = frame.serialize() * 1000
    for batch in range(batches):
        assert conn.send_raw(raw), "the server closed the connection during the flood"
        if answer is not None:
            conn.count_until(answer, 1000, timeout=PATIENCE_S)
            sid = 1 + 2 * batch
            conn.grpc_call(sid, SAY_HELLO, grpc_frame(hello_request("flooded")))
            assert conn.grpc_status(sid, timeout=PATIENCE_S) == GRPC_OK
            conn.forget()


def test_settings_flood_is_acked_and_served(survives):
    """Thousands of SETTINGS frames: each is acknowledged; the connection serves on."""
    conn = RawH2(survives.port)
    conn.until(is_ack(SettingsFrame))
    conn.forget()
    frame = SettingsFrame(0, {SettingsFrame.INITIAL_WINDOW_SIZE: 65535})
    flood(conn, frame, 10 * SCALE, answer=is_ack(SettingsFrame))
    assert conn.goaway() is None
    conn.close()


def test_ping_flood_is_answered_and_served(survives):
    """Thousands of PINGs: h2 answers each and the connection serves on."""
    conn = RawH2(survives.port)
    flood(conn, PingFrame(0, opaque_data=b"attack!!"), 10 * SCALE, answer=is_ack(PingFrame))
    assert conn.goaway() is None
    conn.close()


@pytest.mark.parametrize("kind", [SettingsFrame, PingFrame])
def test_flood_that_never_reads_the_answers_is_backpressured(survives, kind):
    """A flood whose sender never reads the ACKs: once its socket buffer is full the server
    stops reading the flood (it does not queue answers without bound), so the sender blocks;
    memory stays flat. The connection is then abandoned."""
    conn = RawH2(survives.port, timeout=2.0)
    frame = SettingsFrame(0, {}) if kind is SettingsFrame else PingFrame(0, opaque_data=b"no-read!")
    raw = frame.serialize() * 10_000
    before = survives.rss_kib()
    sent = 0
    # Each write either completes or times out once the server no longer reads.
    while sent < 1000 * SCALE and conn.send_raw(raw):
        sent += 1
    assert (
        conn.blocked and not conn.closed
    ), f"the server read {sent * len(raw)} bytes of a flood nobody reads answers to"
    assert survives.rss_kib() - before < 8 * 1024
    conn.close()


def test_window_update_flood_then_overflow(survives):
    """WINDOW_UPDATE by 1, thousands of times, is harmless; pushing a window past 2^31-1 is
    RST_STREAM FLOW_CONTROL_ERROR on a stream, GOAWAY FLOW_CONTROL_ERROR on the connection."""
    conn = RawH2(survives.port)
    flood(conn, WindowUpdateFrame(0, window_increment=1), 10 * SCALE)
    conn.grpc_call(1, SAY_HELLO, grpc_frame(hello_request("x")))
    assert conn.grpc_status(1, timeout=PATIENCE_S) == GRPC_OK
    # A stream's window: the stream is reset, the connection lives.
    conn.request(3, grpc_headers(SAY_HELLO, survives.port), end_stream=False)
    conn.send(WindowUpdateFrame(3, window_increment=2**31 - 1))
    conn.until(lambda f: isinstance(f, RstStreamFrame) and f.stream_id == 3)
    assert conn.rst(3).error_code == FLOW_CONTROL_ERROR
    # The connection's window: GOAWAY and close.
    conn.send(WindowUpdateFrame(0, window_increment=2**31 - 1))
    assert conn.until_closed(PATIENCE_S)
    assert conn.goaway().error_code == FLOW_CONTROL_ERROR


def test_zero_window_stall_is_cut_after_the_deadline(survives):
    """A client that never opens its window: SETTINGS_INITIAL_WINDOW_SIZE = 0 and 16 calls
    (the whole --concurrency) whose 60 KB answers cannot be sent. Past --timeout plus a grace
    the server closes that connection, which frees the admission slots; meanwhile memory stays
    bounded by what was buffered."""
    conn = RawH2(survives.port, settings={SettingsFrame.INITIAL_WINDOW_SIZE: 0})
    conn.until(lambda f: isinstance(f, WindowUpdateFrame) and f.stream_id == 0)
    started = time.monotonic()
    for sid in range(1, 33, 2):
        conn.grpc_call(sid, SAY_HELLO, grpc_frame(hello_request("y" * 60_000)))
    # Deadline (--timeout less its margin), the stall grace (1 s), the close grace (1 s).
    assert conn.until_closed(TIMEOUT_S + 2 + PATIENCE_S), "the stalled connection stayed open"
    took = time.monotonic() - started
    assert TIMEOUT_S < took < TIMEOUT_S + 2 + PATIENCE_S, took


# Slow and silent clients.


@pytest.mark.parametrize(
    "sent",
    [b"", PREFACE[:10], b"GET /readyz HTTP/1.1\r\nHost: x\r\n"],
    ids=["nothing", "partial-preface", "partial-http1-head"],
)
def test_slowloris_is_closed_after_the_handshake_timeout(survives, sent):
    """A connection that does not complete its handshake is closed after --handshake-timeout,
    with no answer (HTTP/1.1: hyper's header read timeout, also silent). 10 connections at
    once; the long run makes 1,000, in waves that stay under --max-connections (beyond it a
    connection is closed at once, which is another case)."""
    total = 10 * SCALE
    wave_size = min(total, MAX_CONNECTIONS - 10)
    for first in range(0, total, wave_size):
        started = time.monotonic()
        socks = [connect(survives.port) for _ in range(min(wave_size, total - first))]
        for s in socks:
            s.sendall(sent)
        for s in socks:
            _, data = closed_within(s, HANDSHAKE_TIMEOUT_S + PATIENCE_S)
            assert data == b"", data[:200]
            s.close()
        took = time.monotonic() - started
        assert HANDSHAKE_TIMEOUT_S * 0.9 <= took < HANDSHAKE_TIMEOUT_S + PATIENCE_S, took
        # The server frees each permit when it notices the close.
        survives.wait_ready()


def test_idle_http2_connection_gets_goaway_no_error(survives):
    """A completed handshake that then opens no stream: GOAWAY NO_ERROR after --idle-timeout."""
    conn = RawH2(survives.port)
    assert conn.until_closed(IDLE_TIMEOUT_S + PATIENCE_S)
    assert conn.goaway().error_code == NO_ERROR


def test_connections_beyond_the_limit_are_closed_at_once(survives):
    """--max-connections HTTP/2 connections are held open; more are closed as soon as they are
    accepted, and the ones held still serve."""
    held = [RawH2(survives.port) for _ in range(MAX_CONNECTIONS)]
    for conn in held:
        conn.until(lambda f: isinstance(f, SettingsFrame) and "ACK" in f.flags)
    for _ in range(20 * SCALE):
        extra = connect(survives.port)
        took, data = closed_within(extra, PATIENCE_S)
        assert data == b"" and took < PATIENCE_S
        extra.close()
    held[0].grpc_call(1, SAY_HELLO, grpc_frame(hello_request("held")))
    assert held[0].grpc_status(1) == GRPC_OK
    for conn in held:
        conn.close()
    # The permits come back as the server notices the closes.
    survives.wait_ready()


# Malformed gRPC.

MALFORMED = [
    # (case, content-type, extra headers, DATA payload, expected grpc-status)
    (
        "length-beyond-body",
        "application/grpc",
        (),
        b"\x00\x00\x00\x03\xe8" + b"\x0a\x01x",
        GRPC_INTERNAL,
    ),
    ("truncated-prefix", "application/grpc", (), b"\x00\x00\x00", GRPC_INTERNAL),
    (
        "compressed-without-encoding",
        "application/grpc",
        (),
        grpc_frame(hello_request("x"), compressed=True),
        GRPC_INTERNAL,
    ),
    (
        "unsupported-encoding",
        "application/grpc",
        (("grpc-encoding", "gzip"),),
        grpc_frame(b"\x1f\x8b", compressed=True),
        GRPC_UNIMPLEMENTED,
    ),
    (
        "invalid-protobuf",
        "application/grpc",
        (),
        grpc_frame(b"\xff\xff\xff\xff\xff"),
        GRPC_INTERNAL,
    ),
    ("length-over-max-message", "application/grpc", (), b"\x00\xff\xff\xff\xff", 11),
    ("unknown-service", "application/grpc", (), grpc_frame(b""), GRPC_UNIMPLEMENTED),
    ("unknown-method", "application/grpc", (), grpc_frame(b""), GRPC_UNIMPLEMENTED),
    (
        "bad-grpc-timeout",
        "application/grpc",
        (("grpc-timeout", "soon"),),
        grpc_frame(hello_request("x")),
        GRPC_OK,
    ),
]
PATHS = {"unknown-service": "/no.Such/Thing", "unknown-method": "/helloworld.Greeter/Nope"}


@pytest.mark.parametrize(
    "case,ctype,extra,payload,expected", MALFORMED, ids=[m[0] for m in MALFORMED]
)
def test_malformed_grpc_gets_a_status(survives, case, ctype, extra, payload, expected):
    """Each malformed call ends with a grpc-status in trailers (never a reset or a GOAWAY), and
    the connection serves the next one (the long run sends 100 on one connection)."""
    conn = RawH2(survives.port)
    for sid in range(1, 2 * SCALE, 2):
        conn.grpc_call(sid, PATHS.get(case, SAY_HELLO), payload, content_type=ctype, extra=extra)
        head, trailers, rst = conn.response(sid, timeout=PATIENCE_S)
        assert rst is None and head.get(":status") == "200", (head, rst)
        assert conn.grpc_status(sid) == expected, (head, trailers)
        assert conn.goaway() is None
        conn.forget()
    conn.close()


def test_wrong_content_type_goes_to_the_http_router(survives):
    """A POST over HTTP/2 that is not gRPC (application/json) is plain HTTP: 404."""
    conn = RawH2(survives.port)
    conn.grpc_call(1, SAY_HELLO, b'{"name":"x"}', content_type="application/json")
    head, _, rst = conn.response(1)
    assert head.get(":status") == "404" and rst is None
    conn.close()


# Garbage on the port.


def test_random_bytes_get_400_and_close(survives):
    """Random bytes are not an HTTP/2 preface, so hyper parses HTTP/1.1: 400, then close."""
    rng = random.Random(44487)
    for _ in range(5 * SCALE):
        with connect(survives.port) as s:
            s.sendall(bytes(rng.randrange(256) for _ in range(4096)))
            _, data = closed_within(s, PATIENCE_S)
            assert data == b"" or data.startswith(b"HTTP/1.1 400"), data[:200]


@pytest.mark.parametrize(
    "garbage,answer",
    [
        (b"GET / HTTP/1.1\r\nno colon here\r\n\r\n", b"HTTP/1.1 400"),
        (b"BREW /pot HTCPCP/1.0\r\n\r\n", b"HTTP/1.1 400"),
        (b"GET /" + b"a" * 1_000_000 + b" HTTP/1.1\r\n\r\n", b"HTTP/1.1 431"),
        (b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X-A: b\r\n" * 200 + b"\r\n", b"HTTP/1.1 431"),
    ],
    ids=["bad-header", "bad-method-line", "huge-request-line", "too-many-headers"],
)
def test_http1_garbage_gets_an_error_and_close(survives, garbage, answer):
    """Broken HTTP/1.1 gets hyper's error response and the connection is closed (the long run:
    100 connections in turn)."""
    for _ in range(SCALE):
        with connect(survives.port) as s:
            try:
                s.sendall(garbage)
            except (BrokenPipeError, ConnectionResetError):
                pass
            _, data = closed_within(s, PATIENCE_S)
            assert data.startswith(answer), data[:200]


def test_garbage_after_the_preface_gets_goaway(survives):
    """A valid preface followed by noise: GOAWAY (a frame-level error) and close."""
    with connect(survives.port) as s:
        s.sendall(PREFACE + b"\x00\x00\x04\x04\x00\x00\x00\x00\x00" + b"\xff" * 64)
        _, data = closed_within(s, PATIENCE_S)
    # The server's own SETTINGS come first; a GOAWAY frame (type 7) must be among the frames.
    kinds = []
    while len(data) >= 9:
        length = int.from_bytes(data[:3], "big")
        kinds.append(data[3])
        data = data[9 + length :]
    assert 0x7 in kinds, kinds
