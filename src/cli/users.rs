//! `mailgate passwd`: the users file from the command line.

use std::io::Read;
use std::path::Path;
use std::process::ExitCode;

use super::load;

pub(crate) fn passwd(path: &Path, user: &str) -> ExitCode {
    let config = match load(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let mut input = Vec::new();
    if let Err(e) = std::io::stdin().read_to_end(&mut input) {
        eprintln!("cannot read the password from standard input: {e}");
        return ExitCode::FAILURE;
    }
    // One line: drop the line end a terminal or `echo` adds.
    while input.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        input.pop();
    }
    let password = zeroize::Zeroizing::new(input);
    if password.is_empty() {
        eprintln!("empty password refused");
        return ExitCode::FAILURE;
    }
    let forms = mailgate::auth::stored_forms(&password, &config.auth.mechanisms);
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
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
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
