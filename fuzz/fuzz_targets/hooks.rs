//! Fuzzes the HTTP/1.1 router that answers probes and FC's lifecycle hooks (`hooks::router`):
//! any method, path, headers and body, in any lifecycle phase, must get one of the documented
//! answers and never a panic. A probe that read a stray 200 as healthy, or a 5xx where the table
//! in `src/hooks.rs` promises none, would be a bug.
//!
//! Input: the first byte sets the scene (bit 0: the initialiser fails; bit 1: it has already
//! run; bit 2: a drain has begun; bit 3: an RPC is in flight). Then an HTTP/1.1-like request:
//! `METHOD TARGET` on the first line, `name: value` headers, an empty line, the body.
#![no_main]

use std::sync::OnceLock;
use std::time::Duration;

use axum::body::Body;
use bootstrap::hooks::{self, Hooks};
use bootstrap::lifecycle::Phase;
use bootstrap::meter::{Meter, RpcKind};
use bootstrap::{Bootstrap, Config};
use http::{HeaderName, HeaderValue, Method, Request, StatusCode};
use http_body_util::BodyExt;
use libfuzzer_sys::fuzz_target;
use tower::ServiceExt;

/// One runtime for every input. The clock is paused, so `/pre-stop` waiting out the drain
/// timeout for an RPC that never ends advances virtual time instead of sleeping.
fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .expect("a current-thread runtime")
    })
}

fn config() -> Config {
    static CONFIG: OnceLock<Config> = OnceLock::new();
    CONFIG.get_or_init(Config::for_tests).clone()
}

/// The request, or `None` when hyper would have refused it before any routing.
fn request(data: &[u8]) -> Option<Request<Body>> {
    let (head, body) = match data.windows(2).position(|w| w == b"\n\n") {
        Some(i) => (&data[..i], &data[i + 2..]),
        None => (data, &[][..]),
    };
    let mut lines = head.split(|&b| b == b'\n');
    let start = lines.next()?;
    let space = start.iter().position(|&b| b == b' ')?;
    let method = Method::from_bytes(&start[..space]).ok()?;
    let target = http::Uri::try_from(&start[space + 1..]).ok()?;
    let mut builder = Request::builder().method(method).uri(target);
    for line in lines {
        let Some(colon) = line.windows(2).position(|w| w == b": ") else {
            continue;
        };
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(&line[..colon]),
            HeaderValue::from_bytes(&line[colon + 2..]),
        ) else {
            continue;
        };
        builder = builder.header(name, value);
    }
    builder.body(Body::from(body.to_vec())).ok()
}

fuzz_target!(|data: &[u8]| {
    let Some((&scene, rest)) = data.split_first() else {
        return;
    };
    let Some(req) = request(rest) else { return };
    let (init_fails, initialised, draining, rpc_open) = (
        scene & 1 != 0,
        scene & 2 != 0,
        scene & 4 != 0,
        scene & 8 != 0,
    );

    let rt = runtime();
    let mut bootstrap = Bootstrap::new(config());
    if init_fails {
        bootstrap = bootstrap.initializer(|| async { Err("no database".into()) });
    }
    let lifecycle = bootstrap.lifecycle();
    if initialised {
        let _ = rt.block_on(lifecycle.initialize("fuzz"));
    }
    if draining {
        lifecycle.start_drain("fuzz");
    }
    let meter = Meter::default();
    let _rpc = rpc_open.then(|| meter.rpc_started(RpcKind::Unary));
    let phase = lifecycle.phase();
    let router = hooks::router(Hooks {
        lifecycle: lifecycle.clone(),
        meter,
        drain_timeout: Duration::from_secs(8),
        telemetry: None,
    });

    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let response = rt
        .block_on(router.oneshot(req))
        .unwrap_or_else(|e| match e {});
    let status = response.status();
    // The body must be readable to its end: a probe reads it.
    let body = rt
        .block_on(response.into_body().collect())
        .expect("the body of a hook's answer")
        .to_bytes();

    // `get` also answers HEAD, as HTTP requires.
    let get = method == Method::GET || method == Method::HEAD;
    let expected = match path.as_str() {
        "/healthz" | "/pre-stop" | "/pre-freeze" if get => StatusCode::OK,
        "/readyz" if get => {
            if phase == Phase::Serving {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            }
        }
        "/initialize" if method == Method::POST => {
            if init_fails {
                StatusCode::INTERNAL_SERVER_ERROR
            } else {
                StatusCode::OK
            }
        }
        "/healthz" | "/readyz" | "/pre-stop" | "/pre-freeze" | "/initialize" => {
            StatusCode::METHOD_NOT_ALLOWED
        }
        _ => StatusCode::NOT_FOUND,
    };
    assert_eq!(status, expected, "{method} {path:?} in {phase}");
    // A HEAD answer carries no body, whatever the status.
    if status == StatusCode::NOT_FOUND && method != Method::HEAD {
        assert_eq!(&body[..], b"not found\n");
    }
    if path == "/pre-stop" && get {
        assert!(
            lifecycle.phase() >= Phase::Draining,
            "/pre-stop did not drain"
        );
    }
});
