//! Transcript tests of the NTLM mechanism: the MS-NLMP §4.2 examples, every response variant,
//! the user-name mapping and malformed messages.

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use super::message::{Authenticate, Challenge, Negotiate, av, flags};
use super::*;
use crate::sasl::Options;
use crate::sasl::testing::{Driven, TestContext, test_context};

// MS-NLMP §4.2.1: the examples' user is User / Password; the server challenge is fixed.
const USERS: &str = "user:{PLAIN}Password\n\
                     alice:{PLAIN}wonderland\n\
                     bob@corp.test:{PLAIN}builder\n\
                     ntonly:{NTLM}a4f49c406510bdcab6824ee7c30fd852\n\
                     hashed:{ARGON2ID}$argon2id$v=19$m=256,t=2,p=1$c29tZXNhbHQ$\
                     nf65EOgLrQMR/uIPnA4rEsF5h7TKyQwu9U1bMCHGi/4\n";
const SERVER_CHALLENGE: [u8; 8] = [0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef];
const CLIENT_CHALLENGE: [u8; 8] = [0xaa; 8];
const HOST: &str = "mail.example.test";

/// An exchange driven as the session driver drives it.
fn new(ctx: &TestContext) -> Box<dyn Mechanism> {
    Driven::boxed(Box::new(Ntlm::new(ctx)), ctx)
}

fn h(text: &str) -> Vec<u8> {
    hex::decode(text.split_whitespace().collect::<String>()).expect("test hex")
}

fn context(domain: &str, v1: bool) -> TestContext {
    let mut ctx = test_context(USERS, "n", HOST);
    ctx.options = Arc::new(Options {
        ntlm_domain: domain.to_owned(),
        ntlm_v1: v1,
        ..Options::default()
    });
    ctx.random[..8].copy_from_slice(&SERVER_CHALLENGE);
    ctx.now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    ctx
}

fn negotiate(unicode: bool) -> Vec<u8> {
    let charset = if unicode { flags::UNICODE } else { flags::OEM };
    Negotiate {
        flags: charset | flags::NTLM | flags::REQUEST_TARGET | flags::EXTENDED_SESSIONSECURITY,
        ..Negotiate::default()
    }
    .encode()
}

/// The final step of an exchange and the variant that verified.
type Outcome = (Step, Option<&'static str>);

/// Runs NEGOTIATE (as initial response) and the given AUTHENTICATE.
fn exchange(ctx: &TestContext, unicode: bool, authenticate: &[u8]) -> Outcome {
    let mut m = new(ctx);
    assert!(matches!(
        m.step(Some(&negotiate(unicode))),
        Step::Challenge(_)
    ));
    let step = m.step(Some(authenticate));
    (step, m.detail())
}

fn nt_hash(password: &str) -> [u8; 16] {
    crate::auth::UserStore::parse(&format!("x:{{PLAIN}}{password}\n"), "t")
        .expect("users")
        .nt_hash("x")
        .expect("hash")
        .expose()
        .try_into()
        .expect("16 bytes")
}

/// An NTLMv2 AUTHENTICATE for `user` / `domain` / `password` (blob with time 0 and the
/// examples' target info), with an LMv2 response too.
fn v2(user: &str, domain: &str, password: &str, unicode: bool) -> Authenticate {
    let key = crypto::nt_owf_v2(&nt_hash(password), user, domain);
    let blob = [
        &[1, 1, 0, 0, 0, 0, 0, 0][..],
        &[0; 8],
        &CLIENT_CHALLENGE,
        &[0; 4],
        &message::target_info(&[(av::NB_DOMAIN_NAME, b"D\0")]),
        &[0; 4],
    ]
    .concat();
    let proof = crypto::nt_proof(&key, &SERVER_CHALLENGE, &blob);
    Authenticate {
        lm_response: crypto::lmv2_response(&key, &SERVER_CHALLENGE, &CLIENT_CHALLENGE).to_vec(),
        nt_response: [&proof[..], &blob].concat(),
        domain: message::encode_string(domain, unicode),
        user: message::encode_string(user, unicode),
        workstation: message::encode_string("WS", unicode),
        session_key: Vec::new(),
        flags: Some(if unicode { flags::UNICODE } else { flags::OEM }),
    }
}

fn v1(lm: Vec<u8>, nt: Vec<u8>) -> Vec<u8> {
    Authenticate {
        lm_response: lm,
        nt_response: nt,
        domain: message::encode_string("Domain", true),
        user: message::encode_string("User", true),
        workstation: message::encode_string("COMPUTER", true),
        session_key: Vec::new(),
        flags: Some(flags::UNICODE | flags::NTLM),
    }
    .encode()
}

fn ok(user: &str) -> Step {
    Step::Success(Identity::new(user))
}

fn bad() -> Step {
    Step::Failure(Failure::BadCredentials)
}

#[test]
fn challenge_carries_fresh_challenge_names_and_timestamp() {
    let ctx = context("EXAMPLE", false);
    let mut m = new(&ctx);
    assert_eq!(m.step(None), Step::Challenge(Vec::new()));
    let Step::Challenge(bytes) = m.step(Some(&negotiate(true))) else {
        panic!("no challenge");
    };
    let c = Challenge::parse(&bytes).expect("parses");
    assert_eq!(c.server_challenge, SERVER_CHALLENGE);
    for f in [
        flags::UNICODE,
        flags::NTLM,
        flags::TARGET_INFO,
        flags::EXTENDED_SESSIONSECURITY,
    ] {
        assert_ne!(c.flags & f, 0, "flag {f:#x}");
    }
    for f in [flags::OEM, flags::LM_KEY, flags::SIGN, flags::SEAL] {
        assert_eq!(c.flags & f, 0, "flag {f:#x}");
    }
    assert_eq!(
        message::decode_string(&c.target_name, true),
        Ok("EXAMPLE".into())
    );
    let pairs = message::parse_target_info(&c.target_info).expect("target info");
    let text = |id| {
        let (_, v) = pairs.iter().find(|(i, _)| *i == id).expect("pair present");
        message::decode_string(v, true).expect("utf-16")
    };
    assert_eq!(text(av::NB_DOMAIN_NAME), "EXAMPLE");
    assert_eq!(text(av::NB_COMPUTER_NAME), "MAIL");
    assert_eq!(text(av::DNS_DOMAIN_NAME), "example.test");
    assert_eq!(text(av::DNS_COMPUTER_NAME), HOST);
    let (_, stamp) = pairs
        .iter()
        .find(|(i, _)| *i == av::TIMESTAMP)
        .expect("timestamp");
    let want = 116_444_736_000_000_000u64 + 1_700_000_000 * 10_000_000;
    assert_eq!(*stamp, want.to_le_bytes());

    // OEM-only clients get OEM strings; the challenge differs per attempt.
    let env = crate::sasl::Environment::basic(ctx.auth.clone(), HOST, "s", [3; 32]);
    let mut m = new(&TestContext {
        ctx: env.context(2),
        ..ctx.clone()
    });
    let Step::Challenge(bytes) = m.step(Some(&negotiate(false))) else {
        panic!("no challenge");
    };
    let c2 = Challenge::parse(&bytes).expect("parses");
    assert_eq!(c2.flags & (flags::OEM | flags::UNICODE), flags::OEM);
    assert_eq!(
        c2.target_name, b"MAIL",
        "default domain: the host's first label"
    );
    assert_ne!(c2.server_challenge, SERVER_CHALLENGE);
    let mut again = new(&TestContext {
        ctx: env.context(3),
        ..ctx.clone()
    });
    let Step::Challenge(bytes) = again.step(Some(&negotiate(false))) else {
        panic!("no challenge");
    };
    assert_ne!(
        Challenge::parse(&bytes).expect("parses").server_challenge,
        c2.server_challenge
    );
}

#[test]
fn ms_nlmp_4_2_4_ntlmv2_message_verifies() {
    let spec = super::message::tests::spec_authenticate();
    let ctx = context("DOMAIN", false);
    assert_eq!(exchange(&ctx, true, &spec), (ok("user"), Some("NTLMv2")));
    // A wrong server challenge, or a domain that is not ours, fails.
    let mut other = context("DOMAIN", false);
    other.random[0] ^= 1;
    // A failure is recorded as the variant the client attempted.
    assert_eq!(exchange(&other, true, &spec), (bad(), Some("NTLMv2")));
    assert_eq!(
        exchange(&context("ELSEWHERE", false), true, &spec),
        (bad(), Some("NTLMv2"))
    );
    // NTOWFv2 covers the user name: the same proof for "ntonly", whose password is the same,
    // fails.
    let mut renamed = Authenticate::parse(&spec).expect("spec parses");
    renamed.user = message::encode_string("ntonly", true);
    assert_eq!(
        exchange(&ctx, true, &renamed.encode()),
        (bad(), Some("NTLMv2"))
    );
}

#[test]
fn lmv2_is_the_fallback() {
    let ctx = context("DOMAIN", false);
    let spec = Authenticate::parse(&super::message::tests::spec_authenticate()).expect("parses");
    // A damaged NTLMv2 response: the LMv2 response (MS-NLMP §4.2.4.2.1) still verifies.
    let mut damaged = spec.clone();
    damaged.nt_response[20] ^= 0xff;
    assert_eq!(
        exchange(&ctx, true, &damaged.encode()),
        (ok("user"), Some("LMv2"))
    );
    // No NT response at all: LMv2 alone.
    let mut lm_only = spec.clone();
    lm_only.nt_response.clear();
    assert_eq!(
        exchange(&ctx, true, &lm_only.encode()),
        (ok("user"), Some("LMv2"))
    );
    // Both damaged.
    damaged.lm_response[0] ^= 1;
    assert_eq!(
        exchange(&ctx, true, &damaged.encode()),
        (bad(), Some("NTLMv2"))
    );
}

#[test]
fn ntlmv1_only_when_enabled_and_lm_never() {
    // MS-NLMP §4.2.2.2: NTLMv1 and LMv1 responses of Password to the server challenge.
    let nt = h("67 c4 30 11 f3 02 98 a2 ad 35 ec e6 4f 16 33 1c 44 bd be d9 27 84 1f 94");
    let lm = h("98 de f7 b8 7f 88 aa 5d af e2 df 77 96 88 a1 72 de f1 1c 7d 5c cd ef 13");
    // MS-NLMP §4.2.3.2: NTLMv1 with extended session security.
    let ess_nt = h("75 37 f8 03 ae 36 71 28 ca 45 82 04 bd e7 ca f8 1e 97 ed 26 83 26 72 32");
    let ess_lm = [CLIENT_CHALLENGE.to_vec(), vec![0; 16]].concat();
    let refused = || Step::Failure(Failure::Unavailable(V1_REFUSED));
    let off = context("DOMAIN", false);
    let on = context("DOMAIN", true);
    let cases: Vec<(&TestContext, Vec<u8>, Outcome)> = vec![
        // Refused, but recorded as what it was: the weakest legacy class.
        (
            &off,
            v1(lm.clone(), nt.clone()),
            (refused(), Some("NTLMv1")),
        ),
        (
            &off,
            v1(ess_lm.clone(), ess_nt.clone()),
            (refused(), Some("NTLMv1-ESS")),
        ),
        (
            &on,
            v1(lm.clone(), nt.clone()),
            (ok("user"), Some("NTLMv1")),
        ),
        (
            &on,
            v1(Vec::new(), nt.clone()),
            (ok("user"), Some("NTLMv1")),
        ),
        // Windows with LM disabled repeats the NT response in the LM field.
        (
            &on,
            v1(nt.clone(), nt.clone()),
            (ok("user"), Some("NTLMv1")),
        ),
        (
            &on,
            v1(ess_lm.clone(), ess_nt.clone()),
            (ok("user"), Some("NTLMv1-ESS")),
        ),
        // The ESS response checked as plain NTLMv1, and the other way round, fails.
        (&on, v1(lm.clone(), ess_nt.clone()), (bad(), Some("NTLMv1"))),
        (
            &on,
            v1(ess_lm.clone(), nt.clone()),
            (bad(), Some("NTLMv1-ESS")),
        ),
        // LM responses never verify: alone, or standing in for the NT response.
        (&on, v1(lm.clone(), Vec::new()), (bad(), Some("LMv2"))),
        (&on, v1(lm.clone(), lm.clone()), (bad(), Some("NTLMv1"))),
        (&on, v1(Vec::new(), lm.clone()), (bad(), Some("NTLMv1"))),
    ];
    for (i, (ctx, msg, want)) in cases.into_iter().enumerate() {
        assert_eq!(exchange(ctx, true, &msg), want, "case {i}");
    }
}

#[test]
fn user_names_map_to_mailboxes() {
    let ctx = context("EXAMPLE", false);
    let cases: &[(&str, &str, &str, Step)] = &[
        ("alice", "", "wonderland", ok("alice")),
        ("Alice", "", "wonderland", ok("alice")),
        ("alice", "", "wrong", bad()),
        ("alice", "EXAMPLE", "wonderland", ok("alice")),
        ("alice", "example", "wonderland", ok("alice")),
        ("alice", "MAIL", "wonderland", ok("alice")),
        ("alice", "example.test", "wonderland", ok("alice")),
        ("alice", "mail.example.test", "wonderland", ok("alice")),
        ("alice", "OTHER", "wonderland", bad()),
        ("EXAMPLE\\alice", "", "wonderland", ok("alice")),
        ("example.test\\alice", "", "wonderland", ok("alice")),
        ("OTHER\\alice", "", "wonderland", bad()),
        ("EXAMPLE\\alice", "EXAMPLE", "wonderland", bad()),
        ("\\alice", "", "wonderland", ok("alice")),
        ("alice@example.test", "", "wonderland", ok("alice")),
        ("alice@MAIL.example.test", "", "wonderland", ok("alice")),
        ("alice@other.test", "", "wonderland", bad()),
        ("bob@corp.test", "", "builder", ok("bob@corp.test")),
        ("BOB@corp.test", "EXAMPLE", "builder", ok("bob@corp.test")),
        ("bob", "", "builder", bad()),
        ("nobody", "", "wonderland", bad()),
        ("@example.test", "", "wonderland", bad()),
        (
            "hashed",
            "",
            "password",
            Step::Failure(Failure::Unavailable(
                "NTLM needs a {PLAIN} or {NTLM} stored form",
            )),
        ),
    ];
    for unicode in [true, false] {
        for (user, domain, password, want) in cases {
            let msg = v2(user, domain, password, unicode).encode();
            let (got, _) = exchange(&ctx, unicode, &msg);
            assert_eq!(got, *want, "{user:?} / {domain:?} (unicode {unicode})");
        }
    }
    // The NT hash may be stored in the {NTLM} form only.
    let msg = v2("ntonly", "", "Password", true).encode();
    assert_eq!(exchange(&ctx, true, &msg), (ok("ntonly"), Some("NTLMv2")));
    // Non-ASCII names: Unicode, and OEM as UTF-8.
    let store = "j\u{fc}rgen:{PLAIN}pw\n";
    let mut ctx = test_context(store, "n", HOST);
    ctx.random[..8].copy_from_slice(&SERVER_CHALLENGE);
    for unicode in [true, false] {
        let msg = v2("J\u{fc}rgen", "", "pw", unicode).encode();
        assert_eq!(exchange(&ctx, unicode, &msg).0, ok("j\u{fc}rgen"));
    }
}

#[test]
fn claimed_user_is_reported() {
    let ctx = context("EXAMPLE", false);
    let mut m = new(&ctx);
    m.step(Some(&negotiate(true)));
    assert_eq!(m.user(), None);
    assert_eq!(
        m.step(Some(&v2("EXAMPLE\\Alice", "", "x", true).encode())),
        bad()
    );
    assert_eq!(m.user(), Some("Alice"));
    assert_eq!(m.detail(), Some("NTLMv2"), "what the client attempted");
}

#[test]
fn malformed_and_out_of_order_messages() {
    let ctx = context("DOMAIN", true);
    let good = v2("alice", "", "wonderland", true);
    let with = |f: &dyn Fn(&mut Authenticate)| {
        let mut a = good.clone();
        f(&mut a);
        a.encode()
    };
    let spec = super::message::tests::spec_authenticate();
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (spec[..40].to_vec(), "truncated"),
        (spec[..spec.len() - 1].to_vec(), "out of bounds"),
        (negotiate(true), "expected an NTLM AUTHENTICATE message"),
        (b"hello".to_vec(), "truncated"),
        (b"NTLMSSP\0\x03\0\0\0".to_vec(), "truncated"),
        (
            with(&|a| a.nt_response.truncate(10)),
            "NT response has an invalid length",
        ),
        (
            with(&|a| a.nt_response.truncate(43)),
            "NT response has an invalid length",
        ),
        (
            with(&|a| a.lm_response.truncate(8)),
            "LM response has an invalid length",
        ),
        (with(&|a| a.user.push(b'x')), "odd length"),
        (with(&|a| a.domain = vec![0x00, 0xdc]), "not valid UTF-16"),
        (
            with(&|a| a.user = message::encode_string(&"a".repeat(256), true)),
            "too long",
        ),
    ];
    for (msg, want) in cases {
        match exchange(&ctx, true, &msg).0 {
            Step::Failure(Failure::Malformed(why)) => assert!(why.contains(want), "{why}"),
            other => panic!("{want}: {other:?}"),
        }
    }
    // Anonymous AUTHENTICATE (empty user, empty or one-byte responses) is refused.
    let anonymous = Authenticate {
        lm_response: vec![0],
        ..Authenticate::default()
    };
    let mut m = new(&ctx);
    assert!(matches!(m.step(Some(&negotiate(true))), Step::Challenge(_)));
    assert_eq!(m.step(Some(&anonymous.encode())), bad());
    assert_eq!(m.user(), None, "no user name to throttle");
    // Out of order: AUTHENTICATE first, an empty message, nothing, restepping.
    let mut m = new(&ctx);
    let Step::Failure(Failure::Malformed(why)) = m.step(Some(&good.encode())) else {
        panic!("AUTHENTICATE before NEGOTIATE must be malformed");
    };
    assert!(why.contains("NEGOTIATE"), "{why}");
    let mut m = new(&ctx);
    assert_eq!(m.step(Some(b"")), malformed("NTLM message truncated"));
    let mut m = new(&ctx);
    assert_eq!(m.step(None), Step::Challenge(Vec::new()));
    assert_eq!(m.step(None), malformed("missing client response"));
    assert_eq!(m.step(Some(b"x")), malformed("exchange already finished"));
    let mut m = new(&ctx);
    assert!(matches!(m.step(Some(&negotiate(true))), Step::Challenge(_)));
    assert_eq!(m.step(Some(&good.encode())), ok("alice"));
    assert_eq!(
        m.step(Some(&good.encode())),
        malformed("exchange already finished")
    );
}

#[test]
fn every_truncation_and_bit_flip_is_handled() {
    let ctx = context("DOMAIN", true);
    let good = v2("alice", "", "wonderland", true).encode();
    for cut in 0..good.len() {
        let (step, _) = exchange(&ctx, true, &good[..cut]);
        assert!(matches!(step, Step::Failure(_)), "cut at {cut}: {step:?}");
    }
    for i in 0..good.len() {
        for bit in [0x01, 0x80] {
            let mut msg = good.clone();
            msg[i] ^= bit;
            // Either refused or, where the flipped bit is outside what is verified (the
            // workstation, unused header bits), accepted as alice; never anything else.
            match exchange(&ctx, true, &msg).0 {
                Step::Failure(_) => {}
                Step::Success(id) => assert_eq!(id.user, "alice", "byte {i} bit {bit}"),
                other => panic!("byte {i} bit {bit}: {other:?}"),
            }
        }
    }
}
