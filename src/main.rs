//! The `mailgate` command: parse flags, load the config, start logging, and run until SIGINT or
//! SIGTERM; the admin subcommands live in `cli/`, one file each.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use mailgate::config::{Config, LogFormat};

mod cli;

/// A legacy-compatibility mail authentication gateway: POP3, POP-before-SMTP and SMTP AUTH.
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
    /// Check what a start needs: the configuration, the users file, the TLS certificate and
    /// key, the listen addresses and the folders written; report every problem with its file
    /// and line, exit 1 if any.
    CheckConfig {
        /// The configuration file.
        #[arg(long, env = "MAILGATE_CONFIG", default_value_os_t = default_config())]
        config: PathBuf,
        /// Do not try to listen on the configured addresses (for a check beside a running
        /// gateway, which holds them).
        #[arg(long)]
        no_bind: bool,
    },
    /// Set a user's password: prompts twice on a terminal (no echo), else reads one line of
    /// standard input, and writes the stored forms that the enabled mechanisms need into the
    /// users file (keeping its owner, group and mode). With --scheme, changes nothing and
    /// lists the stored schemes (of USER, or every scheme) and the mechanisms each can serve.
    Passwd {
        /// The user name (optional with --scheme).
        #[arg(required_unless_present = "scheme")]
        user: Option<String>,
        /// List stored schemes and the mechanisms they serve instead of setting a password.
        #[arg(long)]
        scheme: bool,
        /// Store a password shorter than 8 characters (an old device's, which cannot change).
        #[arg(long)]
        allow_short: bool,
        /// The configuration file (names the users file and the mechanisms).
        #[arg(long, env = "MAILGATE_CONFIG", default_value_os_t = default_config())]
        config: PathBuf,
    },
    /// List or delete the users of the users file.
    User {
        #[command(subcommand)]
        action: cli::users::UserAction,
        /// The configuration file (names the users file and the mechanisms).
        #[arg(long, global = true, env = "MAILGATE_CONFIG", default_value_os_t = default_config())]
        config: PathBuf,
    },
    /// Check credentials as a login would, without logging in.
    Auth {
        #[command(subcommand)]
        action: AuthAction,
        /// The configuration file (names the users file and [auth.upstream]/[auth.ldap]).
        #[arg(long, global = true, env = "MAILGATE_CONFIG", default_value_os_t = default_config())]
        config: PathBuf,
    },
    /// Inspect or change the POP-before-SMTP allowlist of a running gateway.
    Allowlist {
        #[command(subcommand)]
        action: cli::allowlist::AllowlistAction,
        /// The configuration file (names the control address).
        #[arg(long, global = true, env = "MAILGATE_CONFIG", default_value_os_t = default_config())]
        config: PathBuf,
    },
    /// Report who still authenticates how, from the audit log (the current file and its
    /// rotations). By default: users of legacy authentication, most recently seen first.
    Audit(cli::audit::AuditArgs),
    /// List the messages waiting in the spool, each recipient's state, last error and next
    /// attempt; or act on them through the running gateway (flush, delete, hold, release).
    Queue {
        #[command(subcommand)]
        action: Option<cli::queue::QueueAction>,
        /// The configuration file (names the spool and the control address).
        #[arg(long, global = true, env = "MAILGATE_CONFIG", default_value_os_t = default_config())]
        config: PathBuf,
        /// Print one JSON envelope per line instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Move a mailbox from the old server into the local Maildir, keeping each message's
    /// UIDL; resumable, idempotent, and the old mailbox is left untouched.
    Import {
        #[command(subcommand)]
        source: cli::import::ImportSource,
        /// The configuration file (names the Maildir root and [pop3.proxy]).
        #[arg(long, global = true, env = "MAILGATE_CONFIG", default_value_os_t = default_config())]
        config: PathBuf,
    },
    /// Write the man pages or the shell completions (for packaging).
    #[command(hide = true)]
    Generate {
        #[command(subcommand)]
        what: cli::generate::Artifact,
    },
}

#[derive(Subcommand)]
enum AuthAction {
    /// Read USER's password (as passwd does) and say whether it verifies, and from which
    /// stored form or source; exit 0 if it does, 1 if not.
    Test {
        /// The user name.
        user: String,
        /// The mechanism to check for (PLAIN, LOGIN, CRAM-MD5, SCRAM-SHA-256, NTLM, APOP, ...).
        #[arg(long, default_value = "PLAIN")]
        mechanism: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Serve { .. }) {
        exit_quietly_on_broken_pipe();
    }
    match cli.command {
        Command::Serve { config } => serve(&config),
        Command::CheckConfig { config, no_bind } => cli::check::check_config(&config, !no_bind),
        Command::Passwd {
            user,
            scheme: true,
            config,
            ..
        } => cli::users::schemes(&config, user.as_deref()),
        Command::Passwd {
            user: Some(user),
            config,
            allow_short,
            ..
        } => cli::users::passwd(&config, &user, allow_short),
        Command::User { action, config } => cli::users::user(&config, action),
        Command::Auth {
            action: AuthAction::Test { user, mechanism },
            config,
        } => cli::users::auth_test(&config, &user, &mechanism),
        Command::Passwd { user: None, .. } => {
            eprintln!("passwd: name the USER, or pass --scheme");
            ExitCode::FAILURE
        }
        Command::Allowlist { action, config } => cli::allowlist::allowlist(&config, action),
        Command::Audit(args) => cli::audit::audit(args),
        Command::Queue {
            config,
            json,
            action,
        } => cli::queue::queue(&config, json, action),
        Command::Import { source, config } => cli::import::import(&config, source),
        Command::Generate { what } => cli::generate::generate(what),
    }
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

/// Starts the log on standard error, in `[log] format` unless `MAILGATE_LOG_FORMAT` names
/// another ("text" or "json"); `MAILGATE_LOG` filters it (default `info`). An unknown
/// `MAILGATE_LOG_FORMAT` is an error, said plainly before any log line.
fn init_logging(config: &Config) -> Result<(), String> {
    let format = match std::env::var("MAILGATE_LOG_FORMAT") {
        Ok(name) => LogFormat::parse(&name).ok_or_else(|| {
            format!("MAILGATE_LOG_FORMAT={name:?} is not a log format; write text or json")
        })?,
        Err(_) => config.log_format,
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("MAILGATE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let log = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => log
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        // One object per line: the event's fields flattened beside the message, and every
        // span's fields (session, peer, listener, mechanism) under "spans".
        LogFormat::Json => log
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(true)
            .init(),
    }
    Ok(())
}

/// The configuration file when `--config` and `MAILGATE_CONFIG` name none: the installed one,
/// `/etc/mailgate/mailgate.toml`, if it exists, else the demo, `config/mailgate.toml` (so the
/// README's first command runs from a checkout).
pub(crate) fn default_config() -> PathBuf {
    let installed = PathBuf::from("/etc/mailgate/mailgate.toml");
    if installed.is_file() {
        installed
    } else {
        PathBuf::from("config/mailgate.toml")
    }
}

fn serve(path: &Path) -> ExitCode {
    // The configuration says how to log, so it is read first; its errors go to stderr plainly.
    let config = match cli::load(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    // GSSAPI's keytab is named to the Kerberos library through the environment: this
    // replaces the process with one that has it, before anything is opened or bound
    // (mailgate::session::gssapi explains why).
    #[cfg(feature = "gssapi")]
    if let Some(g) = &config.auth.gssapi
        && let Err(e) = mailgate::session::gssapi::reexec_with_keytab(g)
    {
        eprintln!("{e}");
        return ExitCode::FAILURE;
    }
    if let Err(e) = init_logging(&config) {
        eprintln!("{e}");
        return ExitCode::FAILURE;
    }
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
        // Before the listeners open: a SIGTERM that comes as soon as a port answers must find
        // the handler (the default action would end the process without a clean stop).
        let Some(stop_signals) = signals() else {
            return ExitCode::FAILURE;
        };
        let server = match mailgate::server::Server::bind(config).await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!("{e}");
                return ExitCode::FAILURE;
            }
        };
        let Signals { term, int, hup } = stop_signals;
        tokio::spawn(stop_on(term, int, shutdown.clone()));
        tokio::spawn(reloads(hup, path.to_path_buf(), server.gateway()));
        server.run(shutdown).await;
        tracing::info!("stopped");
        ExitCode::SUCCESS
    })
}

/// SIGTERM, SIGINT (stop) and SIGHUP (reload), caught from the moment they are installed.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

/// Installs the signal handlers (in the runtime), or says why not.
fn signals() -> Option<Signals> {
    use tokio::signal::unix::{SignalKind, signal};
    let installed = (|| {
        Ok::<_, std::io::Error>(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    })();
    installed
        .map_err(|e| tracing::error!("cannot install signal handlers: {e}"))
        .ok()
}

/// Cancels `shutdown` on SIGINT or SIGTERM.
async fn stop_on(
    mut term: tokio::signal::unix::Signal,
    mut int: tokio::signal::unix::Signal,
    shutdown: CancellationToken,
) {
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
    shutdown.cancel();
}

/// Reloads the configuration on SIGHUP; a config with errors is refused and the running one
/// kept.
async fn reloads(
    mut hup: tokio::signal::unix::Signal,
    path: PathBuf,
    shared: std::sync::Arc<mailgate::gateway::Gateway>,
) {
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
