//! `mailgate queue`: the messages waiting in the spool.

use std::process::ExitCode;

use super::load;

pub(crate) fn queue(config: &std::path::Path, json: bool) -> ExitCode {
    use mailgate::spool::Status;
    let at = |secs: u64| std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs);
    let config = match load(config) {
        Ok(c) => c,
        Err(code) => return code,
    };
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
        println!(
            "{}  {} octets  received {}  attempts {}  next {}  from {from}",
            env.id,
            env.size,
            mailgate::audit::event::rfc3339(at(env.received_at)),
            env.attempts,
            mailgate::audit::event::rfc3339(at(env.next_attempt)),
        );
        for r in &env.recipients {
            let state = match &r.status {
                Status::Pending => "pending".to_string(),
                Status::Delivered => "delivered".to_string(),
                Status::Failed { code, text } => format!("failed: {code} {text}"),
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
