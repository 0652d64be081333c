//! HTTP/1.1 on the gRPC port: probes, FC's Initializer hook, and 404 for anything else.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bootstrap::{Config, Phase};
use support::{TestServer, hook_config, http, http_with, sample};

#[tokio::test]
async fn probes_follow_the_initializer_hook() {
    let runs = Arc::new(AtomicUsize::new(0));
    let counted = runs.clone();
    let bootstrap = sample(hook_config()).initializer(move || async move {
        counted.fetch_add(1, Ordering::SeqCst);
        Ok(())
    });
    let server = TestServer::start(bootstrap).await;

    assert_eq!(http(server.addr, "GET", "/healthz").await.0, 200);
    let (status, body) = http(server.addr, "GET", "/readyz").await;
    assert_eq!((status, body.trim()), (503, "starting"));

    let (status, body) = http(server.addr, "POST", "/initialize").await;
    assert_eq!((status, body.trim()), (200, "initialised"));
    assert_eq!(http(server.addr, "GET", "/readyz").await.0, 200);

    // FC may call the hook again (retries); the initialiser must not run twice.
    assert_eq!(http(server.addr, "POST", "/initialize").await.0, 200);
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    server.stop().await;
}

#[tokio::test]
async fn concurrent_initialize_calls_run_the_initializer_once() {
    let runs = Arc::new(AtomicUsize::new(0));
    let counted = runs.clone();
    let bootstrap = sample(hook_config()).initializer(move || async move {
        counted.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        Ok(())
    });
    let server = TestServer::start(bootstrap).await;
    let calls = (0..5).map(|_| http(server.addr, "POST", "/initialize"));
    for (status, _) in futures_util::future::join_all(calls).await {
        assert_eq!(status, 200);
    }
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    server.stop().await;
}

#[tokio::test]
async fn failing_initializer_gives_500_and_stays_not_ready() {
    let bootstrap =
        sample(hook_config()).initializer(|| async { Err("database unreachable".into()) });
    let server = TestServer::start(bootstrap).await;
    let (status, body) = http(server.addr, "POST", "/initialize").await;
    assert_eq!(status, 500);
    assert!(body.contains("database unreachable"), "{body}");
    assert_eq!(http(server.addr, "GET", "/readyz").await.0, 503);
    assert_eq!(server.lifecycle.phase(), Phase::Starting);
    // Liveness is a separate question: the process still runs.
    assert_eq!(http(server.addr, "GET", "/healthz").await.0, 200);
    server.stop().await;
}

#[tokio::test]
async fn startup_initializer_makes_ready_without_the_hook() {
    let server = TestServer::start(sample(Config::for_tests())).await;
    support::within("serving", server.lifecycle.reached(Phase::Serving)).await;
    assert_eq!(http(server.addr, "GET", "/readyz").await.0, 200);
    // The hook still answers (FC may call it even when start-up already initialised).
    assert_eq!(http(server.addr, "POST", "/initialize").await.0, 200);
    server.stop().await;
}

#[tokio::test]
async fn unknown_paths_are_404_not_grpc() {
    let server = TestServer::serving().await;
    for path in ["/", "/nope", "/helloworld.Greeter/SayHello", "/healthz/x"] {
        let (status, _) = http(server.addr, "GET", path).await;
        assert_eq!(status, 404, "{path}");
    }
    // A POST without a gRPC content type is not gRPC either.
    let (status, _) = http_with(
        server.addr,
        "POST",
        "/helloworld.Greeter/SayHello",
        &[("content-type", "application/json")],
    )
    .await;
    assert_eq!(status, 404);
    server.stop().await;
}
