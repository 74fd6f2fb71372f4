//! `mailgate queue`: the messages waiting in the spool (read from the files, so it works
//! whether the gateway runs or not), and the admin's actions on them (`flush`, `delete`,
//! `hold`, `release`), which the running gateway's delivery worker carries out and audits.

use std::path::Path;
use std::process::ExitCode;

use clap::Subcommand;

use super::{ask, load};

#[derive(Subcommand)]
pub(crate) enum QueueAction {
    /// Try now: the message ID, or every message not held (like `postqueue -f`).
    Flush {
        /// The message id (as `mailgate queue` lists it).
        id: Option<String>,
    },
    /// Delete the message from the queue: it is neither delivered nor bounced (like
    /// `postsuper -d`).
    Delete {
        /// The message id.
        id: String,
    },
    /// Keep the message but do not try it until released (like `postsuper -h`).
    Hold {
        /// The message id.
        id: String,
    },
    /// Release a held message and try it now (like `postsuper -H`).
    Release {
        /// The message id.
        id: String,
    },
}

pub(crate) fn queue(path: &Path, json: bool, action: Option<QueueAction>) -> ExitCode {
    let config = match load(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let Some(action) = action else {
        return list(&config, json);
    };
    let line = match &action {
        QueueAction::Flush { id: None } => "QUEUE FLUSH".to_string(),
        QueueAction::Flush { id: Some(id) } => format!("QUEUE FLUSH {id}"),
        QueueAction::Delete { id } => format!("QUEUE DELETE {id}"),
        QueueAction::Hold { id } => format!("QUEUE HOLD {id}"),
        QueueAction::Release { id } => format!("QUEUE RELEASE {id}"),
    };
    let Some(answer) = ask(&config, path, &line) else {
        return ExitCode::FAILURE;
    };
    match mailgate::control::parse_response(&answer) {
        Ok(lines) => {
            for l in lines {
                println!("{l}");
            }
            ExitCode::SUCCESS
        }
        Err(mailgate::control::Error::Server(reason)) => {
            eprintln!("queue: {reason}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("queue: {e}");
            ExitCode::FAILURE
        }
    }
}

fn list(config: &mailgate::config::Config, json: bool) -> ExitCode {
    use mailgate::spool::Status;
    let at = |secs: u64| std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs);
    let messages = match mailgate::spool::inspect(&config.delivery.spool) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("queue: {e}");
            return ExitCode::FAILURE;
        }
    };
    if json {
        for env in &messages {
            match serde_json::to_string(env) {
                Ok(line) => println!("{line}"),
                Err(e) => eprintln!("queue: {}: {e}", env.id),
            }
        }
        return ExitCode::SUCCESS;
    }
    for env in &messages {
        let from = if env.mail_from.is_empty() {
            "<>"
        } else {
            env.mail_from.as_str()
        };
        let next = if env.held {
            "HELD (mailgate queue release)".to_string()
        } else {
            mailgate::audit::event::rfc3339(at(env.next_attempt))
        };
        println!(
            "{}  {} octets  received {}  attempts {}  next {next}  from {from}",
            env.id,
            env.size,
            mailgate::audit::event::rfc3339(at(env.received_at)),
            env.attempts,
        );
        for r in &env.recipients {
            let state = match (&r.status, &r.last_error) {
                (Status::Pending, Some(error)) => format!("pending; last error: {error}"),
                (Status::Pending, None) => "pending".to_string(),
                (Status::Delivered, _) => "delivered".to_string(),
                (Status::Failed { code, text }, _) => format!("failed: {code} {text}"),
            };
            let local = if r.local_user.is_some() {
                " (local)"
            } else {
                ""
            };
            println!("    {}{local}: {state}", r.address);
        }
    }
    println!(
        "{} message(s) in {}",
        messages.len(),
        config.delivery.spool.display()
    );
    ExitCode::SUCCESS
}
