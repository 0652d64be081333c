//! The per-request context the bootstrap attaches to every log line and span: a request id and,
//! when the caller sent one, the distributed-trace position.
//!
//! Each platform names these differently: Function Compute sends `x-fc-request-id`, Cloud Run and
//! Knative forward W3C `traceparent` (and, from older Google front ends, the legacy
//! `x-cloud-trace-context`), and generic proxies send `x-request-id`.
//! [`RequestContext::from_headers`] folds them into one value so the server core can open its
//! per-request span with `request_id`, `trace_id`, `span_id` and `trace_sampled` fields, which the
//! telemetry module turns into Cloud Logging's trace correlation keys.
//!
//! Everything here is a pure function of the headers. The input is attacker-controlled, so every
//! parser rejects rather than panics, and no header value is trusted as an id unless it is short
//! printable ASCII (it ends up verbatim in logs).

use http::{HeaderMap, HeaderName};

/// Header Function Compute sets on every invocation.
pub const FC_REQUEST_ID_HEADER: &str = "x-fc-request-id";
/// De-facto standard request id header set by many proxies and clients.
pub const REQUEST_ID_HEADER: &str = "x-request-id";
/// W3C Trace Context header.
pub const TRACEPARENT_HEADER: &str = "traceparent";
/// Google's legacy trace header, still sent by some Google front ends.
pub const CLOUD_TRACE_CONTEXT_HEADER: &str = "x-cloud-trace-context";

// The same names as `HeaderName`s, for lookups: a `&str` name is parsed on every lookup.
const FC_REQUEST_ID: HeaderName = HeaderName::from_static(FC_REQUEST_ID_HEADER);
/// `x-request-id` as a `HeaderName`, also the response header that carries the id back.
pub(crate) const REQUEST_ID: HeaderName = HeaderName::from_static(REQUEST_ID_HEADER);
const TRACEPARENT: HeaderName = HeaderName::from_static(TRACEPARENT_HEADER);
const CLOUD_TRACE_CONTEXT: HeaderName = HeaderName::from_static(CLOUD_TRACE_CONTEXT_HEADER);

/// Longest header value accepted as a request id; longer values would bloat every log line and
/// are more likely garbage or an attack than a real id.
pub const MAX_REQUEST_ID_LEN: usize = 128;

/// What the bootstrap knows about the request it is serving, derived from its headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestContext {
    /// Id that correlates every log line of this request: the platform's id when it sent one,
    /// else the trace id, else a freshly generated 32-hex-digit id.
    pub request_id: String,
    /// The caller's trace position, when a valid trace header was present.
    pub trace: Option<TraceContext>,
}

/// A position in a distributed trace, normalised from either W3C or Google's legacy header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    /// 32 lowercase hex digits, never all zero.
    pub trace_id: String,
    /// The caller's span as 16 lowercase hex digits, when it sent a (non-zero) one.
    pub span_id: Option<String>,
    /// Whether the caller decided to record this trace.
    pub sampled: bool,
}

impl RequestContext {
    /// Builds the context of one request from its headers; never fails, whatever the headers hold.
    ///
    /// The request id is the first sane value of `x-fc-request-id`, then `x-request-id`, then the
    /// trace id (from `traceparent`, else `x-cloud-trace-context`), then a generated id. The trace
    /// comes from `traceparent` when it parses, else from `x-cloud-trace-context`.
    pub fn from_headers(headers: &HeaderMap) -> RequestContext {
        let trace = header_str(headers, &TRACEPARENT)
            .and_then(parse_traceparent)
            .or_else(|| {
                header_str(headers, &CLOUD_TRACE_CONTEXT).and_then(parse_cloud_trace_context)
            });
        let request_id = [FC_REQUEST_ID, REQUEST_ID]
            .iter()
            .find_map(|name| header_str(headers, name).and_then(sane_request_id))
            .map(str::to_owned)
            .or_else(|| trace.as_ref().map(|t| t.trace_id.clone()))
            .unwrap_or_else(generate_request_id);
        RequestContext { request_id, trace }
    }
}

/// Returns a fresh random id: 32 lowercase hex digits (128 bits, so collisions are not a concern),
/// the same shape as a trace id so log tooling treats both alike.
pub fn generate_request_id() -> String {
    // By hand rather than `format!("{:032x}")`, which went through the formatting machinery
    // for every RPC at several times the cost.
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bits = rand::random::<u128>();
    let mut digits = [0u8; 32];
    for (at, digit) in digits.iter_mut().enumerate() {
        *digit = HEX[((bits >> (124 - 4 * at)) & 0xf) as usize];
    }
    String::from_utf8_lossy(&digits).into_owned()
}

/// Parses a W3C `traceparent` value: `VV-TTTTTTTTTTTTTTTTTTTTTTTTTTTTTTTT-SSSSSSSSSSSSSSSS-FF`.
///
/// Follows the Trace Context spec: hex must be lowercase, version `ff` and all-zero trace or span
/// ids are invalid, version `00` must be exactly 55 characters, and a later version may append
/// `-`-separated data that is ignored (forward compatibility). Returns `None` for anything else.
pub fn parse_traceparent(value: &str) -> Option<TraceContext> {
    let value = value.trim_matches([' ', '\t']);
    let bytes = value.as_bytes();
    // Checking the fixed-width prefix byte-wise first keeps every later slice on a char boundary.
    if bytes.len() < 55 || !bytes[..55].is_ascii() {
        return None;
    }
    let version = &value[0..2];
    if !is_lower_hex(version) || version == "ff" {
        return None;
    }
    if bytes[2] != b'-' || bytes[35] != b'-' || bytes[52] != b'-' {
        return None;
    }
    // Version 00 has exactly four fields; future versions may only extend after a '-'.
    match (version, bytes.get(55)) {
        (_, None) => {}
        ("00", Some(_)) => return None,
        (_, Some(b'-')) => {}
        (_, Some(_)) => return None,
    }
    let trace_id = &value[3..35];
    let span_id = &value[36..52];
    let flags = &value[53..55];
    if !is_lower_hex(trace_id) || !is_lower_hex(span_id) || !is_lower_hex(flags) {
        return None;
    }
    if is_all_zero(trace_id) || is_all_zero(span_id) {
        return None;
    }
    let flags = u8::from_str_radix(flags, 16).ok()?;
    Some(TraceContext {
        trace_id: trace_id.to_owned(),
        span_id: Some(span_id.to_owned()),
        sampled: flags & 1 == 1,
    })
}

/// Parses Google's legacy `x-cloud-trace-context` value: `TRACE_ID[/SPAN_ID][;o=OPTIONS]`.
///
/// `TRACE_ID` is 32 hex digits (either case, normalised to lowercase, not all zero); `SPAN_ID` is
/// a decimal `u64`, converted to 16 lowercase hex digits, with `0` meaning "no span"; `o=1` means
/// sampled and `o=0` not sampled. Any other shape returns `None`.
pub fn parse_cloud_trace_context(value: &str) -> Option<TraceContext> {
    let value = value.trim_matches([' ', '\t']);
    let (ids, options) = match value.split_once(';') {
        Some((ids, options)) => (ids, Some(options)),
        None => (value, None),
    };
    let (trace_id, span) = match ids.split_once('/') {
        Some((trace_id, span)) => (trace_id, Some(span)),
        None => (ids, None),
    };
    if trace_id.len() != 32 || !trace_id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    if is_all_zero(trace_id) {
        return None;
    }
    let span_id = match span {
        None => None,
        Some(span) => {
            // u64::from_str would also accept a leading '+', which the format does not allow.
            if span.is_empty() || !span.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            match span.parse::<u64>().ok()? {
                0 => None,
                n => Some(format!("{n:016x}")),
            }
        }
    };
    let sampled = match options {
        None => false,
        Some("o=1") => true,
        Some("o=0") => false,
        Some(_) => return None,
    };
    Some(TraceContext {
        trace_id: trace_id.to_ascii_lowercase(),
        span_id,
        sampled,
    })
}

/// The first value of header `name`, if it is valid text. Only the first value counts: a
/// repeated id header is ambiguous and the platform's own is sent first.
fn header_str<'h>(headers: &'h HeaderMap, name: &HeaderName) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// `value` trimmed, if it is fit to be copied into every log line as a request id.
fn sane_request_id(value: &str) -> Option<&str> {
    let value = value.trim_matches([' ', '\t']);
    let ok = !value.is_empty()
        && value.len() <= MAX_REQUEST_ID_LEN
        && value.bytes().all(|b| b.is_ascii_graphic());
    ok.then_some(value)
}

fn is_lower_hex(s: &str) -> bool {
    s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn is_all_zero(s: &str) -> bool {
    s.bytes().all(|b| b == b'0')
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use std::collections::HashSet;

    const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    const SPAN: &str = "00f067aa0ba902b7";

    fn traceparent(version: &str, trace: &str, span: &str, flags: &str) -> String {
        format!("{version}-{trace}-{span}-{flags}")
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            let value = HeaderValue::from_str(value).expect("test header value");
            map.append(*name, value);
        }
        map
    }

    fn is_32_hex(s: &str) -> bool {
        s.len() == 32 && is_lower_hex(s)
    }

    #[test]
    fn traceparent_valid_sampled_and_not() {
        let t = parse_traceparent(&traceparent("00", TRACE, SPAN, "01")).expect("valid");
        assert_eq!(
            t,
            TraceContext {
                trace_id: TRACE.into(),
                span_id: Some(SPAN.into()),
                sampled: true
            }
        );
        let t = parse_traceparent(&traceparent("00", TRACE, SPAN, "00")).expect("valid");
        assert!(!t.sampled);
        // Only bit 0 means sampled; other flag bits are reserved and ignored.
        assert!(
            parse_traceparent(&traceparent("00", TRACE, SPAN, "03")).is_some_and(|t| t.sampled)
        );
        assert!(
            parse_traceparent(&traceparent("00", TRACE, SPAN, "02")).is_some_and(|t| !t.sampled)
        );
    }

    #[test]
    fn traceparent_tolerates_surrounding_whitespace() {
        let v = format!("  {}\t", traceparent("00", TRACE, SPAN, "01"));
        assert!(parse_traceparent(&v).is_some());
    }

    #[test]
    fn traceparent_future_version_may_extend() {
        let base = traceparent("01", TRACE, SPAN, "01");
        assert!(parse_traceparent(&base).is_some());
        assert!(parse_traceparent(&format!("{base}-whatever")).is_some());
        // Extension must be introduced by '-'.
        assert!(parse_traceparent(&format!("{base}x")).is_none());
        // Version 00 admits no extension at all.
        assert!(
            parse_traceparent(&format!("{}-x", traceparent("00", TRACE, SPAN, "01"))).is_none()
        );
    }

    #[test]
    fn traceparent_rejects_bad_version() {
        assert!(parse_traceparent(&traceparent("ff", TRACE, SPAN, "01")).is_none());
        assert!(parse_traceparent(&traceparent("0g", TRACE, SPAN, "01")).is_none());
        assert!(parse_traceparent(&traceparent("0A", TRACE, SPAN, "01")).is_none());
    }

    #[test]
    fn traceparent_rejects_zero_ids() {
        let zero_trace = "0".repeat(32);
        let zero_span = "0".repeat(16);
        assert!(parse_traceparent(&traceparent("00", &zero_trace, SPAN, "01")).is_none());
        assert!(parse_traceparent(&traceparent("00", TRACE, &zero_span, "01")).is_none());
    }

    #[test]
    fn traceparent_rejects_wrong_lengths() {
        assert!(parse_traceparent(&traceparent("00", &TRACE[1..], SPAN, "01")).is_none());
        assert!(parse_traceparent(&traceparent("00", &format!("{TRACE}a"), SPAN, "01")).is_none());
        assert!(parse_traceparent(&traceparent("00", TRACE, &SPAN[1..], "01")).is_none());
        assert!(parse_traceparent(&traceparent("00", TRACE, &format!("{SPAN}a"), "01")).is_none());
        assert!(parse_traceparent(&traceparent("00", TRACE, SPAN, "1")).is_none());
        assert!(parse_traceparent(&traceparent("0", TRACE, SPAN, "01")).is_none());
        assert!(parse_traceparent("").is_none());
        assert!(parse_traceparent("00").is_none());
    }

    #[test]
    fn traceparent_rejects_non_hex_and_uppercase() {
        let bad_trace = format!("{}z", &TRACE[1..]);
        assert!(parse_traceparent(&traceparent("00", &bad_trace, SPAN, "01")).is_none());
        let bad_span = format!("{}-", &SPAN[1..]);
        assert!(parse_traceparent(&traceparent("00", TRACE, &bad_span, "01")).is_none());
        assert!(parse_traceparent(&traceparent("00", TRACE, SPAN, "0x")).is_none());
        let upper = TRACE.to_ascii_uppercase();
        assert!(parse_traceparent(&traceparent("00", &upper, SPAN, "01")).is_none());
    }

    #[test]
    fn traceparent_rejects_wrong_separators() {
        let good = traceparent("00", TRACE, SPAN, "01");
        for pos in [2, 35, 52] {
            let mut bytes = good.clone().into_bytes();
            bytes[pos] = b'_';
            let bad = String::from_utf8(bytes).expect("ascii");
            assert!(parse_traceparent(&bad).is_none(), "separator at {pos}");
        }
    }

    #[test]
    fn traceparent_survives_non_ascii_without_panicking() {
        // Multi-byte characters straddling the fixed field boundaries must not cause a slice panic.
        let mut v = String::from("00-");
        v.push_str(&"é".repeat(30));
        assert!(parse_traceparent(&v).is_none());
        let v = format!("00-{}-{}-0é", TRACE, SPAN);
        assert!(parse_traceparent(&v).is_none());
        let v = format!("01-{}-{}-01é", TRACE, SPAN);
        assert!(parse_traceparent(&v).is_none());
    }

    #[test]
    fn cloud_trace_full_form() {
        let t = parse_cloud_trace_context(&format!("{TRACE}/1;o=1")).expect("valid");
        assert_eq!(
            t,
            TraceContext {
                trace_id: TRACE.into(),
                span_id: Some("0000000000000001".into()),
                sampled: true
            }
        );
        let t = parse_cloud_trace_context(&format!("{TRACE}/{};o=0", u64::MAX)).expect("valid");
        assert_eq!(t.span_id.as_deref(), Some("ffffffffffffffff"));
        assert!(!t.sampled);
    }

    #[test]
    fn cloud_trace_optional_parts() {
        let t = parse_cloud_trace_context(TRACE).expect("trace only");
        assert_eq!(t.span_id, None);
        assert!(!t.sampled);
        let t = parse_cloud_trace_context(&format!("{TRACE};o=1")).expect("no span");
        assert_eq!(t.span_id, None);
        assert!(t.sampled);
        let t = parse_cloud_trace_context(&format!("{TRACE}/12345")).expect("no options");
        assert_eq!(t.span_id.as_deref(), Some("0000000000003039"));
        assert!(!t.sampled);
        // Span 0 is "no span", as in W3C where an all-zero span id is invalid.
        let t = parse_cloud_trace_context(&format!("{TRACE}/0;o=1")).expect("zero span");
        assert_eq!(t.span_id, None);
    }

    #[test]
    fn cloud_trace_normalises_uppercase_trace_id() {
        let t = parse_cloud_trace_context(&TRACE.to_ascii_uppercase()).expect("valid");
        assert_eq!(t.trace_id, TRACE);
    }

    #[test]
    fn cloud_trace_rejects_malformed() {
        let cases = [
            String::new(),
            TRACE[1..].to_string(),
            format!("{TRACE}0"),
            format!("{}g", &TRACE[1..]),
            "0".repeat(32),
            format!("{TRACE}/"),
            format!("{TRACE}/abc"),
            format!("{TRACE}/+5"),
            format!("{TRACE}/-5"),
            format!("{TRACE}/18446744073709551616"), // u64::MAX + 1
            format!("{TRACE}/1;o=2"),
            format!("{TRACE}/1;o="),
            format!("{TRACE}/1;"),
            format!("{TRACE}/1;x=1"),
            format!("{TRACE}/1/2"),
            format!("{TRACE}é/1"),
        ];
        for case in &cases {
            assert!(parse_cloud_trace_context(case).is_none(), "{case:?}");
        }
    }

    #[test]
    fn request_id_precedence() {
        let tp = traceparent("00", TRACE, SPAN, "01");
        let all = headers(&[
            ("x-fc-request-id", "fc-id"),
            ("x-request-id", "generic-id"),
            ("traceparent", &tp),
        ]);
        assert_eq!(RequestContext::from_headers(&all).request_id, "fc-id");

        let no_fc = headers(&[("x-request-id", "generic-id"), ("traceparent", &tp)]);
        assert_eq!(
            RequestContext::from_headers(&no_fc).request_id,
            "generic-id"
        );

        let trace_only = headers(&[("traceparent", &tp)]);
        assert_eq!(RequestContext::from_headers(&trace_only).request_id, TRACE);

        let legacy_only = headers(&[("x-cloud-trace-context", &format!("{TRACE}/1;o=1"))]);
        assert_eq!(RequestContext::from_headers(&legacy_only).request_id, TRACE);

        let none = RequestContext::from_headers(&HeaderMap::new());
        assert!(is_32_hex(&none.request_id), "{}", none.request_id);
        assert_eq!(none.trace, None);
    }

    #[test]
    fn insane_request_ids_fall_through() {
        let long = "a".repeat(MAX_REQUEST_ID_LEN + 1);
        let max = "a".repeat(MAX_REQUEST_ID_LEN);
        for bad in ["", "   ", "has space", "tab\there", long.as_str()] {
            let h = headers(&[("x-fc-request-id", bad), ("x-request-id", "fallback")]);
            assert_eq!(
                RequestContext::from_headers(&h).request_id,
                "fallback",
                "{bad:?}"
            );
        }
        let h = headers(&[("x-fc-request-id", &max)]);
        assert_eq!(RequestContext::from_headers(&h).request_id, max);
        let h = headers(&[("x-fc-request-id", " padded ")]);
        assert_eq!(RequestContext::from_headers(&h).request_id, "padded");

        // Non-ASCII bytes are representable in a HeaderValue but must never become an id.
        let mut h = HeaderMap::new();
        h.insert(
            "x-fc-request-id",
            HeaderValue::from_bytes(b"caf\xc3\xa9").expect("opaque bytes"),
        );
        h.insert(
            "x-request-id",
            HeaderValue::from_bytes(b"\x80\xff").expect("opaque bytes"),
        );
        let ctx = RequestContext::from_headers(&h);
        assert!(is_32_hex(&ctx.request_id), "{}", ctx.request_id);
    }

    #[test]
    fn traceparent_wins_over_legacy_header() {
        let other = "0af7651916cd43dd8448eb211c80319c";
        let tp = traceparent("00", TRACE, SPAN, "00");
        let h = headers(&[
            ("traceparent", &tp),
            ("x-cloud-trace-context", &format!("{other}/7;o=1")),
        ]);
        let trace = RequestContext::from_headers(&h).trace.expect("trace");
        assert_eq!(trace.trace_id, TRACE);
        assert!(!trace.sampled);
    }

    #[test]
    fn invalid_traceparent_falls_back_to_legacy_header() {
        let other = "0af7651916cd43dd8448eb211c80319c";
        let h = headers(&[
            ("traceparent", "garbage"),
            ("x-cloud-trace-context", &format!("{other}/7;o=1")),
        ]);
        let ctx = RequestContext::from_headers(&h);
        let trace = ctx.trace.expect("trace");
        assert_eq!(trace.trace_id, other);
        assert_eq!(trace.span_id.as_deref(), Some("0000000000000007"));
        assert!(trace.sampled);
        assert_eq!(ctx.request_id, other);
    }

    #[test]
    fn invalid_trace_headers_give_no_trace() {
        let h = headers(&[
            ("traceparent", "garbage"),
            ("x-cloud-trace-context", "junk"),
        ]);
        let ctx = RequestContext::from_headers(&h);
        assert_eq!(ctx.trace, None);
        assert!(is_32_hex(&ctx.request_id));
    }

    #[test]
    fn only_first_header_value_counts() {
        let h = headers(&[("x-fc-request-id", "first"), ("x-fc-request-id", "second")]);
        assert_eq!(RequestContext::from_headers(&h).request_id, "first");
    }

    #[test]
    fn generated_ids_are_unique_32_hex() {
        let ids: HashSet<String> = (0..1000).map(|_| generate_request_id()).collect();
        assert_eq!(ids.len(), 1000);
        assert!(ids.iter().all(|id| is_32_hex(id)), "{ids:?}");
    }
}
