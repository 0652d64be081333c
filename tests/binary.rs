//! The real `bootstrap` binary: port precedence, refusal of bad configuration, FC's log lines.

mod support;

use bootstrap::proto::helloworld::HelloRequest;
use bootstrap::proto::helloworld::greeter_client::GreeterClient;
use support::{Binary, binary_command, free_port, http, within};
use tonic::transport::Endpoint;

async fn healthz_on(port: u16) -> u16 {
    http(([127, 0, 0, 1], port).into(), "GET", "/healthz")
        .await
        .0
}

#[tokio::test]
async fn port_flag_beats_platform_variables() {
    let (flag, fc) = (free_port(), free_port());
    let fc_s = fc.to_string();
    let mut bin = Binary::start(
        &["--port", &flag.to_string()],
        &[("FC_CUSTOM_LISTEN_PORT", &fc_s), ("PORT", "1")],
    )
    .await;
    assert_eq!(healthz_on(flag).await, 200);
    assert!(bin.terminate().await.success());
}

#[tokio::test]
async fn platform_port_variables_in_order() {
    let (fc, fc_server, port) = (free_port(), free_port(), free_port());
    let (a, b, c) = (fc.to_string(), fc_server.to_string(), port.to_string());

    let mut bin = Binary::start(
        &[],
        &[
            ("FC_CUSTOM_LISTEN_PORT", &a),
            ("FC_SERVER_PORT", &b),
            ("PORT", &c),
        ],
    )
    .await;
    assert_eq!(healthz_on(fc).await, 200);
    assert!(bin.terminate().await.success());

    let mut bin = Binary::start(&[], &[("FC_SERVER_PORT", &b), ("PORT", &c)]).await;
    assert_eq!(healthz_on(fc_server).await, 200);
    assert!(bin.terminate().await.success());

    let mut bin = Binary::start(&[], &[("PORT", &c)]).await;
    assert_eq!(healthz_on(port).await, 200);
    assert!(bin.terminate().await.success());
}

/// Runs the binary expecting it to refuse its configuration: exit 2, one line on stderr.
async fn refused(args: &[&str], env: &[(&str, &str)]) -> String {
    let out = within("refusal", binary_command(args, env).output())
        .await
        .expect("run bootstrap");
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert_eq!(
        stderr.trim_end().lines().count(),
        1,
        "one line, got: {stderr}"
    );
    stderr
}

#[tokio::test]
async fn invalid_port_exits_2_naming_it() {
    let msg = refused(&["--port", "99999"], &[]).await;
    assert!(msg.contains("--port"), "{msg}");
    let msg = refused(&[], &[("FC_CUSTOM_LISTEN_PORT", "nine")]).await;
    assert!(
        msg.contains("FC_CUSTOM_LISTEN_PORT") && msg.contains("nine"),
        "{msg}"
    );
    let msg = refused(&[], &[("PORT", "-1")]).await;
    assert!(msg.contains("PORT"), "{msg}");
}

#[tokio::test]
async fn invalid_duration_exits_2_naming_it() {
    let msg = refused(&["--timeout", "60"], &[]).await;
    assert!(msg.contains("--timeout"), "{msg}");
    let msg = refused(&[], &[("BOOTSTRAP_TIMEOUT", "soon")]).await;
    assert!(msg.contains("--timeout") && msg.contains("soon"), "{msg}");
}

#[tokio::test]
async fn unknown_flag_exits_2() {
    let msg = refused(&["--no-such-flag"], &[]).await;
    assert!(msg.contains("--no-such-flag"), "{msg}");
}

#[tokio::test]
async fn help_lists_every_flag_and_exits_0() {
    let out = binary_command(&["--help"], &[]).output().await.unwrap();
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--host",
        "--port",
        "--log-format",
        "--log-level",
        "--timeout",
        "--init-on",
    ] {
        assert!(help.contains(flag), "{flag} missing from --help:\n{help}");
    }
}

#[tokio::test]
async fn fc_request_lines_carry_the_fc_request_id() {
    let port = free_port();
    let port_s = port.to_string();
    let mut bin = Binary::start(
        &["--log-format", "json"],
        &[
            ("FC_FUNCTION_NAME", "greeter"),
            ("FC_CUSTOM_LISTEN_PORT", &port_s),
        ],
    )
    .await;
    // Start-up initialisation is bracketed too, under a generated id.
    bin.wait_for_line("FC Initialize End RequestId: ").await;

    let channel = Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut request = tonic::Request::new(HelloRequest { name: "fc".into() });
    request
        .metadata_mut()
        .insert("x-fc-request-id", "req-1234-abcd".parse().unwrap());
    let reply = GreeterClient::new(channel)
        .say_hello(request)
        .await
        .unwrap();
    assert_eq!(
        reply.metadata().get("x-request-id").unwrap(),
        "req-1234-abcd"
    );

    let start = bin
        .wait_for_line("FC Invoke Start RequestId: req-1234-abcd")
        .await;
    assert_eq!(
        start, "FC Invoke Start RequestId: req-1234-abcd",
        "raw line, no decoration"
    );
    let end = bin
        .wait_for_line("FC Invoke End RequestId: req-1234-abcd")
        .await;
    assert_eq!(end, "FC Invoke End RequestId: req-1234-abcd");
    // The finish line is JSON carrying the same id and the status.
    let finished = bin.wait_for_line("rpc finished").await;
    let json: serde_json::Value = serde_json::from_str(&finished).expect("a JSON line");
    assert_eq!(json["request_id"], "req-1234-abcd");
    assert_eq!(json["code"], 0);
    assert_eq!(json["method"], "/helloworld.Greeter/SayHello");
    assert!(bin.terminate().await.success());
}

#[tokio::test]
async fn readme_documents_every_flag() {
    let out = binary_command(&["--help"], &[]).output().await.unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    let readme = include_str!("../README.md");
    let flags: Vec<&str> = help
        .split(|c: char| c.is_whitespace() || c == ',' || c == '=')
        .filter(|w| w.starts_with("--") && w.len() > 2 && !matches!(*w, "--help" | "--version"))
        .collect();
    assert!(flags.len() >= 8, "parsed flags: {flags:?}");
    for flag in flags {
        assert!(
            readme.contains(&format!("| `{flag}` |")),
            "README's configuration table lacks {flag}"
        );
    }
}

#[tokio::test]
async fn probe_subcommand_checks_health() {
    let port = free_port();
    let port_s = port.to_string();
    let mut bin = Binary::start(&["--init-on", "hook"], &[("PORT", &port_s)]).await;

    // Not initialised yet: NOT_SERVING, exit 1. The probe follows PORT like the server does.
    let out = binary_command(&["probe"], &[("PORT", &port_s)])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("NOT_SERVING"));

    assert_eq!(
        http(([127, 0, 0, 1], port).into(), "POST", "/initialize")
            .await
            .0,
        200
    );
    let out = binary_command(&["probe"], &[("PORT", &port_s)])
        .output()
        .await
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "SERVING");

    let addr = format!("127.0.0.1:{port}");
    let out = binary_command(
        &["probe", "--addr", &addr, "--service", "helloworld.Greeter"],
        &[],
    )
    .output()
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(bin.terminate().await.success());

    // Nothing listening: a clear one-line error and exit 1.
    let out = binary_command(&["probe", "--addr", &addr], &[])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot connect"), "{err}");
}

#[tokio::test]
async fn cloud_run_lines_are_structured_and_linked_to_the_trace() {
    let port = free_port();
    let port_s = port.to_string();
    // Cloud Run sets K_SERVICE and PORT; with no terminal, `auto` means JSON there.
    let mut bin = Binary::start(
        &[],
        &[
            ("K_SERVICE", "greeter"),
            ("PORT", &port_s),
            ("GOOGLE_CLOUD_PROJECT", "my-project"),
        ],
    )
    .await;
    let channel = Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let mut request = tonic::Request::new(HelloRequest { name: "run".into() });
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{trace}-00f067aa0ba902b7-01").parse().unwrap(),
    );
    GreeterClient::new(channel)
        .say_hello(request)
        .await
        .unwrap();

    let line = bin.wait_for_line("rpc finished").await;
    let json: serde_json::Value = serde_json::from_str(&line).expect("a JSON line");
    assert_eq!(json["severity"], "INFO");
    assert_eq!(
        json["logging.googleapis.com/trace"],
        format!("projects/my-project/traces/{trace}")
    );
    assert_eq!(json["logging.googleapis.com/spanId"], "00f067aa0ba902b7");
    // With no x-fc-request-id or x-request-id, the trace id is the request id.
    assert_eq!(json["request_id"], trace);
    // Cloud Run gets no FC lines.
    assert!(!bin.seen.iter().any(|l| l.starts_with("FC ")));
    assert!(bin.terminate().await.success());
}
