//! Tests of the users store: parsing, merging, error reports and the [`Authenticator`] checks.

use super::scheme::{Form, HmacMd5State};
use super::*;

const CRAM_PASSWORD: &str =
    "{CRAM-MD5}9186d855e11eba527a7a52ca82b313e180d62234f0acc9051b527243d41e2740";
const ARGON_PASSWORD: &str = "{ARGON2ID}$argon2id$v=19$m=256,t=2,p=1$c29tZXNhbHQ$\
                              nf65EOgLrQMR/uIPnA4rEsF5h7TKyQwu9U1bMCHGi/4";

fn store(text: &str) -> UserStore {
    UserStore::parse(text, "test").unwrap_or_else(|e| panic!("{e}"))
}

fn problems(text: &str) -> Vec<Problem> {
    match UserStore::parse(text, "users") {
        Err(Error::Invalid { origin, problems }) => {
            assert_eq!(origin, "users");
            problems
        }
        other => panic!("expected problems, got {other:?}"),
    }
}

fn sample() -> UserStore {
    store(&format!(
        "# mail users\n\
         \n\
         Tim:{{PLAIN}}tanstaaftanstaaf\n\
         carol:{CRAM_PASSWORD}:1000:1000::/home/carol::\n\
         carol:{ARGON_PASSWORD}\n\
         dave:{ARGON_PASSWORD}\n\
         mrose:{{PLAIN}}tanstaaf\n"
    ))
}

#[test]
fn parses_and_merges_lines() {
    let s = sample();
    assert_eq!(s.len(), 4);
    assert!(!s.is_empty());
    assert_eq!(s.schemes("carol"), ["CRAM-MD5", "ARGON2ID"]);
    assert_eq!(s.schemes("TIM"), ["PLAIN"]);
    assert!(s.schemes("nobody").is_empty());
    assert_eq!(s.lookup("CAROL").as_deref(), Some("carol"));
    assert_eq!(s.lookup("tim").as_deref(), Some("tim"));
    assert_eq!(s.lookup("nobody"), None);
}

#[test]
fn duplicate_identical_lines_merge_to_one_form() {
    let s = store("a:{PLAIN}x\nA:{PLAIN}x\na:{plain}x\n");
    assert_eq!(s.schemes("a"), ["PLAIN"]);
}

#[test]
fn verify_password_any_form() {
    let s = sample();
    let cases: &[(&str, &[u8], Verdict)] = &[
        ("tim", b"tanstaaftanstaaf", Verdict::Ok("tim".into())),
        ("TIM", b"tanstaaftanstaaf", Verdict::Ok("tim".into())),
        ("tim", b"tanstaaf", Verdict::BadCredentials),
        ("carol", b"password", Verdict::Ok("carol".into())),
        ("dave", b"password", Verdict::Ok("dave".into())),
        ("dave", b"Password", Verdict::BadCredentials),
        ("nobody", b"password", Verdict::BadCredentials),
        ("tim", b"", Verdict::BadCredentials),
    ];
    for (user, pw, want) in cases {
        assert_eq!(&s.verify_password(user, pw), want, "{user}");
    }
}

#[test]
fn verify_cram_md5_rfc2195() {
    let s = sample();
    let challenge = b"<1896.697170952@postoffice.reston.mci.net>";
    let digest = b"b913a602c7eda7a495b4e6e7334d3890";
    assert_eq!(
        s.verify_cram_md5("tim", challenge, digest),
        Verdict::Ok("tim".into())
    );
    assert_eq!(
        s.verify_cram_md5("tim", challenge, b"B913A602C7EDA7A495B4E6E7334D3890"),
        Verdict::Ok("tim".into())
    );
    let wrong = b"b913a602c7eda7a495b4e6e7334d3891";
    assert_eq!(
        s.verify_cram_md5("tim", challenge, wrong),
        Verdict::BadCredentials
    );
    assert_eq!(
        s.verify_cram_md5("tim", challenge, b"zz"),
        Verdict::BadCredentials
    );
    assert_eq!(
        s.verify_cram_md5("nobody", challenge, digest),
        Verdict::BadCredentials
    );
    assert_eq!(
        s.verify_cram_md5("dave", challenge, digest),
        Verdict::Unavailable(CRAM_UNAVAILABLE)
    );
    // carol has only the {CRAM-MD5} context of "password".
    let mut mac_input = HmacMd5State::new(b"password");
    let carol = hex::encode(mac_input.finish(challenge));
    mac_input = HmacMd5State::new(b"other");
    let other = hex::encode(mac_input.finish(challenge));
    assert_eq!(
        s.verify_cram_md5("carol", challenge, carol.as_bytes()),
        Verdict::Ok("carol".into())
    );
    assert_eq!(
        s.verify_cram_md5("carol", challenge, other.as_bytes()),
        Verdict::BadCredentials
    );
}

#[test]
fn verify_apop_rfc1939() {
    let s = sample();
    let ts = b"<1896.697170952@dbc.mtview.ca.us>";
    let digest = b"c4c9334bac560ecc979e58001b3e22fb";
    assert_eq!(
        s.verify_apop("mrose", ts, digest),
        Verdict::Ok("mrose".into())
    );
    assert_eq!(
        s.verify_apop("mrose", b"<other@x>", digest),
        Verdict::BadCredentials
    );
    assert_eq!(s.verify_apop("nobody", ts, digest), Verdict::BadCredentials);
    assert_eq!(
        s.verify_apop("carol", ts, digest),
        Verdict::Unavailable(APOP_UNAVAILABLE)
    );
}

#[test]
fn can_serve_by_mechanism() {
    let s = store(&format!(
        "p:{{PLAIN}}x\nh:{ARGON_PASSWORD}\nc:{CRAM_PASSWORD}\n\
         n:{{NTLM}}8846F7EAEE8FB117AD06BDD830B7586C\n"
    ));
    let cases: &[(&str, &str, bool)] = &[
        ("p", "PLAIN", true),
        ("p", "cram-md5", true),
        ("p", "APOP", true),
        ("p", "NTLM", true),
        ("p", "SCRAM-SHA-256", true),
        ("h", "LOGIN", true),
        ("h", "CRAM-MD5", false),
        ("h", "APOP", false),
        ("h", "NTLM", false),
        ("h", "SCRAM-SHA-1", false),
        ("c", "CRAM-MD5", true),
        ("c", "APOP", false),
        ("n", "NTLM", true),
        ("n", "CRAM-MD5", false),
        ("p", "XOAUTH2", false),
        ("nobody", "PLAIN", false),
    ];
    for (user, mech, ok) in cases {
        assert_eq!(s.can_serve(user, mech).is_ok(), *ok, "{user} {mech}");
    }
    assert_eq!(s.can_serve("h", "CRAM-MD5"), Err(CRAM_UNAVAILABLE));
}

/// check-config's per-user warnings: bearer mechanisms never (they need nothing stored), APOP
/// only when `[auth] apop` is on.
#[test]
fn unserved_skips_bearer_mechanisms_and_checks_apop() {
    let s = store(&format!(
        "p:{{PLAIN}}x\nh:{ARGON_PASSWORD}\nc:{CRAM_PASSWORD}\n"
    ));
    let mechs: Vec<String> = ["PLAIN", "LOGIN", "CRAM-MD5", "XOAUTH2", "OAUTHBEARER"]
        .map(String::from)
        .to_vec();
    let names = |user: &str, apop: bool| -> Vec<String> {
        s.unserved(user, &mechs, apop)
            .into_iter()
            .map(|(m, _)| m)
            .collect()
    };
    assert!(names("p", true).is_empty());
    assert_eq!(names("h", false), ["CRAM-MD5"]);
    assert_eq!(names("h", true), ["CRAM-MD5", "APOP"]);
    assert_eq!(names("c", true), ["APOP"]);
    assert!(names("nobody", true).is_empty());
    assert_eq!(
        s.unserved("c", &mechs, true),
        [("APOP".to_owned(), APOP_UNAVAILABLE)]
    );
    let scram = ["SCRAM-SHA-256-PLUS".to_owned()];
    assert_eq!(unserved(&["SCRAM-SHA-256"], &scram, false), []);
    assert_eq!(
        unserved(&["ARGON2ID", "NTLM"], &scram, false),
        [("SCRAM-SHA-256-PLUS".to_owned(), SCRAM_SHA256_UNAVAILABLE)]
    );
}

#[test]
fn every_problem_is_reported_with_its_line() {
    let text = "ok:{PLAIN}fine\n\
                no-colon-here\n\
                bad user:{PLAIN}x\n\
                u1:{SSHA}x\n\
                u4:{WHAT}x\n\
                # comment:{WHAT}x\n\
                u2:\n\
                u3:{PLAIN}a\n\
                u3:{PLAIN}b\n\
                u3:{NTLM}8846F7EAEE8FB117AD06BDD830B7586C\n\
                .dot:{PLAIN}x\n";
    let got: Vec<(usize, String)> = problems(text)
        .into_iter()
        .map(|p| (p.line, p.message))
        .collect();
    // Line 5's unknown scheme only skips that line (a warning), it does not invalidate.
    let want_lines = [2, 3, 4, 7, 9, 10, 11];
    assert_eq!(
        got.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
        want_lines,
        "{got:?}"
    );
    let expect = [
        "no `:`",
        "holds `/`",
        "{SSHA} data is not",
        "empty password field",
        "{PLAIN} does not match the {PLAIN} password on line 8",
        "{NTLM} does not match",
        "starts with `.`",
    ];
    for ((_, message), want) in got.iter().zip(expect) {
        assert!(message.contains(want), "{message:?} lacks {want:?}");
    }
}

#[test]
fn problems_carry_hints_and_never_quote_passwords() {
    let err = UserStore::parse("hunter2secret\nu:topsecret\n", "users").expect_err("invalid");
    let text = err.to_string();
    assert!(text.starts_with("users: 2 problem(s):"), "{text}");
    assert!(
        text.contains("line 1:") && text.contains("line 2:"),
        "{text}"
    );
    assert!(
        !text.contains("hunter2") && !text.contains("topsecret"),
        "{text}"
    );
    if let Error::Invalid { problems, .. } = err {
        assert!(problems.iter().all(|p| !p.hint.is_empty()));
    }
}

#[test]
fn lines_and_forms_are_bounded() {
    let long = format!("u:{{PLAIN}}{}\n", "x".repeat(MAX_LINE_LEN));
    assert!(problems(&long)[0].message.contains("longer than"));
    let mut many = String::new();
    for i in 0..=MAX_FORMS_PER_USER {
        many.push_str(&format!("u:{{NTLM}}{:032x}\n", i));
    }
    let p = problems(&many);
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].line, MAX_FORMS_PER_USER + 1);
}

#[test]
fn load_reads_file_and_reports_non_utf8_lines() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("users");
    std::fs::write(&path, b"a:{PLAIN}x\nb:{PLAIN}\xff\n").expect("write");
    let err = UserStore::load(&path).expect_err("bad utf-8");
    assert!(
        matches!(&err, Error::Invalid { problems, .. } if problems[0].line == 2),
        "{err}"
    );
    std::fs::write(&path, b"a:{PLAIN}x\r\nb:{PLAIN}y\r\n").expect("write");
    let s = UserStore::load(&path).expect("load");
    assert_eq!(s.verify_password("a", b"x"), Verdict::Ok("a".into()));
    let missing = UserStore::load(&dir.path().join("none")).expect_err("missing");
    assert!(matches!(missing, Error::Read { .. }));
}

#[test]
fn stored_forms_verify_and_reload() {
    let forms = stored_forms(
        "eve",
        b"s3cret pass",
        &["PLAIN".into(), "CRAM-MD5".into()],
        Some("r"),
    );
    assert_eq!(forms.len(), 2);
    assert!(
        forms[0].starts_with("{ARGON2ID}$argon2id$v=19$"),
        "{}",
        forms[0]
    );
    assert!(forms[1].starts_with("{CRAM-MD5}"));
    let only_argon = stored_forms("eve", b"s3cret pass", &["PLAIN".into()], Some("r"));
    assert_eq!(only_argon.len(), 1);
    assert_ne!(only_argon[0], forms[0], "salts are random");

    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("users");
    std::fs::write(&path, "# users\nother:{PLAIN}x\n").expect("write");
    set_user(&path, "Eve", &forms).expect("set");
    let s = UserStore::load(&path).expect("reload");
    assert_eq!(s.schemes("eve"), ["ARGON2ID", "CRAM-MD5"]);
    assert_eq!(
        s.verify_password("eve", b"s3cret pass"),
        Verdict::Ok("eve".into())
    );
    assert_eq!(
        s.verify_password("eve", b"s3cret pasS"),
        Verdict::BadCredentials
    );
    let challenge = b"<1.2@host>";
    let digest = hex::encode(HmacMd5State::new(b"s3cret pass").finish(challenge));
    assert_eq!(
        s.verify_cram_md5("eve", challenge, digest.as_bytes()),
        Verdict::Ok("eve".into())
    );
    assert_eq!(
        s.verify_password("other", b"x"),
        Verdict::Ok("other".into())
    );
}

#[test]
fn secrets_do_not_print() {
    let secret = Secret::new(b"hunter2".to_vec());
    assert_eq!(format!("{secret:?}"), "Secret(..)");
    assert_eq!(secret.expose(), b"hunter2");
    let s = sample();
    assert!(!format!("{s:?}").contains("tanstaaf"));
}

#[test]
fn unknown_user_replays_a_slow_hash() {
    let s = sample();
    assert!(s.decoy.read().unwrap().as_ref().is_some_and(Form::is_slow));
    assert!(store("a:{PLAIN}x\n").decoy.read().unwrap().is_none());
}

#[test]
fn nt_hash_from_ntlm_or_plain() {
    let s = store(&format!(
        "n:{{NTLM}}8846F7EAEE8FB117AD06BDD830B7586C\np:{{PLAIN}}password\nh:{ARGON_PASSWORD}\n"
    ));
    for user in ["n", "P"] {
        let nt = s.nt_hash(user).map(|nt| hex::encode(nt.expose()));
        assert_eq!(
            nt.as_deref(),
            Some("8846f7eaee8fb117ad06bdd830b7586c"),
            "{user}"
        );
    }
    assert!(s.nt_hash("h").is_none());
    assert!(s.nt_hash("nobody").is_none());
}

#[test]
fn reload_serves_the_new_file_and_keeps_the_old_users_if_it_is_invalid() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("users");
    std::fs::write(&path, "alice:{PLAIN}one\n").unwrap();
    let store = UserStore::load(&path).unwrap();
    assert!(matches!(
        store.verify_password("bob", b"two"),
        Verdict::BadCredentials
    ));

    std::fs::write(&path, "alice:{PLAIN}one\nbob:{PLAIN}two\n").unwrap();
    assert_eq!(store.reload(&path).unwrap(), 2);
    assert!(matches!(
        store.verify_password("bob", b"two"),
        Verdict::Ok(_)
    ));
    assert!(matches!(
        store.verify_password("alice", b"one"),
        Verdict::Ok(_)
    ));

    // A file that does not parse changes nothing; the error names the line.
    std::fs::write(&path, "alice:{PLAIN}one\nbroken line\n").unwrap();
    let err = store.reload(&path).unwrap_err().to_string();
    assert!(err.contains("line 2"), "{err}");
    assert_eq!(store.len(), 2);
    assert!(matches!(
        store.verify_password("bob", b"two"),
        Verdict::Ok(_)
    ));

    // A removed user is gone.
    std::fs::write(&path, "alice:{PLAIN}one\n").unwrap();
    assert_eq!(store.reload(&path).unwrap(), 1);
    assert!(matches!(
        store.verify_password("bob", b"two"),
        Verdict::BadCredentials
    ));
}
