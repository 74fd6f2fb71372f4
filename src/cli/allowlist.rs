//! `mailgate allowlist`: the running gateway's POP-before-SMTP allowlist, over the control
//! channel.

use std::path::Path;
use std::process::ExitCode;

use clap::Subcommand;

use mailgate::control::ListedEntry;

use super::{ask, load};

#[derive(Subcommand)]
pub(crate) enum AllowlistAction {
    /// List the entries.
    List {
        /// Print a JSON array instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Allow an address or a network to relay; stored exactly as given (an IPv6 address as
    /// that one host, /128).
    Add {
        /// An address (192.0.2.10, 2001:db8::25) or a network (10.1.2.0/24, at most a /16;
        /// 2001:db8:1::/48 at most).
        target: String,
        /// Allow the address's network of this prefix length instead of the address alone
        /// (e.g. --prefix 64 for a host that rotates IPv6 privacy addresses).
        #[arg(long)]
        prefix: Option<u8>,
        /// How long, in the configuration's duration syntax: "30m", "8h", "1d" (default: the
        /// configured pop_before_smtp.ttl).
        #[arg(long)]
        ttl: Option<String>,
        /// The user to record.
        #[arg(long, default_value = "admin")]
        user: String,
    },
    /// Remove an entry: a network as listed, or an address (the entry that lets it relay).
    /// Exit 1 if there is none.
    Remove {
        /// An address or a network as `list` shows it.
        target: String,
    },
}

pub(crate) fn allowlist(path: &Path, action: AllowlistAction) -> ExitCode {
    let config = match load(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let (line, json) = match &action {
        AllowlistAction::List { json } => ("LIST".to_string(), *json),
        AllowlistAction::Add {
            target,
            prefix,
            ttl,
            user,
        } => {
            let target = match with_prefix(target, *prefix) {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("allowlist add: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let ttl = match ttl.as_deref() {
                None => config.pop_before_smtp.ttl,
                Some(text) => match mailgate::config::parse_duration(text) {
                    Some(d) if !d.is_zero() => d,
                    _ => {
                        eprintln!(
                            "allowlist add: --ttl {text:?}: write a duration such as \"30m\", \
                             \"8h\" or \"1d\""
                        );
                        return ExitCode::FAILURE;
                    }
                },
            };
            (format!("ADD {target} {} {user}", ttl.as_secs()), false)
        }
        AllowlistAction::Remove { target } => (format!("REMOVE {target}"), false),
    };
    let Some(answer) = ask(&config, path, &line) else {
        return ExitCode::FAILURE;
    };
    let entries = match mailgate::control::parse_list(&answer) {
        Ok(entries) => entries,
        Err(mailgate::control::Error::Server(reason)) => {
            match (&action, reason.as_str()) {
                (AllowlistAction::Remove { target }, "not found") => {
                    eprintln!("allowlist remove: no entry lets {target} relay; nothing removed");
                }
                (AllowlistAction::Add { .. }, _) => eprintln!("allowlist add: {reason}"),
                _ => eprintln!("allowlist: {reason}"),
            }
            return ExitCode::FAILURE;
        }
        Err(e) => {
            eprintln!("allowlist: {e}");
            return ExitCode::FAILURE;
        }
    };
    match action {
        AllowlistAction::List { .. } if json => match serde_json::to_string_pretty(&entries) {
            Ok(text) => println!("{text}"),
            Err(e) => {
                eprintln!("allowlist: {e}");
                return ExitCode::FAILURE;
            }
        },
        AllowlistAction::List { .. } => print_table(&entries),
        AllowlistAction::Add { .. } => {
            for e in &entries {
                let ttl = std::time::Duration::from_secs(e.expires_at - e.inserted_at);
                println!(
                    "{} may relay until {} ({}, user {})",
                    e.net,
                    at(e.expires_at),
                    humantime::format_duration(ttl),
                    e.user
                );
            }
        }
        AllowlistAction::Remove { .. } => {
            for e in &entries {
                println!("{} removed (user {})", e.net, e.user);
            }
        }
    }
    ExitCode::SUCCESS
}

/// The network `target` with `prefix` applied: `2001:db8::1234` with 64 is
/// `2001:db8::/64`; without a prefix, `target` as written (the gateway stores an address as
/// that one host).
fn with_prefix(target: &str, prefix: Option<u8>) -> Result<String, String> {
    let Some(prefix) = prefix else {
        return Ok(target.to_string());
    };
    let ip: std::net::IpAddr = target
        .parse()
        .map_err(|_| format!("--prefix needs an address, not {target:?}"))?;
    let net = ipnet::IpNet::new(ip, prefix)
        .map_err(|_| format!("--prefix {prefix} is longer than an {ip} address"))?;
    Ok(net.trunc().to_string())
}

fn at(secs: u64) -> humantime::Rfc3339Timestamp {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs))
}

fn print_table(entries: &[ListedEntry]) {
    println!(
        "{:<43} {:<20} {:<20} {:<20}",
        "NETWORK", "USER", "SINCE", "EXPIRES"
    );
    for e in entries {
        println!(
            "{:<43} {:<20} {:<20} {:<20}",
            e.net,
            e.user,
            at(e.inserted_at),
            at(e.expires_at)
        );
    }
}
