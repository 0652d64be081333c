//! The benchmark's floor: the bootstrap's sample services on a bare `tonic` server, with no
//! layers, no limits, no logging and no drain. Whatever the bootstrap costs beyond this is the
//! price of its layers. It serves `grpc.health.v1` (the overall service reports SERVING from the
//! start) so cold start is measured the same way for every server.
//!
//! Usage: `floor --port N`.

use std::net::SocketAddr;

use bootstrap::proto::helloworld::greeter_server::GreeterServer;
use bootstrap::proto::routeguide::route_guide_server::RouteGuideServer;
use bootstrap::services::greeter::Greeter;
use bootstrap::services::route_guide::RouteGuide;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let mut port = 8089;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--port" => port = args.next().ok_or("--port needs a value")?.parse()?,
            other => return Err(format!("unknown argument {other:?}").into()),
        }
    }
    let (_reporter, health) = tonic_health::server::health_reporter();
    tonic::transport::Server::builder()
        .add_service(health)
        .add_service(GreeterServer::new(Greeter))
        .add_service(RouteGuideServer::new(RouteGuide::new()))
        .serve(SocketAddr::from(([0, 0, 0, 0], port)))
        .await?;
    Ok(())
}
