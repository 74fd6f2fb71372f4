//! Importing a Dovecot passwd-file line for line: `tests/fixtures/dovecot-schemes.users` holds
//! one user per scheme that `doveadm pw` writes, each storing the same password. Every one
//! must verify that password and refuse another; lines whose scheme is not supported are
//! skipped with a warning naming the line and the scheme, and the rest of the file loads.

use std::path::PathBuf;

use mailgate::auth::{Authenticator, UserStore, Verdict};

const PASSWORD: &[u8] = b"correct horse 7";

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/dovecot-schemes.users")
}

fn lines() -> Vec<(usize, String)> {
    let text = std::fs::read_to_string(fixture()).expect("read the fixture");
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
        .map(|(i, l)| (i + 1, l.to_owned()))
        .collect()
}

/// The users whose lines are to be skipped.
const UNSUPPORTED: &[(&str, &str)] = &[
    ("des-crypt", "{DES-CRYPT}"),
    ("pbkdf2", "{PBKDF2}"),
    ("otp", "{OTP}"),
    ("des-bare", "DES-CRYPT"),
    ("badsuffix", "{SHA256.ZZ}"),
];

#[test]
fn every_doveadm_scheme_verifies_its_password() {
    let store = UserStore::load(&fixture()).unwrap_or_else(|e| panic!("{e}"));
    let mut checked = 0;
    for (_, line) in lines() {
        let user = line.split(':').next().expect("user field");
        if UNSUPPORTED.iter().any(|(u, _)| *u == user) {
            assert_eq!(store.lookup(user), None, "{user} was skipped");
            continue;
        }
        if user == "digest-md5" {
            // Made for the user name and realm: it serves DIGEST-MD5 only (its secret is
            // checked against this vector in the unit tests of auth::digest_md5).
            assert!(store.can_serve(user, "DIGEST-MD5").is_ok());
            assert!(store.can_serve(user, "PLAIN").is_err());
            assert_eq!(
                store.verify_password(user, PASSWORD),
                Verdict::BadCredentials
            );
            let (name, _) = store.digest_md5_secret(user, "").expect("served");
            assert_eq!(name, user);
            checked += 1;
            continue;
        }
        assert_eq!(
            store.verify_password(user, PASSWORD),
            Verdict::Ok(user.to_owned()),
            "{user}: the right password"
        );
        assert_eq!(
            store.verify_password(user, b"correct horse 8"),
            Verdict::BadCredentials,
            "{user}: a wrong password"
        );
        assert_eq!(
            store.verify_password(user, b""),
            Verdict::BadCredentials,
            "{user}: an empty password"
        );
        assert!(
            store.can_serve(user, "PLAIN").is_ok(),
            "{user} serves PLAIN"
        );
        checked += 1;
    }
    assert!(checked >= 40, "only {checked} schemes checked");
    assert_eq!(store.len(), checked);
}

#[test]
fn stronger_mechanisms_are_served_from_their_forms_only() {
    let store = UserStore::load(&fixture()).unwrap_or_else(|e| panic!("{e}"));
    for (user, mech, ok) in [
        ("cram-md5", "CRAM-MD5", true),
        ("hmac-md5", "CRAM-MD5", true),
        ("ntlm", "NTLM", true),
        ("scram-sha-256", "SCRAM-SHA-256", true),
        ("scram-sha-1", "SCRAM-SHA-1-PLUS", true),
        ("plain.b64", "APOP", true),
        ("md5-crypt", "CRAM-MD5", false),
        ("ssha512", "SCRAM-SHA-256", false),
        ("plain-md4", "NTLM", false),
    ] {
        assert_eq!(store.can_serve(user, mech).is_ok(), ok, "{user} {mech}");
    }
    for (user, scheme) in [
        ("md5", "MD5-CRYPT"),
        ("crypt-md5", "MD5-CRYPT"),
        ("ldap-md5", "PLAIN-MD5"),
        ("sha1", "SHA"),
        ("sha256.hex", "SHA256"),
        ("smd5.hex", "SMD5"),
        ("hmac-md5", "CRAM-MD5"),
        ("plain.hex", "PLAIN"),
    ] {
        assert_eq!(store.schemes(user), [scheme], "{user}");
    }
}

#[test]
fn unsupported_schemes_skip_their_line_with_a_warning() {
    let store = UserStore::load(&fixture()).unwrap_or_else(|e| panic!("{e}"));
    let warnings = store.warnings();
    let all = lines();
    assert_eq!(warnings.len(), UNSUPPORTED.len(), "{warnings:?}");
    for (w, (user, scheme)) in warnings.iter().zip(UNSUPPORTED) {
        let (line, text) = all
            .iter()
            .find(|(_, l)| l.starts_with(&format!("{user}:")))
            .expect("fixture line");
        assert_eq!(w.line, *line, "{user}");
        assert!(w.message.contains(user), "{}", w.message);
        assert!(w.message.contains(scheme), "{}", w.message);
        assert!(w.message.contains("skipped"), "{}", w.message);
        // Never quotes the stored data.
        let data = text.split_once(':').expect(":").1;
        let data = data.rsplit('}').next().unwrap_or(data);
        assert!(!w.message.contains(data) && !w.hint.contains(data));
    }
}

#[test]
fn a_malformed_line_of_a_known_scheme_still_invalidates_the_file() {
    for bad in [
        "a:{SSHA}4DMkbUWC5+z+kdxI7HpWtce8VNQ=\n",
        "a:{MD5-CRYPT}$1$salt$short\n",
        "a:{SHA256.HEX}nothex\n",
    ] {
        let err = UserStore::parse(bad, "users").expect_err("invalid");
        assert!(err.to_string().contains("line 1"), "{err}");
    }
    let ok = UserStore::parse("a:{FOO}x\nb:{PLAIN}y\n", "users").expect("loads");
    assert_eq!(ok.users(), ["b"]);
    assert_eq!(ok.warnings().len(), 1);
}

#[test]
fn check_config_names_each_skipped_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::copy(fixture(), dir.path().join("users")).expect("copy fixture");
    let config = dir.path().join("mailgate.toml");
    std::fs::write(
        &config,
        "hostname = \"mail.example.test\"\nstate_dir = \"state\"\n[listeners]\n\
         smtp = [\"127.0.0.1:2525\"]\n[auth]\nusers_file = \"users\"\n",
    )
    .expect("write config");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mailgate"))
        .args(["check-config", "--config"])
        .arg(&config)
        .output()
        .expect("run check-config");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // `[auth] apop` is on by default: APOP needs {PLAIN}.
    assert!(
        stdout.contains("warning: user argon2id cannot log in with APOP"),
        "{stdout}"
    );
    assert!(
        !stdout.contains("warning: user plain.b64 cannot"),
        "{stdout}"
    );
    let users = dir.path().join("users");
    for (user, scheme) in UNSUPPORTED {
        let (line, _) = lines()
            .into_iter()
            .find(|(_, l)| l.starts_with(&format!("{user}:")))
            .expect("fixture line");
        let want = format!(
            "warning: {}:{line}: user {user}: password scheme {scheme}",
            users.display()
        );
        assert!(stdout.contains(&want), "{want} missing from:\n{stdout}");
    }
}

#[test]
fn passwd_scheme_lists_aliases_and_marks_weak_schemes() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mailgate"))
        .args(["passwd", "--scheme"])
        .output()
        .expect("run passwd --scheme");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    for want in [
        "CLEARTEXT",
        "HMAC-MD5",
        "CRYPT ($6$)",
        "LDAP-MD5",
        "SHA1",
        ".HEX",
    ] {
        assert!(stdout.contains(want), "{want} missing:\n{stdout}");
    }
    for weak in [
        "MD5-CRYPT",
        "PLAIN-MD5",
        "SMD5",
        "SSHA",
        "SHA256",
        "SSHA512",
    ] {
        let block: Vec<&str> = stdout
            .lines()
            .skip_while(|l| !l.starts_with(&format!("{weak} ")))
            .take(3)
            .collect();
        assert!(
            block.iter().any(|l| l.contains("weak:")),
            "{weak}: {block:?}"
        );
    }
    let argon: Vec<&str> = stdout
        .lines()
        .skip_while(|l| !l.starts_with("ARGON2ID "))
        .take(3)
        .collect();
    assert!(!argon.iter().any(|l| l.contains("weak")), "{argon:?}");
}
