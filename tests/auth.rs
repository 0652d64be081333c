//! `--auth-token`: every RPC but health needs `authorization: Bearer <token>`; probes stay open;
//! the token never appears in the logs.

mod support;

use bootstrap::config::Secret;
use bootstrap::proto::helloworld::HelloRequest;
use bootstrap::proto::helloworld::greeter_client::GreeterClient;
use bootstrap::{Config, Phase};
use support::{Binary, TestServer, free_port, http, sample, within};
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

const TOKEN: &str = "t0ken-for-tests-7f3a";

fn hello(authorization: Option<&str>) -> tonic::Request<HelloRequest> {
    let mut request = tonic::Request::new(HelloRequest { name: "a".into() });
    if let Some(a) = authorization {
        request
            .metadata_mut()
            .insert("authorization", a.parse().unwrap());
    }
    request
}

#[tokio::test]
async fn rpcs_need_the_bearer_token_but_health_and_probes_do_not() {
    let mut config = Config::for_tests();
    config.auth_token = Some(Secret::new(TOKEN));
    let server = TestServer::start(sample(config)).await;
    within("serving", server.lifecycle.reached(Phase::Serving)).await;
    let channel = server.channel().await;
    let mut greeter = GreeterClient::new(channel.clone());

    for bad in [
        None,
        Some("Bearer wrong"),
        Some(TOKEN),
        Some("Basic dDBrZW4="),
    ] {
        let err = greeter.say_hello(hello(bad)).await.unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated, "{bad:?}");
    }
    let bearer = format!("Bearer {TOKEN}");
    let reply = greeter.say_hello(hello(Some(&bearer))).await.unwrap();
    assert_eq!(reply.into_inner().message, "Hello a");

    // The platforms' probes carry no credentials.
    let status = HealthClient::new(channel.clone())
        .check(HealthCheckRequest::default())
        .await
        .unwrap()
        .into_inner()
        .status();
    assert_eq!(
        status,
        tonic_health::pb::health_check_response::ServingStatus::Serving
    );
    assert_eq!(http(server.addr, "GET", "/readyz").await.0, 200);

    // Reflection describes the whole API, so it follows the same rule as the services.
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    let list = || ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut reflection = ServerReflectionClient::new(channel);
    let err = reflection
        .server_reflection_info(tokio_stream::iter([list()]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    let mut request = tonic::Request::new(tokio_stream::iter([list()]));
    request
        .metadata_mut()
        .insert("authorization", bearer.parse().unwrap());
    let mut responses = reflection
        .server_reflection_info(request)
        .await
        .unwrap()
        .into_inner();
    assert!(within("list", responses.message()).await.unwrap().is_some());
    server.stop().await;
}

#[tokio::test]
async fn the_token_is_never_logged() {
    let port = free_port();
    let port_s = port.to_string();
    let mut bin = Binary::start(
        &[
            "--port",
            &port_s,
            "--log-format",
            "json",
            "--log-level",
            "trace",
        ],
        &[("BOOTSTRAP_AUTH_TOKEN", TOKEN)],
    )
    .await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let bearer = format!("Bearer {TOKEN}");
    let mut greeter = GreeterClient::new(channel);
    greeter.say_hello(hello(Some(&bearer))).await.unwrap();
    let err = greeter
        .say_hello(hello(Some("Bearer guess")))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    bin.wait_for_line("\"code\":16").await;
    assert!(bin.terminate().await.success());
    let all = bin.seen.join("\n");
    assert!(
        all.contains("\"auth\":true"),
        "the start-up line says auth is on"
    );
    assert!(!all.contains(TOKEN), "the token leaked into the logs");

    // Nor does --help show the value of its variable.
    let out = support::binary_command(&["--help"], &[("BOOTSTRAP_AUTH_TOKEN", TOKEN)])
        .output()
        .await
        .unwrap();
    assert!(!String::from_utf8_lossy(&out.stdout).contains(TOKEN));
}
