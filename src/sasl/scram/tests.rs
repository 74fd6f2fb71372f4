//! Tests of the SCRAM mechanisms: the RFC 5802 §5 and RFC 7677 §3 exchanges, keys derived from
//! `{PLAIN}`, the mock exchange, channel binding, downgrade protection and malformed input.

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

use super::*;
use crate::auth::scram::field;
use crate::sasl::testing::{Driven, TestContext, test_context};
use crate::sasl::{ChannelBinding, MAX_TOKEN_LEN, Options};

const ARGON: &str = "{ARGON2ID}$argon2id$v=19$m=256,t=2,p=1$c29tZXNhbHQ$\
                     nf65EOgLrQMR/uIPnA4rEsF5h7TKyQwu9U1bMCHGi/4";
const EXPORTER: [u8; 32] = [0xe5; 32];
const END_POINT: [u8; 32] = [0x3c; 32];

/// The users: the RFC examples' "user"/"pencil" in both stored forms, a `{PLAIN}` user and one
/// with only a one-way hash.
fn users() -> String {
    let sha1 = ScramHash::Sha1.credentials(
        b"pencil",
        B64.decode("QSXCR+Q6sek8bf92").expect("salt"),
        4096,
    );
    let sha256 = ScramHash::Sha256.credentials(
        b"pencil",
        B64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").expect("salt"),
        4096,
    );
    format!(
        "user:{}\nuser:{}\nplain:{{PLAIN}}pass\u{AD}word\nhashed:{ARGON}\n",
        field(ScramHash::Sha1, &sha1),
        field(ScramHash::Sha256, &sha256)
    )
}

/// The context over the users (made once: each SCRAM key costs 4096 HMACs).
fn ctx() -> TestContext {
    static CTX: std::sync::OnceLock<TestContext> = std::sync::OnceLock::new();
    CTX.get_or_init(|| test_context(&users(), "n", "h")).clone()
}

/// A context over TLS with both binding types, and whether `-PLUS` is offered.
fn tls_ctx(offered: bool) -> TestContext {
    let mut ctx = ctx();
    ctx.channel_binding = Some(Arc::new(ChannelBinding {
        tls_exporter: Some(EXPORTER.to_vec()),
        tls_server_end_point: Some(END_POINT.to_vec()),
    }));
    ctx.options = Arc::new(Options {
        channel_binding_offered: offered,
        ..Options::default()
    });
    ctx
}

fn mechanism(ctx: &TestContext, hash: ScramHash, plus: bool, nonce: &str) -> Box<dyn Mechanism> {
    Driven::boxed(Box::new(Scram::new(ctx, hash, plus, nonce.to_owned())), ctx)
}

/// An exchange driven as the session driver drives it.
fn start(ctx: &TestContext, hash: ScramHash, plus: bool) -> Box<dyn Mechanism> {
    Driven::boxed(super::start(ctx, hash, plus), ctx)
}

fn challenge(text: &str) -> Step {
    Step::Challenge(text.as_bytes().to_vec())
}

fn ok(user: &str) -> Step {
    Step::Success(Identity::new(user))
}

fn bad() -> Step {
    Step::Failure(Failure::BadCredentials)
}

fn assert_malformed(step: Step, want: &str) {
    match step {
        Step::Failure(Failure::Malformed(why)) => assert!(why.contains(want), "{why}"),
        other => panic!("expected Malformed({want}), got {other:?}"),
    }
}

/// A well-formed exchange that fails a check: an authentication failure (535), not a 501.
fn assert_refused(step: Step, want: &str) {
    match step {
        Step::Failure(Failure::Refused(why)) => assert!(why.contains(want), "{why}"),
        other => panic!("expected Refused({want}), got {other:?}"),
    }
}

#[test]
fn rfc5802_and_rfc7677_examples() {
    let cases = [
        (
            ScramHash::Sha1,
            "3rfcNHYJY1ZVvWVs7j",
            "n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL",
            "r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096",
            "c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=",
            "v=rmF9pqV8S7suAoZWja4dJRkFsKQ=",
        ),
        (
            ScramHash::Sha256,
            "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0",
            "n,,n=user,r=rOprNGfwEbeRWgbNEkqO",
            "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,\
             i=4096",
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
             p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
            "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=",
        ),
    ];
    for (hash, nonce, first, server_first, last, server_final) in cases {
        // With and without the initial response.
        for initial in [true, false] {
            let mut m = mechanism(&ctx(), hash, false, nonce);
            if !initial {
                assert_eq!(m.step(None), challenge(""));
            }
            assert_eq!(m.step(Some(first.as_bytes())), challenge(server_first));
            assert_eq!(m.user(), Some("user"));
            assert_eq!(m.step(Some(last.as_bytes())), challenge(server_final));
            assert_eq!(m.step(Some(b"")), ok("user"));
            assert_malformed(m.step(Some(b"")), "already finished");
        }
        // One bit off in the proof.
        let mut m = mechanism(&ctx(), hash, false, nonce);
        m.step(Some(first.as_bytes()));
        let wrong = last.replace("p=v0X8", "p=v0X9").replace("p=dHzb", "p=dHzc");
        assert_eq!(m.step(Some(wrong.as_bytes())), bad());
    }
}

/// What a client computes: the client-final message for `password` and the server-final
/// message it expects.
fn client_final(
    hash: ScramHash,
    password: &str,
    bare: &str,
    server_first: &[u8],
    cbind: &[u8],
) -> (String, String) {
    let server_first = std::str::from_utf8(server_first).expect("utf-8");
    let attr = |name: &str| {
        server_first
            .split(',')
            .find_map(|a| a.strip_prefix(name))
            .expect("attribute")
    };
    let salt = B64.decode(attr("s=")).expect("salt");
    let iterations: u32 = attr("i=").parse().expect("iterations");
    let keys = hash.credentials(password.as_bytes(), salt, iterations);
    let without_proof = format!("c={},r={}", B64.encode(cbind), attr("r="));
    let auth = format!("{bare},{server_first},{without_proof}");
    let salted = hash.salted_password(
        &crate::auth::scram::normalize_password(password.as_bytes()),
        &keys.salt,
        iterations,
    );
    let client_key = hash.hmac(salted.expose(), &[b"Client Key"]);
    let signature = hash.hmac(keys.stored_key.expose(), &[auth.as_bytes()]);
    let proof: Vec<u8> = client_key
        .iter()
        .zip(&signature)
        .map(|(a, b)| a ^ b)
        .collect();
    let server = hash.hmac(keys.server_key.expose(), &[auth.as_bytes()]);
    (
        format!("{without_proof},p={}", B64.encode(proof)),
        format!("v={}", B64.encode(server)),
    )
}

/// Runs a whole exchange as a client would; returns the last step.
fn exchange(m: &mut dyn Mechanism, hash: ScramHash, gs2: &str, user: &str, password: &str) -> Step {
    let bare = format!("n={user},r=clientnonce");
    let server_first = match m.step(Some(format!("{gs2}{bare}").as_bytes())) {
        Step::Challenge(server_first) => server_first,
        other => return other,
    };
    let cbind = [gs2.as_bytes(), binding_for(gs2)].concat();
    let (last, want_final) = client_final(hash, password, &bare, &server_first, &cbind);
    match m.step(Some(last.as_bytes())) {
        Step::Challenge(got) => {
            assert_eq!(got, want_final.as_bytes(), "server signature");
            m.step(Some(b""))
        }
        other => other,
    }
}

fn binding_for(gs2: &str) -> &'static [u8] {
    if gs2.starts_with("p=tls-exporter") {
        &EXPORTER
    } else if gs2.starts_with("p=tls-server-end-point") {
        &END_POINT
    } else {
        b""
    }
}

#[test]
fn keys_derived_from_plain_and_stored_keys() {
    for hash in [ScramHash::Sha1, ScramHash::Sha256] {
        let cases: [(&str, &str, Step); 6] = [
            ("user", "pencil", ok("user")),
            ("User", "pencil", ok("user")),
            ("user", "pencim", bad()),
            // SASLprep: SOFT HYPHEN maps to nothing, in the stored and in the sent password.
            ("plain", "password", ok("plain")),
            ("plain", "pass\u{AD}word", ok("plain")),
            ("plain", "Password", bad()),
        ];
        for (user, password, want) in cases {
            let mut m = start(&ctx(), hash, false);
            assert_eq!(
                exchange(m.as_mut(), hash, "n,,", user, password),
                want,
                "{user}"
            );
        }
    }
}

#[test]
fn the_salt_of_a_plain_user_and_of_an_unknown_user_is_stable() {
    let ctx = ctx();
    let salt = |user: &str| {
        let mut m = start(&ctx, ScramHash::Sha256, false);
        let Step::Challenge(first) = m.step(Some(format!("n,,n={user},r=abc").as_bytes())) else {
            panic!("no server-first");
        };
        let text = String::from_utf8(first).expect("utf-8");
        let salt = text.split(',').nth(1).expect("salt").to_owned();
        assert!(text.ends_with(",i=4096"), "{text}");
        salt
    };
    for user in ["plain", "nobody", "hashed"] {
        assert_eq!(salt(user), salt(user), "{user}");
    }
    assert_ne!(salt("nobody"), salt("nobody2"));
    assert_ne!(salt("plain"), salt("nobody"));
}

#[test]
fn unknown_and_unservable_users_fail_only_after_the_proof() {
    let hash = ScramHash::Sha256;
    let mut m = start(&ctx(), hash, false);
    assert_eq!(exchange(m.as_mut(), hash, "n,,", "nobody", "pencil"), bad());
    assert_eq!(m.user(), Some("nobody"));
    let mut m = start(&ctx(), hash, false);
    assert_eq!(
        exchange(m.as_mut(), hash, "n,,", "hashed", "password"),
        Step::Failure(Failure::Unavailable(
            "SCRAM-SHA-256 needs a {PLAIN} or {SCRAM-SHA-256} stored form"
        ))
    );
}

#[test]
fn the_server_nonce_is_random_printable_and_extends_the_client_nonce() {
    let mut m = start(&ctx(), ScramHash::Sha256, false);
    let Step::Challenge(first) = m.step(Some(b"n,,n=user,r=abc")) else {
        panic!("no server-first");
    };
    let text = String::from_utf8(first).expect("utf-8");
    let nonce = text
        .strip_prefix("r=abc")
        .and_then(|t| t.split(',').next())
        .expect("nonce");
    assert_eq!(nonce.len(), 43, "{nonce}");
    assert!(
        nonce
            .bytes()
            .all(|b| (0x21..=0x7e).contains(&b) && b != b',')
    );
}

#[test]
fn authzid_must_name_the_user() {
    let hash = ScramHash::Sha256;
    let cases = [
        ("n,a=user,", ok("user")),
        ("n,a=USER,", ok("user")),
        ("n,a=plain,", bad()),
    ];
    for (gs2, want) in cases {
        let mut m = start(&ctx(), hash, false);
        assert_eq!(
            exchange(m.as_mut(), hash, gs2, "user", "pencil"),
            want,
            "{gs2}"
        );
    }
}

#[test]
fn channel_binding_and_downgrade_rules() {
    let hash = ScramHash::Sha256;
    struct Case {
        ctx: TestContext,
        plus: bool,
        gs2: &'static str,
        want: Result<(), &'static str>,
    }
    let cases = [
        // -PLUS with either binding type this session has.
        Case {
            ctx: tls_ctx(true),
            plus: true,
            gs2: "p=tls-exporter,,",
            want: Ok(()),
        },
        Case {
            ctx: tls_ctx(true),
            plus: true,
            gs2: "p=tls-server-end-point,,",
            want: Ok(()),
        },
        Case {
            ctx: tls_ctx(true),
            plus: true,
            gs2: "p=tls-unique,,",
            want: Err("unsupported"),
        },
        Case {
            ctx: ctx(),
            plus: true,
            gs2: "p=tls-exporter,,",
            want: Err("unsupported"),
        },
        Case {
            ctx: tls_ctx(true),
            plus: true,
            gs2: "n,,",
            want: Err("needs p="),
        },
        Case {
            ctx: tls_ctx(true),
            plus: true,
            gs2: "y,,",
            want: Err("needs p="),
        },
        // Without -PLUS: p= is refused; y only when -PLUS is offered here (downgrade).
        Case {
            ctx: tls_ctx(true),
            plus: false,
            gs2: "p=tls-exporter,,",
            want: Err("-PLUS"),
        },
        Case {
            ctx: tls_ctx(true),
            plus: false,
            gs2: "y,,",
            want: Err("downgrade"),
        },
        Case {
            ctx: tls_ctx(false),
            plus: false,
            gs2: "y,,",
            want: Ok(()),
        },
        Case {
            ctx: ctx(),
            plus: false,
            gs2: "y,,",
            want: Ok(()),
        },
        Case {
            ctx: tls_ctx(true),
            plus: false,
            gs2: "n,,",
            want: Ok(()),
        },
    ];
    for Case {
        ctx,
        plus,
        gs2,
        want,
    } in cases
    {
        let mut m = start(&ctx, hash, plus);
        let got = exchange(m.as_mut(), hash, gs2, "user", "pencil");
        match want {
            Ok(()) => assert_eq!(got, ok("user"), "{gs2} plus={plus}"),
            Err(why) if why == "downgrade" => assert_refused(got, why),
            Err(why) => assert_malformed(got, why),
        }
    }
}

#[test]
fn channel_binding_data_must_match() {
    let hash = ScramHash::Sha256;
    let other = [0u8; 32];
    let cases: [(&str, Vec<u8>); 4] = [
        (
            "p=tls-exporter,,",
            [b"p=tls-exporter,,".as_slice(), &other].concat(),
        ),
        (
            "p=tls-exporter,,",
            [b"p=tls-exporter,,".as_slice(), &END_POINT].concat(),
        ),
        ("p=tls-exporter,,", b"p=tls-exporter,,".to_vec()),
        ("n,,", b"y,,".to_vec()),
    ];
    for (gs2, cbind) in cases {
        let plus = gs2.starts_with('p');
        let mut m = mechanism(&tls_ctx(plus), hash, plus, "srv");
        let bare = "n=user,r=cli";
        let Step::Challenge(first) = m.step(Some(format!("{gs2}{bare}").as_bytes())) else {
            panic!("no server-first");
        };
        let (last, _) = client_final(hash, "pencil", bare, &first, &cbind);
        assert_refused(m.step(Some(last.as_bytes())), "channel-bindings-dont-match");
    }
}

#[test]
fn malformed_client_final_and_ack() {
    let hash = ScramHash::Sha256;
    let first = b"n,,n=user,r=cli";
    let long = vec![b'c'; MAX_TOKEN_LEN + 1];
    // (client-final, reason, whether it is a 535 rather than a 501)
    let cases: Vec<(Vec<u8>, &str, bool)> = vec![
        (b"c=biws,r=clisrX,p=AAAA".to_vec(), "nonce is not", true),
        (b"c=biws,r=cli,p=AAAA".to_vec(), "nonce is not", true),
        (b"c=biws,r=clisrv,p=AAAA".to_vec(), "wrong length", true),
        (b"c=biws,r=clisrv".to_vec(), "p=proof", false),
        (b"".to_vec(), "p=proof", false),
        (long, "too long", false),
    ];
    for (last, want, refused) in cases {
        let mut m = mechanism(&ctx(), hash, false, "srv");
        assert!(matches!(m.step(Some(first)), Step::Challenge(_)));
        if refused {
            assert_refused(m.step(Some(&last)), want);
        } else {
            assert_malformed(m.step(Some(&last)), want);
        }
        assert_malformed(m.step(Some(b"")), "already finished");
    }
    // The ack after the server-final message must be empty and present.
    for (ack, want) in [(Some(b"x".as_slice()), "empty response"), (None, "missing")] {
        let mut m = mechanism(&ctx(), hash, false, "srv");
        let Step::Challenge(server_first) = m.step(Some(first)) else {
            panic!("no server-first");
        };
        let (last, _) = client_final(hash, "pencil", "n=user,r=cli", &server_first, b"n,,");
        assert!(matches!(m.step(Some(last.as_bytes())), Step::Challenge(_)));
        assert_malformed(m.step(ack), want);
    }
}

#[test]
fn malformed_client_first() {
    let cases: [(&[u8], &str); 4] = [
        (b"n,,n=us=er,r=abc", "invalid-username-encoding"),
        // RFC 4013 §3: BELL is prohibited.
        (b"n,,n=a\x07b,r=abc", "SASLprep"),
        ("n,,n=\u{AD},r=abc".as_bytes(), "empty after SASLprep"),
        (b"n,,m=x,n=user,r=abc", "extensions-not-supported"),
    ];
    for (first, want) in cases {
        let mut m = start(&ctx(), ScramHash::Sha256, false);
        assert_malformed(m.step(Some(first)), want);
    }
    let mut m = start(&ctx(), ScramHash::Sha256, false);
    assert_eq!(m.step(None), challenge(""));
    assert_malformed(m.step(None), "missing client response");
}

/// Arbitrary bytes at every stage never panic and never succeed.
#[test]
fn garbage_never_panics() {
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let alphabet = b"nyp=a,rcsiv2C3D\x00\xff\xc3tls-exporter";
    let contexts = [tls_ctx(true), tls_ctx(false), ctx()];
    for round in 0..2000 {
        let len = (next() % 64) as usize;
        let junk: Vec<u8> = (0..len)
            .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
            .collect();
        let ctx = &contexts[round % 3];
        let mut m = mechanism(ctx, ScramHash::Sha1, round % 2 == 0, "s");
        let first = m.step(Some(&junk));
        assert!(!matches!(first, Step::Success(_)));
        let mut m = mechanism(ctx, ScramHash::Sha1, false, "s");
        assert!(matches!(m.step(Some(b"n,,n=user,r=c")), Step::Challenge(_)));
        assert!(matches!(m.step(Some(&junk)), Step::Failure(_)));
    }
}

/// `derive_on_login` end to end: a user stored only as `{ARGON2ID}` cannot use SCRAM until a
/// PLAIN or LOGIN login stores the keys, and then can.
#[test]
fn plaintext_logins_derive_the_keys_scram_then_uses() {
    use crate::auth::UserStore;
    use crate::sasl::{login, plain};

    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("users");
    std::fs::write(&path, format!("hashed:{ARGON}\n")).expect("write");
    let mechanisms: Vec<String> = ["LOGIN", "PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-1"]
        .map(String::from)
        .to_vec();
    let store = UserStore::load(&path)
        .expect("load")
        .with_derivation(&path, &mechanisms);
    let ctx = crate::sasl::testing::with_auth(Arc::new(store), "n", "h");
    for hash in [ScramHash::Sha256, ScramHash::Sha1] {
        let mut m = start(&ctx, hash, false);
        let got = exchange(m.as_mut(), hash, "n,,", "hashed", "password");
        assert!(
            matches!(got, Step::Failure(Failure::Unavailable(_))),
            "{got:?}"
        );
    }
    // A wrong password derives nothing.
    assert_eq!(
        Driven::boxed(plain::start(&ctx), &ctx).step(Some(b"\0hashed\0wrong")),
        bad()
    );
    assert_eq!(
        std::fs::read_to_string(&path)
            .expect("read")
            .lines()
            .count(),
        1
    );
    let mut m = Driven::boxed(login::start(&ctx), &ctx);
    assert_eq!(m.step(Some(b"hashed")), challenge("Password:"));
    assert_eq!(m.step(Some(b"password")), ok("hashed"));
    for hash in [ScramHash::Sha256, ScramHash::Sha1] {
        let mut m = start(&ctx, hash, false);
        let got = exchange(m.as_mut(), hash, "n,,", "hashed", "password");
        assert_eq!(got, ok("hashed"), "{hash:?}");
    }
    assert_eq!(
        std::fs::read_to_string(&path)
            .expect("read")
            .lines()
            .count(),
        3
    );
}
