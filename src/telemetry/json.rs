//! Google Cloud Logging structured JSON: one flat object per line, which Cloud Run's log agent
//! turns into severity, message, trace correlation and searchable fields (and which stays one
//! greppable line on the other platforms).
//!
//! [`JsonLayer`] is the whole format: it keeps each span's fields as JSON values in the span's
//! extensions (updated by `Span::record`), and writes each event as
//! `{"time","severity","message","target", <span fields outermost first>, <event fields>}`, with
//! inner values overriding outer ones, plus Cloud Logging's special `logging.googleapis.com/*`
//! keys derived from the `trace_id`, `span_id` and `trace_sampled` fields. It stands in for
//! tracing-subscriber's fmt layer rather than plugging a format into it: every RPC writes a line,
//! and the fmt layer's per-span text fields and per-event buffer copies were pure overhead here.

use std::borrow::Cow;
use std::cell::RefCell;
use std::fmt::{self, Write as _};
use std::io;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::LookupSpan;

use super::{FC_TARGET, MessageOnly};

/// Keys this format owns; a span or event field with one of these names is written as
/// `fields.<name>` so it can neither clobber them nor be lost.
const RESERVED: [&str; 4] = ["time", "severity", "message", "target"];

const TRACE_KEY: &str = "logging.googleapis.com/trace";
const SPAN_ID_KEY: &str = "logging.googleapis.com/spanId";
const SAMPLED_KEY: &str = "logging.googleapis.com/trace_sampled";

/// Field name/value pairs in declaration order; a later value for a name replaces the earlier
/// one in place. A `Vec` because spans carry a handful of fields and order reads better in logs.
#[derive(Default, Debug, Clone)]
pub(crate) struct JsonFields(Vec<(&'static str, Value)>);

impl JsonFields {
    fn set(&mut self, name: &'static str, value: Value) {
        set_in_place(&mut self.0, name, value);
    }

    fn take(&mut self, name: &str) -> Option<Value> {
        let index = self.0.iter().position(|(n, _)| *n == name)?;
        Some(self.0.remove(index).1)
    }
}

/// Replaces the value of `name` where it stands, or appends it: field order is declaration order.
fn set_in_place<'n, V>(fields: &mut Vec<(&'n str, V)>, name: &'n str, value: V) {
    match fields.iter_mut().find(|(n, _)| *n == name) {
        Some(slot) => slot.1 = value,
        None => fields.push((name, value)),
    }
}

/// Records fields as JSON values, keeping numbers and booleans typed.
struct JsonVisitor<'a>(&'a mut JsonFields);

impl Visit for JsonVisitor<'_> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        // JSON has no NaN or infinity; serde_json would turn them into null and lose them.
        let value = serde_json::Number::from_f64(value)
            .map(Value::Number)
            .unwrap_or_else(|| Value::String(value.to_string()));
        self.0.set(field.name(), value);
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.set(field.name(), Value::from(value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.set(field.name(), Value::from(value));
    }

    fn record_i128(&mut self, field: &Field, value: i128) {
        let value = i64::try_from(value)
            .map(Value::from)
            .unwrap_or_else(|_| Value::String(value.to_string()));
        self.0.set(field.name(), value);
    }

    fn record_u128(&mut self, field: &Field, value: u128) {
        let value = u64::try_from(value)
            .map(Value::from)
            .unwrap_or_else(|_| Value::String(value.to_string()));
        self.0.set(field.name(), value);
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.set(field.name(), Value::Bool(value));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.set(field.name(), Value::String(value.to_owned()));
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        // Include the causes: transport errors are usually useless without them.
        let mut text = value.to_string();
        let mut source = value.source();
        while let Some(cause) = source {
            let _ = write!(text, ": {cause}");
            source = cause.source();
        }
        self.0.set(field.name(), Value::String(text));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        // Also the path of the `message` field, whose `fmt::Arguments` debug-prints as its text.
        self.0
            .set(field.name(), Value::String(format!("{value:?}")));
    }
}

/// The JSON format as a [`Layer`], writing each line to `W` (the stdout writer, or a buffer in
/// tests). Events with target [`FC_TARGET`] are written as their bare message.
pub(crate) struct JsonLayer<W> {
    make_writer: W,
    /// GCP project used to build the fully qualified trace name Cloud Logging expects.
    gcp_project: Option<String>,
}

impl<W> JsonLayer<W> {
    pub(crate) fn new(make_writer: W, gcp_project: Option<String>) -> Self {
        JsonLayer {
            make_writer,
            gcp_project,
        }
    }
}

impl<S, W> Layer<S> for JsonLayer<W>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + 'static,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut fields = JsonFields::default();
        attrs.record(&mut JsonVisitor(&mut fields));
        let mut extensions = span.extensions_mut();
        // `insert` panics on a duplicate type, so never assume the slot is empty.
        match extensions.get_mut::<JsonFields>() {
            Some(existing) => *existing = fields,
            None => extensions.insert(fields),
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut extensions = span.extensions_mut();
        match extensions.get_mut::<JsonFields>() {
            Some(fields) => values.record(&mut JsonVisitor(fields)),
            None => {
                let mut fields = JsonFields::default();
                values.record(&mut JsonVisitor(&mut fields));
                extensions.insert(fields);
            }
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let metadata = event.metadata();
        // Written straight into the writer: a line is dozens of small writes, all monomorphic.
        let mut out = IoFmt(self.make_writer.make_writer_for(metadata));
        // There is nowhere to report a failing log writer; the stdout writer never fails.
        if metadata.target() == FC_TARGET {
            let mut message = MessageOnly(String::new());
            event.record(&mut message);
            let _ = out.write_str(&message.0);
            let _ = out.write_char('\n');
            return;
        }
        // The fields are borrowed from the spans' extensions and the event, not copied.
        let spans: Vec<_> = ctx
            .event_scope(event)
            .map(|scope| scope.from_root().collect())
            .unwrap_or_default();
        let extensions: Vec<_> = spans.iter().map(|span| span.extensions()).collect();
        // Sized for an RPC's finish line, so neither grows while it is filled.
        let mut own = JsonFields(Vec::with_capacity(8));
        event.record(&mut JsonVisitor(&mut own));
        let message = own.take("message");
        let mut fields = FieldRefs(Vec::with_capacity(16));
        for span_fields in extensions.iter().filter_map(|e| e.get::<JsonFields>()) {
            for (name, value) in &span_fields.0 {
                fields.set(name, value);
            }
        }
        for (name, value) in &own.0 {
            fields.set(name, value);
        }
        let message: Cow<'_, str> = match &message {
            Some(Value::String(text)) => Cow::Borrowed(text),
            Some(other) => Cow::Owned(other.to_string()),
            None => Cow::Borrowed(""),
        };
        let _ = write_line(
            &mut out,
            SystemTime::now(),
            metadata.level(),
            &message,
            metadata.target(),
            &fields,
            self.gcp_project.as_deref(),
        );
    }
}

/// An `io::Write` as a `fmt::Write`.
struct IoFmt<W>(W);

impl<W: io::Write> fmt::Write for IoFmt<W> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        self.0.write_all(text.as_bytes()).map_err(|_| fmt::Error)
    }
}

/// [`JsonFields`] borrowed: name/value pairs in order, a later value for a name replacing the
/// earlier one in place.
#[derive(Default)]
struct FieldRefs<'a>(Vec<(&'a str, &'a Value)>);

impl<'a> FieldRefs<'a> {
    fn set(&mut self, name: &'a str, value: &'a Value) {
        set_in_place(&mut self.0, name, value);
    }

    fn get(&self, name: &str) -> Option<&'a Value> {
        self.0.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
    }
}

/// Cloud Logging's name for a tracing level.
pub(crate) fn severity(level: &Level) -> &'static str {
    match *level {
        Level::TRACE | Level::DEBUG => "DEBUG",
        Level::INFO => "INFO",
        Level::WARN => "WARNING",
        Level::ERROR => "ERROR",
    }
}

/// One complete JSON line, newline included.
pub(crate) fn render_line(
    time: SystemTime,
    level: &Level,
    message: &str,
    target: &str,
    fields: &JsonFields,
    gcp_project: Option<&str>,
) -> String {
    let mut refs = FieldRefs::default();
    for (name, value) in &fields.0 {
        refs.set(name, value);
    }
    let mut line = String::with_capacity(256);
    // Writing to a `String` cannot fail.
    let _ = write_line(&mut line, time, level, message, target, &refs, gcp_project);
    line
}

/// Writes one line: `{"time","severity","message","target", <fields>, <Cloud Logging keys>}`.
///
/// Written by hand rather than through serde_json's serializer so that nothing is copied into
/// an intermediate map first; the values are serde_json's, and so is their text.
fn write_line<W: fmt::Write>(
    out: &mut W,
    time: SystemTime,
    level: &Level,
    message: &str,
    target: &str,
    fields: &FieldRefs<'_>,
    gcp_project: Option<&str>,
) -> fmt::Result {
    out.write_str("{\"time\":\"")?;
    write_time(out, time)?;
    out.write_str("\",\"severity\":\"")?;
    out.write_str(severity(level))?;
    out.write_str("\",\"message\":")?;
    write_json_str(out, message)?;
    out.write_str(",\"target\":")?;
    write_json_str(out, target)?;

    let trace = gcp_project.zip(fields.get("trace_id"));
    let span_id = fields.get("span_id");
    let sampled = fields.get("trace_sampled").and_then(bool_of);
    for (name, value) in &fields.0 {
        // The derived keys win over a field that happens to use Cloud Logging's own key.
        let derived = match *name {
            TRACE_KEY => trace.is_some(),
            SPAN_ID_KEY => span_id.is_some(),
            SAMPLED_KEY => sampled.is_some(),
            _ => false,
        };
        if derived {
            continue;
        }
        out.write_char(',')?;
        if RESERVED.contains(name) {
            out.write_str("\"fields.")?;
            write_json_escaped(out, name)?;
            out.write_char('"')?;
        } else {
            write_json_str(out, name)?;
        }
        out.write_char(':')?;
        write_json_value(out, value)?;
    }
    if let Some((project, trace_id)) = trace {
        write!(out, ",\"{TRACE_KEY}\":\"projects/")?;
        write_json_escaped(out, project)?;
        out.write_str("/traces/")?;
        write_json_escaped(out, &text_of(trace_id))?;
        out.write_char('"')?;
    }
    if let Some(span_id) = span_id {
        write!(out, ",\"{SPAN_ID_KEY}\":")?;
        write_json_str(out, &text_of(span_id))?;
    }
    if let Some(sampled) = sampled {
        write!(out, ",\"{SAMPLED_KEY}\":{sampled}")?;
    }
    out.write_str("}\n")
}

/// `time` as RFC 3339 in UTC with microseconds, `2026-12-01T21:55:51.332040Z`. The part up to
/// the second is formatted once a second per thread and kept: formatting a date costs more than
/// the rest of a line.
fn write_time<W: fmt::Write>(out: &mut W, time: SystemTime) -> fmt::Result {
    thread_local! {
        static SECOND: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    SECOND.with(|cell| {
        let mut cached = cell.borrow_mut();
        if cached.0 != since.as_secs() {
            let second = UNIX_EPOCH + Duration::from_secs(since.as_secs());
            let text = humantime::format_rfc3339_seconds(second).to_string();
            // Without its `Z`: the fraction goes before it.
            cached.1 = text.trim_end_matches('Z').to_owned();
            cached.0 = since.as_secs();
        }
        out.write_str(&cached.1)
    })?;
    let mut fraction = *b".000000Z";
    let mut micros = since.subsec_micros();
    for digit in fraction[1..7].iter_mut().rev() {
        *digit = b'0' + (micros % 10) as u8;
        micros /= 10;
    }
    out.write_str(std::str::from_utf8(&fraction).map_err(|_| fmt::Error)?)
}

/// A JSON string literal, quotes included.
fn write_json_str<W: fmt::Write>(out: &mut W, text: &str) -> fmt::Result {
    out.write_char('"')?;
    write_json_escaped(out, text)?;
    out.write_char('"')
}

/// `text` escaped for a JSON string as serde_json escapes it: quote, backslash and control
/// characters; everything else, non-ASCII included, as it is.
fn write_json_escaped<W: fmt::Write>(out: &mut W, text: &str) -> fmt::Result {
    // Nearly every string needs no escaping (ids, paths, messages). A fold with no early exit
    // compiles to a vector loop, far cheaper than a branch on every byte.
    let needs_escape = |byte: u8| (byte < 0x20) | (byte == b'"') | (byte == b'\\');
    if !text
        .bytes()
        .fold(false, |any, byte| any | needs_escape(byte))
    {
        return out.write_str(text);
    }
    let mut plain = 0;
    for (at, byte) in text.bytes().enumerate() {
        let escaped = match byte {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            0x00..=0x1f => "",
            _ => continue,
        };
        // `at` is an ASCII byte, so both slices end on character boundaries.
        out.write_str(&text[plain..at])?;
        if escaped.is_empty() {
            write!(out, "\\u{byte:04x}")?;
        } else {
            out.write_str(escaped)?;
        }
        plain = at + 1;
    }
    out.write_str(&text[plain..])
}

fn write_json_value<W: fmt::Write>(out: &mut W, value: &Value) -> fmt::Result {
    match value {
        Value::String(text) => write_json_str(out, text),
        // `Number`, `Bool` and `Null` display as their JSON text; arrays and objects never come
        // from a visitor, but serde_json's own text is right for them too.
        other => write!(out, "{other}"),
    }
}

/// The line reporting dropped log lines, in this format.
pub(crate) fn drop_notice_line(target: &str, dropped: u64) -> Vec<u8> {
    let mut fields = JsonFields::default();
    fields.set("dropped_lines", Value::from(dropped));
    let message = super::drop_notice_message(dropped);
    // Rendering plain values cannot fail; fall back to a minimal line rather than lose the report.
    render_line(
        SystemTime::now(),
        &Level::WARN,
        &message,
        target,
        &fields,
        None,
    )
    .into_bytes()
}

fn text_of(value: &Value) -> Cow<'_, str> {
    match value {
        Value::String(text) => Cow::Borrowed(text),
        other => Cow::Owned(other.to_string()),
    }
}

fn bool_of(value: &Value) -> Option<bool> {
    match value {
        Value::Bool(b) => Some(*b),
        Value::String(text) => text.parse().ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_matches_humantime_across_seconds() {
        let start = UNIX_EPOCH + Duration::from_secs(1_796_000_000);
        // Twice within a second (the cached part), then across seconds, minutes and a day.
        for offset_us in [0, 1, 999_999, 1_000_000, 59_000_007, 86_400_123_456] {
            let time = start + Duration::from_micros(offset_us);
            let mut ours = String::new();
            write_time(&mut ours, time).unwrap();
            assert_eq!(ours, humantime::format_rfc3339_micros(time).to_string());
        }
    }
}
