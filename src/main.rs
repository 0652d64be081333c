//! The `bootstrap` binary: parse the configuration, set up logging, serve.
//!
//! Everything else lives in the library, which the tests call the same way.

use std::io::IsTerminal;
use std::process::ExitCode;

use bootstrap::config::Command;
use bootstrap::telemetry::{self, TelemetrySettings};
use bootstrap::{Bootstrap, Config, services};

/// The allocator of both builds. musl's malloc takes a global lock on every call, which cost the
/// static build about two thirds of its unary throughput; against glibc's malloc, mimalloc takes
/// about 8,000 of the instructions an RPC costs (callgrind, unary SayHello, ~80,000 in all).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let config = match Config::from_process() {
        Ok(config) => config,
        Err(e) => {
            let code = e.exit_code();
            if code == 0 {
                print!("{}", e.message());
            } else {
                eprintln!("{}", e.message());
            }
            return ExitCode::from(code as u8);
        }
    };
    if let Some(Command::Probe(args)) = &config.command {
        return probe(&config, args);
    }
    let settings = TelemetrySettings {
        json: config.json_logs(std::io::stdout().is_terminal()),
        filter: config.log_level.clone(),
        gcp_project: config.gcp_project.clone(),
    };
    let telemetry = match telemetry::init(&settings) {
        Ok(telemetry) => telemetry,
        Err(e) => {
            eprintln!(
                "error: {}",
                anyhow::Error::from(e)
                    .chain()
                    .map(|c| c.to_string())
                    .collect::<Vec<_>>()
                    .join(": ")
            );
            return ExitCode::from(2);
        }
    };
    let runtime = match runtime(tokio::runtime::Builder::new_multi_thread()) {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let bootstrap = services::register(Bootstrap::new(config)).telemetry(telemetry.clone());
    let code = match runtime.block_on(bootstrap.run()) {
        Ok(_summary) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "bootstrap failed");
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    };
    // The last lines (the drain summary) must reach stdout before the process ends.
    telemetry.shutdown();
    code
}

/// `bootstrap probe`: exit 0 when the server answers SERVING, 1 otherwise, with one line saying
/// what was found.
fn probe(config: &Config, args: &bootstrap::config::ProbeArgs) -> ExitCode {
    let addr = args
        .addr
        .clone()
        .unwrap_or_else(|| format!("127.0.0.1:{}", config.effective_port));
    let runtime = match runtime(tokio::runtime::Builder::new_current_thread()) {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    match runtime.block_on(bootstrap::probe::probe(&addr, &args.service, args.timeout)) {
        Ok(()) => {
            println!("SERVING");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Builds a tokio runtime, or says why not and gives the exit code.
fn runtime(mut builder: tokio::runtime::Builder) -> Result<tokio::runtime::Runtime, ExitCode> {
    builder.enable_all().build().map_err(|e| {
        eprintln!("error: cannot start the runtime: {e}");
        ExitCode::FAILURE
    })
}
