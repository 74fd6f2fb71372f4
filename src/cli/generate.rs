//! `mailgate generate`: the man pages and the shell completions, written from the command
//! line's own definition (for the Debian package: `contrib/debian/build`). Hidden from `--help`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{CommandFactory, Subcommand};
use clap_complete::Shell;

/// What to write.
#[derive(Subcommand)]
pub(crate) enum Artifact {
    /// One man page per command: mailgate.1, mailgate-serve.1, mailgate-allowlist-add.1, ...
    Man {
        /// The folder to write them into (created if missing).
        dir: PathBuf,
    },
    /// The bash, zsh and fish completions: mailgate.bash, _mailgate, mailgate.fish.
    Completions {
        /// The folder to write them into (created if missing).
        dir: PathBuf,
    },
}

pub(crate) fn generate(what: Artifact) -> ExitCode {
    let (dir, result) = match what {
        Artifact::Man { dir } => {
            let result = man_pages(&dir);
            (dir, result)
        }
        Artifact::Completions { dir } => {
            let result = completions(&dir);
            (dir, result)
        }
    };
    match result {
        Ok(written) => {
            for path in written {
                println!("{}", path.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{}: {e}", dir.display());
            ExitCode::FAILURE
        }
    }
}

/// The command line as documented: without the hidden commands (shell completions would offer
/// them), and `--config`'s default stated as the rule (`default_config`), not the value seen
/// where the pages are built.
fn documented() -> clap::Command {
    let full = crate::Cli::command();
    // The name and version as `#[command(name = "mailgate", version)]` sets them.
    let mut cmd = clap::Command::new("mailgate")
        .version(env!("CARGO_PKG_VERSION"))
        .args(full.get_arguments().cloned())
        .subcommands(full.get_subcommands().filter(|s| !s.is_hide_set()).cloned())
        .subcommand_required(full.is_subcommand_required_set());
    if let Some(about) = full.get_about() {
        cmd = cmd.about(about.clone());
    }
    if let Some(about) = full.get_long_about() {
        cmd = cmd.long_about(about.clone());
    }
    with_config_rule(cmd)
}

fn with_config_rule(mut cmd: clap::Command) -> clap::Command {
    if cmd.get_arguments().any(|a| a.get_id() == "config") {
        cmd = cmd.mut_arg("config", |a| {
            a.hide_default_value(true).long_help(
                "The configuration file. Default: $MAILGATE_CONFIG if set, else \
                 /etc/mailgate/mailgate.toml if it exists, else config/mailgate.toml (relative \
                 to the current folder).",
            )
        });
    }
    let names: Vec<String> = cmd
        .get_subcommands()
        .map(|s| s.get_name().to_string())
        .collect();
    for name in names {
        cmd = cmd.mut_subcommand(name, with_config_rule);
    }
    cmd
}

fn man_pages(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut cmd = documented().disable_help_subcommand(true);
    cmd.build();
    let source = format!("mailgate {}", env!("CARGO_PKG_VERSION"));
    let mut written = Vec::new();
    write_pages(&cmd, dir, &source, &mut written)?;
    Ok(written)
}

/// The page of `cmd`, then those of its visible subcommands, named by clap's display names
/// (`mailgate-allowlist-add`).
fn write_pages(
    cmd: &clap::Command,
    dir: &Path,
    source: &str,
    written: &mut Vec<PathBuf>,
) -> std::io::Result<()> {
    let page = clap_mangen::Man::new(cmd.clone())
        .source(source)
        .manual("mailgate manual");
    written.push(page.generate_to(dir)?);
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        write_pages(sub, dir, source, written)?;
    }
    Ok(())
}

fn completions(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut cmd = documented();
    [Shell::Bash, Shell::Zsh, Shell::Fish]
        .into_iter()
        .map(|shell| clap_complete::generate_to(shell, &mut cmd, "mailgate", dir))
        .collect()
}
