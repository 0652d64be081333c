//! `bootstrap probe`: a grpc.health.v1 Check against a running bootstrap.
//!
//! A `FROM scratch` image has no curl or grpc_health_probe, yet platforms and `HEALTHCHECK` want
//! a command to run; the binary itself is that command.

use std::time::Duration;

use tonic::transport::Endpoint;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// Why a probe did not find the server SERVING.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The address is not a valid URI authority.
    #[error("invalid address '{0}'")]
    Address(String),
    /// No connection could be made.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// The address dialled.
        addr: String,
        /// What failed.
        source: tonic::transport::Error,
    },
    /// The check itself failed (unknown service, deadline, ...).
    #[error("health check failed: {0}")]
    Check(#[from] tonic::Status),
    /// The server answered, but not SERVING.
    #[error("not serving: {0}")]
    NotServing(String),
    /// The whole probe took longer than its timeout.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

/// Checks `service` on `addr` (`host:port`) over plaintext h2c.
pub async fn probe(addr: &str, service: &str, timeout: Duration) -> Result<(), ProbeError> {
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|_| ProbeError::Address(addr.to_string()))?
        .connect_timeout(timeout)
        .timeout(timeout);
    let check = async {
        let channel = endpoint
            .connect()
            .await
            .map_err(|source| ProbeError::Connect {
                addr: addr.to_string(),
                source,
            })?;
        let status = HealthClient::new(channel)
            .check(HealthCheckRequest {
                service: service.to_string(),
            })
            .await?
            .into_inner()
            .status();
        match status {
            ServingStatus::Serving => Ok(()),
            other => Err(ProbeError::NotServing(other.as_str_name().to_string())),
        }
    };
    tokio::time::timeout(timeout, check)
        .await
        .map_err(|_| ProbeError::Timeout(timeout))?
}
