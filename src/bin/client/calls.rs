//! One function per subcommand: make the RPC, print the result to stdout.
//!
//! Output is for scripts: plain text for `hello`/`health`, one JSON object per line for
//! route-guide messages, counts on stderr so stdout stays parseable. Each function returns the
//! exit code it wants on success (only `health` can want a non-zero one); a failed RPC comes
//! back as the `Status` for `report.rs` to word.

use std::io::{self, Write};
use std::process::ExitCode;

use bootstrap::proto::helloworld::HelloRequest;
use bootstrap::proto::helloworld::greeter_client::GreeterClient;
use bootstrap::proto::routeguide::route_guide_client::RouteGuideClient;
use bootstrap::proto::routeguide::{Point, Rectangle, RouteNote};
use tonic::codegen::InterceptedService;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::json;
use crate::metadata::CallMetadata;
use crate::report::Failure;

type Intercepted = InterceptedService<Channel, CallMetadata>;

/// The connected channel plus what every call carries.
pub struct Session {
    pub channel: Channel,
    pub metadata: CallMetadata,
}

impl Session {
    fn greeter(&self) -> GreeterClient<Intercepted> {
        GreeterClient::with_interceptor(self.channel.clone(), self.metadata.clone())
    }

    fn route_guide(&self) -> RouteGuideClient<Intercepted> {
        RouteGuideClient::with_interceptor(self.channel.clone(), self.metadata.clone())
    }

    fn health(&self) -> HealthClient<Intercepted> {
        HealthClient::with_interceptor(self.channel.clone(), self.metadata.clone())
    }
}

pub async fn hello(session: &Session, name: String) -> Result<ExitCode, Failure> {
    let reply = session
        .greeter()
        .say_hello(HelloRequest { name })
        .await?
        .into_inner();
    print_line(&reply.message)?;
    Ok(ExitCode::SUCCESS)
}

/// grpc.health.v1 Check. Anything but SERVING exits 1, so the command can gate a script or a
/// readiness probe directly.
pub async fn health(session: &Session, service: String) -> Result<ExitCode, Failure> {
    let reply = session
        .health()
        .check(HealthCheckRequest { service })
        .await?
        .into_inner();
    let status = ServingStatus::try_from(reply.status);
    match status {
        Ok(s) => print_line(s.as_str_name())?,
        // A newer server may send a value this client's enum lacks; show the number.
        Err(_) => print_line(&format!("UNKNOWN_STATUS_{}", reply.status))?,
    }
    Ok(if status == Ok(ServingStatus::Serving) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

pub async fn get_feature(session: &Session, point: Point) -> Result<ExitCode, Failure> {
    let feature = session.route_guide().get_feature(point).await?.into_inner();
    print_line(&json::feature(&feature))?;
    Ok(ExitCode::SUCCESS)
}

pub async fn list_features(session: &Session, rect: Rectangle) -> Result<ExitCode, Failure> {
    let mut stream = session
        .route_guide()
        .list_features(rect)
        .await?
        .into_inner();
    let mut count = 0usize;
    while let Some(feature) = stream.message().await? {
        print_line(&json::feature(&feature))?;
        count += 1;
    }
    eprintln!("{count} feature{}", if count == 1 { "" } else { "s" });
    Ok(ExitCode::SUCCESS)
}

pub async fn record_route(session: &Session, points: Vec<Point>) -> Result<ExitCode, Failure> {
    let summary = session
        .route_guide()
        .record_route(tokio_stream::iter(points))
        .await?
        .into_inner();
    print_line(&json::summary(&summary))?;
    Ok(ExitCode::SUCCESS)
}

/// Sends every note, half-closes, and prints whatever the server sends back until it ends the
/// stream. Sending and receiving run concurrently inside tonic, so a server that answers only
/// after reading everything works as well as one that echoes as it goes.
pub async fn route_chat(session: &Session, notes: Vec<RouteNote>) -> Result<ExitCode, Failure> {
    let mut stream = session
        .route_guide()
        .route_chat(tokio_stream::iter(notes))
        .await?
        .into_inner();
    while let Some(note) = stream.message().await? {
        print_line(&json::note(&note))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `println!` panics when stdout is closed (`client ... | head -1`); this reports it instead.
fn print_line(line: &str) -> Result<(), Failure> {
    let mut out = io::stdout().lock();
    writeln!(out, "{line}")
        .and_then(|()| out.flush())
        .map_err(Failure::Output)
}
