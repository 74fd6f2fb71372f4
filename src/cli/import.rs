//! `mailgate import pop3` and `mailgate import maildir`: the command-line end of
//! `mailgate::import` (reading the password, the runtime, the report line).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Subcommand;

use super::load;

#[derive(Subcommand)]
pub(crate) enum ImportSource {
    /// From the old server over POP3 ([pop3.proxy]: address, TLS, master user).
    Pop3 {
        /// The user whose mailbox moves.
        #[arg(long)]
        user: String,
        /// Read the user's password from the first line of standard input.
        #[arg(long, conflicts_with = "master")]
        password_stdin: bool,
        /// Log in as [pop3.proxy]'s master user.
        #[arg(long)]
        master: bool,
    },
    /// From an old Dovecot (or plain) Maildir on disk, with the UIDLs its dovecot-uidlist
    /// gives.
    Maildir {
        /// The user whose mailbox moves.
        #[arg(long)]
        user: String,
        /// The old Maildir (the folder holding cur/, new/ and dovecot-uidlist).
        path: PathBuf,
        /// The old server's pop3_uidl_format.
        #[arg(long, default_value = "%08Xu%08Xv")]
        uidl_format: String,
    },
}

/// `mailgate import pop3` and `mailgate import maildir`.
pub(crate) fn import(path: &Path, source: ImportSource) -> ExitCode {
    let (user, password_stdin, master) = match source {
        ImportSource::Pop3 {
            user,
            password_stdin,
            master,
        } => (user, password_stdin, master),
        ImportSource::Maildir {
            user,
            path: from,
            uidl_format,
        } => return import_maildir(path, &user, &from, &uidl_format),
    };
    if !password_stdin && !master {
        eprintln!("import pop3: pass --password-stdin (the user's password) or --master");
        return ExitCode::FAILURE;
    }
    let config = match load(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let password = if password_stdin {
        let mut line = zeroize::Zeroizing::new(String::new());
        if std::io::stdin().read_line(&mut line).is_err() {
            eprintln!("import pop3: cannot read the password from standard input");
            return ExitCode::FAILURE;
        }
        let pw = line.trim_end_matches(['\r', '\n']);
        Some(mailgate::auth::Secret::new(pw.as_bytes().to_vec()))
    } else {
        None
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("import pop3: {e}");
            return ExitCode::FAILURE;
        }
    };
    import_report(
        "pop3",
        &user,
        rt.block_on(mailgate::import::pop3(&config, &user, password)),
    )
}

/// `mailgate import maildir`.
fn import_maildir(path: &Path, user: &str, from: &Path, format: &str) -> ExitCode {
    let format = match mailgate::import::UidlFormat::parse(format) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("import maildir: --uidl-format {e}");
            return ExitCode::FAILURE;
        }
    };
    let config = match load(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    import_report(
        "maildir",
        user,
        mailgate::import::maildir(&config, user, from, &format),
    )
}

fn import_report(
    how: &str,
    user: &str,
    result: Result<mailgate::import::Report, String>,
) -> ExitCode {
    match result {
        Ok(r) => {
            println!(
                "{user}: {} messages on the old server; {} copied ({} bytes), {} already here",
                r.listed, r.copied, r.bytes, r.present
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("import {how}: {user}: {e}");
            ExitCode::FAILURE
        }
    }
}
