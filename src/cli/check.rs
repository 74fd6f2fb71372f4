//! `mailgate check-config`: everything that would stop a start, found before the start.

use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;

use mailgate::config::Config;

use super::load;

pub(crate) fn check_config(path: &Path, bind: bool) -> ExitCode {
    let config = match load(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    for warning in config.warnings() {
        println!("warning: {warning}");
    }
    // What would stop `serve`, each with the file and line it comes from.
    let mut problems: Vec<String> = Vec::new();
    let problem = |key: &str, message: String, hint: &str| {
        Config::problem_at(path, key, message, hint).to_string()
    };
    problems.extend(tls_problems(&config, &problem));
    problems.extend(external_problems(&config, &problem));
    if bind {
        problems.extend(bind_problems(&config, &problem));
    }
    for (key, dir) in [
        ("state_dir", &config.state_dir),
        ("delivery.maildir", &config.delivery.maildir),
        ("delivery.spool", &config.delivery.spool),
    ] {
        if let Err(e) = writable(dir) {
            problems.push(problem(
                key,
                format!("{}: {e}", dir.display()),
                "the gateway writes here: create it, or give its user write access",
            ));
        }
    }
    // The Kerberos library reads the keytab as the gateway's user; an unreadable one would
    // stop `serve` when it acquires the service credentials.
    if let Some(g) = &config.auth.gssapi
        && let Err(e) = std::fs::File::open(&g.keytab)
    {
        problems.push(problem(
            "auth.gssapi.keytab",
            format!("{}: {e}", g.keytab.display()),
            "write the keytab with kadmin's ktadd (smtp/<hostname> and pop/<hostname>), \
             readable by the gateway's user",
        ));
    }
    let mut cluster_note = None;
    if let Some(c) = &config.cluster {
        match cluster_reachable(c, &config.hostname) {
            Ok(note) => cluster_note = Some(note),
            Err(e) if e.starts_with("[cluster] ca_file") => problems.push(problem(
                "cluster.ca_file",
                e,
                "write the PEM certificate of the CA that signed Redis's, readable by the \
                 gateway's user",
            )),
            Err(e) if e.starts_with("[cluster] password_file") => problems.push(problem(
                "cluster.password_file",
                e,
                "make it readable by the gateway's user, with the password on its first line",
            )),
            Err(e) => problems.push(problem("cluster.redis", e, "correct the URL")),
        }
    }
    let users = match mailgate::auth::UserStore::load(&config.auth.users_file) {
        Ok(u) => Some(u),
        Err(mailgate::auth::Error::Invalid {
            problems: found, ..
        }) => {
            let file = config.auth.users_file.display();
            for p in found {
                problems.push(format!("{file}:{}: {}; {}", p.line, p.message, p.hint));
            }
            None
        }
        Err(e) => {
            problems.push(problem(
                "auth.users_file",
                e.to_string(),
                "create it with `mailgate passwd USER`, or correct the path",
            ));
            None
        }
    };
    if !problems.is_empty() {
        for p in &problems {
            eprintln!("{p}");
        }
        eprintln!(
            "{}: {} problem(s); the gateway would not start",
            path.display(),
            problems.len()
        );
        return ExitCode::FAILURE;
    }
    let Some(users) = users else {
        return ExitCode::FAILURE;
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
    if let Some(external) = &config.auth.external {
        for (identity, user) in &external.map {
            if mailgate::auth::Authenticator::lookup(&users, user).is_none() {
                println!(
                    "warning: auth.external.map: \"{identity}\" maps to \"{user}\", which is no \
                     user of {}: that certificate will be refused",
                    config.auth.users_file.display()
                );
            }
        }
    }
    let digest_users = users
        .users()
        .iter()
        .filter(|u| users.schemes(u).contains(&"DIGEST-MD5"))
        .count();
    if digest_users > 0 && config.auth.mechanisms.iter().any(|m| m == "DIGEST-MD5") {
        println!(
            "note: {digest_users} user(s) have a {{DIGEST-MD5}} form, which serves only the realm \
             it was made for: here \"{}\" ([auth] digest_md5_realm); one made for another realm \
             fails like a wrong password until the password is set again",
            config.auth.digest_md5_realm
        );
    }
    if let Some(note) = cluster_note {
        println!("{note}");
    }
    print_policy_coverage(&config, &users);
    println!("{}: OK ({} users)", path.display(), users.len());
    ExitCode::SUCCESS
}

/// The certificate and key of `[tls]`, read and matched as `serve` does.
fn tls_problems(config: &Config, problem: &dyn Fn(&str, String, &str) -> String) -> Vec<String> {
    if config.tls.cert.is_none() && config.tls.key.is_none() && config.tls.legacy.is_none() {
        return Vec::new();
    }
    match mailgate::tls::server(&config.tls, &config.hostname, None) {
        Ok(_) => Vec::new(),
        Err(e) => {
            let key = match &e {
                mailgate::tls::Error::Pem { path, .. }
                    if config
                        .tls
                        .key
                        .as_ref()
                        .is_some_and(|k| k.display().to_string() == *path) =>
                {
                    "tls.key"
                }
                _ => "tls.cert",
            };
            vec![problem(
                key,
                e.to_string(),
                "give the PEM certificate chain in tls.cert and its private key in tls.key \
                 (openssl x509 -noout -pubkey and openssl pkey -pubout must print the same key)",
            )]
        }
    }
}

/// The CA and CRL files of `[auth.external]`, read as `serve` reads them.
fn external_problems(
    config: &Config,
    problem: &dyn Fn(&str, String, &str) -> String,
) -> Vec<String> {
    let Some(external) = &config.auth.external else {
        return Vec::new();
    };
    match mailgate::tls::client_auth::ClientAuth::load(external) {
        Ok(_) => Vec::new(),
        Err(e) => {
            let crl = match &e {
                mailgate::tls::Error::Pem { path, .. } => external
                    .crl_file
                    .as_ref()
                    .is_some_and(|c| c.display().to_string() == *path),
                _ => false,
            };
            let (key, hint) = if crl {
                (
                    "auth.external.crl_file",
                    "give the CA's certificate revocation list, PEM (X509 CRL) or DER",
                )
            } else {
                (
                    "auth.external.ca_file",
                    "give the PEM certificate(s) of the CA that issues the devices' certificates",
                )
            };
            vec![problem(key, e.to_string(), hint)]
        }
    }
}

/// Sets up `[cluster]` as `serve` would (an error stops the start: the password file) and
/// asks Redis for its version; an unreachable Redis is a warning (the gateway starts on its
/// own view and connects when Redis answers).
fn cluster_reachable(c: &mailgate::config::Cluster, hostname: &str) -> Result<String, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime to reach Redis: {e}"))?;
    runtime.block_on(async {
        let cluster = mailgate::store::cluster::Cluster::new(
            c,
            hostname,
            std::sync::Arc::new(mailgate::clock::SystemClock),
        )?;
        Ok(match cluster.probe().await {
            Ok(version) => format!(
                "cluster: Redis {version} at {} answers (key prefix \"{}\")",
                cluster.display(),
                cluster.prefix()
            ),
            Err(e) => format!(
                "warning: cluster.redis: {} does not answer ({e}); the gateway would start on \
                 its own view and share its state once Redis answers",
                cluster.display()
            ),
        })
    })
}

/// Tries to listen on every configured address, as `serve` would (with SO_REUSEADDR), and
/// lets go at once.
fn bind_problems(config: &Config, problem: &dyn Fn(&str, String, &str) -> String) -> Vec<String> {
    let l = &config.listeners;
    let mut wanted: Vec<(&str, SocketAddr)> = Vec::new();
    for (key, addrs) in [
        ("listeners.pop3", &l.pop3),
        ("listeners.pop3s", &l.pop3s),
        ("listeners.smtp", &l.smtp),
        ("listeners.submission", &l.submission),
        ("listeners.submissions", &l.submissions),
    ] {
        wanted.extend(addrs.iter().map(|a| (key, *a)));
    }
    wanted.extend(l.control.map(|a| ("listeners.control", a)));
    wanted.extend(l.admin.map(|a| ("listeners.admin", a)));
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            return vec![format!(
                "cannot start the runtime to test the listeners: {e}"
            )];
        }
    };
    runtime.block_on(async {
        // Held together until every address is tried: one address listed twice is a clash.
        let mut held = Vec::new();
        let mut problems = Vec::new();
        for (key, addr) in wanted {
            let socket = match addr {
                SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
                SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
            };
            let listened = socket.and_then(|s| {
                s.set_reuseaddr(true)?;
                s.bind(addr)?;
                s.listen(16)
            });
            match listened {
                Ok(listener) => held.push(listener),
                Err(e) => problems.push(problem(
                    key,
                    format!("cannot listen on {addr}: {e}"),
                    "stop what holds the port (ss -ltnp), choose another address, or pass \
                     --no-bind to check beside a running gateway",
                )),
            }
        }
        problems
    })
}

/// Whether the gateway's user can write in `dir`: a file is made there and removed; a folder
/// that does not exist yet must be creatable in its nearest existing parent.
fn writable(dir: &Path) -> Result<(), String> {
    let mut existing = dir;
    while !existing.exists() {
        match existing.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => existing = parent,
            _ => return Err("no existing parent folder".into()),
        }
    }
    if !existing.is_dir() {
        return Err(format!("{} is not a folder", existing.display()));
    }
    let probe = existing.join(format!(".mailgate-check-config.{}", std::process::id()));
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
    {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
            Ok(())
        }
        Err(e) if existing == dir => Err(format!("not writable: {e}")),
        Err(e) => Err(format!(
            "does not exist and cannot be made in {}: {e}",
            existing.display()
        )),
    }
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
