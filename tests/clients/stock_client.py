#!/usr/bin/env python3
"""Stock gRPC client check: calls the sample services with Python's official grpcio.

The bootstrap claims wire compatibility with gRPC's canonical helloworld and route_guide
examples; this script is the proof from an independent implementation. It compiles the repo's
own proto/*.proto at run time (grpcio-tools), so it never drifts from the server's contract,
and it takes its expectations for the feature database from src/services/route_guide_db.json,
the very file the server embeds.

Usage:
    python3 tests/clients/stock_client.py --addr 127.0.0.1:PORT [--proto-dir proto]
        [--tls-ca FILE [--server-name NAME]]

Plaintext (h2c) by default, as against the bootstrap itself; with --tls-ca it speaks TLS, trusting
the certificates in FILE, as against a TLS-terminating gateway (FC's, Cloud Run's, or nginx in
the packaging tests); --server-name checks the certificate against NAME instead of the host.

Needs: pip install grpcio grpcio-tools (and grpcio-health-checking for the health check,
which is skipped when that package is missing). Prints one line per check; exits 0 only if
every check passed, 1 if any failed, 2 if the client could not be set up or reach the server.
"""

import argparse
import json
import math
import random
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
DEADLINE_S = 10.0
EARTH_RADIUS_M = 6371000.0

# The test rectangle documented for the Rust tests too: opposite corners, E7 degrees.
RECT_LO = (473000000, 85000000)
RECT_HI = (474000000, 86000000)


def fatal(message):
    print(f"ERROR: {message}", file=sys.stderr)
    sys.exit(2)


def load_stubs(proto_dir):
    """Compiles the protos in proto_dir into (messages, services) module pairs."""
    try:
        import grpc
    except ImportError:
        fatal("grpcio is not installed: pip install grpcio grpcio-tools")

    if not (proto_dir / "helloworld.proto").is_file():
        fatal(f"{proto_dir} has no helloworld.proto; pass --proto-dir")
    # grpc.protos_and_services resolves proto files (and their imports) through sys.path.
    sys.path.insert(0, str(proto_dir))
    try:
        hello = grpc.protos_and_services("helloworld.proto")
        route = grpc.protos_and_services("route_guide.proto")
    except (ImportError, NotImplementedError) as err:
        fatal(f"cannot compile protos at run time (is grpcio-tools installed?): {err}")
    return grpc, hello, route


def load_health():
    try:
        from grpc_health.v1 import health_pb2, health_pb2_grpc
    except ImportError:
        return None
    return health_pb2, health_pb2_grpc


def load_features(db_path):
    try:
        rows = json.loads(db_path.read_text())
    except (OSError, ValueError) as err:
        fatal(f"cannot read the feature database {db_path}: {err}")
    return [
        (row["location"]["latitude"], row["location"]["longitude"], row["name"]) for row in rows
    ]


def haversine_m(a, b):
    lat1, lat2 = math.radians(a[0] / 1e7), math.radians(b[0] / 1e7)
    dlat = lat2 - lat1
    dlon = math.radians(b[1] / 1e7 - a[1] / 1e7)
    h = math.sin(dlat / 2) ** 2 + math.cos(lat1) * math.cos(lat2) * math.sin(dlon / 2) ** 2
    return EARTH_RADIUS_M * 2 * math.atan2(math.sqrt(h), math.sqrt(1 - h))


class Checker:
    """Runs named checks, printing one line each, and remembers whether all passed."""

    def __init__(self, grpc):
        self.grpc = grpc
        self.failed = []

    def run(self, name, check):
        try:
            detail = check()
        except AssertionError as err:
            self._fail(name, str(err))
        except self.grpc.RpcError as err:
            self._fail(name, f"RPC failed: {err.code()} {err.details()!r}")
        else:
            print(f"PASS {name}: {detail}")

    def _fail(self, name, why):
        self.failed.append(name)
        print(f"FAIL {name}: {why}")


def open_channel(grpc, args):
    """A plaintext channel, or with --tls-ca a TLS one trusting only that CA."""
    if not args.tls_ca:
        return grpc.insecure_channel(args.addr)
    try:
        ca = args.tls_ca.read_bytes()
    except OSError as err:
        fatal(f"cannot read {args.tls_ca}: {err}")
    credentials = grpc.ssl_channel_credentials(root_certificates=ca)
    options = []
    if args.server_name:
        options.append(("grpc.ssl_target_name_override", args.server_name))
    return grpc.secure_channel(args.addr, credentials, options=options)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--addr", required=True, help="host:port of the server")
    parser.add_argument(
        "--tls-ca", type=Path, help="use TLS, trusting the PEM certificates in this file"
    )
    parser.add_argument(
        "--server-name", help="with --tls-ca: the name the certificate must carry (SNI too)"
    )
    parser.add_argument(
        "--proto-dir", type=Path, default=REPO_ROOT / "proto", help="directory of the .proto files"
    )
    parser.add_argument(
        "--db",
        type=Path,
        default=REPO_ROOT / "src" / "services" / "route_guide_db.json",
        help="the feature database the server embeds",
    )
    args = parser.parse_args()
    if args.server_name and not args.tls_ca:
        parser.error("--server-name needs --tls-ca")

    grpc, (hello_pb2, hello_grpc), (route_pb2, route_grpc) = load_stubs(args.proto_dir.resolve())
    health = load_health()
    features = load_features(args.db)
    named = [f for f in features if f[2]]
    unnamed = [f for f in features if not f[2]]
    if not named or not unnamed:
        fatal(f"{args.db} needs both named and unnamed features for these checks")

    channel = open_channel(grpc, args)
    try:
        grpc.channel_ready_future(channel).result(timeout=DEADLINE_S)
    except grpc.FutureTimeoutError:
        fatal(f"could not connect to {args.addr} within {DEADLINE_S:.0f} s")

    greeter = hello_grpc.GreeterStub(channel)
    guide = route_grpc.RouteGuideStub(channel)
    checker = Checker(grpc)

    def point(lat, lon):
        return route_pb2.Point(latitude=lat, longitude=lon)

    def say_hello():
        reply = greeter.SayHello(hello_pb2.HelloRequest(name="stock client"), timeout=DEADLINE_S)
        assert reply.message == "Hello stock client", f"got {reply.message!r}"
        return repr(reply.message)

    def get_known():
        lat, lon, name = named[0]
        feature = guide.GetFeature(point(lat, lon), timeout=DEADLINE_S)
        assert feature.name == name, f"expected {name!r}, got {feature.name!r}"
        assert (feature.location.latitude, feature.location.longitude) == (lat, lon)
        return repr(feature.name)

    def get_unknown():
        known = {(f[0], f[1]) for f in features}
        lat, lon = 1, -1
        assert (lat, lon) not in known, "pick another unknown point"
        feature = guide.GetFeature(point(lat, lon), timeout=DEADLINE_S)
        assert feature.name == "", f"expected no name, got {feature.name!r}"
        got = (feature.location.latitude, feature.location.longitude)
        assert got == (lat, lon), f"location echoed as {got}"
        return "unnamed feature at the requested point"

    def expected_in_rect(lo, hi):
        lat_min, lat_max = sorted((lo[0], hi[0]))
        lon_min, lon_max = sorted((lo[1], hi[1]))
        return [
            f for f in features if lat_min <= f[0] <= lat_max and lon_min <= f[1] <= lon_max
        ]

    def list_features(lo, hi):
        def check():
            expected = expected_in_rect(lo, hi)
            assert expected, "the test rectangle holds no feature of the database"
            rect = route_pb2.Rectangle(lo=point(*lo), hi=point(*hi))
            got = [
                (f.location.latitude, f.location.longitude, f.name)
                for f in guide.ListFeatures(rect, timeout=DEADLINE_S)
            ]
            assert got == expected, f"expected {len(expected)} features {expected}, got {got}"
            return f"{len(got)} features in database order"

        return check

    def record_route():
        route = [f[:2] for f in named[:2]] + [(473200000, 85300000)] + [unnamed[0][:2]]
        known = {(f[0], f[1]): f[2] for f in features}
        expected_features = sum(1 for p in route if known.get(p))
        expected_distance = sum(haversine_m(a, b) for a, b in zip(route, route[1:]))
        summary = guide.RecordRoute(iter([point(*p) for p in route]), timeout=DEADLINE_S)
        assert summary.point_count == len(route), f"point_count {summary.point_count}"
        assert summary.feature_count == expected_features, (
            f"feature_count {summary.feature_count}, expected {expected_features}"
        )
        assert abs(summary.distance - expected_distance) <= 1.0, (
            f"distance {summary.distance} m, expected about {expected_distance:.1f} m"
        )
        assert summary.elapsed_time >= 0, f"elapsed_time {summary.elapsed_time}"
        return (
            f"{summary.point_count} points, {summary.feature_count} features, "
            f"{summary.distance} m, {summary.elapsed_time} s"
        )

    def route_chat():
        # Notes persist in the server for its lifetime, so fresh random locations keep a rerun
        # against the same server from seeing the previous run's notes.
        rng = random.Random()
        a = (rng.randint(-900000000, 900000000), rng.randint(-1800000000, 1800000000))
        b = (a[0], a[1] + 1 if a[1] < 1800000000 else a[1] - 1)
        sent = [(a, "a1"), (b, "b1"), (a, "a2"), (b, "b2"), (a, "a3")]
        notes = (route_pb2.RouteNote(location=point(*loc), message=m) for loc, m in sent)
        got = [
            ((n.location.latitude, n.location.longitude), n.message)
            for n in guide.RouteChat(notes, timeout=DEADLINE_S)
        ]
        expected = [(a, "a1"), (b, "b1"), (a, "a1"), (a, "a2")]
        assert got == expected, f"expected {expected}, got {got}"
        return f"{len(got)} echoes for {len(sent)} notes at 2 locations"

    def health_check():
        health_pb2, health_grpc = health
        reply = health_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=""), timeout=DEADLINE_S
        )
        serving = health_pb2.HealthCheckResponse.SERVING
        assert reply.status == serving, (
            f"status {health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)}"
        )
        return "SERVING"

    checker.run("helloworld.Greeter/SayHello", say_hello)
    checker.run("routeguide.RouteGuide/GetFeature known point", get_known)
    checker.run("routeguide.RouteGuide/GetFeature unknown point", get_unknown)
    checker.run("routeguide.RouteGuide/ListFeatures", list_features(RECT_LO, RECT_HI))
    checker.run(
        "routeguide.RouteGuide/ListFeatures swapped corners", list_features(RECT_HI, RECT_LO)
    )
    checker.run("routeguide.RouteGuide/RecordRoute", record_route)
    checker.run("routeguide.RouteGuide/RouteChat", route_chat)
    if health is None:
        print("SKIP grpc.health.v1.Health/Check: grpcio-health-checking is not installed")
    else:
        checker.run('grpc.health.v1.Health/Check ""', health_check)
    channel.close()

    if checker.failed:
        print(f"{len(checker.failed)} check(s) failed: {', '.join(checker.failed)}")
        return 1
    print("all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
