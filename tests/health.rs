//! grpc.health.v1 over a real connection: Check for "" and every service, and Watch.

mod support;

use support::{TestServer, hook_config, http, sample, within};
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

fn ask(service: &str) -> HealthCheckRequest {
    HealthCheckRequest {
        service: service.to_string(),
    }
}

#[tokio::test]
async fn check_reports_every_registered_service() {
    let server = TestServer::serving().await;
    let mut health = HealthClient::new(server.channel().await);
    for service in [
        "",
        "helloworld.Greeter",
        "routeguide.RouteGuide",
        "grpc.health.v1.Health",
    ] {
        let status = health
            .check(ask(service))
            .await
            .unwrap()
            .into_inner()
            .status();
        assert_eq!(status, ServingStatus::Serving, "{service:?}");
    }
    let err = health.check(ask("no.Such")).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    server.stop().await;
}

#[tokio::test]
async fn watch_sees_the_initializer_finish() {
    let server = TestServer::start(sample(hook_config())).await;
    let mut health = HealthClient::new(server.channel().await);

    let check = health.check(ask("")).await.unwrap().into_inner().status();
    assert_eq!(check, ServingStatus::NotServing);

    let mut watch = health
        .watch(ask("helloworld.Greeter"))
        .await
        .unwrap()
        .into_inner();
    let first = within("first watch message", watch.message()).await;
    assert_eq!(first.unwrap().unwrap().status(), ServingStatus::NotServing);

    assert_eq!(http(server.addr, "POST", "/initialize").await.0, 200);
    let second = within("watch update", watch.message()).await;
    assert_eq!(second.unwrap().unwrap().status(), ServingStatus::Serving);
    server.stop().await;
}

#[tokio::test]
async fn watch_of_an_unknown_service_says_so_and_stays_open() {
    let server = TestServer::serving().await;
    let mut health = HealthClient::new(server.channel().await);
    let mut watch = health.watch(ask("no.Such")).await.unwrap().into_inner();
    let first = within("first watch message", watch.message()).await;
    assert_eq!(
        first.unwrap().unwrap().status(),
        ServingStatus::ServiceUnknown
    );
    // Still open: a Check on the same connection works while the Watch is pending.
    let status = health.check(ask("")).await.unwrap().into_inner().status();
    assert_eq!(status, ServingStatus::Serving);
    drop(watch);
    server.stop().await;
}
