//! The users file from the command line: `mailgate passwd`, `mailgate user list|delete` and
//! `mailgate auth test`.

use std::io::Read;
use std::path::Path;
use std::process::ExitCode;

use clap::Subcommand;
use zeroize::Zeroizing;

use mailgate::auth::{Probe, UserStore};

use super::load;

pub(crate) fn passwd(path: &Path, user: &str, allow_short: bool) -> ExitCode {
    let config = match load(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let password = match read_password(&format!("New password for {user}: "), true)
        .and_then(|pw| acceptable(pw, allow_short))
    {
        Ok(pw) => pw,
        Err(e) => {
            eprintln!("passwd: {e}");
            return ExitCode::FAILURE;
        }
    };
    // The {DIGEST-MD5} form is made for the name as the users file holds it.
    let name = mailgate::auth::user_name(user).unwrap_or_else(|| user.to_owned());
    let realm = &config.auth.digest_md5_realm;
    let forms = mailgate::auth::stored_forms(
        &name,
        password.as_bytes(),
        &config.auth.mechanisms,
        Some(realm),
    );
    match mailgate::auth::set_user(&config.auth.users_file, user, &forms) {
        Ok(()) => {
            println!(
                "{}: stored {} form(s) for {user}; a running gateway uses them within 2 s \
                 (at once on SIGHUP)",
                config.auth.users_file.display(),
                forms.len()
            );
            // The user's old lines are gone: say which enabled checks the new forms cannot
            // serve (APOP needs {PLAIN}, which is never written).
            let schemes: Vec<&str> = forms
                .iter()
                .filter_map(|f| f.strip_prefix('{')?.split_once('}').map(|(s, _)| s))
                .collect();
            let unserved =
                mailgate::auth::unserved(&schemes, &config.auth.mechanisms, config.auth.apop);
            for (mech, why) in unserved {
                println!("warning: {user} cannot log in with {mech}: {why}");
            }
            if forms.iter().any(|f| f.starts_with("{DIGEST-MD5}")) {
                println!(
                    "note: the {{DIGEST-MD5}} form serves the realm \"{realm}\" only \
                     ([auth] digest_md5_realm); after changing the realm, set the password again"
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

/// The longest password read from a pipe, in bytes; a longer line is refused, not cut.
const MAX_PASSWORD_BYTES: u64 = 4096;

/// The shortest password `passwd` stores without `--allow-short`, in characters.
const MIN_PASSWORD_CHARS: usize = 8;

/// Reads a password. On a terminal: `prompt`ed with echo off, and a second time to compare
/// when `confirm`. Otherwise: exactly one line of standard input (its line end dropped), so
/// that `echo pw | mailgate passwd alice` stores `pw` and nothing after it.
pub(crate) fn read_password(prompt: &str, confirm: bool) -> Result<Zeroizing<String>, String> {
    use std::io::{BufRead, IsTerminal};
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        // rpassword turns echo off on the terminal and restores it, even on error.
        let first = Zeroizing::new(
            rpassword::prompt_password(prompt).map_err(|e| format!("cannot read it: {e}"))?,
        );
        if confirm {
            let again = Zeroizing::new(
                rpassword::prompt_password("Retype it: ")
                    .map_err(|e| format!("cannot read it: {e}"))?,
            );
            if !bool::from(subtle::ConstantTimeEq::ct_eq(
                first.as_bytes(),
                again.as_bytes(),
            )) {
                return Err("the passwords do not match; nothing changed".into());
            }
        }
        return no_line_breaks(first);
    }
    let mut line = Zeroizing::new(Vec::new());
    let read = stdin
        .lock()
        .take(MAX_PASSWORD_BYTES + 2)
        .read_until(b'\n', &mut line)
        .map_err(|e| format!("cannot read it from standard input: {e}"))?;
    if read as u64 > MAX_PASSWORD_BYTES + 1 {
        return Err(format!("longer than {MAX_PASSWORD_BYTES} bytes"));
    }
    if line.last() == Some(&b'\n') {
        line.pop();
        if line.last() == Some(&b'\r') {
            line.pop();
        }
    }
    let text = String::from_utf8(std::mem::take(&mut *line))
        .map_err(|_| "not UTF-8 text; nothing changed".to_string())?;
    no_line_breaks(Zeroizing::new(text))
}

fn no_line_breaks(pw: Zeroizing<String>) -> Result<Zeroizing<String>, String> {
    if pw.is_empty() {
        return Err("empty password refused".into());
    }
    if pw.contains(['\r', '\n', '\0']) {
        return Err("a password may not hold a line break or NUL".into());
    }
    Ok(pw)
}

/// A new password's rules: at least [`MIN_PASSWORD_CHARS`] characters unless `allow_short`.
fn acceptable(pw: Zeroizing<String>, allow_short: bool) -> Result<Zeroizing<String>, String> {
    if !allow_short && pw.chars().count() < MIN_PASSWORD_CHARS {
        return Err(format!(
            "shorter than {MIN_PASSWORD_CHARS} characters, refused (--allow-short stores it \
             anyway); nothing changed"
        ));
    }
    Ok(pw)
}

/// `passwd --scheme`: without a user, every scheme the users file may hold; with one, that
/// user's stored schemes and the enabled mechanisms none of them serves.
pub(crate) fn schemes(path: &Path, user: Option<&str>) -> ExitCode {
    use mailgate::auth::{SCHEMES, UserStore, mechanisms_served};
    let Some(user) = user else {
        println!("{:<14} serves", "scheme");
        for s in SCHEMES {
            println!("{:<14} {}", s.name, s.serves.join(" "));
            if !s.aliases.is_empty() {
                println!("{:<14} also written {}", "", s.aliases.join(", "));
            }
            if let Some(weak) = s.weak {
                println!("{:<14} {weak}", "");
            }
        }
        println!(
            "(.HEX, .B64 and .BASE64 suffixes select the encoding of binary data, e.g. \
             {{SHA256.HEX}}, {{PLAIN.B64}})"
        );
        return ExitCode::SUCCESS;
    };
    let config = match load(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let users = match UserStore::load(&config.auth.users_file) {
        Ok(u) => u,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let stored = users.schemes(user);
    if stored.is_empty() {
        eprintln!("{}: no user {user}", config.auth.users_file.display());
        return ExitCode::FAILURE;
    }
    println!("{:<14} serves", "scheme");
    for scheme in stored {
        println!("{scheme:<14} {}", mechanisms_served(scheme).join(" "));
    }
    for (mech, why) in users.unserved(user, &config.auth.mechanisms, config.auth.apop) {
        println!("enabled mechanism {mech} cannot serve {user}: {why}");
    }
    ExitCode::SUCCESS
}

#[derive(Subcommand)]
pub(crate) enum UserAction {
    /// List the users, their stored schemes and the enabled mechanisms each can log in with.
    List {
        /// Print a JSON array instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Remove a user's lines from the users file (a running gateway follows within 2 s).
    Delete {
        /// The user name.
        user: String,
    },
}

/// `mailgate user list|delete`.
pub(crate) fn user(path: &Path, action: UserAction) -> ExitCode {
    let config = match load(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let file = &config.auth.users_file;
    match action {
        UserAction::Delete { user } => match mailgate::auth::remove_user(file, &user) {
            Ok(true) => {
                println!(
                    "{}: {user} removed; a running gateway refuses their logins within 2 s",
                    file.display()
                );
                ExitCode::SUCCESS
            }
            Ok(false) => {
                eprintln!("{}: no user {user}; nothing changed", file.display());
                ExitCode::FAILURE
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        },
        UserAction::List { json } => {
            let users = match UserStore::load(file) {
                Ok(u) => u,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::FAILURE;
                }
            };
            // The checks a stored form can serve: the enabled SASL mechanisms (not the
            // bearer-token ones, which check a token), and POP3's USER and APOP.
            let mut checks: Vec<&str> = config
                .auth
                .mechanisms
                .iter()
                .map(String::as_str)
                .filter(|m| mailgate::sasl::find(m).is_none_or(|d| !d.bearer_token))
                .collect();
            checks.push("USER");
            if config.auth.apop {
                checks.push("APOP");
            }
            let rows: Vec<serde_json::Value> = users
                .users()
                .iter()
                .map(|u| {
                    let served: Vec<&str> = checks
                        .iter()
                        .copied()
                        .filter(|m| users.can_serve(u, m).is_ok())
                        .collect();
                    serde_json::json!({
                        "user": u,
                        "schemes": users.schemes(u),
                        "mechanisms": served,
                    })
                })
                .collect();
            if json {
                println!("{}", serde_json::Value::Array(rows));
                return ExitCode::SUCCESS;
            }
            println!("{:<32} {:<36} MECHANISMS", "USER", "SCHEMES");
            let join = |v: &serde_json::Value| {
                v.as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|x| x.as_str())
                            .collect::<Vec<_>>()
                            .join(",")
                    })
                    .unwrap_or_default()
            };
            for row in &rows {
                println!(
                    "{:<32} {:<36} {}",
                    row["user"].as_str().unwrap_or_default(),
                    join(&row["schemes"]),
                    join(&row["mechanisms"]).replace(',', " ")
                );
            }
            println!("{} user(s) in {}", rows.len(), file.display());
            ExitCode::SUCCESS
        }
    }
}

/// `mailgate auth test USER [--mechanism M]`: reads the password as `passwd` does and says
/// whether it verifies, and from which stored form or source. Exit 0 if it does.
pub(crate) fn auth_test(path: &Path, user: &str, mechanism: &str) -> ExitCode {
    let config = match load(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let mechanism = mechanism.to_ascii_uppercase();
    if mailgate::sasl::find(&mechanism).is_some_and(|d| d.bearer_token) {
        eprintln!("auth test: {mechanism} checks a bearer token, not a password");
        return ExitCode::FAILURE;
    }
    let users = match UserStore::load(&config.auth.users_file) {
        Ok(u) => u,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let password = match read_password(&format!("Password for {user}: "), false) {
        Ok(pw) => pw,
        Err(e) => {
            eprintln!("auth test: {e}");
            return ExitCode::FAILURE;
        }
    };
    let file = config.auth.users_file.display();
    let known = mailgate::auth::Authenticator::lookup(&users, user).is_some();
    let upstream = config.auth.upstream.as_ref().filter(|u| match u.users {
        mailgate::config::UpstreamUsers::All => true,
        mailgate::config::UpstreamUsers::Unknown => !known,
    });
    if let Some(upstream) = upstream {
        return test_upstream(&config, upstream, user, &mechanism, &password);
    }
    match users.probe(user, &mechanism, password.as_bytes()) {
        Probe::Verified(scheme) => {
            println!(
                "{user}: verifies for {mechanism}, from the stored {{{scheme}}} form in {file}"
            );
            ExitCode::SUCCESS
        }
        Probe::Refused(schemes) => {
            let forms: Vec<String> = schemes.iter().map(|s| format!("{{{s}}}")).collect();
            println!(
                "{user}: does NOT verify for {mechanism} (checked the stored {} in {file})",
                forms.join(", ")
            );
            ExitCode::FAILURE
        }
        Probe::Unserved(why) => {
            println!("{user}: cannot log in with {mechanism}: {why}");
            ExitCode::FAILURE
        }
        Probe::NoUser => {
            println!("{user}: no such user in {file}");
            ExitCode::FAILURE
        }
    }
}

/// `auth test` for a user whose password the old server checks (`[auth.upstream]` or
/// `[auth.ldap]`): one real check, as a login would make it.
fn test_upstream(
    config: &mailgate::config::Config,
    upstream: &mailgate::config::AuthUpstream,
    user: &str,
    mechanism: &str,
    password: &str,
) -> ExitCode {
    use mailgate::auth::Verdict;
    use mailgate::config::CheckSource;
    if !["PLAIN", "LOGIN", "USER"].contains(&mechanism) {
        println!(
            "{user}: cannot log in with {mechanism}: the old server checks cleartext \
             passwords only (PLAIN, LOGIN, USER)"
        );
        return ExitCode::FAILURE;
    }
    let source = match &upstream.source {
        CheckSource::Server(s) => format!("the old server ({:?} at {})", s.protocol, s.address),
        CheckSource::Ldap(d) => format!("the directory {}", d.url),
    };
    let clock = std::sync::Arc::new(mailgate::clock::SystemClock);
    let checked = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())
        .and_then(|rt| {
            let checker = mailgate::upstream::Checker::new(
                upstream,
                &config.hostname,
                clock,
                mailgate::metrics::Metrics::new(),
            )?;
            let secret = mailgate::auth::Secret::new(password.as_bytes().to_vec());
            Ok(rt.block_on(checker.check(user, &secret)))
        });
    match checked {
        Ok(Verdict::Ok(name)) => {
            println!("{user}: verifies for {mechanism}, checked by {source} (as {name})");
            ExitCode::SUCCESS
        }
        Ok(Verdict::Temporary(why)) => {
            println!("{user}: not checked: {source} failed temporarily: {why}");
            ExitCode::FAILURE
        }
        Ok(other) => {
            println!("{user}: does NOT verify for {mechanism}, checked by {source} ({other:?})");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("auth test: {e}");
            ExitCode::FAILURE
        }
    }
}
