//! `client`: a command-line gRPC client for the services the bootstrap serves.
//!
//! The Rust counterpart of Function Compute's Go `greeter_client` sample, grown to cover the
//! rest of the example services: helloworld, route_guide and grpc.health.v1. It is how the
//! bootstrap is exercised end to end — directly over h2c, or through the platform's TLS
//! gateway (FC, Cloud Run, NVCF) with `--tls`/`--insecure` and `-H` for the gateway's headers.
//!
//! Exit status: 0 on success; 1 when the connection or the call fails (or `health` is not
//! SERVING), with a one-line `error: ...` on stderr; 2 for bad arguments.
//!
//! Layout: `client/args.rs` parses flag values, `client/connect.rs` opens the channel (with
//! `client/tls.rs` for rustls), `client/metadata.rs` stamps headers and the deadline on
//! calls, `client/calls.rs` runs the subcommands, `client/json.rs` renders messages and
//! `client/report.rs` words failures.

// A binary's root resolves `mod x;` next to itself (src/bin/x.rs), where other binaries'
// files live; the paths keep the client's modules in their own directory.
#[path = "client/args.rs"]
mod args;
#[path = "client/calls.rs"]
mod calls;
#[path = "client/connect.rs"]
mod connect;
#[path = "client/json.rs"]
mod json;
#[path = "client/metadata.rs"]
mod metadata;
#[path = "client/report.rs"]
mod report;
#[path = "client/tls.rs"]
mod tls;

use std::process::ExitCode;
use std::time::Duration;

use bootstrap::proto::routeguide::{Point, Rectangle, RouteNote};
use clap::{CommandFactory, Parser, Subcommand};
use http::uri::Authority;

use crate::args::Header;
use crate::calls::Session;
use crate::connect::{Target, TlsOptions};
use crate::metadata::CallMetadata;
use crate::report::Failure;
use crate::tls::Verification;

/// Call the gRPC services served by the bootstrap (helloworld, route_guide, grpc.health.v1).
#[derive(Debug, Parser)]
#[command(name = "client", version)]
struct Cli {
    /// Server address as host:port
    #[arg(
        long,
        env = "CLIENT_ADDR",
        default_value = "127.0.0.1:8089",
        value_name = "HOST:PORT",
        value_parser = args::addr,
        global = true
    )]
    addr: Authority,

    /// Use TLS, verifying the server against the system's root certificates
    #[arg(long, global = true)]
    tls: bool,

    /// Use TLS without verifying the server's certificate (self-signed gateways); implies --tls
    #[arg(long, global = true)]
    insecure: bool,

    /// TLS server name (SNI and certificate name) [default: host part of --addr]
    #[arg(long, value_name = "NAME", global = true)]
    server_name: Option<String>,

    /// Metadata added to every call, e.g. `-H 'authorization: Bearer ...'` (repeatable)
    #[arg(
        short = 'H',
        long = "header",
        value_name = "KEY:VALUE",
        value_parser = args::header,
        global = true
    )]
    headers: Vec<Header>,

    /// Deadline for each call, sent to the server as grpc-timeout
    #[arg(long, default_value = "10s", value_name = "DURATION", value_parser = args::duration, global = true)]
    timeout: Duration,

    /// Time allowed to establish the connection (TCP and TLS handshake)
    #[arg(long, default_value = "5s", value_name = "DURATION", value_parser = args::duration, global = true)]
    connect_timeout: Duration,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// helloworld.Greeter/SayHello: print the reply message
    Hello {
        /// Name to greet
        #[arg(long, default_value = "world")]
        name: String,
    },
    /// grpc.health.v1.Health/Check: print the status; exit 0 only when SERVING
    Health {
        /// Service to check; empty means the server as a whole
        #[arg(long, default_value = "")]
        service: String,
    },
    /// routeguide.RouteGuide/GetFeature: print the feature at a point as JSON
    GetFeature {
        /// Latitude in E7 (degrees × 10^7)
        #[arg(long, allow_negative_numbers = true)]
        lat: i32,
        /// Longitude in E7 (degrees × 10^7)
        #[arg(long, allow_negative_numbers = true)]
        lon: i32,
    },
    /// routeguide.RouteGuide/ListFeatures: print each feature in a rectangle as a JSON line
    ListFeatures {
        /// One corner of the rectangle: latitude in E7
        #[arg(long, allow_negative_numbers = true)]
        lo_lat: i32,
        /// One corner of the rectangle: longitude in E7
        #[arg(long, allow_negative_numbers = true)]
        lo_lon: i32,
        /// The opposite corner: latitude in E7
        #[arg(long, allow_negative_numbers = true)]
        hi_lat: i32,
        /// The opposite corner: longitude in E7
        #[arg(long, allow_negative_numbers = true)]
        hi_lon: i32,
    },
    /// routeguide.RouteGuide/RecordRoute: stream points, print the summary as JSON
    RecordRoute {
        /// A point in E7 (repeatable, at least one)
        #[arg(
            long = "point",
            value_name = "LAT,LON",
            required = true,
            allow_hyphen_values = true,
            value_parser = parse_point
        )]
        points: Vec<Point>,
    },
    /// routeguide.RouteGuide/RouteChat: send notes, print every note received as a JSON line
    RouteChat {
        /// A note to send (repeatable, at least one); MESSAGE may contain commas
        #[arg(
            long = "note",
            value_name = "LAT,LON,MESSAGE",
            required = true,
            allow_hyphen_values = true,
            value_parser = parse_note
        )]
        notes: Vec<RouteNote>,
    },
}

fn parse_point(s: &str) -> Result<Point, String> {
    let (latitude, longitude) = args::point(s)?;
    Ok(Point {
        latitude,
        longitude,
    })
}

fn parse_note(s: &str) -> Result<RouteNote, String> {
    let (latitude, longitude, message) = args::note(s)?;
    Ok(RouteNote {
        location: Some(Point {
            latitude,
            longitude,
        }),
        message,
    })
}

// One connection, one call at a time: a single-threaded runtime is all a CLI needs.
#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.server_name.is_some() && !(cli.tls || cli.insecure) {
        // Exits 2 like any other argument error, instead of silently ignoring the flag.
        Cli::command()
            .error(
                clap::error::ErrorKind::ArgumentConflict,
                "--server-name only applies with --tls or --insecure",
            )
            .exit();
    }
    match run(cli).await {
        Ok(code) => code,
        // `client list-features | head -1`: the reader left on purpose, so say nothing.
        Err(Failure::Output(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::FAILURE,
        Err(failure) => {
            eprintln!("error: {failure}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<ExitCode, Failure> {
    let tls = (cli.tls || cli.insecure).then_some(TlsOptions {
        verification: if cli.insecure {
            Verification::Insecure
        } else {
            Verification::SystemRoots
        },
        server_name: cli.server_name,
    });
    let target = Target {
        addr: cli.addr,
        tls,
        connect_timeout: cli.connect_timeout,
    };
    let channel = connect::connect(&target)
        .await
        .map_err(|error| Failure::Connect {
            addr: target.addr.clone(),
            connect_timeout: target.connect_timeout,
            error,
        })?;
    let session = Session {
        channel,
        metadata: CallMetadata::new(cli.headers, cli.timeout),
    };

    let call = async {
        match cli.command {
            Command::Hello { name } => calls::hello(&session, name).await,
            Command::Health { service } => calls::health(&session, service).await,
            Command::GetFeature { lat, lon } => {
                calls::get_feature(
                    &session,
                    Point {
                        latitude: lat,
                        longitude: lon,
                    },
                )
                .await
            }
            Command::ListFeatures {
                lo_lat,
                lo_lon,
                hi_lat,
                hi_lon,
            } => {
                let rect = Rectangle {
                    lo: Some(Point {
                        latitude: lo_lat,
                        longitude: lo_lon,
                    }),
                    hi: Some(Point {
                        latitude: hi_lat,
                        longitude: hi_lon,
                    }),
                };
                calls::list_features(&session, rect).await
            }
            Command::RecordRoute { points } => calls::record_route(&session, points).await,
            Command::RouteChat { notes } => calls::route_chat(&session, notes).await,
        }
    };
    // grpc-timeout only bounds the wait for response headers on the client side; this bounds
    // the whole call, streamed responses included, as a gRPC deadline should.
    tokio::time::timeout(cli.timeout, call)
        .await
        .unwrap_or(Err(Failure::Deadline(cli.timeout)))
        .map_err(|failure| failure.in_context(cli.timeout, target.tls.is_none()))
}
