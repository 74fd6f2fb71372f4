//! `mailgate audit`: who still authenticates how, from the audit log.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use mailgate::config::Config;

use super::load;
use crate::default_config;

#[derive(clap::Args)]
pub(crate) struct AuditArgs {
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

pub(crate) fn audit(args: AuditArgs) -> ExitCode {
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
