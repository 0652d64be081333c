#!/usr/bin/env bash
# `make bench`: installs what the benchmark needs (h2load, Go and Debian's grpc-go), builds the
# release binaries (the bootstrap, its static build and zip, the tonic floor, the grpc-go
# baseline), then runs the driver, which prints the table and writes bench/RESULTS.md.
# Extra arguments go to the driver (e.g. `--rounds 5 --seconds 5`).
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=${SUDO:-}
CARGO=${CARGO:-cargo}
apt_install() {
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"
}

# 500 idle connections plus 1,000 streams need more descriptors than some shells allow.
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt 4096 ]; then
  ulimit -n 4096 || echo "bench: could not raise ulimit -n; the connection rows may fail" >&2
fi

need=()
command -v h2load >/dev/null || need+=(nghttp2-client)
command -v go >/dev/null || need+=(golang-go)
command -v protoc >/dev/null || need+=(protobuf-compiler)
command -v protoc-gen-go >/dev/null || need+=(protoc-gen-go)
command -v protoc-gen-go-grpc >/dev/null || need+=(protoc-gen-go-grpc)
[ -d /usr/share/gocode/src/google.golang.org/grpc/health ] || need+=(golang-google-grpc-dev)
[ -d /usr/share/gocode/src/google.golang.org/protobuf ] || need+=(golang-google-protobuf-dev)
if [ ${#need[@]} -gt 0 ]; then apt_install "${need[@]}"; fi

# grpc-go's helloworld server, in GOPATH mode against Debian's packages (no module download).
# Its helloworld package is generated from our own proto, so both speak the same messages.
gopath=$PWD/target/bench/go
rm -rf "$gopath/src/benchgo"
mkdir -p "$gopath/src/benchgo/helloworld"
cp bench/go/server.go "$gopath/src/benchgo/"
protoc -I proto \
  --go_out="$gopath/src/benchgo/helloworld" --go_opt=paths=source_relative \
  --go_opt=Mhelloworld.proto=benchgo/helloworld \
  --go-grpc_out="$gopath/src/benchgo/helloworld" --go-grpc_opt=paths=source_relative \
  --go-grpc_opt=Mhelloworld.proto=benchgo/helloworld \
  proto/helloworld.proto
(cd "$gopath/src/benchgo" && GO111MODULE=off GOPATH="$gopath:/usr/share/gocode" \
  GOCACHE="$gopath/../gocache" go build -o "$gopath/../grpc-go-server" .)

# The dynamic build, the floor and the driver share one release build; `make package` makes the
# static binary and the zip exactly as they ship.
$CARGO build --release --locked -p bootstrap -p bench
make --no-print-directory package

target/release/bench \
  --bootstrap target/release/bootstrap \
  --static target/x86_64-unknown-linux-musl/release/bootstrap \
  --floor target/release/floor \
  --go target/bench/grpc-go-server \
  --zip dist/bootstrap.zip \
  --out bench/RESULTS.md "$@"
