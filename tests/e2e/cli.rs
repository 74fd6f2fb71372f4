//! The commands find their configuration by one rule: `--config`, else `MAILGATE_CONFIG`, else
//! `/etc/mailgate/mailgate.toml` when it exists, else `config/mailgate.toml`; an error names the
//! file it tried.

use std::path::Path;
use std::process::{Command, Output};

fn check_config(cwd: &Path, env: Option<&Path>, flag: Option<&Path>) -> Output {
    let mut cmd = Command::new(crate::MAILGATE);
    cmd.current_dir(cwd)
        .arg("check-config")
        .env_remove("MAILGATE_CONFIG");
    if let Some(path) = env {
        cmd.env("MAILGATE_CONFIG", path);
    }
    if let Some(path) = flag {
        cmd.arg("--config").arg(path);
    }
    cmd.output().expect("run mailgate")
}

#[test]
fn the_config_comes_from_the_flag_then_the_environment() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("users"), mailgate_testkit::USERS).expect("users");
    let good = dir.path().join("site.toml");
    std::fs::write(&good, mailgate_testkit::config_text("")).expect("config");
    let missing = dir.path().join("missing.toml");
    let elsewhere = tempfile::tempdir().expect("temp dir");

    let out = check_config(elsewhere.path(), Some(&good), None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = check_config(elsewhere.path(), Some(&missing), None);
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("missing.toml"),
        "the error names the file: {said}"
    );
    // The flag wins over the environment.
    let out = check_config(elsewhere.path(), Some(&missing), Some(&good));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Neither: the demo's path, relative to the current folder, named in the error (unless
    // this machine has an installed configuration).
    if !Path::new("/etc/mailgate/mailgate.toml").exists() {
        let out = check_config(elsewhere.path(), None, None);
        assert!(!out.status.success());
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(said.contains("config/mailgate.toml"), "{said}");
    }
}
