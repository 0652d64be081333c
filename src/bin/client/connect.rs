//! Opens the gRPC channel: h2c with prior knowledge for plaintext, or TLS driven by hand.
//!
//! tonic is built without TLS on purpose (the bootstrap never terminates TLS; the platform's
//! gateway does), so for `--tls`/`--insecure` this file supplies a connector that opens the TCP
//! stream and runs the rustls handshake itself. Connecting is eager: a dead address or a
//! refused certificate is reported as a connection failure before any call is made, which is
//! what lets `report.rs` word it as `cannot connect to ...`.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use http::Uri;
use http::uri::Authority;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tonic::transport::{Channel, Endpoint};

use crate::tls::{self, Verification};

/// Where and how to connect.
pub struct Target {
    pub addr: Authority,
    /// `None` for plaintext h2c.
    pub tls: Option<TlsOptions>,
    pub connect_timeout: Duration,
}

pub struct TlsOptions {
    pub verification: Verification,
    /// SNI and the name the certificate must match; the host of `addr` unless overridden.
    pub server_name: Option<String>,
}

/// Why connecting failed: setting up (bad TLS name, no trust store) is the user's or the
/// machine's problem, while `Transport` is the server's, and `report.rs` words them differently.
#[derive(Debug)]
pub enum ConnectError {
    Setup(anyhow::Error),
    Transport(tonic::transport::Error),
}

pub async fn connect(target: &Target) -> Result<Channel, ConnectError> {
    match &target.tls {
        None => endpoint("http", target)?
            .connect()
            .await
            .map_err(ConnectError::Transport),
        Some(options) => {
            let (connector, server_name) =
                tls_setup(&target.addr, options).map_err(ConnectError::Setup)?;
            let connector = tower::service_fn(move |uri: Uri| {
                handshake(uri, connector.clone(), server_name.clone())
            });
            // tonic applies `connect_timeout` around the whole connector future, so it bounds
            // the TLS handshake as well as the TCP connect.
            endpoint("https", target)?
                .connect_with_connector(connector)
                .await
                .map_err(ConnectError::Transport)
        }
    }
}

fn endpoint(scheme: &str, target: &Target) -> Result<Endpoint, ConnectError> {
    // The scheme only sets `:scheme` on requests here; which transport is used is decided by
    // the connector, since tonic has no TLS of its own in this build.
    Endpoint::from_shared(format!("{scheme}://{}", target.addr))
        .map(|e| e.connect_timeout(target.connect_timeout))
        .map_err(|e| ConnectError::Setup(e.into()))
}

/// The rustls connector and the name to present and verify, settled before dialing so that a
/// bad `--server-name` or a missing trust store fails before any network traffic.
fn tls_setup(
    addr: &Authority,
    options: &TlsOptions,
) -> anyhow::Result<(TlsConnector, ServerName<'static>)> {
    let name = match &options.server_name {
        Some(name) => name.clone(),
        // `Authority::host` keeps an IPv6 literal's brackets, which ServerName rejects.
        None => addr
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string(),
    };
    let server_name = ServerName::try_from(name.clone())
        .map_err(|_| anyhow::anyhow!("'{name}' is not a valid TLS server name"))?;
    let connector = TlsConnector::from(Arc::new(tls::client_config(options.verification)?));
    Ok((connector, server_name))
}

/// One TLS connection to the URI's authority, as `connect_with_connector` asks for.
async fn handshake(
    uri: Uri,
    connector: TlsConnector,
    server_name: ServerName<'static>,
) -> io::Result<TokioIo<TlsStream<TcpStream>>> {
    let authority = uri
        .authority()
        .ok_or_else(|| io::Error::other("endpoint URI has no host:port"))?
        .to_string();
    let tcp = TcpStream::connect(authority.as_str()).await?;
    // gRPC messages are small and latency-bound; Nagle would hold them back.
    tcp.set_nodelay(true)?;
    let tls = connector.connect(server_name, tcp).await?;
    // Without h2 the peer would read our HTTP/2 preface as garbage and the call would fail
    // later with an obscure protocol error; say what is wrong instead. A peer that skips ALPN
    // entirely is given the benefit of the doubt.
    match tls.get_ref().1.alpn_protocol() {
        Some(b"h2") | None => Ok(TokioIo::new(tls)),
        Some(other) => Err(io::Error::other(format!(
            "server negotiated ALPN '{}' instead of h2 (is HTTP/2 enabled on it?)",
            String::from_utf8_lossy(other)
        ))),
    }
}
