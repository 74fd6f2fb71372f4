//! What the Debian package ships of the command line (`contrib/debian/build`): the man pages and
//! shell completions that the hidden `mailgate generate` writes from the CLI's own definition.

use std::path::Path;
use std::process::Command;

fn generate(what: &str, dir: &Path) {
    let out = Command::new(crate::MAILGATE)
        .args(["generate", what])
        .arg(dir)
        .output()
        .expect("run mailgate");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The commands `mailgate --help` lists, less `help`.
fn listed_commands() -> Vec<String> {
    let out = Command::new(crate::MAILGATE)
        .arg("--help")
        .output()
        .expect("run mailgate");
    let help = String::from_utf8_lossy(&out.stdout).into_owned();
    help.lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        // A wrapped description continues further in.
        .filter(|l| !l.starts_with("   "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .map(str::to_owned)
        .collect()
}

#[test]
fn a_man_page_for_every_listed_command_and_none_for_the_hidden_one() {
    let dir = tempfile::tempdir().expect("temp dir");
    generate("man", dir.path());
    let commands = listed_commands();
    assert!(commands.iter().any(|c| c == "serve"), "{commands:?}");
    for page in std::iter::once("mailgate".to_string())
        .chain(commands.iter().map(|c| format!("mailgate-{c}")))
        .chain([
            "mailgate-allowlist-add".into(),
            "mailgate-import-pop3".into(),
        ])
    {
        let path = dir.path().join(format!("{page}.1"));
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(text.contains(&format!(".TH {page} 1 ")), "{page}: {text}");
    }
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .expect("read dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !names.iter().any(|n| n.contains("generate")),
        "the hidden command has no page: {names:?}"
    );
    // --config's default is the rule, not the path that held where the pages were built.
    let serve = std::fs::read_to_string(dir.path().join("mailgate-serve.1")).expect("page");
    assert!(serve.contains("/etc/mailgate/mailgate.toml"), "{serve}");
    assert!(!serve.contains("[default:"), "{serve}");
}

#[test]
fn completions_for_bash_zsh_and_fish_offer_the_commands_but_not_the_hidden_one() {
    let dir = tempfile::tempdir().expect("temp dir");
    generate("completions", dir.path());
    for file in ["mailgate.bash", "_mailgate", "mailgate.fish"] {
        let text = std::fs::read_to_string(dir.path().join(file))
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        for command in listed_commands() {
            assert!(text.contains(&command), "{file} lacks {command}");
        }
        assert!(!text.contains("generate"), "{file} offers `generate`");
    }
}
