//! `mailgate allowlist`: the running gateway's POP-before-SMTP allowlist, over the control
//! channel.

use std::path::Path;
use std::process::ExitCode;

use clap::Subcommand;

use super::{control, load};

#[derive(Subcommand)]
pub(crate) enum AllowlistAction {
    /// List the entries.
    List,
    /// Allow an address to relay.
    Add {
        /// The client address.
        ip: std::net::IpAddr,
        /// How long, e.g. "30m" (default: the configured TTL).
        #[arg(long)]
        ttl: Option<String>,
        /// The user to record.
        #[arg(long, default_value = "admin")]
        user: String,
    },
    /// Remove an address.
    Remove {
        /// The client address.
        ip: std::net::IpAddr,
    },
}

pub(crate) fn allowlist(path: &Path, action: AllowlistAction) -> ExitCode {
    let config = match load(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let Some(addr) = config.listeners.control else {
        eprintln!(
            "{}: set listeners.control to use this command",
            path.display()
        );
        return ExitCode::FAILURE;
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
            return ExitCode::FAILURE;
        }
    };
    let list = matches!(action, AllowlistAction::List);
    let (line, done) = match action {
        AllowlistAction::List => ("LIST".to_string(), String::new()),
        AllowlistAction::Add { ip, ttl, user } => {
            let ttl = match ttl.as_deref() {
                None => config.pop_before_smtp.ttl,
                Some(text) => match mailgate::config::parse_duration(text) {
                    Some(d) if !d.is_zero() => d,
                    _ => {
                        eprintln!(
                            "--ttl {text:?}: write a duration such as \"30m\", \"8h\" or \"1d\""
                        );
                        return ExitCode::FAILURE;
                    }
                },
            };
            let done = format!(
                "{ip} may relay for {} (user {user})",
                humantime::format_duration(ttl)
            );
            (format!("ADD {ip} {} {user}", ttl.as_secs()), done)
        }
        AllowlistAction::Remove { ip } => (format!("REMOVE {ip}"), format!("{ip} removed")),
    };
    let Some(answer) = control(addr, &key, &line) else {
        return ExitCode::FAILURE;
    };
    if let Err(e) = mailgate::control::parse_response(&answer) {
        eprintln!("{e}");
        return ExitCode::FAILURE;
    }
    if !list {
        println!("{done}");
        return ExitCode::SUCCESS;
    }
    match mailgate::control::parse_list(&answer) {
        Ok(entries) => {
            let at = |secs: u64| {
                humantime::format_rfc3339_seconds(
                    std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs),
                )
            };
            println!(
                "{:<43} {:<20} {:<20} {:<20}",
                "NETWORK", "USER", "SINCE", "EXPIRES"
            );
            for e in &entries {
                println!(
                    "{:<43} {:<20} {:<20} {:<20}",
                    e.net,
                    e.user,
                    at(e.inserted_at),
                    at(e.expires_at)
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}
