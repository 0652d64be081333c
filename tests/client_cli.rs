//! The `client` binary against a running server: every subcommand, metadata, and clear failures.

mod support;

use std::process::Output;

use bootstrap::proto::helloworld::greeter_server::{Greeter, GreeterServer};
use bootstrap::proto::helloworld::{HelloReply, HelloRequest};
use bootstrap::{Bootstrap, Config, Phase};
use support::{TestServer, within};

async fn client(args: &[&str]) -> Output {
    within(
        "client",
        tokio::process::Command::new(env!("CARGO_BIN_EXE_client"))
            .args(args)
            .env_remove("CLIENT_ADDR")
            .output(),
    )
    .await
    .expect("run client")
}

fn text(out: &[u8]) -> String {
    String::from_utf8_lossy(out).to_string()
}

#[tokio::test]
async fn every_subcommand_works() {
    let server = TestServer::serving().await;
    let addr = server.addr.to_string();
    let a = ["--addr", addr.as_str()];

    let out = client(&[&a[..], &["hello", "--name", "cli"]].concat()).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "Hello cli");

    let out = client(&[&a[..], &["health"]].concat()).await;
    assert!(out.status.success());
    assert_eq!(text(&out.stdout).trim(), "SERVING");

    let out = client(
        &[
            &a[..],
            &["get-feature", "--lat", "473124518", "--lon", "85231907"],
        ]
        .concat(),
    )
    .await;
    assert!(out.status.success());
    assert!(text(&out.stdout).contains("Larchwood Hill Lookout"));

    let rect = [
        "list-features",
        "--lo-lat",
        "473000000",
        "--lo-lon",
        "85000000",
        "--hi-lat",
        "474000000",
        "--hi-lon",
        "86000000",
    ];
    let out = client(&[&a[..], &rect[..]].concat()).await;
    assert!(out.status.success());
    assert_eq!(text(&out.stdout).lines().count(), 9);

    let route = [
        "record-route",
        "--point",
        "473124518,85231907",
        "--point",
        "473501230,85650871",
    ];
    let out = client(&[&a[..], &route[..]].concat()).await;
    assert!(out.status.success());
    let summary: serde_json::Value = serde_json::from_str(text(&out.stdout).trim()).unwrap();
    assert_eq!(summary["pointCount"], 2);

    let chat = ["route-chat", "--note", "5,5,first", "--note", "5,5,second"];
    let out = client(&[&a[..], &chat[..]].concat()).await;
    assert!(out.status.success());
    assert!(text(&out.stdout).contains("first"));
    server.stop().await;
}

/// A Greeter that answers with the metadata it received, to prove `-H` reaches the server.
#[derive(Clone, Copy)]
struct MetadataEcho;

#[tonic::async_trait]
impl Greeter for MetadataEcho {
    async fn say_hello(
        &self,
        request: tonic::Request<HelloRequest>,
    ) -> Result<tonic::Response<HelloReply>, tonic::Status> {
        let get = |k: &str| {
            request
                .metadata()
                .get(k)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-")
                .to_string()
        };
        let message = format!("{}|{}", get("function-id"), get("authorization"));
        Ok(tonic::Response::new(HelloReply { message }))
    }
}

#[tokio::test]
async fn metadata_is_sent() {
    let bootstrap =
        Bootstrap::new(Config::for_tests()).add_service(GreeterServer::new(MetadataEcho));
    let server = TestServer::start(bootstrap).await;
    within("serving", server.lifecycle.reached(Phase::Serving)).await;
    let addr = server.addr.to_string();
    let out = client(&[
        "--addr",
        &addr,
        "-H",
        "function-id: abc",
        "-H",
        "authorization: Bearer t0ken",
        "hello",
    ])
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "abc|Bearer t0ken");
    server.stop().await;
}

#[tokio::test]
async fn refused_connection_is_a_clear_error() {
    let port = support::free_port();
    let addr = format!("127.0.0.1:{port}");
    let out = client(&["--addr", &addr, "hello"]).await;
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("cannot connect") && err.contains("refused"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

#[tokio::test]
async fn non_ok_status_is_a_clear_error() {
    let server = TestServer::serving().await;
    let addr = server.addr.to_string();
    let out = client(&["--addr", &addr, "health", "--service", "no.Such"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("NotFound"),
        "{}",
        text(&out.stderr)
    );
    server.stop().await;
}

#[tokio::test]
async fn bad_header_exits_2() {
    let out = client(&["-H", "nocolon", "hello"]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("--header"));
}
