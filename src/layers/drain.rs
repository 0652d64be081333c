//! The drain trigger: ends an RPC with UNAVAILABLE when its connection must close now.
//!
//! Each connection carries a [`ForceClose`] token in its requests' extensions. The server
//! cancels it when the drain timeout runs out or the lifecycle is forced (every connection's
//! token is a child of the server's), or when a connection outlives `--max-connection-age` plus
//! its grace.
//! UNAVAILABLE is the status clients retry on another connection or instance, which is exactly
//! what the client should do.

use http::Request;
use tokio_util::sync::CancellationToken;
use tonic::Status;
use tonic::body::Body;

use crate::layers::interrupt::{Fire, Trigger};

/// The token that, once cancelled, ends every RPC still open on its connection.
#[derive(Clone, Debug)]
pub struct ForceClose(pub CancellationToken);

/// Arms the connection's [`ForceClose`] token for each RPC.
#[derive(Clone, Debug, Default)]
pub struct Drain;

impl Trigger for Drain {
    fn arm(&self, request: &Request<Body>) -> Option<Fire> {
        let token = request.extensions().get::<ForceClose>()?.0.clone();
        Some(Box::pin(async move {
            token.cancelled_owned().await;
            Status::unavailable("the server closed this connection before the RPC finished: retry")
        }))
    }
}
