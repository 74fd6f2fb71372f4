//! The admin subcommands, one file each; `main.rs` parses the command line and dispatches.

pub(crate) mod allowlist;
pub(crate) mod audit;
pub(crate) mod check;
pub(crate) mod generate;
pub(crate) mod import;
pub(crate) mod queue;
pub(crate) mod users;

use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;

use mailgate::config::Config;

/// Loads the configuration, or prints its errors (each naming the file) and fails.
pub(crate) fn load(path: &Path) -> Result<Config, ExitCode> {
    Config::load(path).map_err(|errors| {
        eprintln!("{errors}");
        ExitCode::FAILURE
    })
}

/// Sends one control request; the answer, or `None` after saying why on stderr.
pub(crate) fn control(
    addr: SocketAddr,
    key: &mailgate::control::Key,
    line: &str,
) -> Option<String> {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{e}");
            return None;
        }
    };
    match runtime.block_on(mailgate::control::request(addr, key, line)) {
        Ok(answer) => Some(answer),
        Err(e) => {
            eprintln!("cannot reach the gateway at {addr}: {e}");
            None
        }
    }
}
