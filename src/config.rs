//! The bootstrap's configuration: one clap struct, every flag also an environment variable,
//! validated once at start-up.
//!
//! This is the only module that reads the process environment. [`Config::load`] takes the
//! arguments and a snapshot of the environment, so tests can build a `Config` without touching
//! the process's variables. Values that several sources can give (the port) and facts about the
//! platform (FC, Cloud Run/Knative, NVCF, local) are resolved here too, so the rest of the code
//! sees only the effective settings.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use clap::builder::BoolishValueParser;

pub use crate::layers::auth::Secret;
use clap::{ArgAction, Parser, ValueEnum};

/// The port served when neither `--port` nor any platform variable names one: the port FC's gRPC
/// guides and sample use.
pub const DEFAULT_PORT: u16 = 8089;

/// Variables a platform sets to tell the instance its port, in the order they win after `--port`.
pub const PORT_VARIABLES: [&str; 3] = ["FC_CUSTOM_LISTEN_PORT", "FC_SERVER_PORT", "PORT"];

/// Command-line flags and their environment variables. See the README for the table.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "bootstrap",
    version,
    about = "Serves gRPC services (with health, reflection and HTTP/1.1 probes) inside a serverless instance.",
    after_help = "Every flag can also be set through the environment variable shown with it."
)]
pub struct Config {
    /// Address to bind. Default: every interface, IPv6 and IPv4 where the host has IPv6, else
    /// IPv4 only (FC refuses an instance that binds only 127.0.0.1).
    #[arg(long, env = "BOOTSTRAP_HOST", value_name = "IP")]
    pub host: Option<IpAddr>,

    /// Port to serve gRPC and the HTTP/1.1 probes on. Default: the first of FC_CUSTOM_LISTEN_PORT,
    /// FC_SERVER_PORT, PORT that is set, else 8089.
    #[arg(long, value_name = "PORT")]
    pub port: Option<u16>,

    /// Log format: `auto` writes text locally and JSON on a platform (FC, Cloud Run, NVCF).
    #[arg(long, env = "BOOTSTRAP_LOG_FORMAT", value_enum, default_value_t = LogFormat::Auto)]
    pub log_format: LogFormat,

    /// Log filter, in tracing's `RUST_LOG` syntax (`info`, `debug`, `bootstrap=debug,h2=warn`).
    #[arg(long, env = "RUST_LOG", default_value = "info", value_name = "FILTER")]
    pub log_level: String,

    /// Turn server reflection (v1 and v1alpha) off.
    #[arg(long, env = "BOOTSTRAP_NO_REFLECTION", action = ArgAction::SetTrue,
          value_parser = BoolishValueParser::new())]
    pub no_reflection: bool,

    /// When the initialiser runs: at `startup`, or when FC calls the `POST /initialize` hook.
    /// Either way it runs once, health stays NOT_SERVING until it has succeeded, and
    /// `/initialize` answers with its result.
    #[arg(long, env = "BOOTSTRAP_INIT_ON", value_enum, default_value_t = InitOn::Startup)]
    pub init_on: InitOn,

    /// The function's execution timeout (FC's default is 60s). Every RPC ends with
    /// DEADLINE_EXCEEDED before it, so the platform never cuts a stream without trailers.
    #[arg(long, env = "BOOTSTRAP_TIMEOUT", default_value = "60s", value_parser = parse_duration,
          value_name = "DURATION")]
    pub timeout: Duration,

    /// Subtracted from --timeout so that our DEADLINE_EXCEEDED reaches the client before the
    /// platform's own cut-off.
    #[arg(long, env = "BOOTSTRAP_TIMEOUT_MARGIN", default_value = "100ms",
          value_parser = parse_duration, value_name = "DURATION")]
    pub timeout_margin: Duration,

    /// How long in-flight RPCs may run on once a drain begins; those still open then end with
    /// UNAVAILABLE. Under Cloud Run's 10s between SIGTERM and SIGKILL.
    #[arg(long, env = "BOOTSTRAP_DRAIN_TIMEOUT", default_value = "8s",
          value_parser = parse_duration, value_name = "DURATION")]
    pub drain_timeout: Duration,

    /// The instance concurrency: each connection advertises it as
    /// SETTINGS_MAX_CONCURRENT_STREAMS and the process admits at most this many RPCs at once
    /// (health checks excepted); the next is refused with RESOURCE_EXHAUSTED.
    #[arg(long, env = "BOOTSTRAP_CONCURRENCY", default_value_t = 100,
          value_parser = clap::value_parser!(u32).range(1..=100_000), value_name = "N")]
    pub concurrency: u32,

    /// A connection with no open stream for this long gets GOAWAY and is closed, so an idle
    /// client does not keep the instance billed. `off` keeps idle connections.
    #[arg(long, env = "BOOTSTRAP_IDLE_TIMEOUT", default_value = "30s",
          value_parser = parse_optional_duration, value_name = "DURATION|off")]
    // Fully qualified so clap takes `off` through the parser instead of treating the flag as
    // optional.
    pub idle_timeout: ::std::option::Option<Duration>,

    /// Connections older than this get GOAWAY (so clients rebalance); off by default.
    #[arg(long, env = "BOOTSTRAP_MAX_CONNECTION_AGE", default_value = "off",
          value_parser = parse_optional_duration, value_name = "DURATION|off")]
    // Fully qualified so clap takes `off` through the parser instead of treating the flag as
    // optional.
    pub max_connection_age: ::std::option::Option<Duration>,

    /// After --max-connection-age, how long open streams may finish before they end with
    /// UNAVAILABLE and the connection is closed.
    #[arg(long, env = "BOOTSTRAP_MAX_CONNECTION_AGE_GRACE", default_value = "10s",
          value_parser = parse_duration, value_name = "DURATION")]
    pub max_connection_age_grace: Duration,

    /// A connection that has not completed the HTTP/2 preface or an HTTP/1.1 request head
    /// within this long is closed.
    #[arg(long, env = "BOOTSTRAP_HANDSHAKE_TIMEOUT", default_value = "10s",
          value_parser = parse_duration, value_name = "DURATION")]
    pub handshake_timeout: Duration,

    /// Connections beyond this many are closed as soon as they are accepted.
    #[arg(long, env = "BOOTSTRAP_MAX_CONNECTIONS", default_value_t = 2048,
          value_parser = clap::value_parser!(u32).range(1..), value_name = "N")]
    pub max_connections: u32,

    /// The largest gRPC message received or sent, in bytes (FC's limit is 6 MiB); 0 = unlimited.
    #[arg(long, env = "BOOTSTRAP_MAX_MESSAGE_BYTES", default_value_t = 6 * 1024 * 1024,
          value_name = "BYTES")]
    pub max_message_bytes: usize,

    /// Drain and exit after running this long; off by default.
    #[arg(long, env = "BOOTSTRAP_MAX_LIFETIME", default_value = "off",
          value_parser = parse_optional_duration, value_name = "DURATION|off")]
    // Fully qualified so clap takes `off` through the parser instead of treating the flag as
    // optional.
    pub max_lifetime: ::std::option::Option<Duration>,

    /// Drain and exit once no connection has been open for this long; off by default.
    #[arg(long, env = "BOOTSTRAP_IDLE_EXIT_AFTER", default_value = "off",
          value_parser = parse_optional_duration, value_name = "DURATION|off")]
    // Fully qualified so clap takes `off` through the parser instead of treating the flag as
    // optional.
    pub idle_exit_after: ::std::option::Option<Duration>,

    /// Drain and exit when the peer has closed its last HTTP/2 connection (the front end's
    /// GOAWAY or close on scale-in) and no other connection is open.
    #[arg(long, env = "BOOTSTRAP_EXIT_ON_GOAWAY", action = ArgAction::SetTrue,
          value_parser = BoolishValueParser::new())]
    pub exit_on_goaway: bool,

    /// Require `authorization: Bearer <TOKEN>` on every RPC except health (NVCF's shape).
    /// Compared in constant time and never logged.
    #[arg(long, env = "BOOTSTRAP_AUTH_TOKEN", value_name = "TOKEN", hide_env_values = true,
          value_parser = parse_secret)]
    pub auth_token: Option<Secret>,

    /// Read the token for --auth-token from this file (surrounding whitespace trimmed), for
    /// secrets mounted as files.
    #[arg(
        long,
        env = "BOOTSTRAP_AUTH_TOKEN_FILE",
        value_name = "PATH",
        conflicts_with = "auth_token"
    )]
    pub auth_token_file: Option<std::path::PathBuf>,

    /// Google Cloud project, for the trace field of Cloud Logging's JSON lines.
    #[arg(long, env = "GOOGLE_CLOUD_PROJECT", value_name = "PROJECT")]
    pub gcp_project: Option<String>,

    /// A one-shot command instead of serving.
    #[command(subcommand)]
    pub command: Option<Command>,

    /// The platform, detected from its environment variables. Not a flag.
    #[arg(skip)]
    pub platform: Platform,

    /// The port actually served after resolving `--port` and the platform variables. Not a flag.
    #[arg(skip = DEFAULT_PORT)]
    pub effective_port: u16,
}

/// One-shot commands.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// Check a running bootstrap's health over gRPC (grpc.health.v1 Check) and exit 0 when it is
    /// SERVING, 1 otherwise: an exec probe or container HEALTHCHECK with no curl in the image.
    Probe(ProbeArgs),
}

/// Arguments of `bootstrap probe`.
#[derive(Debug, Clone, clap::Args)]
pub struct ProbeArgs {
    /// Address of the server to check. Default: 127.0.0.1 on the port this configuration
    /// resolves (so a container's `PORT` or FC's variables are followed).
    #[arg(long, value_name = "HOST:PORT")]
    pub addr: Option<String>,

    /// The service to check; `""` is the instance as a whole.
    #[arg(long, default_value = "", value_name = "NAME")]
    pub service: String,

    /// How long the check may take.
    #[arg(long = "probe-timeout", default_value = "2s", value_parser = parse_duration,
          value_name = "DURATION")]
    pub timeout: Duration,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Text on a terminal or locally, JSON on a platform.
    Auto,
    /// Human-readable text.
    Text,
    /// One JSON object per line, in Cloud Logging's structured shape.
    Json,
}

/// When the user's initialiser runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum InitOn {
    /// As soon as the port is bound.
    Startup,
    /// On the first `POST /initialize` (FC's Initializer lifecycle hook).
    Hook,
}

/// Where the bootstrap is running, as told by the platform's own environment variables.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Platform {
    /// Alibaba Cloud Function Compute (custom runtime or custom container), or its local emulator.
    Fc {
        /// `FC_FUNCTION_NAME`, when set.
        function: Option<String>,
        /// `FC_REGION`, when set.
        region: Option<String>,
        /// `FC_INSTANCE_ID`, when set.
        instance: Option<String>,
    },
    /// Google Cloud Run or Knative Serving (same runtime contract).
    CloudRun {
        /// `K_SERVICE`.
        service: String,
        /// `K_REVISION`, when set.
        revision: Option<String>,
    },
    /// NVIDIA Cloud Functions.
    Nvcf {
        /// `NVCF_FUNCTION_ID`.
        function_id: String,
        /// `NVCF_FUNCTION_VERSION_ID`, when set.
        version: Option<String>,
    },
    /// None of the above: a laptop, CI, or a platform we do not know.
    #[default]
    Local,
}

impl Platform {
    /// Detects the platform from an environment snapshot.
    pub fn detect(env: &HashMap<String, String>) -> Platform {
        let get = |k: &str| env.get(k).filter(|v| !v.is_empty()).cloned();
        let fc_markers = [
            "FC_FUNCTION_NAME",
            "FC_CUSTOM_LISTEN_PORT",
            "FC_INSTANCE_ID",
            "FC_SERVER_PORT",
        ];
        if fc_markers.iter().any(|k| get(k).is_some()) {
            return Platform::Fc {
                function: get("FC_FUNCTION_NAME"),
                region: get("FC_REGION"),
                instance: get("FC_INSTANCE_ID"),
            };
        }
        if let Some(service) = get("K_SERVICE") {
            return Platform::CloudRun {
                service,
                revision: get("K_REVISION"),
            };
        }
        if let Some(function_id) = get("NVCF_FUNCTION_ID") {
            return Platform::Nvcf {
                function_id,
                version: get("NVCF_FUNCTION_VERSION_ID"),
            };
        }
        Platform::Local
    }

    /// True on Function Compute, where the `FC Invoke Start/End` lines are part of the contract.
    pub fn is_fc(&self) -> bool {
        matches!(self, Platform::Fc { .. })
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Platform::Fc { .. } => f.write_str("fc"),
            Platform::CloudRun { .. } => f.write_str("cloud-run"),
            Platform::Nvcf { .. } => f.write_str("nvcf"),
            Platform::Local => f.write_str("local"),
        }
    }
}

/// Why the configuration was refused. Each renders as one line naming the flag or variable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// clap refused the command line (or an environment variable it reads itself), or was asked
    /// for `--help`/`--version`.
    #[error("{0}")]
    Cli(#[from] clap::Error),
    /// A value clap does not parse itself was not valid.
    #[error("invalid value '{value}' for {source_name}: {reason}")]
    Invalid {
        /// The flag or variable the value came from.
        source_name: String,
        /// The value as given.
        value: String,
        /// Why it was refused.
        reason: String,
    },
}

impl ConfigError {
    /// The process exit status for this error: 0 for `--help`/`--version`, 2 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            ConfigError::Cli(e) if !e.use_stderr() => 0,
            _ => 2,
        }
    }

    /// The message to print: `--help` as clap renders it, any error as a single line.
    pub fn message(&self) -> String {
        match self {
            ConfigError::Cli(e) if !e.use_stderr() => e.render().to_string(),
            ConfigError::Cli(e) => {
                // clap renders a usage block and a hint after the first line; platforms' log
                // consoles show one line best, and the first line names the flag and the reason.
                let rendered = e.render().to_string();
                rendered.lines().next().unwrap_or("error").to_string()
            }
            other => format!("error: {other}"),
        }
    }
}

impl Config {
    /// Parses the process's arguments and environment.
    pub fn from_process() -> Result<Config, ConfigError> {
        Config::load(std::env::args_os(), std::env::vars().collect())
    }

    /// Parses `args` (the first is the program name) against the environment snapshot `env`,
    /// then resolves the port and the platform and validates what clap cannot.
    ///
    /// clap reads each flag's own variable from the process environment; `env` is used for the
    /// values resolved here (port variables and platform detection).
    pub fn load<I, T>(args: I, env: HashMap<String, String>) -> Result<Config, ConfigError>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let mut config = Config::try_parse_from(args)?;
        config.effective_port = resolve_port(config.port, &env)?;
        if let Some(path) = &config.auth_token_file {
            let shown = path.display().to_string();
            let text = std::fs::read_to_string(path)
                .map_err(|e| invalid("--auth-token-file", &shown, e))?;
            let secret = parse_secret(text.trim())
                .map_err(|reason| invalid("--auth-token-file", &shown, reason))?;
            config.auth_token = Some(secret);
        }
        config.platform = Platform::detect(&env);
        config.validate()?;
        Ok(config)
    }

    /// Checks the relations between values that clap checks one by one.
    fn validate(&self) -> Result<(), ConfigError> {
        if self.timeout.is_zero() {
            return Err(invalid("--timeout", "0s", "must be greater than zero"));
        }
        if self.timeout_margin >= self.timeout {
            return Err(invalid(
                "--timeout-margin",
                &humantime::format_duration(self.timeout_margin).to_string(),
                format_args!(
                    "must be less than --timeout ({})",
                    humantime::format_duration(self.timeout)
                ),
            ));
        }
        if self.handshake_timeout.is_zero() {
            return Err(invalid(
                "--handshake-timeout",
                "0s",
                "must be greater than zero",
            ));
        }
        tracing_subscriber::EnvFilter::try_new(&self.log_level)
            .map_err(|e| invalid("--log-level (RUST_LOG)", &self.log_level, e))?;
        Ok(())
    }

    /// The message size limit as tonic takes it (0 means unlimited).
    pub fn message_limit(&self) -> usize {
        match self.max_message_bytes {
            0 => usize::MAX,
            n => n,
        }
    }

    /// The address to bind; see [`Config::host`] for the default.
    pub fn bind_addr(&self) -> SocketAddr {
        let ip = self.host.unwrap_or(IpAddr::V6(Ipv6Addr::UNSPECIFIED));
        SocketAddr::new(ip, self.effective_port)
    }

    /// Whether log lines are JSON, after resolving `auto` against the platform and the terminal.
    pub fn json_logs(&self, stdout_is_terminal: bool) -> bool {
        match self.log_format {
            LogFormat::Text => false,
            LogFormat::Json => true,
            LogFormat::Auto => self.platform != Platform::Local && !stdout_is_terminal,
        }
    }

    /// A configuration with every default, for tests and embedders: port 0 on loopback.
    pub fn for_tests() -> Config {
        let mut config =
            Config::try_parse_from(["bootstrap"]).expect("the defaults of every flag are valid");
        config.host = Some(IpAddr::from([127, 0, 0, 1]));
        config.effective_port = 0;
        config
    }
}

/// `--port`, else the first platform variable that is set, else [`DEFAULT_PORT`].
fn resolve_port(flag: Option<u16>, env: &HashMap<String, String>) -> Result<u16, ConfigError> {
    if let Some(port) = flag {
        return Ok(port);
    }
    for name in PORT_VARIABLES {
        if let Some(value) = env.get(name).filter(|v| !v.is_empty()) {
            return value
                .trim()
                .parse::<u16>()
                .map_err(|e| invalid(name, value, e));
        }
    }
    Ok(DEFAULT_PORT)
}

fn invalid(source: &str, value: &str, reason: impl fmt::Display) -> ConfigError {
    ConfigError::Invalid {
        source_name: source.to_string(),
        value: value.to_string(),
        reason: reason.to_string(),
    }
}

/// Checks a bearer token: a token that could never arrive in a header would lock every client out.
pub fn parse_secret(s: &str) -> Result<Secret, String> {
    if s.is_empty() {
        return Err("the token is empty".into());
    }
    if !s.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("the token must be visible ASCII without spaces".into());
    }
    Ok(Secret::new(s))
}

/// Parses a duration, or `off` (also `0`) for none.
pub fn parse_optional_duration(s: &str) -> Result<Option<Duration>, String> {
    match s.trim() {
        "off" | "0" => Ok(None),
        other => parse_duration(other).map(|d| (!d.is_zero()).then_some(d)),
    }
}

/// Parses a humane duration such as `100ms`, `5s` or `2m`. A bare number is refused: its unit
/// would be a guess.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim()).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn port_precedence() {
        let all = env(&[
            ("FC_CUSTOM_LISTEN_PORT", "9000"),
            ("FC_SERVER_PORT", "9001"),
            ("PORT", "8080"),
        ]);
        let c = Config::load(["b", "--port", "7000"], all.clone()).unwrap();
        assert_eq!(c.effective_port, 7000);
        let c = Config::load(["b"], all).unwrap();
        assert_eq!(c.effective_port, 9000);
        let c = Config::load(["b"], env(&[("FC_SERVER_PORT", "9001"), ("PORT", "8080")])).unwrap();
        assert_eq!(c.effective_port, 9001);
        let c = Config::load(["b"], env(&[("PORT", "8080")])).unwrap();
        assert_eq!(c.effective_port, 8080);
        let c = Config::load(["b"], env(&[])).unwrap();
        assert_eq!(c.effective_port, DEFAULT_PORT);
    }

    #[test]
    fn bad_port_variable_names_it() {
        let err = Config::load(["b"], env(&[("PORT", "80x")])).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        let msg = err.message();
        assert!(msg.contains("PORT") && msg.contains("80x"), "{msg}");
        assert_eq!(msg.lines().count(), 1);
    }

    #[test]
    fn bad_flag_is_one_line_naming_it() {
        let err = Config::load(["b", "--timeout", "soon"], env(&[])).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        let msg = err.message();
        assert!(msg.contains("--timeout"), "{msg}");
        assert_eq!(msg.lines().count(), 1, "{msg}");
    }

    #[test]
    fn durations_need_units() {
        assert_eq!(parse_duration("100ms"), Ok(Duration::from_millis(100)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("60").is_err());
        assert!(parse_duration("").is_err());
        assert_eq!(parse_optional_duration("off"), Ok(None));
        assert_eq!(parse_optional_duration("0s"), Ok(None));
        assert_eq!(
            parse_optional_duration("3s"),
            Ok(Some(Duration::from_secs(3)))
        );
        assert!(parse_optional_duration("3").is_err());
    }

    #[test]
    fn margin_must_be_below_timeout() {
        let err =
            Config::load(["b", "--timeout", "1s", "--timeout-margin", "1s"], env(&[])).unwrap_err();
        assert!(
            err.message().contains("--timeout-margin"),
            "{}",
            err.message()
        );
    }

    #[test]
    fn auth_token_from_flag_or_file() {
        let c = Config::load(["b", "--auth-token", "abc"], env(&[])).unwrap();
        assert_eq!(c.auth_token.unwrap().expose(), "abc");
        assert!(Config::load(["b", "--auth-token", "a b"], env(&[])).is_err());

        let path = std::env::temp_dir().join(format!("bootstrap-token-{}", std::process::id()));
        std::fs::write(&path, "from-file\n").unwrap();
        let p = path.to_str().unwrap();
        let c = Config::load(["b", "--auth-token-file", p], env(&[])).unwrap();
        assert_eq!(c.auth_token.unwrap().expose(), "from-file");
        std::fs::remove_file(&path).unwrap();
        let err = Config::load(["b", "--auth-token-file", p], env(&[])).unwrap_err();
        assert!(
            err.message().contains("--auth-token-file"),
            "{}",
            err.message()
        );
    }

    #[test]
    fn concurrency_is_bounded() {
        assert!(Config::load(["b", "--concurrency", "0"], env(&[])).is_err());
        let c = Config::load(["b", "--concurrency", "7"], env(&[])).unwrap();
        assert_eq!(c.concurrency, 7);
    }

    #[test]
    fn platform_detection() {
        assert!(Platform::detect(&env(&[("FC_FUNCTION_NAME", "f")])).is_fc());
        assert!(Platform::detect(&env(&[("FC_SERVER_PORT", "9000")])).is_fc());
        assert_eq!(
            Platform::detect(&env(&[("K_SERVICE", "s")])).to_string(),
            "cloud-run"
        );
        assert_eq!(
            Platform::detect(&env(&[("NVCF_FUNCTION_ID", "x")])).to_string(),
            "nvcf"
        );
        assert_eq!(Platform::detect(&env(&[])), Platform::Local);
    }

    #[test]
    fn auto_log_format() {
        let mut c = Config::load(["b"], env(&[])).unwrap();
        assert!(!c.json_logs(false));
        c.platform = Platform::detect(&env(&[("K_SERVICE", "s")]));
        assert!(c.json_logs(false));
        assert!(!c.json_logs(true));
    }

    #[test]
    fn bad_log_filter_is_refused() {
        let err = Config::load(["b", "--log-level", "info,=[x"], env(&[])).unwrap_err();
        assert!(err.message().contains("--log-level"), "{}", err.message());
    }
}
