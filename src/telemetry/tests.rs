//! Tests of the formats and the filter through a real subscriber built exactly as `init` builds
//! it, but scoped to the test thread with `with_default` and writing into memory.

use super::writer::tests::SharedBuf;
use super::*;
use serde_json::{Map, Value};
use tracing::field::Empty;
use tracing::{debug, error, info, info_span, trace, warn};

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const WAIT: Duration = Duration::from_secs(10);

impl<'a> MakeWriter<'a> for SharedBuf {
    type Writer = SharedBuf;

    fn make_writer(&'a self) -> SharedBuf {
        self.clone()
    }
}

/// Runs `f` under a subscriber in the given format and returns everything it wrote.
fn capture(json: bool, project: Option<&str>, filter: &str, f: impl FnOnce()) -> String {
    let buf = SharedBuf::default();
    let filter = build_filter(filter).expect("filter");
    let subscriber = build_subscriber(json, project.map(str::to_owned), false, filter, buf.clone());
    tracing::subscriber::with_default(subscriber, f);
    buf.text()
}

fn parse(line: &str) -> Map<String, Value> {
    match serde_json::from_str(line) {
        Ok(Value::Object(map)) => map,
        other => panic!("not a JSON object: {line:?}: {other:?}"),
    }
}

fn json_lines(text: &str) -> Vec<Map<String, Value>> {
    text.lines().map(parse).collect()
}

/// The one JSON line `f` logs.
fn one_json(project: Option<&str>, f: impl FnOnce()) -> Map<String, Value> {
    let lines = json_lines(&capture(true, project, "trace", f));
    assert_eq!(lines.len(), 1, "{lines:?}");
    lines.into_iter().next().expect("one line")
}

#[test]
fn json_maps_levels_to_cloud_logging_severities() {
    let text = capture(true, None, "trace", || {
        trace!("t");
        debug!("d");
        info!("i");
        warn!("w");
        error!("e");
    });
    let lines = json_lines(&text);
    let severities: Vec<&str> = lines
        .iter()
        .map(|l| l["severity"].as_str().expect("severity"))
        .collect();
    assert_eq!(severities, ["DEBUG", "DEBUG", "INFO", "WARNING", "ERROR"]);
    let messages: Vec<&str> = lines
        .iter()
        .map(|l| l["message"].as_str().expect("message"))
        .collect();
    assert_eq!(messages, ["t", "d", "i", "w", "e"]);
    for line in &lines {
        assert_eq!(line["target"], module_path!());
        let time = line["time"].as_str().expect("time");
        humantime::parse_rfc3339(time).expect("RFC 3339 time");
        // Microsecond precision, UTC: 2024-01-02T03:04:05.123456Z
        assert_eq!(time.len(), 27, "{time}");
        assert!(time.ends_with('Z'), "{time}");
    }
}

#[test]
fn json_flattens_span_fields_outermost_first_then_event_fields() {
    let text = capture(true, None, "trace", || {
        let outer = info_span!("outer", a = 1, shared = "outer", flag = true);
        let _outer = outer.enter();
        let inner = info_span!("inner", b = "x", shared = "inner");
        let _inner = inner.enter();
        info!(c = 2.5, d = -7i64, shared = "event", "hello {}", "world");
    });
    let raw = text.trim_end();
    let line = parse(raw);
    assert_eq!(line["message"], "hello world");
    assert_eq!(line["a"], 1);
    assert_eq!(line["flag"], true);
    assert_eq!(line["b"], "x");
    assert_eq!(line["c"], 2.5);
    assert_eq!(line["d"], -7);
    assert_eq!(line["shared"], "event", "innermost value wins");
    assert!(raw.starts_with(r#"{"time":"#), "{raw}");
    let order: Vec<usize> = [
        r#""severity""#,
        r#""message""#,
        r#""target""#,
        r#""a""#,
        r#""b""#,
        r#""c""#,
    ]
    .iter()
    .map(|key| raw.find(key).expect(key))
    .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{raw}");
    assert!(!raw.contains('\n'));
}

#[test]
fn json_links_trace_to_project() {
    let line = one_json(Some("my-proj"), || {
        let span = info_span!(
            "rpc",
            trace_id = TRACE,
            span_id = "00f067aa0ba902b7",
            trace_sampled = true
        );
        let _e = span.enter();
        info!("in trace");
    });
    assert_eq!(
        line["logging.googleapis.com/trace"],
        format!("projects/my-proj/traces/{TRACE}")
    );
    assert_eq!(line["logging.googleapis.com/spanId"], "00f067aa0ba902b7");
    assert_eq!(line["logging.googleapis.com/trace_sampled"], true);
    assert_eq!(line["trace_id"], TRACE, "trace_id itself is kept");
}

#[test]
fn json_without_project_keeps_trace_id_only() {
    let line = one_json(None, || {
        let span = info_span!("rpc", trace_id = TRACE, span_id = "00f067aa0ba902b7");
        let _e = span.enter();
        info!(trace_sampled = false, "in trace");
    });
    assert!(
        !line.contains_key("logging.googleapis.com/trace"),
        "{line:?}"
    );
    assert_eq!(line["trace_id"], TRACE);
    assert_eq!(line["logging.googleapis.com/spanId"], "00f067aa0ba902b7");
    assert_eq!(line["logging.googleapis.com/trace_sampled"], false);
}

#[test]
fn json_shows_fields_recorded_later() {
    let text = capture(true, Some("p"), "trace", || {
        let span = info_span!(
            "rpc",
            request_id = "early",
            trace_id = Empty,
            status = Empty
        );
        let _e = span.enter();
        info!("before");
        span.record("trace_id", TRACE);
        span.record("request_id", "late");
        span.record("status", 0u64);
        info!("after");
    });
    let lines = json_lines(&text);
    assert_eq!(lines.len(), 2);
    assert!(!lines[0].contains_key("trace_id"));
    assert!(!lines[0].contains_key("status"));
    assert_eq!(lines[0]["request_id"], "early");
    assert_eq!(lines[1]["trace_id"], TRACE);
    assert_eq!(lines[1]["request_id"], "late");
    assert_eq!(lines[1]["status"], 0);
    assert_eq!(
        lines[1]["logging.googleapis.com/trace"],
        format!("projects/p/traces/{TRACE}")
    );
}

#[test]
fn json_keeps_reserved_keys_and_renames_clashing_fields() {
    let line = one_json(None, || {
        let span = info_span!("s", time = 5, message = "span says");
        let _e = span.enter();
        info!(severity = "bogus", "real message");
    });
    assert_eq!(line["severity"], "INFO");
    assert_eq!(line["message"], "real message");
    assert!(line["time"].is_string());
    assert_eq!(line["fields.time"], 5);
    assert_eq!(line["fields.message"], "span says");
    assert_eq!(line["fields.severity"], "bogus");
}

#[test]
fn json_value_types() {
    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] io::Error);

    let line = one_json(None, || {
        let err = Outer(io::Error::other("inner"));
        let err: &(dyn std::error::Error + 'static) = &err;
        info!(
            nan = f64::NAN,
            big = u128::MAX,
            small = 5u128,
            dbg = ?vec![1, 2],
            shown = %"display",
            err,
            "types"
        );
    });
    assert_eq!(line["nan"], "NaN");
    assert_eq!(line["big"], u128::MAX.to_string());
    assert_eq!(line["small"], 5);
    assert_eq!(line["dbg"], "[1, 2]");
    assert_eq!(line["shown"], "display");
    assert_eq!(line["err"], "outer: inner");
}

#[test]
fn json_event_without_message_has_empty_message() {
    let line = one_json(None, || info!(k = 1));
    assert_eq!(line["message"], "");
    assert_eq!(line["k"], 1);
}

#[test]
fn fc_lines_are_raw_in_both_formats_and_in_order() {
    for json in [true, false] {
        let text = capture(json, Some("p"), "info", || {
            let span = info_span!("rpc", request_id = "r1", trace_id = TRACE);
            let _e = span.enter();
            info!("before");
            info!(target: "fc", extra = 1, "FC Invoke Start RequestId: {}", "r1");
            info!("middle");
            info!(target: "fc", "FC Invoke End RequestId: r1");
        });
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert_eq!(lines[1], "FC Invoke Start RequestId: r1", "json={json}");
        assert_eq!(lines[3], "FC Invoke End RequestId: r1", "json={json}");
        assert!(lines[0].contains("before") && lines[2].contains("middle"));
        if json {
            parse(lines[0]);
            parse(lines[2]);
        }
    }
}

#[test]
fn fc_lines_pass_any_user_filter() {
    for filter in ["warn", "off", "fc=off", "bootstrap=debug"] {
        let text = capture(true, None, filter, || {
            info!(target: "elsewhere", "hidden");
            info!(target: "fc", "FC Invoke Start RequestId: x");
            debug!(target: "fc", "fc debug stays filtered");
        });
        assert_eq!(text, "FC Invoke Start RequestId: x\n", "filter {filter:?}");
    }
}

#[test]
fn user_filter_applies() {
    let text = capture(false, None, "warn", || {
        info!("quiet");
        warn!("loud");
    });
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(text.contains("loud"));
    let text = capture(false, None, "  , ", || {
        debug!("quiet");
        info!("default is info");
    });
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(text.contains("default is info"));
    let text = capture(false, None, "info, bootstrap::telemetry=debug", || {
        debug!("debug here");
        debug!(target: "other", "not there");
    });
    assert_eq!(text.lines().count(), 1, "{text}");
}

#[test]
fn text_format_shows_span_fields_without_colour() {
    let text = capture(false, None, "info", || {
        let id = "req-42";
        let span = info_span!("rpc", request_id = %id);
        let _e = span.enter();
        warn!(code = 3, "slow call");
    });
    let line = text.trim_end();
    assert!(line.contains("rpc{request_id=req-42}"), "{line}");
    assert!(line.contains("WARN"), "{line}");
    assert!(line.contains("slow call code=3"), "{line}");
    assert!(!line.contains('\x1b'), "{line:?}");
    let time = line.split_whitespace().next().expect("timestamp");
    humantime::parse_rfc3339(time).expect("RFC 3339 timestamp");
}

#[test]
fn bad_filter_names_the_directive() {
    let err = build_filter("info,h2=loud,tower=warn").expect_err("bad level");
    match &err {
        TelemetryError::InvalidFilter { directive, .. } => assert_eq!(directive, "h2=loud"),
        other => panic!("wrong error {other:?}"),
    }
    assert!(err.to_string().contains("`h2=loud`"), "{err}");
    assert!(std::error::Error::source(&err).is_some());
    // Checked before anything global, so the answer does not depend on test order.
    let settings = TelemetrySettings {
        json: false,
        filter: "[unclosed".into(),
        gcp_project: None,
    };
    assert!(matches!(
        init(&settings),
        Err(TelemetryError::InvalidFilter { directive, .. }) if directive == "[unclosed"
    ));
}

/// The only test that installs the global subscriber, writing into a buffer so the test output
/// stays clean.
#[test]
fn init_succeeds_only_once() {
    let settings = TelemetrySettings {
        json: true,
        filter: "off".into(),
        gcp_project: None,
    };
    let buf = SharedBuf::default();
    let telemetry = install(&settings, Box::new(buf.clone()), false).expect("first init");
    assert!(matches!(
        install(&settings, Box::new(io::sink()), false),
        Err(TelemetryError::AlreadyInitialised)
    ));
    assert!(matches!(
        init(&settings),
        Err(TelemetryError::AlreadyInitialised)
    ));
    // Run on a fresh thread: only there is the global subscriber sure to be the one in effect.
    std::thread::spawn(|| info!(target: "fc", "FC global line"))
        .join()
        .expect("logging thread");
    let other = telemetry.clone();
    assert!(other.flush_blocking(WAIT));
    assert!(
        buf.text().lines().any(|l| l == "FC global line"),
        "{}",
        buf.text()
    );
    assert!(telemetry.shutdown());
    assert_eq!(other.dropped_lines(), 0);
}

#[tokio::test]
async fn telemetry_flush_covers_lines_logged_through_the_writer() {
    let buf = SharedBuf::default();
    let writer = LogWriter::spawn(Box::new(buf.clone()), 1024, drop_notice(true)).expect("spawn");
    let telemetry = Telemetry::new(writer);
    let filter = build_filter("info").expect("filter");
    let subscriber = build_subscriber(true, None, false, filter, telemetry.writer());
    tracing::subscriber::with_default(subscriber, || {
        info!("one");
        info!(target: "fc", "FC Invoke Start RequestId: q");
        info!("two");
    });
    telemetry.flush().await;
    let text = buf.text();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert_eq!(parse(lines[0])["message"], "one");
    assert_eq!(lines[1], "FC Invoke Start RequestId: q");
    assert_eq!(parse(lines[2])["message"], "two");
}

#[test]
fn drop_notices_match_the_format() {
    let json = String::from_utf8(drop_notice(true)(7)).expect("utf-8");
    let line = parse(json.trim_end());
    assert_eq!(line["severity"], "WARNING");
    assert_eq!(line["dropped_lines"], 7);
    assert!(
        line["message"]
            .as_str()
            .expect("message")
            .contains("dropped 7")
    );
    let text = String::from_utf8(drop_notice(false)(7)).expect("utf-8");
    assert!(
        text.contains(" WARN ") && text.contains("dropped 7"),
        "{text}"
    );
    assert!(text.ends_with('\n'));
}
