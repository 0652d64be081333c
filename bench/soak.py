#!/usr/bin/env python3
"""Soak: runs the bootstrap under a steady mixed load for a long time and checks that its memory
and open file descriptors stay flat, then drains it with SIGTERM.

The load, all at once: h2load bursts of unary SayHello, grpcio ListFeatures streams on a
long-lived channel, a new connection every second, and every 30 s a few attacks from the
attack suite (a rapid reset burst, a slowloris connection, random bytes). VmRSS and the open fd
count are sampled every 10 s from /proc. The result goes to bench/SOAK.md.

Usage: python3 bench/soak.py [--duration 600] [--binary PATH] [--out bench/SOAK.md]
"""

import argparse
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "attacks"))

import grpc  # noqa: E402
from h2wire import (
    CANCEL,
    HeadersFrame,
    RawH2,
    RstStreamFrame,
    grpc_frame,
    grpc_headers,
    hello_request,
    varint,
)  # noqa: E402

SAMPLE_EVERY_S = 10
WARMUP_S = 60
CONCURRENCY = 32


def default_binary():
    """The static release build if `make build` made it, else the debug build."""
    static = REPO / "target" / "x86_64-unknown-linux-musl" / "release" / "bootstrap"
    return static if static.exists() else REPO / "target" / "debug" / "bootstrap"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kib(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def fd_count(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def wait_ready(port, proc, timeout=15.0):
    """Waits for GET /readyz 200, with a deadline."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"the bootstrap exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                if s.recv(64).startswith(b"HTTP/1.1 200"):
                    return
        except OSError:
            pass
        time.sleep(0.05)
    sys.exit("the bootstrap did not become ready")


def unary(channel, method):
    return channel.unary_unary(method, request_serializer=None, response_deserializer=None)


class Load:
    """The load generators, each a thread that runs until `stop` is set; counts per outcome."""

    def __init__(self, port, body_file):
        self.port = port
        self.body_file = body_file
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.counts = {}

    def count(self, what):
        with self.lock:
            self.counts[what] = self.counts.get(what, 0) + 1

    def h2load_bursts(self):
        """A burst of 2000 unary calls over 4 connections every few seconds."""
        while not self.stop.is_set():
            out = subprocess.run(
                [
                    "h2load",
                    "-n",
                    "2000",
                    "-c",
                    "4",
                    "-m",
                    "8",
                    "-d",
                    self.body_file,
                    "-H",
                    "content-type: application/grpc",
                    "-H",
                    "te: trailers",
                    f"http://127.0.0.1:{self.port}/helloworld.Greeter/SayHello",
                ],
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            self.count("h2load bursts" if out.returncode == 0 else "h2load failures")
            self.stop.wait(3)

    def streams(self):
        """ListFeatures over the whole database, back to back, on one long-lived channel."""
        # Rectangle{lo: Point{-90e7, -180e7}, hi: Point{90e7, 180e7}} covers every feature.
        lo = b"\x08" + varint(-900000000) + b"\x10" + varint(-1800000000)
        hi = b"\x08" + varint(900000000) + b"\x10" + varint(1800000000)
        rect = b"\x0a" + bytes([len(lo)]) + lo + b"\x12" + bytes([len(hi)]) + hi
        with grpc.insecure_channel(f"127.0.0.1:{self.port}") as channel:
            call = channel.unary_stream(
                "/routeguide.RouteGuide/ListFeatures",
                request_serializer=None,
                response_deserializer=None,
            )
            while not self.stop.is_set():
                try:
                    for _ in call(rect, timeout=10):
                        pass
                    self.count("streams ok")
                except grpc.RpcError as err:
                    self.count(f"streams {err.code().name}")

    def new_connections(self):
        """A fresh channel (a new TCP connection) for one SayHello, every second."""
        while not self.stop.wait(1):
            with grpc.insecure_channel(f"127.0.0.1:{self.port}") as channel:
                try:
                    unary(channel, "/helloworld.Greeter/SayHello")(hello_request("soak"), timeout=5)
                    self.count("new-connection calls ok")
                except grpc.RpcError as err:
                    self.count(f"new-connection calls {err.code().name}")

    def attacks(self):
        """Every 30 s: a rapid reset burst, a silent connection, and random bytes."""
        while not self.stop.wait(30):
            conn = RawH2(self.port)
            frames = []
            for i in range(200):
                sid = 1 + 2 * i
                block = conn.header_block(grpc_headers("/helloworld.Greeter/SayHello", self.port))
                frames += [
                    HeadersFrame(sid, block, flags=["END_HEADERS"]),
                    RstStreamFrame(sid, error_code=CANCEL),
                ]
            conn.send(*frames)
            conn.until_closed(timeout=5)
            conn.close()
            with socket.create_connection(("127.0.0.1", self.port)) as silent:
                silent.settimeout(15)
                try:
                    silent.recv(1)
                except OSError:
                    pass
            with socket.create_connection(("127.0.0.1", self.port)) as noise:
                noise.settimeout(5)
                try:
                    noise.sendall(random.randbytes(4096))
                    while noise.recv(4096):
                        pass
                except OSError:
                    pass
            self.count("attack rounds")

    def run(self):
        threads = [
            threading.Thread(target=f, daemon=True)
            for f in (self.h2load_bursts, self.streams, self.new_connections, self.attacks)
        ]
        for t in threads:
            t.start()
        return threads


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=600)
    parser.add_argument("--binary", type=Path, default=default_binary())
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "SOAK.md")
    args = parser.parse_args()

    port = free_port()
    tmp = Path(tempfile.mkdtemp(prefix="soak-"))
    body_file = tmp / "say-hello.grpc"
    body_file.write_bytes(grpc_frame(hello_request("x")))
    log_path = tmp / "bootstrap.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [
                str(args.binary),
                "--port",
                str(port),
                "--log-format",
                "json",
                "--concurrency",
                str(CONCURRENCY),
                "--handshake-timeout",
                "2s",
                "--idle-timeout",
                "5s",
                "--max-connections",
                "256",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    wait_ready(port, proc)
    fd_baseline = fd_count(proc.pid)
    started = time.monotonic()
    samples = []
    load = Load(port, str(body_file))
    threads = load.run()
    while time.monotonic() - started < args.duration:
        time.sleep(SAMPLE_EVERY_S)
        if proc.poll() is not None:
            sys.exit(f"the bootstrap died during the soak with {proc.returncode}; log: {log_path}")
        sample = (round(time.monotonic() - started), rss_kib(proc.pid), fd_count(proc.pid))
        samples.append(sample)
        print(f"t={sample[0]}s rss={sample[1]} KiB fds={sample[2]}", flush=True)
    load.stop.set()
    for t in threads:
        t.join(timeout=150)
    # Every client has gone: the connections close (idle timeout 5 s at most), so the fd count
    # must come back to where it started.
    deadline = time.monotonic() + 30
    while fd_count(proc.pid) > fd_baseline and time.monotonic() < deadline:
        time.sleep(0.5)
    fds_after = fd_count(proc.pid)
    rss_after = rss_kib(proc.pid)
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(timeout=30)
    summary = next(
        (line for line in log_path.read_text().splitlines() if '"drain summary"' in line), ""
    )
    write_report(args, samples, fd_baseline, fds_after, rss_after, code, summary, load.counts)


def write_report(args, samples, fd_baseline, fds_after, rss_after, code, summary, counts):
    after_warmup = [s for s in samples if s[0] >= WARMUP_S] or samples
    first = after_warmup[0][1]
    last = samples[-1][1]
    peak = max(s[1] for s in samples)
    flat = last <= first * 1.2 and fds_after <= fd_baseline
    shown = args.binary.relative_to(REPO) if args.binary.is_relative_to(REPO) else args.binary
    lines = [
        "# Soak",
        "",
        "Written by `bench/soak.py` (`make soak`): the bootstrap under h2load bursts, grpcio",
        "streams, a new connection per second and periodic attacks, sampled every 10 s.",
        "",
        f"- binary: `{shown}`",
        f"- duration: {args.duration:.0f} s, warm-up {WARMUP_S} s",
        f"- RSS (KiB): first after warm-up {first}, last {last}, max {peak}, "
        f"after the load {rss_after}",
        f"- open fds: baseline {fd_baseline}, max {max(s[2] for s in samples)}, "
        f"after the load {fds_after}",
        f"- verdict: **{'flat' if flat else 'NOT flat'}** "
        "(last RSS <= 1.2 x first after warm-up, fds back to baseline)",
        f"- exit code after SIGTERM: {code}",
        f"- load: {json.dumps(counts, sort_keys=True)}",
        "",
        "Drain summary:",
        "",
        "```",
        summary,
        "```",
        "",
        "| t (s) | VmRSS (KiB) | open fds |",
        "| ---: | ---: | ---: |",
        *[f"| {t} | {rss} | {fds} |" for t, rss, fds in samples],
        "",
    ]
    args.out.write_text("\n".join(lines))
    print(f"wrote {args.out}: {'flat' if flat else 'NOT flat'}")
    if not flat or code != 0:
        sys.exit(1)


if __name__ == "__main__":
    main()
