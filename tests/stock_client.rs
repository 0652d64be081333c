//! A client from another gRPC implementation (Python's grpcio) calls all four RPC kinds and
//! health against the bootstrap. `make test` (and so CI) installs grpcio first.

mod support;

use support::{TestServer, within};

#[tokio::test]
async fn grpcio_calls_every_rpc_kind() {
    let server = TestServer::serving().await;
    let out = within(
        "python stock client",
        tokio::process::Command::new("python3")
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/clients/stock_client.py"
            ))
            .args(["--addr", &server.addr.to_string()])
            .output(),
    )
    .await
    .expect("run python3 (install it and grpcio: see the README)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "stock client failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    assert!(stdout.contains("all checks passed"), "{stdout}");
    assert!(!stdout.contains("SKIP"), "every check must run:\n{stdout}");
    server.stop().await;
}
