//! Logging set-up for the bootstrap: one global `tracing` subscriber writing to stdout, which is
//! where Function Compute, Cloud Run, Knative and NVCF collect logs.
//!
//! `main` calls [`init`] once with [`TelemetrySettings`] and keeps the returned [`Telemetry`]
//! handle: FC's `/pre-freeze` hook awaits [`Telemetry::flush`] so no line is lost or delayed while
//! the instance is frozen, and `main` calls [`Telemetry::shutdown`] on the way out.
//!
//! Lines are either tracing-subscriber's human text format or Google Cloud Logging JSON (the
//! `json` submodule). Either way the request path never waits on stdout: lines go through the
//! non-blocking [`LogWriter`] (the `writer` submodule). Events with target [`FC_TARGET`] are the
//! exception to formatting: FC's console groups logs by raw lines such as
//! `FC Invoke Start RequestId: <id>`, so those are written as their bare message, through the
//! same writer so they stay in order with everything else.

mod json;
mod writer;

#[cfg(test)]
mod tests;

use std::fmt::{self, Write as _};
use std::io::{self, IsTerminal};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::{Directive, ParseError};
use tracing_subscriber::fmt::format::{FormatEvent, FormatFields, Writer};
use tracing_subscriber::fmt::{FmtContext, MakeWriter};
use tracing_subscriber::layer::{Layer, SubscriberExt};
use tracing_subscriber::registry::{LookupSpan, Registry};

pub use writer::{EventWriter, LogWriter};

/// Target of events that must reach stdout verbatim, for FC's log grouping, e.g.
/// `tracing::info!(target: "fc", "FC Invoke Start RequestId: {id}")`.
pub const FC_TARGET: &str = "fc";

/// Always appended to the user's filter so FC's contract lines survive e.g. a `warn` filter.
const FC_DIRECTIVE: &str = "fc=info";

/// Used when the configured filter has no directives at all, which would otherwise mean "log
/// nothing" and is far more likely an empty environment variable than a wish for silence.
const DEFAULT_FILTER: &str = "info";

/// How long [`Telemetry::shutdown`] (and dropping the last handle) waits for stdout.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(3);

/// Guards against a second [`init`], which would otherwise spawn a writer thread for nothing.
static INITIALISED: AtomicBool = AtomicBool::new(false);

/// How to log, as decided by `main` from flags and the platform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TelemetrySettings {
    /// `true` for Cloud Logging structured JSON lines, `false` for human-readable text.
    pub json: bool,
    /// `EnvFilter` directives, e.g. `info` or `bootstrap=debug,h2=warn`; empty means `info`.
    pub filter: String,
    /// GCP project id; when set, JSON lines carrying a `trace_id` field link to Cloud Trace.
    pub gcp_project: Option<String>,
}

/// Why [`init`] failed.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// One comma-separated directive of [`TelemetrySettings::filter`] does not parse.
    #[error("invalid log filter directive `{directive}`")]
    InvalidFilter {
        /// The offending directive, as written.
        directive: String,
        /// What is wrong with it.
        #[source]
        source: ParseError,
    },
    /// A global subscriber is already installed (by an earlier [`init`] or by someone else).
    #[error("logging is already initialised in this process")]
    AlreadyInitialised,
    /// The log writer thread could not be started.
    #[error("could not start the log writer thread")]
    WriterThread(#[source] io::Error),
}

/// Handle on the installed logging; cheap to clone.
///
/// Dropping the last clone flushes like [`Telemetry::shutdown`], as a safety net for early
/// returns; prefer calling `shutdown` explicitly (`std::process::exit` skips destructors).
#[derive(Clone)]
pub struct Telemetry {
    inner: Arc<Inner>,
}

struct Inner {
    writer: LogWriter,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.writer.flush_blocking(SHUTDOWN_TIMEOUT);
    }
}

impl fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Telemetry")
            .field("writer", &self.inner.writer)
            .finish()
    }
}

impl Telemetry {
    fn new(writer: LogWriter) -> Telemetry {
        Telemetry {
            inner: Arc::new(Inner { writer }),
        }
    }

    /// Returns once every line logged before the call has been written to stdout and stdout
    /// flushed; for FC's `/pre-freeze` hook. Lines dropped under pressure are not waited for.
    ///
    /// Must be awaited inside a Tokio runtime. It waits for stdout, so a caller that must answer
    /// in bounded time should wrap it in `tokio::time::timeout`.
    pub async fn flush(&self) {
        self.inner.writer.flush().await;
    }

    /// [`flush`](Self::flush) for synchronous code, giving up after `timeout`; returns whether
    /// everything was flushed. Safe to call inside or outside a runtime (it blocks the thread).
    pub fn flush_blocking(&self, timeout: Duration) -> bool {
        self.inner.writer.flush_blocking(timeout)
    }

    /// Flushes (waiting at most a few seconds for stdout) before the process exits; returns
    /// whether everything was flushed. Lines logged afterwards are still written, but nothing
    /// then waits for them.
    pub fn shutdown(self) -> bool {
        self.inner.writer.flush_blocking(SHUTDOWN_TIMEOUT)
    }

    /// Lines dropped since start because logging outpaced stdout.
    pub fn dropped_lines(&self) -> u64 {
        self.inner.writer.dropped_lines()
    }

    /// The [`MakeWriter`] behind the global subscriber, for any extra layer that must write in
    /// order with it.
    pub fn writer(&self) -> LogWriter {
        self.inner.writer.clone()
    }
}

/// Installs the global subscriber and starts the stdout writer thread.
///
/// Succeeds once per process; later calls return [`TelemetryError::AlreadyInitialised`]. The
/// filter is checked first, so a bad one is reported even then.
pub fn init(settings: &TelemetrySettings) -> Result<Telemetry, TelemetryError> {
    install(settings, Box::new(io::stdout()), io::stdout().is_terminal())
}

/// [`init`] with a chosen sink, so tests can install the global subscriber without printing.
fn install(
    settings: &TelemetrySettings,
    sink: Box<dyn io::Write + Send>,
    terminal: bool,
) -> Result<Telemetry, TelemetryError> {
    let filter = build_filter(&settings.filter)?;
    if INITIALISED.swap(true, Ordering::SeqCst) {
        return Err(TelemetryError::AlreadyInitialised);
    }
    let writer = LogWriter::spawn(sink, writer::QUEUE_CAPACITY, drop_notice(settings.json))
        .map_err(|e| {
            INITIALISED.store(false, Ordering::SeqCst);
            TelemetryError::WriterThread(e)
        })?;
    let subscriber = build_subscriber(
        settings.json,
        settings.gcp_project.clone(),
        terminal && !settings.json,
        filter,
        writer.clone(),
    );
    // Installs no `log` bridge: no runtime dependency logs through the `log` crate.
    tracing::subscriber::set_global_default(subscriber)
        .map_err(|_| TelemetryError::AlreadyInitialised)?;
    Ok(Telemetry::new(writer))
}

/// Parses `spec` one directive at a time so an error can name the culprit, then adds
/// [`FC_DIRECTIVE`] last: `EnvFilter` replaces a directive for the same target, so even an
/// explicit `fc=off` cannot silence FC's contract lines.
fn build_filter(spec: &str) -> Result<EnvFilter, TelemetryError> {
    let spec = if spec.split(',').all(|p| p.trim().is_empty()) {
        DEFAULT_FILTER
    } else {
        spec
    };
    spec.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .chain([FC_DIRECTIVE])
        .try_fold(EnvFilter::default(), |filter, piece| {
            let directive =
                piece
                    .parse::<Directive>()
                    .map_err(|source| TelemetryError::InvalidFilter {
                        directive: piece.to_owned(),
                        source,
                    })?;
            Ok(filter.add_directive(directive))
        })
}

/// The whole subscriber, over any writer: `init` passes the stdout [`LogWriter`], tests a buffer.
fn build_subscriber<W>(
    json: bool,
    gcp_project: Option<String>,
    ansi: bool,
    filter: EnvFilter,
    writer: W,
) -> impl Subscriber + for<'a> LookupSpan<'a> + Send + Sync + 'static
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let base = Registry::default().with(filter);
    if json {
        base.with(json::JsonLayer::new(writer, gcp_project).boxed())
    } else {
        base.with(
            tracing_subscriber::fmt::layer()
                .with_writer(writer)
                .with_ansi(ansi)
                .event_format(FcLines(tracing_subscriber::fmt::format()))
                .boxed(),
        )
    }
}

/// Wraps the text format so that [`FC_TARGET`] events are written as their bare message (the
/// JSON layer does the same itself).
struct FcLines<F>(F);

impl<S, N, F> FormatEvent<S, N> for FcLines<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        if event.metadata().target() != FC_TARGET {
            return self.0.format_event(ctx, writer, event);
        }
        let mut message = MessageOnly(String::new());
        event.record(&mut message);
        writer.write_str(&message.0)?;
        writer.write_char('\n')
    }
}

/// Extracts an event's `message` field and ignores the rest.
pub(crate) struct MessageOnly(pub(crate) String);

impl Visit for MessageOnly {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0.push_str(value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        }
    }
}

/// The writer thread's report of dropped lines, shaped like the rest of the output.
fn drop_notice(json: bool) -> Box<dyn Fn(u64) -> Vec<u8> + Send> {
    const TARGET: &str = module_path!();
    if json {
        Box::new(|dropped| json::drop_notice_line(TARGET, dropped))
    } else {
        Box::new(|dropped| {
            let time = humantime::format_rfc3339_micros(SystemTime::now());
            let message = drop_notice_message(dropped);
            format!("{time}  WARN {TARGET}: {message}\n").into_bytes()
        })
    }
}

fn drop_notice_message(dropped: u64) -> String {
    format!("dropped {dropped} log lines: logging outpaced stdout")
}
