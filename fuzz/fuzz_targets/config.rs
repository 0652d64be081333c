//! Fuzzes `Config::load`: arbitrary command lines and environment snapshots must give a valid
//! configuration or a one-line error, never a panic, and a configuration that loads must hold
//! the invariants the server relies on (port resolved, margin below the timeout, limits in range).
//!
//! Input: one item per line. A line starting with `$` is an environment variable `NAME=VALUE`
//! (the snapshot `load` resolves the port and the platform from); any other line is an argument,
//! passed as raw bytes, after the program name.
#![no_main]

use std::collections::HashMap;
use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;

use bootstrap::config::{Config, DEFAULT_PORT, PORT_VARIABLES, Platform};
use libfuzzer_sys::fuzz_target;

/// The port `load` must have chosen: `--port`, else the first platform variable that is set.
/// `None` when that variable is not a port (then `load` must have failed).
fn expected_port(flag: Option<u16>, env: &HashMap<String, String>) -> Option<u16> {
    if flag.is_some() {
        return flag;
    }
    match PORT_VARIABLES
        .iter()
        .find_map(|name| env.get(*name).filter(|v| !v.is_empty()))
    {
        Some(value) => value.trim().parse().ok(),
        None => Some(DEFAULT_PORT),
    }
}

fuzz_target!(|data: &[u8]| {
    let mut args = vec![OsString::from("bootstrap")];
    let mut env = HashMap::new();
    for line in data.split(|&b| b == b'\n') {
        match line.strip_prefix(b"$") {
            Some(var) => {
                let var = String::from_utf8_lossy(var);
                let (name, value) = var.split_once('=').unwrap_or((&var, ""));
                env.insert(name.to_string(), value.to_string());
            }
            None => args.push(OsString::from_vec(line.to_vec())),
        }
    }

    let config = match Config::load(args, env.clone()) {
        Ok(config) => config,
        Err(e) => {
            let message = e.message();
            match e.exit_code() {
                // --help and --version: clap's own multi-line text.
                0 => {}
                2 => assert_eq!(message.lines().count(), 1, "{message:?}"),
                code => panic!("exit code {code} for {message:?}"),
            }
            return;
        }
    };

    assert_eq!(
        Some(config.effective_port),
        expected_port(config.port, &env),
        "port from {:?} and {env:?}",
        config.port
    );
    assert_eq!(config.bind_addr().port(), config.effective_port);
    assert_eq!(config.platform, Platform::detect(&env));
    assert!(!config.timeout.is_zero());
    assert!(config.timeout_margin < config.timeout, "{config:?}");
    assert!(!config.handshake_timeout.is_zero());
    assert!((1..=100_000).contains(&config.concurrency));
    assert!(config.max_connections >= 1);
    assert!(config.message_limit() >= 1);
    // A setting of zero means off, never a zero-length timer.
    for d in [
        config.idle_timeout,
        config.max_connection_age,
        config.max_lifetime,
        config.idle_exit_after,
    ] {
        assert_ne!(d, Some(std::time::Duration::ZERO), "{config:?}");
    }
    let _ = config.json_logs(false);
});
