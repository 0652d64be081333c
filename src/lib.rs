//! The bootstrap: serves proto-generated gRPC services inside a serverless function instance
//! (Alibaba Cloud Function Compute, Google Cloud Run, Knative, NVIDIA Cloud Functions) or on a
//! laptop, with health, reflection and HTTP/1.1 probes on the same port.
//!
//! ```no_run
//! use bootstrap::{Bootstrap, Config};
//!
//! # async fn run() -> Result<(), bootstrap::Error> {
//! let config = Config::from_process().unwrap_or_else(|e| panic!("{}", e.message()));
//! let summary = bootstrap::services::register(Bootstrap::new(config)).run().await?;
//! println!("drained in {:?}", summary.duration);
//! # Ok(())
//! # }
//! ```
//!
//! # Layout
//!
//! - [`config`]: the one configuration struct (flags and environment), validated at start-up.
//! - [`Bootstrap`] (here): the builder that takes the configuration, the services and an optional
//!   initialiser, and runs the server until it is told to stop.
//! - [`server`]: the accept loop, the drain, and (in `server::connection`) each connection.
//! - [`stack`]: the layers every request goes through, in order; [`layers`] holds one per file.
//! - [`lifecycle`]: Starting → Serving → Draining → Stopped, and the run-once initialiser.
//! - [`health`]: `grpc.health.v1`, read from the lifecycle; [`hooks`]: the HTTP/1.1 endpoints.
//! - [`context`]: request ids and trace ids from headers; [`telemetry`]: log set-up and format.
//! - [`status`]: the one place where the bootstrap's own outcomes become gRPC statuses.
//! - [`meter`]: billed time and RPCs in flight; [`body`]: guards held for an RPC's lifetime.
//! - [`probe`]: `bootstrap probe`, a health check for exec probes and `HEALTHCHECK`.
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
pub mod probe;
pub mod proto;
pub mod server;
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
pub use server::DrainSummary;

use crate::config::InitOn;
use crate::health::HealthService;
use crate::lifecycle::Initializer;
use crate::meter::{Meter, MethodKinds};

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
        let limit = self.config.message_limit();
        self.routes = self.routes.add_service(service.with_message_limits(limit));
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

    /// Binds the configured address and serves until SIGTERM or SIGINT; a second signal during
    /// the drain ends the open RPCs at once.
    pub async fn run(self) -> Result<DrainSummary, Error> {
        let addr = self.config.bind_addr();
        let listener = server::bind(addr).map_err(|source| Error::Bind { addr, source })?;
        let lifecycle = self.lifecycle.clone();
        let signals = tokio::spawn(handle_signals(lifecycle));
        let result = self.serve(listener, std::future::pending()).await;
        signals.abort();
        result
    }

    /// Serves on `listener` until `shutdown` resolves (or another drain trigger fires: FC's
    /// PreStop hook, `--max-lifetime`, `--idle-exit-after`, `--exit-on-goaway`), then drains and
    /// returns what happened. Tests bind port 0 and pass a oneshot receiver as `shutdown`.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<DrainSummary, Error> {
        let config = self.config;
        let lifecycle = self.lifecycle;
        let meter = Meter::default();
        let routes = grpc_routes(
            self.routes,
            &self.service_names,
            &self.descriptor_sets,
            &config,
            &lifecycle,
        )?;
        let hooks = hooks::Hooks {
            lifecycle: lifecycle.clone(),
            meter: meter.clone(),
            drain_timeout: config.drain_timeout,
            telemetry: self.telemetry,
        };
        let app = stack::build(
            routes,
            hooks::router(hooks),
            &stack::StackSettings {
                fc_lines: config.platform.is_fc(),
                concurrency: config.concurrency as usize,
                timeout: config.timeout,
                timeout_margin: config.timeout_margin,
                meter: meter.clone(),
                kinds: MethodKinds::from_descriptor_sets(&self.descriptor_sets),
                auth_token: config.auth_token.clone(),
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
            timeout_margin = ?config.timeout_margin,
            concurrency = config.concurrency,
            drain_timeout = ?config.drain_timeout,
            idle_timeout = ?config.idle_timeout,
            handshake_timeout = ?config.handshake_timeout,
            max_connections = config.max_connections,
            max_connection_age = ?config.max_connection_age,
            max_message_bytes = config.max_message_bytes,
            max_lifetime = ?config.max_lifetime,
            idle_exit_after = ?config.idle_exit_after,
            exit_on_goaway = config.exit_on_goaway,
            auth = config.auth_token.is_some(),
            "bootstrap listening"
        );

        // Background tasks that live as long as the server; aborted when it returns.
        let mut tasks = tokio::task::JoinSet::new();
        if config.init_on == InitOn::Startup {
            let lifecycle = lifecycle.clone();
            tasks.spawn(async move {
                let id = context::generate_request_id();
                // The outcome is logged by the lifecycle and shown by health and /readyz.
                let _ = lifecycle.initialize(&id).await;
            });
        }
        {
            let lifecycle = lifecycle.clone();
            tasks.spawn(async move {
                shutdown.await;
                lifecycle.start_drain("shutdown requested");
            });
        }
        if let Some(lifetime) = config.max_lifetime {
            let lifecycle = lifecycle.clone();
            tasks.spawn(async move {
                tokio::time::sleep(lifetime).await;
                lifecycle.start_drain("--max-lifetime reached");
            });
        }
        tasks.spawn(log_meter_periodically(meter.clone()));

        let settings = server::Settings {
            concurrency: config.concurrency,
            max_connections: config.max_connections as usize,
            drain_timeout: config.drain_timeout,
            exit_on_goaway: config.exit_on_goaway,
            idle_exit_after: config.idle_exit_after,
            connection: server::connection::Limits {
                handshake_timeout: config.handshake_timeout,
                idle_timeout: config.idle_timeout,
                max_age: config.max_connection_age,
                max_age_grace: config.max_connection_age_grace,
            },
        };
        let summary = server::Server::new(listener, app, lifecycle, meter, settings)
            .run()
            .await;
        tasks.abort_all();
        Ok(summary)
    }
}

/// How often the meter is logged at debug level.
const METER_LOG_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

async fn log_meter_periodically(meter: Meter) {
    let mut every = tokio::time::interval(METER_LOG_INTERVAL);
    every.tick().await;
    loop {
        every.tick().await;
        let m = meter.snapshot();
        tracing::debug!(
            unary_billed_ms = m.unary_billed.as_millis() as u64,
            connection_billed_ms = m.connection_billed.as_millis() as u64,
            unary_rpcs = m.unary_rpcs,
            streaming_rpcs = m.streaming_rpcs,
            rpcs_in_flight = m.rpcs_in_flight,
            peak_rpcs = m.peak_rpcs,
            connections_open = m.connections_open,
            "meter"
        );
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

    let limit = config.message_limit();
    let health = HealthService::new(lifecycle.clone(), served.iter().map(|n| n.to_string()));
    let mut routes = routes.add_service(
        HealthServer::new(health)
            .max_decoding_message_size(limit)
            .max_encoding_message_size(limit),
    );
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
            .add_service(
                builder()
                    .build_v1()?
                    .max_decoding_message_size(limit)
                    .max_encoding_message_size(limit),
            )
            .add_service(
                builder()
                    .build_v1alpha()?
                    .max_decoding_message_size(limit)
                    .max_encoding_message_size(limit),
            );
    }
    Ok(routes)
}

/// SIGTERM (how Cloud Run, Knative and Kubernetes ask an instance to stop) or SIGINT (Ctrl-C)
/// starts the drain; a second one during the drain ends the open RPCs at once.
async fn handle_signals(lifecycle: Lifecycle) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without handlers the process can still be stopped by FC's PreStop hook or a kill;
        // serving on is better than refusing to start.
        tracing::warn!("cannot install signal handlers");
        return;
    };
    let mut received = 0;
    loop {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        received += 1;
        if received == 1 {
            lifecycle.start_drain(&format!("{name} received"));
        } else {
            lifecycle.force(&format!("second signal ({name}) during the drain"));
        }
    }
}
