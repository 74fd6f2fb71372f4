//! `mailgate check-config` fails, with the file and line, on what would stop `serve`: a
//! missing certificate, a key that does not match it, a PEM that is not one, a listen address
//! in use, a folder the gateway cannot write, and bad lines in the policy and the users file.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn check(config: &Path, extra: &[&str]) -> Output {
    Command::new(crate::MAILGATE)
        .arg("check-config")
        .args(extra)
        .arg("--config")
        .arg(config)
        .env_remove("MAILGATE_CONFIG")
        .output()
        .expect("run check-config")
}

fn said(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A site whose config is the test kit's plus `extra`; returns the folder and the config.
fn site(extra: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("users"), mailgate_testkit::USERS).expect("users");
    let config = dir.path().join("mailgate.toml");
    std::fs::write(&config, mailgate_testkit::config_text(extra)).expect("config");
    (dir, config)
}

/// The 1-based line of the first line of `config` that starts with `prefix`.
fn line_of(config: &Path, prefix: &str) -> usize {
    let text = std::fs::read_to_string(config).expect("config");
    text.lines()
        .position(|l| l.starts_with(prefix))
        .expect("the line")
        + 1
}

/// A certificate for localhost and its key, PEM.
fn certificate() -> (String, String) {
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .expect("params")
        .self_signed(&key)
        .expect("certificate");
    (cert.pem(), key.serialize_pem())
}

#[test]
fn a_good_site_passes() {
    let (dir, config) = site("[tls]\ncert = \"cert.pem\"\nkey = \"key.pem\"\n");
    let (cert, key) = certificate();
    std::fs::write(dir.path().join("cert.pem"), cert).expect("cert");
    std::fs::write(dir.path().join("key.pem"), key).expect("key");
    let out = check(&config, &[]);
    assert!(out.status.success(), "{}", said(&out));
    assert!(said(&out).contains("OK (3 users)"), "{}", said(&out));
}

#[test]
fn certificate_problems_stop_the_check() {
    let (dir, config) = site("[tls]\ncert = \"cert.pem\"\nkey = \"key.pem\"\n");
    let cert_line = line_of(&config, "cert =");
    let at = format!("mailgate.toml:{cert_line}: tls.cert");
    // Missing.
    let out = check(&config, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", said(&out));
    assert!(said(&out).contains(&at), "{}", said(&out));
    assert!(said(&out).contains("cert.pem"), "{}", said(&out));
    // Garbage.
    std::fs::write(dir.path().join("cert.pem"), "not a certificate\n").expect("cert");
    let (_, key) = certificate();
    std::fs::write(dir.path().join("key.pem"), key).expect("key");
    let out = check(&config, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", said(&out));
    assert!(said(&out).contains(&at), "{}", said(&out));
    // A real certificate, and the key of another.
    let (cert, _) = certificate();
    std::fs::write(dir.path().join("cert.pem"), cert).expect("cert");
    let out = check(&config, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", said(&out));
    assert!(said(&out).contains(&at), "{}", said(&out));
    assert!(said(&out).to_lowercase().contains("key"), "{}", said(&out));
    assert!(said(&out).contains("would not start"), "{}", said(&out));
}

#[test]
fn an_address_in_use_stops_the_check_unless_told_not_to_bind() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    let addr = taken.local_addr().expect("address");
    let (_dir, config) = site("");
    let text = std::fs::read_to_string(&config)
        .expect("config")
        .replace("smtp = [\"127.0.0.1:0\"]", &format!("smtp = [\"{addr}\"]"));
    std::fs::write(&config, text).expect("config");
    let out = check(&config, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", said(&out));
    let at = format!(
        "mailgate.toml:{}: listeners.smtp",
        line_of(&config, "smtp =")
    );
    assert!(said(&out).contains(&at), "{}", said(&out));
    assert!(said(&out).contains(&addr.to_string()), "{}", said(&out));
    let out = check(&config, &["--no-bind"]);
    assert!(out.status.success(), "{}", said(&out));
}

#[test]
fn a_folder_the_gateway_cannot_write_stops_the_check() {
    let (dir, config) = site("");
    // A file where the state folder should be: nothing can be made in it.
    std::fs::write(dir.path().join("state"), "a file").expect("file");
    let out = check(&config, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", said(&out));
    let at = format!("mailgate.toml:{}: state_dir", line_of(&config, "state_dir"));
    assert!(said(&out).contains(&at), "{}", said(&out));
    assert!(said(&out).contains("not a folder"), "{}", said(&out));
}

#[test]
fn users_file_and_policy_problems_carry_file_and_line() {
    let (dir, config) = site(
        "[[policy]]\nname = \"first\"\naction = \"warn\"\n\n[[policy]]\nname = \"second\"\n\
         action = \"deny\"\nnetworks = [\"10.0.0.0/33\"]\n",
    );
    let out = check(&config, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", said(&out));
    let at = format!(
        "mailgate.toml:{}: policy[1].networks",
        line_of(&config, "networks =")
    );
    assert!(said(&out).contains(&at), "{}", said(&out));

    let (dir2, config2) = site("");
    std::fs::write(
        dir2.path().join("users"),
        "alice:{PLAIN}secret-pw\nbob has no colon\n",
    )
    .expect("users");
    let out = check(&config2, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", said(&out));
    assert!(said(&out).contains("users:2: "), "{}", said(&out));
    // A missing users file names the config line that names it.
    std::fs::remove_file(dir2.path().join("users")).expect("remove");
    let out = check(&config2, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", said(&out));
    let at = format!(
        "mailgate.toml:{}: auth.users_file",
        line_of(&config2, "users_file")
    );
    assert!(said(&out).contains(&at), "{}", said(&out));
    drop(dir);
}

/// Without the `legacy-tls` feature, a configured legacy network stops the start with the
/// file, the line and the way to get the feature.
#[cfg(not(feature = "legacy-tls"))]
#[test]
fn legacy_networks_need_the_legacy_tls_feature() {
    let (_dir, config) = site("[tls]\nlegacy_networks = [\"192.0.2.0/24\"]\n");
    let out = check(&config, &["--no-bind"]);
    assert_eq!(out.status.code(), Some(1), "{}", said(&out));
    let at = format!(
        "mailgate.toml:{}: tls.legacy_networks",
        line_of(&config, "legacy_networks")
    );
    assert!(said(&out).contains(&at), "{}", said(&out));
    assert!(said(&out).contains("legacy-tls feature"), "{}", said(&out));
}

#[test]
fn client_certificate_files_are_read_and_map_entries_checked() {
    let (dir, config) = site(
        "[auth.external]\nca_file = \"devices-ca.pem\"\ncrl_file = \"devices.crl\"\n\
         [auth.external.map]\n\"scanner-2\" = \"office\"\n\"printer\" = \"alice\"\n",
    );
    let ca_at = format!(
        "mailgate.toml:{}: auth.external.ca_file",
        line_of(&config, "ca_file =")
    );
    let crl_at = format!(
        "mailgate.toml:{}: auth.external.crl_file",
        line_of(&config, "crl_file =")
    );
    let out = check(&config, &["--no-bind"]);
    assert_eq!(out.status.code(), Some(1), "{}", said(&out));
    assert!(said(&out).contains(&ca_at), "{}", said(&out));
    assert!(said(&out).contains("devices-ca.pem"), "{}", said(&out));
    let ca = mailgate_testkit::devices::DeviceCa::new("devices CA");
    std::fs::write(dir.path().join("devices-ca.pem"), &ca.pem).expect("CA");
    std::fs::write(dir.path().join("devices.crl"), "not a CRL\n").expect("CRL");
    let out = check(&config, &["--no-bind"]);
    assert_eq!(out.status.code(), Some(1), "{}", said(&out));
    assert!(said(&out).contains(&crl_at), "{}", said(&out));
    assert!(!said(&out).contains(&ca_at), "{}", said(&out));
    std::fs::write(dir.path().join("devices.crl"), ca.crl(&[7])).expect("CRL");
    let out = check(&config, &["--no-bind"]);
    assert!(out.status.success(), "{}", said(&out));
    let text = said(&out);
    assert!(
        text.contains("\"scanner-2\" maps to \"office\", which is no user"),
        "{text}"
    );
    assert!(!text.contains("\"printer\" maps"), "{text}");
    // EXTERNAL listed without the table: refused at its line.
    let (_dir, config) = site("");
    let text = std::fs::read_to_string(&config).expect("config").replace(
        "[auth]\n",
        "[auth]\nmechanisms = [\"PLAIN\", \"EXTERNAL\"]\n",
    );
    std::fs::write(&config, text).expect("config");
    let out = check(&config, &["--no-bind"]);
    assert_eq!(out.status.code(), Some(1), "{}", said(&out));
    let at = format!(
        "mailgate.toml:{}: auth.mechanisms",
        line_of(&config, "mechanisms =")
    );
    assert!(said(&out).contains(&at), "{}", said(&out));
    assert!(
        said(&out).contains("[auth.external] is not set"),
        "{}",
        said(&out)
    );
}

/// `[auth.gssapi]` in a build without the `gssapi` feature: check-config names the table's
/// line and how to get a build that has it.
#[cfg(not(feature = "gssapi"))]
#[test]
fn gssapi_in_a_build_without_it_says_how_to_get_it() {
    let (_dir, config) =
        site("\n[auth.gssapi]\nkeytab = \"mailgate.keytab\"\nrealms = [\"EXAMPLE.TEST\"]\n");
    let out = check(&config, &["--no-bind"]);
    assert!(!out.status.success(), "{}", said(&out));
    let line = line_of(&config, "[auth.gssapi]");
    let want = format!("mailgate.toml:{line}: auth.gssapi: ");
    assert!(said(&out).contains(&want), "{}", said(&out));
    assert!(
        said(&out).contains("rebuild with --features gssapi or install the Debian package"),
        "{}",
        said(&out)
    );
}

/// With the feature, a keytab that cannot be read is a problem at its line.
#[cfg(feature = "gssapi")]
#[test]
fn an_unreadable_keytab_is_named() {
    let (_dir, config) =
        site("\n[auth.gssapi]\nkeytab = \"missing.keytab\"\nrealms = [\"EXAMPLE.TEST\"]\n");
    let text = std::fs::read_to_string(&config).expect("config");
    let text = text.replace(
        "failure_delay",
        "mechanisms = [\"PLAIN\", \"GSSAPI\"]\nfailure_delay",
    );
    std::fs::write(&config, text).expect("config");
    let out = check(&config, &["--no-bind"]);
    assert!(!out.status.success(), "{}", said(&out));
    let line = line_of(&config, "keytab =");
    let want = format!("mailgate.toml:{line}: auth.gssapi.keytab: ");
    assert!(said(&out).contains(&want), "{}", said(&out));
    assert!(said(&out).contains("missing.keytab"), "{}", said(&out));
}

/// `[cluster]`: a Redis that does not answer is a warning (the gateway starts on its own
/// view); a password file it cannot read stops the start, with its line.
#[test]
fn cluster_redis_unreachable_warns_and_a_missing_password_file_fails() {
    let port = mailgate_testkit::extra::free_port();
    let (_dir, config) = site(&format!(
        "[cluster]\nredis = \"redis://127.0.0.1:{port}/0\"\ntimeout = \"200ms\"\n"
    ));
    let out = check(&config, &["--no-bind"]);
    let text = said(&out);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("warning: cluster.redis: redis://127.0.0.1:")
            && text.contains("does not answer"),
        "{text}"
    );

    let (_dir, config) = site(&format!(
        "[cluster]\nredis = \"redis://127.0.0.1:{port}/0\"\npassword_file = \"redis.pass\"\n"
    ));
    let out = check(&config, &["--no-bind"]);
    let text = said(&out);
    assert!(!out.status.success(), "{text}");
    let line = line_of(&config, "password_file");
    assert!(
        text.contains(&format!("mailgate.toml:{line}:")) && text.contains("redis.pass"),
        "{text}"
    );
}
