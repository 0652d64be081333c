//! The bootstrap: serves proto-generated gRPC services inside a serverless function instance
//! (Alibaba Cloud Function Compute, Google Cloud Run, Knative, NVIDIA Cloud Functions) or on a
//! laptop, with health, reflection and HTTP/1.1 probes on the same port.
//!
//! ```no_run
//! use bootstrap::{Bootstrap, Config};
//!
//! # async fn run() -> Result<(), bootstrap::Error> {
//! let config = Config::from_process().unwrap_or_else(|e| panic!("{}", e.message()));
//! bootstrap::services::register(Bootstrap::new(config)).run().await
//! # }
//! ```
//!
//! # Layout
//!
//! - [`config`]: the one configuration struct (flags and environment), validated at start-up.
//! - [`Bootstrap`] (here): the builder that takes the configuration, the services and an optional
//!   initialiser, and runs the server until it is told to stop.
//! - [`server`]: the accept loop and each connection's task.
//! - [`stack`]: the layers every request goes through, in order; [`layers`] holds one per file.
//! - [`lifecycle`]: Starting → Serving → Draining → Stopped, and the run-once initialiser.
//! - [`health`]: `grpc.health.v1`, read from the lifecycle; [`hooks`]: the HTTP/1.1 endpoints.
//! - [`context`]: request ids and trace ids from headers; [`telemetry`]: log set-up and format.
//! - [`status`]: the one place where the bootstrap's own outcomes become gRPC statuses.
//! - [`services`]: the sample services; [`proto`]: code generated from `proto/`.

#![forbid(unsafe_code)]

pub mod body;
pub mod config;
pub mod context;
pub mod health;
pub mod hooks;
pub mod layers;
pub mod lifecycle;
pub mod meter;
pub mod proto;
mod server;
pub mod services;
mod stack;
pub mod status;
pub mod telemetry;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;

use http::{Request, Response};
use tokio::net::TcpListener;
use tonic::body::Body;
use tonic::server::NamedService;
use tonic::service::Routes;

pub use config::Config;
pub use lifecycle::{BoxError, Lifecycle, Phase};

use crate::config::InitOn;
use crate::health::HealthService;
use crate::lifecycle::Initializer;

/// A generated gRPC server whose message size limits can be set. `build.rs` implements it for
/// every service in `proto/`, so `--max-message-bytes` reaches user services with no code.
pub trait MessageLimits {
    /// Sets the largest message decoded and encoded, in bytes.
    fn with_message_limits(self, limit: usize) -> Self;
}

include!(concat!(env!("OUT_DIR"), "/message_limits.rs"));

/// Why the bootstrap could not serve.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The port could not be bound (in use, or not permitted).
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// What the OS said.
        source: std::io::Error,
    },
    /// A registered descriptor set is not a valid encoded `FileDescriptorSet`.
    #[error("invalid file descriptor set for reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
}

/// Builds and runs the server: configuration, services, initialiser.
pub struct Bootstrap {
    config: Config,
    routes: Routes,
    service_names: Vec<&'static str>,
    descriptor_sets: Vec<&'static [u8]>,
    lifecycle: Lifecycle,
    telemetry: Option<telemetry::Telemetry>,
}

impl Bootstrap {
    /// A bootstrap with no services yet. The descriptors of every file in `proto/` are registered
    /// for reflection already.
    pub fn new(config: Config) -> Bootstrap {
        Bootstrap {
            routes: Routes::default(),
            service_names: Vec::new(),
            descriptor_sets: vec![proto::FILE_DESCRIPTOR_SET],
            lifecycle: Lifecycle::new(config.platform.is_fc()),
            telemetry: None,
            config,
        }
    }

    /// The configuration this bootstrap runs with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Registers a generated gRPC server, e.g. `GreeterServer::new(Greeter)`. It is served,
    /// reported by health under its full name, and listed by reflection.
    pub fn add_service<S>(mut self, service: S) -> Bootstrap
    where
        S: tower::Service<Request<Body>, Response = Response<Body>, Error = Infallible>
            + NamedService
            + MessageLimits
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        self.service_names.push(S::NAME);
        self.routes = self.routes.add_service(service);
        self
    }

    /// Registers an encoded `FileDescriptorSet` for reflection, for services whose protos live
    /// outside `proto/`.
    pub fn file_descriptor_set(mut self, encoded: &'static [u8]) -> Bootstrap {
        self.descriptor_sets.push(encoded);
        self
    }

    /// Sets the initialiser: run once, at start-up or on FC's `POST /initialize` (`--init-on`).
    /// Health reports NOT_SERVING until it has succeeded.
    pub fn initializer<F, Fut>(self, init: F) -> Bootstrap
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), BoxError>> + Send + 'static,
    {
        let init: Initializer = Box::new(move || Box::pin(init()));
        self.lifecycle.set_initializer(init);
        self
    }

    /// Hands over the logging handle, so FC's `/pre-freeze` hook can flush the logs.
    pub fn telemetry(mut self, telemetry: telemetry::Telemetry) -> Bootstrap {
        self.telemetry = Some(telemetry);
        self
    }

    /// The lifecycle this bootstrap will run: watch its phase, or wait for one.
    pub fn lifecycle(&self) -> Lifecycle {
        self.lifecycle.clone()
    }

    /// Binds the configured address and serves until SIGTERM or SIGINT.
    pub async fn run(self) -> Result<(), Error> {
        let addr = self.config.bind_addr();
        let listener = server::bind(addr).map_err(|source| Error::Bind { addr, source })?;
        self.serve(listener, shutdown_signal()).await
    }

    /// Serves on `listener` until `shutdown` resolves, then drains and returns. Tests bind port 0
    /// and pass a oneshot receiver here.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), Error> {
        let config = self.config;
        let lifecycle = self.lifecycle;
        let routes = grpc_routes(
            self.routes,
            &self.service_names,
            &self.descriptor_sets,
            &config,
            &lifecycle,
        )?;
        let app = stack::build(
            routes,
            hooks::router(lifecycle.clone()),
            &stack::StackSettings {
                fc_lines: config.platform.is_fc(),
            },
        );

        let local = listener.local_addr().ok();
        tracing::info!(
            addr = ?local,
            platform = %config.platform,
            services = ?self.service_names,
            reflection = !config.no_reflection,
            init_on = ?config.init_on,
            timeout = ?config.timeout,
            "bootstrap listening"
        );

        if config.init_on == InitOn::Startup {
            let lifecycle = lifecycle.clone();
            tokio::spawn(async move {
                let id = context::generate_request_id();
                // The outcome is logged by the lifecycle and shown by health and /readyz.
                let _ = lifecycle.initialize(&id).await;
            });
        }
        {
            let lifecycle = lifecycle.clone();
            tokio::spawn(async move {
                shutdown.await;
                if lifecycle.start_drain() {
                    tracing::info!("shutdown requested: draining");
                }
            });
        }

        server::Server::new(listener, app, lifecycle).run().await;
        tracing::info!("stopped");
        Ok(())
    }
}

/// The user's routes plus health and, unless turned off, reflection v1 and v1alpha.
fn grpc_routes(
    routes: Routes,
    names: &[&'static str],
    descriptor_sets: &[&'static [u8]],
    config: &Config,
    lifecycle: &Lifecycle,
) -> Result<Routes, Error> {
    use tonic_health::pb::health_server::HealthServer;
    use tonic_reflection::server::{v1, v1alpha};

    // Everything served, by full name: health answers for each, reflection lists exactly these
    // (not every service that happens to have a descriptor).
    let mut served: Vec<&'static str> = names.to_vec();
    served.push(<HealthServer<HealthService> as NamedService>::NAME);
    if !config.no_reflection {
        served.push(<v1::ServerReflectionServer<()> as NamedService>::NAME);
        served.push(<v1alpha::ServerReflectionServer<()> as NamedService>::NAME);
    }

    let health = HealthService::new(lifecycle.clone(), served.iter().map(|n| n.to_string()));
    let mut routes = routes.add_service(HealthServer::new(health));
    if !config.no_reflection {
        let builder = || {
            let mut b = tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET);
            for set in descriptor_sets {
                b = b.register_encoded_file_descriptor_set(set);
            }
            for name in &served {
                b = b.with_service_name(*name);
            }
            b
        };
        routes = routes
            .add_service(builder().build_v1()?)
            .add_service(builder().build_v1alpha()?);
    }
    Ok(routes)
}

/// Resolves on SIGTERM (how Cloud Run, Knative and Kubernetes ask an instance to stop) or SIGINT
/// (Ctrl-C on a laptop).
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM received"),
                _ = int.recv() => tracing::info!("SIGINT received"),
            }
        }
        // Without signal handlers the process can still be stopped by FC's PreStop hook or a
        // kill; serving on is better than refusing to start.
        _ => {
            tracing::warn!("cannot install signal handlers");
            std::future::pending::<()>().await;
        }
    }
}
