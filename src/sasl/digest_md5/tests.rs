//! Transcripts of DIGEST-MD5 exchanges: the RFC 2831 §4 example, the stored forms, and every
//! refusal.

use std::sync::Arc;

use super::*;
use crate::auth::digest_md5::{field, secret};
use crate::sasl::testing::{Driven, TestContext, test_context};
use crate::sasl::{Environment, Options};

const REALM: &str = "elwood.innosoft.com";
const NONCE: &str = "OA6MG9tEQGm2hh";
/// RFC 2831 §4, the IMAP example: password "secret".
const RFC_CHALLENGE: &str = "realm=\"elwood.innosoft.com\",nonce=\"OA6MG9tEQGm2hh\",qop=\"auth\",\
                             charset=utf-8,algorithm=md5-sess";
const RFC_RESPONSE: &str = "charset=utf-8,username=\"chris\",realm=\"elwood.innosoft.com\",\
                            nonce=\"OA6MG9tEQGm2hh\",nc=00000001,cnonce=\"OA6MHXh6VqTrRk\",\
                            digest-uri=\"imap/elwood.innosoft.com\",\
                            response=d388dad90d4bbd760a152321f2143af7,qop=auth";
const RFC_RSPAUTH: &[u8] = b"rspauth=ea40f60335c427b5527b84dbabcdfffd";

fn users() -> String {
    format!(
        "chris:{{PLAIN}}secret\n\
         stored:{}\n\
         hashed:{{ARGON2ID}}$argon2id$v=19$m=256,t=2,p=1$c29tZXNhbHQ$\
         nf65EOgLrQMR/uIPnA4rEsF5h7TKyQwu9U1bMCHGi/4\n",
        field("stored", REALM, b"secret")
    )
}

fn context(service: &'static str) -> TestContext {
    let mut ctx = test_context(&users(), "n", REALM);
    ctx.service = service;
    ctx.options = Arc::new(Options {
        digest_md5_realm: REALM.to_owned(),
        ..Options::default()
    });
    ctx
}

/// A mechanism over `ctx` with the RFC's nonce, checks answered from its users.
fn mechanism(ctx: &TestContext) -> Driven {
    Driven::new(Box::new(DigestMd5::new(ctx, NONCE.to_owned())), ctx)
}

/// A response computed as a client does, from the password.
fn client_response(user: &str, password: &str, uri: &str, authzid: Option<&str>) -> String {
    let s = Secret::new(secret(user, REALM, password.as_bytes()).to_vec());
    let cnonce = b"OA6MHXh6VqTrRk";
    let a1 = session_key(&s, NONCE.as_bytes(), cnonce, authzid.map(str::as_bytes));
    let response = response_value(
        &a1,
        NONCE.as_bytes(),
        cnonce,
        b"auth",
        b"AUTHENTICATE",
        uri.as_bytes(),
    );
    let authzid = authzid.map_or(String::new(), |a| format!(",authzid=\"{a}\""));
    format!(
        "charset=utf-8,username=\"{user}\",realm=\"{REALM}\",nonce=\"{NONCE}\",nc=00000001,\
         cnonce=\"OA6MHXh6VqTrRk\",digest-uri=\"{uri}\",response={},qop=auth{authzid}",
        String::from_utf8_lossy(&response)
    )
}

fn exchange(service: &'static str, response: &str) -> Step {
    let mut m = mechanism(&context(service));
    assert!(matches!(m.step(None), Step::Challenge(_)));
    m.step(Some(response.as_bytes()))
}

fn ok(user: &str) -> Step {
    Step::Success(Identity::new(user))
}

#[test]
fn rfc2831_example_transcript() {
    let mut m = mechanism(&context("imap"));
    assert!(!m.verifies_next());
    assert_eq!(
        m.step(None),
        Step::Challenge(RFC_CHALLENGE.as_bytes().to_vec())
    );
    assert!(m.verifies_next());
    assert_eq!(
        m.step(Some(RFC_RESPONSE.as_bytes())),
        Step::Challenge(RFC_RSPAUTH.to_vec())
    );
    assert!(!m.verifies_next());
    assert_eq!(m.user(), Some("chris"));
    assert_eq!(m.step(Some(b"")), ok("chris"));
    assert_eq!(
        m.checks,
        [Check::DigestMd5 {
            user: "chris".into(),
            realm: REALM.into(),
            authzid: None
        }]
    );
}

#[test]
fn stored_forms_passwords_and_authorization() {
    let uri = "smtp/elwood.innosoft.com";
    let challenge = |step: Step| matches!(step, Step::Challenge(c) if c.starts_with(b"rspauth="));
    assert!(challenge(exchange(
        "smtp",
        &client_response("chris", "secret", uri, None)
    )));
    assert!(challenge(exchange(
        "smtp",
        &client_response("stored", "secret", uri, None)
    )));
    assert!(challenge(exchange(
        "smtp",
        &client_response("chris", "secret", uri, Some("chris"))
    )));
    assert!(challenge(exchange(
        "smtp",
        &client_response("CHRIS", "secret", uri, Some("chris"))
    )));
    let bad = Step::Failure(Failure::BadCredentials);
    let cases = [
        client_response("chris", "wrong", uri, None),
        client_response("stored", "wrong", uri, None),
        // A stored form is made for the name as stored.
        client_response("STORED", "secret", uri, None),
        client_response("nobody", "secret", uri, None),
        client_response("chris", "secret", uri, Some("stored")),
    ];
    for response in cases {
        assert_eq!(exchange("smtp", &response), bad, "{response}");
    }
    assert_eq!(
        exchange("smtp", &client_response("hashed", "password", uri, None)),
        Step::Failure(Failure::Unavailable(
            "DIGEST-MD5 needs a {PLAIN} or {DIGEST-MD5} stored form"
        ))
    );
}

#[test]
fn digest_uri_names_this_service_and_host() {
    let mut ctx = context("pop");
    ctx.options = Arc::new(Options {
        digest_md5_realm: REALM.to_owned(),
        digest_md5_hosts: vec![REALM.into(), "mail.example.org".into()],
        ..Options::default()
    });
    for (uri, accepted) in [
        ("pop/elwood.innosoft.com", true),
        ("POP/Mail.Example.Org", true),
        ("pop/mail.example.org/elwood.innosoft.com", true),
        ("smtp/elwood.innosoft.com", false),
        ("imap/elwood.innosoft.com", false),
        ("pop/evil.example", false),
        ("pop/mail.example.org/evil.example", false),
        ("pop/mail.example.org/elwood.innosoft.com/x", false),
        ("pop", false),
        ("pop/", false),
    ] {
        let mut m = mechanism(&ctx);
        m.step(None);
        let got = m.step(Some(
            client_response("chris", "secret", uri, None).as_bytes(),
        ));
        let want = if accepted {
            matches!(got, Step::Challenge(_))
        } else {
            got == refused("digest-uri names another service or host")
        };
        assert!(want, "{uri}: {got:?}");
    }
}

#[test]
fn refusals_before_any_lookup() {
    let good = client_response("chris", "secret", "smtp/elwood.innosoft.com", None);
    let cases = [
        (
            "nonce=\"OA6MG9tEQGm2hh\"",
            "nonce=\"OA6MG9tEQGm2hX\"",
            "nonce is not",
        ),
        ("nc=00000001", "nc=00000002", "nc is not"),
        ("qop=auth", "qop=auth-int", "security layer"),
        ("qop=auth", "qop=\"auth-conf\"", "security layer"),
        ("qop=auth", "qop=other", "qop is not auth"),
        (
            "realm=\"elwood.innosoft.com\"",
            "realm=\"other\"",
            "realm is not",
        ),
        ("realm=\"elwood.innosoft.com\",", "", "realm is not"),
    ];
    for (from, to, want) in cases {
        let response = good.replacen(from, to, 1);
        let mut m = mechanism(&context("smtp"));
        m.step(None);
        match m.step(Some(response.as_bytes())) {
            Step::Failure(Failure::Refused(why)) => assert!(why.contains(want), "{to}: {why}"),
            other => panic!("{to}: {other:?}"),
        }
        assert!(m.checks.is_empty(), "{to}: no lookup");
    }
    // Without qop the client means auth.
    let no_qop = good.replacen(",qop=auth", "", 1);
    assert!(matches!(exchange("smtp", &no_qop), Step::Challenge(_)));
}

#[test]
fn a_response_is_taken_once_and_only_in_its_exchange() {
    let ctx = context("smtp");
    let response = client_response("chris", "secret", "smtp/elwood.innosoft.com", None);
    // Another exchange of the same connection has another nonce.
    let env = Environment::basic(ctx.auth.clone(), REALM, "s", [7; 32]);
    let mut other = ctx.clone();
    other.ctx = env.context(2);
    other.options = ctx.options.clone();
    let mut m = Driven::new(start(&other), &other);
    let Step::Challenge(challenge) = m.step(None) else {
        panic!("challenge")
    };
    assert!(!String::from_utf8_lossy(&challenge).contains(NONCE));
    assert_eq!(
        m.step(Some(response.as_bytes())),
        refused("nonce is not this exchange's (replayed or forged response)")
    );
    // In its own exchange it is taken once; nothing is stepped after the end.
    let mut m = mechanism(&ctx);
    m.step(None);
    assert!(matches!(
        m.step(Some(response.as_bytes())),
        Step::Challenge(_)
    ));
    assert_eq!(
        m.step(Some(response.as_bytes())),
        malformed("expected an empty response to rspauth")
    );
    assert_eq!(m.step(Some(b"")), malformed("exchange already finished"));
}

#[test]
fn malformed_responses() {
    let good = client_response("chris", "secret", "smtp/elwood.innosoft.com", None);
    let cases = [
        ("charset=utf-8", "charset=iso-8859-1", "charset"),
        ("username=\"chris\"", "username=\"\"", "username"),
        ("username=\"chris\",", "", "no username"),
        ("cnonce=\"OA6MHXh6VqTrRk\"", "cnonce=\"\"", "empty cnonce"),
        ("cnonce=\"OA6MHXh6VqTrRk\",", "", "required"),
        ("response=", "response=x", "32 hex"),
        ("nc=00000001", "nc=00000001,nc=00000001", "twice"),
    ];
    for (from, to, want) in cases {
        let response = good.replacen(from, to, 1);
        match exchange("smtp", &response) {
            Step::Failure(Failure::Malformed(why)) => assert!(why.contains(want), "{to}: {why}"),
            other => panic!("{to}: {other:?}"),
        }
    }
    let ctx = context("smtp");
    let mut m = mechanism(&ctx);
    m.step(None);
    let mut bad_authzid = good.into_bytes();
    bad_authzid.extend_from_slice(b",authzid=\"\xff\"");
    assert_eq!(
        m.step(Some(&bad_authzid)),
        malformed("authzid is not UTF-8")
    );
    let mut m = mechanism(&ctx);
    assert_eq!(
        m.step(Some(b"x")),
        malformed("DIGEST-MD5 takes no initial response")
    );
    let mut m = mechanism(&ctx);
    m.step(None);
    assert_eq!(m.step(None), malformed("missing client response"));
}

#[test]
fn latin1_user_names_without_charset() {
    let mut ctx = context("smtp");
    ctx.auth =
        Arc::new(crate::auth::UserStore::parse("j\u{f6}rg:{PLAIN}secret\n", "t").expect("users"));
    let uri = "smtp/elwood.innosoft.com";
    let utf8 = client_response("j\u{f6}rg", "secret", uri, None);
    let latin1: Vec<u8> = utf8
        .replacen("charset=utf-8,", "", 1)
        .chars()
        .map(|c| u8::try_from(u32::from(c)).expect("latin-1"))
        .collect();
    for response in [utf8.into_bytes(), latin1] {
        let mut m = mechanism(&ctx);
        m.step(None);
        assert!(
            matches!(m.step(Some(&response)), Step::Challenge(_)),
            "{response:?}"
        );
        assert_eq!(m.step(Some(b"")), ok("j\u{f6}rg"));
    }
}

#[test]
fn challenge_quotes_the_realm() {
    assert_eq!(quote("a\"b\\c"), "\"a\\\"b\\\\c\"");
    let m = start(&context("smtp"));
    let mut m = m;
    let Step::Challenge(c) = m.step(None) else {
        panic!("challenge")
    };
    let c = String::from_utf8(c).expect("ascii");
    let nonce = c
        .split("nonce=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .expect("nonce");
    assert_eq!(nonce.len(), 43, "{c}");
}
