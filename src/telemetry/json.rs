//! Google Cloud Logging structured JSON: one flat object per line, which Cloud Run's log agent
//! turns into severity, message, trace correlation and searchable fields (and which stays one
//! greppable line on the other platforms).
//!
//! Two pieces cooperate. [`JsonFieldsLayer`] keeps each span's fields as JSON values in the
//! span's extensions, updated by `Span::record`, because the fmt layer only keeps them as
//! pre-rendered text. [`GcpJsonFormat`] then writes an event as
//! `{"time","severity","message","target", <span fields outermost first>, <event fields>}`, with
//! inner values overriding outer ones, and derives Cloud Logging's special
//! `logging.googleapis.com/*` keys from the `trace_id`, `span_id` and `trace_sampled` fields.

use std::borrow::Cow;
use std::fmt::{self, Write as _};
use std::time::SystemTime;

use serde::Serialize;
use serde::ser::Serializer;
use serde_json::Value;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::{FormatEvent, FormatFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormattedFields};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::LookupSpan;

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
        match self.0.iter_mut().find(|(n, _)| *n == name) {
            Some(slot) => slot.1 = value,
            None => self.0.push((name, value)),
        }
    }

    fn get(&self, name: &str) -> Option<&Value> {
        self.0.iter().find(|(n, _)| *n == name).map(|(_, v)| v)
    }

    fn take(&mut self, name: &str) -> Option<Value> {
        let index = self.0.iter().position(|(n, _)| *n == name)?;
        Some(self.0.remove(index).1)
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

/// A [`Layer`] that stores every span's fields as JSON values in the span's extensions (on
/// creation, and again on each `Span::record`) for [`GcpJsonFormat`] to read.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct JsonFieldsLayer;

impl<S> Layer<S> for JsonFieldsLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
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
}

/// A field formatter that renders nothing: in JSON mode the fmt layer's own text rendering of
/// span fields would be pure overhead, since [`JsonFieldsLayer`] keeps them instead.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct NoFields;

impl<'w> FormatFields<'w> for NoFields {
    fn format_fields<R: tracing_subscriber::field::RecordFields>(
        &self,
        _writer: Writer<'w>,
        _fields: R,
    ) -> fmt::Result {
        Ok(())
    }

    fn add_fields(
        &self,
        _current: &'w mut FormattedFields<Self>,
        _fields: &Record<'_>,
    ) -> fmt::Result {
        Ok(())
    }
}

/// The [`FormatEvent`] that writes an event as one Cloud Logging JSON object per line.
#[derive(Debug, Clone, Default)]
pub(crate) struct GcpJsonFormat {
    /// GCP project used to build the fully qualified trace name Cloud Logging expects.
    gcp_project: Option<String>,
}

impl GcpJsonFormat {
    pub(crate) fn new(gcp_project: Option<String>) -> Self {
        GcpJsonFormat { gcp_project }
    }
}

impl<S, N> FormatEvent<S, N> for GcpJsonFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut fields = JsonFields::default();
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                if let Some(span_fields) = span.extensions().get::<JsonFields>() {
                    for (name, value) in &span_fields.0 {
                        fields.set(name, value.clone());
                    }
                }
            }
        }
        let mut own = JsonFields::default();
        event.record(&mut JsonVisitor(&mut own));
        let message = match own.take("message") {
            Some(Value::String(text)) => text,
            Some(other) => other.to_string(),
            None => String::new(),
        };
        for (name, value) in own.0 {
            fields.set(name, value);
        }
        let metadata = event.metadata();
        let line = render_line(
            SystemTime::now(),
            metadata.level(),
            &message,
            metadata.target(),
            &fields,
            self.gcp_project.as_deref(),
        )
        .map_err(|_| fmt::Error)?;
        writer.write_str(&line)
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

/// Serializes the entries as a JSON object in the given order (serde_json's `Map` would sort).
struct Ordered<'a>(&'a [(Cow<'a, str>, Value)]);

impl Serialize for Ordered<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.0.iter().map(|(k, v)| (k, v)))
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
) -> Result<String, serde_json::Error> {
    let time = humantime::format_rfc3339_micros(time).to_string();
    let mut entries: Vec<(Cow<'_, str>, Value)> = vec![
        ("time".into(), Value::String(time)),
        ("severity".into(), Value::from(severity(level))),
        ("message".into(), Value::from(message)),
        ("target".into(), Value::from(target)),
    ];
    for (name, value) in &fields.0 {
        let key: Cow<'_, str> = if RESERVED.contains(name) {
            format!("fields.{name}").into()
        } else {
            Cow::Borrowed(*name)
        };
        entries.push((key, value.clone()));
    }
    let mut special = Vec::new();
    if let (Some(project), Some(trace_id)) = (gcp_project, fields.get("trace_id")) {
        let trace_id = text_of(trace_id);
        special.push((
            TRACE_KEY,
            Value::String(format!("projects/{project}/traces/{trace_id}")),
        ));
    }
    if let Some(span_id) = fields.get("span_id") {
        special.push((SPAN_ID_KEY, Value::String(text_of(span_id).into_owned())));
    }
    if let Some(sampled) = fields.get("trace_sampled").and_then(bool_of) {
        special.push((SAMPLED_KEY, Value::Bool(sampled)));
    }
    for (key, value) in special {
        // The derived value wins over a field that happens to use Cloud Logging's own key.
        entries.retain(|(k, _)| k != key);
        entries.push((key.into(), value));
    }
    let mut line = serde_json::to_string(&Ordered(&entries))?;
    line.push('\n');
    Ok(line)
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
    .unwrap_or_else(|_| format!("{message}\n"))
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
