//! `mailgate check-config`: everything that would stop a start, found before the start.

use std::path::Path;
use std::process::ExitCode;

use mailgate::config::Config;

use super::load;

pub(crate) fn check_config(path: &Path) -> ExitCode {
    let config = match load(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    for warning in config.warnings() {
        println!("warning: {warning}");
    }
    let users = match mailgate::auth::UserStore::load(&config.auth.users_file) {
        Ok(u) => u,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    for w in users.warnings() {
        let file = config.auth.users_file.display();
        println!("warning: {file}:{}: {}; {}", w.line, w.message, w.hint);
    }
    if !config.relay.local_domains.is_empty()
        && mailgate::auth::Authenticator::lookup(&users, "postmaster").is_none()
    {
        println!(
            "warning: {}: no user \"postmaster\"; RFC 5321 §4.5.1 requires mail to <postmaster> \
             to be accepted: add one (it may share a password with an admin)",
            config.auth.users_file.display()
        );
    }
    for user in users.users() {
        // Bearer-token mechanisms need nothing stored; APOP is checked when offered.
        for (mech, why) in users.unserved(&user, &config.auth.mechanisms, config.auth.apop) {
            println!("warning: user {user} cannot log in with {mech}: {why}");
        }
    }
    print_policy_coverage(&config, &users);
    println!("{}: OK ({} users)", path.display(), users.len());
    ExitCode::SUCCESS
}

/// Shows, for each `[[policy]]` rule, whether it is in force today and which users and
/// mechanisms it covers (see `Policy::coverage`).
fn print_policy_coverage(config: &Config, users: &mailgate::auth::UserStore) {
    let now = mailgate::clock::Clock::now(&mailgate::clock::SystemClock);
    let mut methods: Vec<&str> = config.auth.mechanisms.iter().map(String::as_str).collect();
    if config.auth.ntlm_v1 && methods.iter().any(|m| m.eq_ignore_ascii_case("NTLM")) {
        methods.push("NTLMv1");
    }
    methods.extend(["USER", "APOP"]);
    if config.pop_before_smtp.enabled {
        methods.push("pop-before-smtp");
    }
    if !config.relay.trusted_networks.is_empty() {
        methods.push("trusted-network");
    }
    let mut seen = std::collections::HashSet::new();
    methods.retain(|m| seen.insert(m.to_ascii_uppercase()));
    // A user is listed under a method only if their stored forms serve it.
    // (Bearer tokens and relays by address do not depend on what is stored.)
    let can_use = |user: &str, method: &str| -> bool {
        match method {
            "pop-before-smtp" | "trusted-network" => true,
            m if mailgate::sasl::find(m).is_some_and(|d| d.bearer_token) => true,
            "NTLMv1" => users.can_serve(user, "NTLM").is_ok(),
            m => users.can_serve(user, m).is_ok(),
        }
    };
    for rule in config
        .policy
        .coverage(now, &methods, &users.users(), &can_use)
    {
        println!("{rule}");
    }
}
