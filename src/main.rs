//! The `mailgate` command: parse flags, load the config, start logging, and run until SIGINT or
//! SIGTERM; plus the admin subcommands (check-config, passwd, allowlist, audit).

use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use mailgate::config::Config;

/// A legacy-compatibility mail authentication gateway: POP3, POP-before-SMTP and SMTP AUTH.
#[path = "cli/import.rs"]
mod import_cmd;

#[derive(Parser)]
#[command(name = "mailgate", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Serve {
        /// The configuration file.
        #[arg(long, env = "MAILGATE_CONFIG", default_value_os_t = default_config())]
        config: PathBuf,
    },
    /// Check the configuration and the users file; report every problem, exit 1 if any.
    CheckConfig {
        /// The configuration file.
        #[arg(long, env = "MAILGATE_CONFIG", default_value_os_t = default_config())]
        config: PathBuf,
    },
    /// Set a user's password: reads it from standard input and writes the stored forms that
    /// the enabled mechanisms need into the users file. With --scheme, changes nothing and
    /// lists the stored schemes (of USER, or every scheme) and the mechanisms each can serve.
    Passwd {
        /// The user name (optional with --scheme).
        #[arg(required_unless_present = "scheme")]
        user: Option<String>,
        /// List stored schemes and the mechanisms they serve instead of setting a password.
        #[arg(long)]
        scheme: bool,
        /// The configuration file (names the users file and the mechanisms).
        #[arg(long, env = "MAILGATE_CONFIG", default_value_os_t = default_config())]
        config: PathBuf,
    },
    /// Inspect or change the POP-before-SMTP allowlist of a running gateway.
    Allowlist {
        #[command(subcommand)]
        action: AllowlistAction,
        /// The configuration file (names the control address).
        #[arg(long, global = true, env = "MAILGATE_CONFIG", default_value_os_t = default_config())]
        config: PathBuf,
    },
    /// Report who still authenticates how, from the audit log (the current file and its
    /// rotations). By default: users of legacy authentication, most recently seen first.
    Audit(AuditArgs),
    /// List the messages waiting in the spool (read-only; works while the gateway runs).
    Queue {
        /// The configuration file (names the spool).
        #[arg(long, env = "MAILGATE_CONFIG", default_value_os_t = default_config())]
        config: PathBuf,
        /// Print one JSON envelope per line instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Move a mailbox from the old server into the local Maildir, keeping each message's
    /// UIDL; resumable, idempotent, and the old mailbox is left untouched.
    Import {
        #[command(subcommand)]
        source: import_cmd::ImportSource,
        /// The configuration file (names the Maildir root and [pop3.proxy]).
        #[arg(long, global = true, env = "MAILGATE_CONFIG", default_value_os_t = default_config())]
        config: PathBuf,
    },
}

#[derive(clap::Args)]
struct AuditArgs {
    /// The configuration file (names the audit log).
    #[arg(long, env = "MAILGATE_CONFIG", default_value_os_t = default_config())]
    config: PathBuf,
    /// Read this log (and its rotations PATH.1, PATH.2, ...) instead of the configured one.
    #[arg(long)]
    file: Option<PathBuf>,
    /// Only events at or after this: a duration before now ("7d", "12h") or a date
    /// ("2026-11-01", midnight UTC) or RFC 3339 time.
    #[arg(long)]
    since: Option<String>,
    /// Only events before this (same forms as --since).
    #[arg(long)]
    until: Option<String>,
    /// Only these classes (insecure, weak, basic, modern, or all).
    #[arg(long, default_value = "insecure,weak,basic")]
    class: String,
    /// Only these users (comma-separated; canonical or as given).
    #[arg(long)]
    user: Vec<String>,
    /// Only these kinds (auth, relay, accept, allowlist, lockout, defer, bounce, or all).
    #[arg(long, default_value = "auth,relay,accept")]
    kind: String,
    /// Only these results (success, failure, denied, warned, brownout, would_deny, or all).
    #[arg(long, default_value = "all")]
    result: String,
    /// Only events decided by these policy rules (comma-separated names).
    #[arg(long)]
    rule: Vec<String>,
    /// Group by user, ip, mechanism, client (software) or class.
    #[arg(long, default_value = "user")]
    group_by: String,
    /// Output: table, json or csv.
    #[arg(long, default_value = "table")]
    format: String,
}

#[derive(Subcommand)]
enum AllowlistAction {
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Serve { .. }) {
        exit_quietly_on_broken_pipe();
    }
    match cli.command {
        Command::Serve { config } => serve(&config),
        Command::CheckConfig { config } => check_config(&config),
        Command::Passwd {
            user,
            scheme: true,
            config,
        } => schemes(&config, user.as_deref()),
        Command::Passwd {
            user: Some(user),
            config,
            ..
        } => passwd(&config, &user),
        Command::Passwd { user: None, .. } => {
            eprintln!("passwd: name the USER, or pass --scheme");
            ExitCode::FAILURE
        }
        Command::Allowlist { action, config } => allowlist(&config, action),
        Command::Audit(args) => audit(args),
        Command::Queue { config, json } => queue(&config, json),
        Command::Import { source, config } => import_cmd::import(&config, source),
    }
}

/// The audit report's last line during a migration: the users who logged in but have no
/// stored forms here (checked by the old server only); `None` without `[auth.upstream]` or
/// `[auth.ldap]`.
fn checked_elsewhere(
    config: &Path,
    files: &[PathBuf],
    since: Option<&str>,
    now: std::time::SystemTime,
) -> Option<String> {
    let config = Config::load(config).ok()?;
    config.auth.upstream.as_ref()?;
    let users = mailgate::auth::UserStore::load(&config.auth.users_file).ok()?;
    let only = mailgate::audit::report::checked_elsewhere_only(files, since, now, &users).ok()?;
    let names = only.iter().take(20).cloned().collect::<Vec<_>>().join(", ");
    let more = if only.len() > 20 { ", ..." } else { "" };
    Some(format!(
        "\n{} user(s) logged in with no stored forms here (checked by the old server only){}{names}{more}\n",
        only.len(),
        if only.is_empty() { "" } else { ": " }
    ))
}

/// For the report commands (`mailgate check-config | head`): Rust ignores SIGPIPE, so once the
/// reader has gone `println!` fails with EPIPE and panics. Exit quietly instead, with the
/// status a shell reports for a tool ended by SIGPIPE (128 + 13). Not for `serve`, whose
/// sessions must never end the process.
fn exit_quietly_on_broken_pipe() {
    const SIGPIPE_STATUS: i32 = 141;
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if message.starts_with("failed printing to stdout") && message.contains("Broken pipe") {
            std::process::exit(SIGPIPE_STATUS);
        }
        default(info);
    }));
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("MAILGATE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

/// The configuration file when `--config` and `MAILGATE_CONFIG` name none: the installed one,
/// `/etc/mailgate/mailgate.toml`, if it exists, else the demo, `config/mailgate.toml` (so the
/// README's first command runs from a checkout).
fn default_config() -> PathBuf {
    let installed = PathBuf::from("/etc/mailgate/mailgate.toml");
    if installed.is_file() {
        installed
    } else {
        PathBuf::from("config/mailgate.toml")
    }
}

fn load(path: &Path) -> Result<Config, ExitCode> {
    Config::load(path).map_err(|errors| {
        eprintln!("{errors}");
        ExitCode::FAILURE
    })
}

fn serve(path: &Path) -> ExitCode {
    init_logging();
    let config = match load(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    for warning in config.warnings() {
        tracing::warn!("{warning}");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let shutdown = CancellationToken::new();
        let server = match mailgate::server::Server::bind(config).await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!("{e}");
                return ExitCode::FAILURE;
            }
        };
        tokio::spawn(signals(shutdown.clone()));
        tokio::spawn(reloads(path.to_path_buf(), server.gateway()));
        server.run(shutdown).await;
        tracing::info!("stopped");
        ExitCode::SUCCESS
    })
}

/// Cancels `shutdown` on SIGINT or SIGTERM.
async fn signals(shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
    shutdown.cancel();
}

/// Reloads the configuration on SIGHUP; a config with errors is refused and the running one
/// kept.
async fn reloads(path: PathBuf, shared: std::sync::Arc<mailgate::gateway::Gateway>) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        tracing::error!("cannot install the SIGHUP handler");
        return;
    };
    while hup.recv().await.is_some() {
        let loaded = {
            let path = path.clone();
            tokio::task::spawn_blocking(move || Config::load(&path)).await
        };
        match loaded {
            Ok(Ok(config)) => {
                let shared = shared.clone();
                let _ = tokio::task::spawn_blocking(move || shared.reload(&config)).await;
            }
            Ok(Err(errors)) => {
                tracing::error!("SIGHUP: {}: not reloaded:\n{errors}", path.display());
            }
            Err(e) => tracing::error!("SIGHUP: reload failed: {e}"),
        }
    }
}

fn check_config(path: &Path) -> ExitCode {
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

fn passwd(path: &Path, user: &str) -> ExitCode {
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
fn schemes(path: &Path, user: Option<&str>) -> ExitCode {
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

fn allowlist(path: &Path, action: AllowlistAction) -> ExitCode {
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

/// Sends one control request; the answer, or `None` after saying why on stderr.
fn control(addr: SocketAddr, key: &mailgate::control::Key, line: &str) -> Option<String> {
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

fn queue(config: &std::path::Path, json: bool) -> ExitCode {
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

fn audit(args: AuditArgs) -> ExitCode {
    use mailgate::audit::report::{self, Filter, Format, GroupBy};
    use mailgate::clock::Clock;

    let mut params = vec![("class", args.class.as_str()), ("kind", args.kind.as_str())];
    params.extend(args.since.as_deref().map(|s| ("since", s)));
    params.extend(args.until.as_deref().map(|s| ("until", s)));
    params.extend(args.user.iter().map(|u| ("user", u.as_str())));
    params.push(("result", args.result.as_str()));
    params.extend(args.rule.iter().map(|r| ("rule", r.as_str())));
    let parsed = Filter::from_params(&params).and_then(|f| {
        let by: GroupBy = args.group_by.parse()?;
        let format: Format = args.format.parse()?;
        Ok((f, by, format))
    });
    let (filter, by, format) = match parsed {
        Ok(p) => p,
        Err(e) => {
            eprintln!("audit: {e}");
            return ExitCode::FAILURE;
        }
    };
    let (path, keep) = match args.file {
        Some(path) => (path, 0),
        None => match load(&args.config) {
            Ok(Config {
                audit: Some(audit), ..
            }) => (audit.path, audit.keep),
            Ok(_) => {
                eprintln!("{}: the audit log is disabled", args.config.display());
                return ExitCode::FAILURE;
            }
            Err(code) => return code,
        },
    };
    let files = mailgate::audit::files(&path, keep);
    if files.is_empty() {
        eprintln!("audit: no log at {}", path.display());
        return ExitCode::FAILURE;
    }
    let now = mailgate::clock::SystemClock.now();
    let report = match report::report(&files, &filter, by, now) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("audit: {e}");
            return ExitCode::FAILURE;
        }
    };
    if report.skipped > 0 {
        let at: Vec<String> = report
            .skipped_at
            .iter()
            .map(|l| format!("{}:{}", l.file.display(), l.line))
            .collect();
        let more = if report.skipped > at.len() as u64 {
            ", ..."
        } else {
            ""
        };
        eprintln!(
            "warning: skipped {} corrupt or truncated line(s): {}{more}",
            report.skipped,
            at.join(", ")
        );
    }
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut written = report::render(&report, by, format, now, &mut out)
        .and_then(|()| std::io::Write::flush(&mut out));
    // During a migration, who still has no stored forms here (table output only).
    if written.is_ok()
        && args.format == "table"
        && let Some(line) = checked_elsewhere(&args.config, &files, args.since.as_deref(), now)
    {
        written = std::io::Write::write_all(&mut out, line.as_bytes())
            .and_then(|()| std::io::Write::flush(&mut out));
    }
    match written {
        Ok(()) => ExitCode::SUCCESS,
        // A closed pipe (`| head`) is not an error worth a message.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("audit: {e}");
            ExitCode::FAILURE
        }
    }
}
