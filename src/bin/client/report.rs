//! Turns whatever went wrong into the one line printed after `error: `.
//!
//! The errors that reach the user are deep chains (tonic transport error → connect error →
//! io error → rustls error); printing the top says only "transport error", printing all of it
//! is noise. So a connection failure is worded from the innermost cause that means something
//! to a person (`connection refused`, `invalid peer certificate: UnknownIssuer`), and a failed
//! call from its gRPC status, as `<Code>: <message>`.

use std::error::Error;
use std::fmt;
use std::io;
use std::time::Duration;

use http::uri::Authority;
use tonic::{Code, Status};

use crate::connect::ConnectError;

/// Why the client exits 1.
#[derive(Debug)]
pub enum Failure {
    Connect {
        addr: Authority,
        connect_timeout: Duration,
        error: ConnectError,
    },
    Call(Status),
    /// A call over plaintext h2c that died of an HTTP/2 framing error: what a TLS port
    /// answering garbage (nginx's "plain HTTP request was sent to HTTPS port") looks like.
    PlaintextProtocol(Status),
    /// The whole call, streams included, outlived `--timeout`.
    Deadline(Duration),
    Output(io::Error),
}

impl From<Status> for Failure {
    fn from(status: Status) -> Self {
        Failure::Call(status)
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Connect {
                error: ConnectError::Setup(e),
                ..
            } => write!(f, "{e:#}"),
            Failure::Connect {
                addr,
                connect_timeout,
                error: ConnectError::Transport(e),
            } => {
                write!(f, "cannot connect to {addr}: ")?;
                if timed_out(e) {
                    write!(
                        f,
                        "timed out after {} (--connect-timeout)",
                        humantime::format_duration(*connect_timeout)
                    )
                } else {
                    f.write_str(&cause(e))
                }
            }
            Failure::Call(status) => call_failure(f, status),
            Failure::PlaintextProtocol(status) => {
                call_failure(f, status)?;
                f.write_str(" (the server may expect TLS: try --tls)")
            }
            Failure::Deadline(timeout) => write!(
                f,
                "{:?}: no complete response within {} (--timeout)",
                Code::DeadlineExceeded,
                humantime::format_duration(*timeout)
            ),
            Failure::Output(e) => write!(f, "cannot write output: {}", io_detail(e)),
        }
    }
}

impl Failure {
    /// Rewords call failures whose meaning depends on how the call was made.
    pub fn in_context(self, timeout: Duration, plaintext: bool) -> Self {
        match self {
            // tonic enforces `grpc-timeout` on the client too, but reports it as Cancelled
            // with this fixed message; it is the deadline, and gRPC calls that
            // DeadlineExceeded.
            Failure::Call(status)
                if status.code() == Code::Cancelled && status.message() == "Timeout expired" =>
            {
                Failure::Deadline(timeout)
            }
            // tonic's wording for an h2 connection error; the code alone is too broad.
            Failure::Call(status)
                if plaintext
                    && status.code() == Code::Internal
                    && status.message().starts_with("h2 protocol error") =>
            {
                Failure::PlaintextProtocol(status)
            }
            other => other,
        }
    }
}

fn call_failure(f: &mut fmt::Formatter<'_>, status: &Status) -> fmt::Result {
    write!(f, "{:?}", status.code())?;
    let message = status.message();
    if !message.is_empty() {
        write!(f, ": {message}")?;
    }
    // Statuses tonic makes up locally (a dropped connection, a broken h2 stream) carry the
    // real reason only in their source.
    if let Some(source) = status.source() {
        let detail = cause(source);
        if !message.contains(&detail) {
            write!(f, ": {detail}")?;
        }
    }
    Ok(())
}

fn timed_out(err: &(dyn Error + 'static)) -> bool {
    chain(err).any(|e| {
        e.downcast_ref::<io::Error>()
            .is_some_and(|io| io.kind() == io::ErrorKind::TimedOut)
            || e.downcast_ref::<tonic::TimeoutExpired>().is_some()
    })
}

/// The innermost cause worth showing: a rustls error, an io error, else the last link.
fn cause(err: &(dyn Error + 'static)) -> String {
    let mut last = err;
    for e in chain(err) {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return tls_detail(tls);
        }
        if let Some(io) = e.downcast_ref::<io::Error>() {
            // An io error wrapping another error (tokio-rustls wraps rustls errors so) hides
            // it from `source()`; look inside explicitly.
            return match io.get_ref() {
                Some(inner) => cause(inner),
                None => io_detail(io),
            };
        }
        last = e;
    }
    last.to_string()
}

fn chain<'a>(err: &'a (dyn Error + 'static)) -> impl Iterator<Item = &'a (dyn Error + 'static)> {
    std::iter::successors(Some(err), |&e| e.source())
}

fn tls_detail(err: &rustls::Error) -> String {
    match err {
        rustls::Error::InvalidCertificate(_) => {
            format!("TLS handshake failed: {err} (use --insecure to skip verification)")
        }
        // What a TLS client reads when the port speaks plaintext (h2c, HTTP/1.1).
        rustls::Error::InvalidMessage(_) => {
            format!("TLS handshake failed: {err} (is the server speaking TLS?)")
        }
        // The gateway refused ALPN h2: HTTP/2 is off on that listener.
        rustls::Error::AlertReceived(rustls::AlertDescription::NoApplicationProtocol) => {
            format!("TLS handshake failed: {err} (the server does not offer HTTP/2)")
        }
        _ => format!("TLS handshake failed: {err}"),
    }
}

/// `Connection refused (os error 111)` → `connection refused`: the OS wording, minus the errno
/// that only matters to someone reading C headers.
fn io_detail(err: &io::Error) -> String {
    let text = err.to_string();
    let text = match (err.raw_os_error(), text.rfind(" (os error ")) {
        (Some(_), Some(at)) => &text[..at],
        _ => text.as_str(),
    };
    let mut chars = text.chars();
    match (chars.next(), chars.next()) {
        // Lowercase a capitalised sentence, but not an acronym like "TLS".
        (Some(first), Some(second)) if first.is_uppercase() && !second.is_uppercase() => first
            .to_lowercase()
            .chain(text[first.len_utf8()..].chars())
            .collect(),
        _ => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_errors_lose_errno_and_capital() {
        let refused = io::Error::from_raw_os_error(111);
        assert_eq!(io_detail(&refused), "connection refused");
        let custom = io::Error::other("TLS went away");
        assert_eq!(io_detail(&custom), "TLS went away");
    }

    #[test]
    fn rustls_error_inside_io_error_is_found() {
        let tls = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let io = io::Error::new(io::ErrorKind::InvalidData, tls);
        assert!(cause(&io).starts_with("TLS handshake failed: invalid peer certificate"));
    }

    #[test]
    fn status_line() {
        let status = Status::unavailable("backend down");
        assert_eq!(
            Failure::Call(status).to_string(),
            "Unavailable: backend down"
        );
        let timeout = Duration::from_secs(10);
        assert_eq!(
            Failure::Call(Status::cancelled("Timeout expired"))
                .in_context(timeout, false)
                .to_string(),
            "DeadlineExceeded: no complete response within 10s (--timeout)"
        );
        let h2 = || Status::internal("h2 protocol error: frame with invalid size");
        assert!(matches!(
            Failure::Call(h2()).in_context(timeout, true),
            Failure::PlaintextProtocol(_)
        ));
        assert!(matches!(
            Failure::Call(h2()).in_context(timeout, false),
            Failure::Call(_)
        ));
    }
}
