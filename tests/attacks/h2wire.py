"""Hand-made HTTP/2 frames for the attack suite and the soak.

A hostile client does what no well-behaved library lets it do (reset every stream at once, never
end a header block, overflow a window), so the attacks write frames themselves: hyperframe (the
`h2` package's frame layer) builds and parses them, and hpack encodes the header blocks. Every
read has a deadline, so a server that stops answering fails a test instead of hanging it.
"""

import socket
import struct
import time

import hpack

# The frame classes, re-exported: the tests build their frames from this module's names.
from hyperframe.frame import (  # noqa: F401
    ContinuationFrame,
    DataFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
# The largest frame payload a peer must accept before it says otherwise.
MAX_FRAME = 16384

# Error codes (RFC 9113, section 7).
NO_ERROR = 0x0
PROTOCOL_ERROR = 0x1
INTERNAL_ERROR = 0x2
FLOW_CONTROL_ERROR = 0x3
FRAME_SIZE_ERROR = 0x6
REFUSED_STREAM = 0x7
CANCEL = 0x8
COMPRESSION_ERROR = 0x9
ENHANCE_YOUR_CALM = 0xB

# gRPC status codes the suite asserts.
GRPC_OK = 0
GRPC_DEADLINE_EXCEEDED = 4
GRPC_RESOURCE_EXHAUSTED = 8
GRPC_UNIMPLEMENTED = 12
GRPC_INTERNAL = 13
GRPC_UNAVAILABLE = 14


def hello_request(name):
    """A helloworld.HelloRequest{name} encoded as protobuf bytes (field 1, length-delimited)."""
    raw = name.encode() if isinstance(name, str) else name
    return b"\x0a" + varint(len(raw)) + raw


def varint(n):
    """Protobuf's base-128 varint; a negative int32 takes ten bytes (two's complement on 64 bits)."""
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def grpc_frame(message, compressed=False):
    """One gRPC length-prefixed message: flag byte, 4-byte big-endian length, the bytes."""
    return struct.pack(">BI", 1 if compressed else 0, len(message)) + message


def grpc_headers(path, port, content_type="application/grpc", extra=()):
    """The request headers of a gRPC call (pseudo-headers first, as HTTP/2 requires)."""
    return [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", path),
        (":authority", f"127.0.0.1:{port}"),
        ("content-type", content_type),
        ("te", "trailers"),
        *extra,
    ]


class Closed(Exception):
    """The server closed the connection (EOF or reset) before what we waited for came."""


class RawH2:
    """One HTTP/2 connection written frame by frame; the server's frames are parsed as they come.

    Every frame received is kept in `frames`; header blocks are decoded in order (the HPACK
    dynamic table requires it) into `headers[stream_id]`, a list of header lists.
    """

    def __init__(self, port, settings=None, handshake=True, timeout=5.0):
        self.port = port
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.frames = []
        self.headers = {}
        self.data = {}
        self.closed = False
        self.blocked = False
        self.encoder = hpack.Encoder()
        self.decoder = hpack.Decoder()
        # The server may send long header lists back only as far as we allow; allow a lot.
        self.decoder.max_header_list_size = 1 << 20
        self.ack_settings = True
        if handshake:
            self.send_raw(PREFACE + SettingsFrame(0, settings or {}).serialize())

    # Sending.

    def send_raw(self, data):
        """Writes bytes; False instead of raising when the connection is closed (`closed`) or
        the write timed out because the server stopped reading (`blocked`)."""
        try:
            self.sock.sendall(data)
            return True
        except socket.timeout:
            # The server stopped reading: its receive buffer and ours are full.
            self.blocked = True
            return False
        except (BrokenPipeError, ConnectionResetError, OSError):
            self.closed = True
            return False

    def send(self, *frames):
        return self.send_raw(b"".join(f.serialize() for f in frames))

    def header_block(self, headers):
        return self.encoder.encode(headers)

    def request(self, stream_id, headers, body=None, end_stream=True):
        """HEADERS (and `body` in DATA frames), ending the stream when asked."""
        if body is not None:
            return self.request_body(stream_id, body, headers=headers, end_stream=end_stream)
        flags = ["END_HEADERS", "END_STREAM"] if end_stream else ["END_HEADERS"]
        return self.send(HeadersFrame(stream_id, self.header_block(headers), flags=flags))

    def request_body(self, stream_id, body, headers=None, end_stream=True):
        """The request's DATA, in frames no larger than the default SETTINGS_MAX_FRAME_SIZE,
        ending the stream when asked; its HEADERS first when `headers` is given."""
        frames = []
        if headers is not None:
            block = self.header_block(headers)
            frames.append(HeadersFrame(stream_id, block, flags=["END_HEADERS"]))
        chunks = [body[i : i + MAX_FRAME] for i in range(0, len(body), MAX_FRAME)] or [b""]
        for i, chunk in enumerate(chunks):
            last = i == len(chunks) - 1
            flags = ["END_STREAM"] if last and end_stream else []
            frames.append(DataFrame(stream_id, chunk, flags=flags))
        return self.send(*frames)

    def grpc_call(self, stream_id, path, message, content_type="application/grpc", extra=()):
        """A unary gRPC request on `stream_id`; `message` is the raw DATA payload."""
        headers = grpc_headers(path, self.port, content_type, extra)
        return self.request(stream_id, headers, body=message)

    # Receiving.

    def _read_frame(self, deadline):
        while True:
            if len(self.buf) >= 9:
                length = int.from_bytes(self.buf[:3], "big")
                if len(self.buf) >= 9 + length:
                    head, body = self.buf[:9], self.buf[9 : 9 + length]
                    self.buf = self.buf[9 + length :]
                    frame, _ = Frame.parse_frame_header(memoryview(head))
                    frame.parse_body(memoryview(body))
                    return frame
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no complete frame before the deadline")
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                raise TimeoutError("no complete frame before the deadline") from None
            except (ConnectionResetError, OSError):
                chunk = b""
            if not chunk:
                self.closed = True
                raise Closed()
            self.buf += chunk

    def next_frame(self, deadline):
        """The next frame, with its header block decoded and the server's SETTINGS acked."""
        frame = self._read_frame(deadline)
        self.frames.append(frame)
        if isinstance(frame, (HeadersFrame, ContinuationFrame)):
            # The server never splits its (small) header blocks, so each HEADERS is complete.
            block = self.decoder.decode(frame.data, raw=False)
            self.headers.setdefault(frame.stream_id, []).append(dict(block))
        elif isinstance(frame, DataFrame):
            self.data[frame.stream_id] = self.data.get(frame.stream_id, b"") + frame.data
        elif isinstance(frame, SettingsFrame) and "ACK" not in frame.flags and self.ack_settings:
            self.send(SettingsFrame(0, flags=["ACK"]))
        elif isinstance(frame, PingFrame) and "ACK" not in frame.flags:
            # hyper's graceful GOAWAY waits for the answer to its PING before it closes.
            self.send(PingFrame(0, opaque_data=frame.opaque_data, flags=["ACK"]))
        return frame

    def until(self, wanted, timeout=5.0):
        """Reads until `wanted(frame)` holds; returns that frame. Raises Closed or TimeoutError."""
        deadline = time.monotonic() + timeout
        while True:
            frame = self.next_frame(deadline)
            if wanted(frame):
                return frame

    def count_until(self, wanted, n, timeout=5.0):
        """Reads until `n` frames matching `wanted` have arrived in all; returns the count."""
        deadline = time.monotonic() + timeout
        seen = sum(1 for f in self.frames if wanted(f))
        while seen < n:
            if wanted(self.next_frame(deadline)):
                seen += 1
        return seen

    def forget(self):
        """Drops the frames kept so far (a long flood would otherwise fill the test's memory)."""
        self.frames = []

    def until_closed(self, timeout=5.0):
        """Reads until the server closes the connection; returns True if it did in time."""
        deadline = time.monotonic() + timeout
        try:
            while True:
                self.next_frame(deadline)
        except Closed:
            return True
        except TimeoutError:
            return False

    def goaway(self):
        """The first GOAWAY received so far, or None."""
        return next((f for f in self.frames if isinstance(f, GoAwayFrame)), None)

    def rst(self, stream_id):
        """The RST_STREAM received for `stream_id`, or None."""
        return next(
            (f for f in self.frames if isinstance(f, RstStreamFrame) and f.stream_id == stream_id),
            None,
        )

    def response(self, stream_id, timeout=5.0):
        """Waits for the stream to end (END_STREAM or RST_STREAM) and returns
        (response headers, trailers or None, RST_STREAM code or None)."""

        def ended(frame):
            return frame.stream_id == stream_id and (
                "END_STREAM" in frame.flags or isinstance(frame, RstStreamFrame)
            )

        if not any(ended(f) for f in self.frames):
            self.until(ended, timeout)
        blocks = self.headers.get(stream_id, [])
        rst = self.rst(stream_id)
        head = blocks[0] if blocks else {}
        trailers = blocks[1] if len(blocks) > 1 else None
        return head, trailers, rst.error_code if rst else None

    def grpc_status(self, stream_id, timeout=5.0):
        """The grpc-status of a finished call: from the trailers, or from a trailers-only
        response (headers with END_STREAM). None if the stream was reset."""
        head, trailers, _ = self.response(stream_id, timeout)
        source = trailers if trailers is not None else head
        value = source.get("grpc-status")
        return int(value) if value is not None else None

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass
