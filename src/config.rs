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

    /// Google Cloud project, for the trace field of Cloud Logging's JSON lines.
    #[arg(long, env = "GOOGLE_CLOUD_PROJECT", value_name = "PROJECT")]
    pub gcp_project: Option<String>,

    /// The platform, detected from its environment variables. Not a flag.
    #[arg(skip)]
    pub platform: Platform,

    /// The port actually served after resolving `--port` and the platform variables. Not a flag.
    #[arg(skip = DEFAULT_PORT)]
    pub effective_port: u16,
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
        config.platform = Platform::detect(&env);
        config.validate()?;
        Ok(config)
    }

    /// Checks the relations between values that clap checks one by one.
    fn validate(&self) -> Result<(), ConfigError> {
        if self.timeout.is_zero() {
            return Err(invalid("--timeout", "0s", "must be greater than zero"));
        }
        tracing_subscriber::EnvFilter::try_new(&self.log_level)
            .map_err(|e| invalid("--log-level (RUST_LOG)", &self.log_level, e))?;
        Ok(())
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
