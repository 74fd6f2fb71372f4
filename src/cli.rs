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

/// Sends one request to the running gateway's control channel (its address from the config,
/// its key from the state folder); the answer, or `None` after saying why on stderr.
pub(crate) fn ask(config: &Config, path: &Path, line: &str) -> Option<String> {
    let Some(addr) = config.listeners.control else {
        eprintln!(
            "{}: set listeners.control to use this command",
            path.display()
        );
        return None;
    };
    let key_file = config.state_dir.join(mailgate::control::KEY_FILE);
    let key = match mailgate::control::Key::read(&key_file) {
        Ok(k) => k,
        Err(e) => {
            eprintln!(
                "cannot read the control key {}: {e} (is the gateway running? run this as its \
                 user or as root)",
                key_file.display()
            );
            return None;
        }
    };
    control(addr, &key, line)
}
