//! Fuzzes what the bootstrap reads from request metadata: the request id and trace headers
//! (`RequestContext::from_headers`, `parse_traceparent`, `parse_cloud_trace_context`) and
//! `grpc-timeout` (`parse_grpc_timeout`). All of it is caller-controlled and ends up in logs or
//! timers, so nothing may panic and every accepted value must have the documented shape.
//!
//! Input: one header per line, `name: value`; a value may hold any byte but a newline. A line
//! without `: ` names one of the headers read, by its first byte, so short inputs reach them.
#![no_main]

use std::time::Duration;

use bootstrap::context::{
    self, CLOUD_TRACE_CONTEXT_HEADER, FC_REQUEST_ID_HEADER, MAX_REQUEST_ID_LEN, REQUEST_ID_HEADER,
    RequestContext, TRACEPARENT_HEADER, TraceContext,
};
use bootstrap::layers::deadline::parse_grpc_timeout;
use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;

const READ: [&str; 5] = [
    FC_REQUEST_ID_HEADER,
    REQUEST_ID_HEADER,
    TRACEPARENT_HEADER,
    CLOUD_TRACE_CONTEXT_HEADER,
    "grpc-timeout",
];

/// The largest `grpc-timeout` there is: eight nines of hours.
const MAX_GRPC_TIMEOUT: Duration = Duration::from_secs(99_999_999 * 3600);

fn is_lower_hex(s: &str, len: usize) -> bool {
    s.len() == len
        && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        && !s.bytes().all(|b| b == b'0')
}

fn check_trace(t: &TraceContext, from: &str) {
    assert!(
        is_lower_hex(&t.trace_id, 32),
        "trace id {t:?} from {from:?}"
    );
    if let Some(span) = &t.span_id {
        assert!(is_lower_hex(span, 16), "span id {t:?} from {from:?}");
    }
}

fn header(line: &[u8]) -> Option<(HeaderName, HeaderValue)> {
    let split = line.windows(2).position(|w| w == b": ");
    let (name, value) = match split {
        Some(i) => (HeaderName::from_bytes(&line[..i]).ok()?, &line[i + 2..]),
        None => {
            let (&first, rest) = line.split_first()?;
            let name = READ[usize::from(first) % READ.len()];
            (HeaderName::from_static(name), rest)
        }
    };
    // hyper refuses values HeaderValue refuses, so those never reach the bootstrap.
    Some((name, HeaderValue::from_bytes(value).ok()?))
}

fuzz_target!(|data: &[u8]| {
    let mut headers = HeaderMap::new();
    for line in data.split(|&b| b == b'\n') {
        if let Some((name, value)) = header(line) {
            headers.append(name, value);
        }
    }

    // Every value on its own, through each parser, whatever header it came in.
    for value in headers.values() {
        let Ok(text) = value.to_str() else { continue };
        if let Some(t) = context::parse_traceparent(text) {
            check_trace(&t, text);
            assert!(
                t.span_id.is_some(),
                "a traceparent always has a span: {text:?}"
            );
        }
        if let Some(t) = context::parse_cloud_trace_context(text) {
            check_trace(&t, text);
        }
        if let Some(d) = parse_grpc_timeout(text) {
            assert!(d <= MAX_GRPC_TIMEOUT, "{text:?} gave {d:?}");
            let t = text.trim();
            assert!(t.len() <= 9 && t.is_ascii(), "{text:?} accepted");
        }
    }

    let ctx = RequestContext::from_headers(&headers);
    let id = &ctx.request_id;
    assert!(
        (1..=MAX_REQUEST_ID_LEN).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_graphic()),
        "request id {id:?}"
    );
    if let Some(t) = &ctx.trace {
        check_trace(t, "headers");
    }
    // `traceparent` wins over the legacy header whenever it parses.
    let first = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(t) = first(TRACEPARENT_HEADER).and_then(context::parse_traceparent) {
        assert_eq!(ctx.trace.as_ref(), Some(&t));
    }
    // With no id header at all, the id is the trace id or a generated one, both 32 hex digits.
    if first(FC_REQUEST_ID_HEADER).is_none() && first(REQUEST_ID_HEADER).is_none() {
        assert!(is_lower_hex(id, 32), "fallback request id {id:?}");
    }
});
