//! Transcript tests for the POP3 session: lines in, replies and actions out, no IO.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use md5::{Digest, Md5};

use super::*;
use crate::auth::{Authenticator, Verdict};
use crate::maildir::{Mailbox, MailboxError, MessageInfo};
use crate::sasl::{Context, Descriptor, Failure, Identity, Mechanism, Step};

const TIMESTAMP: &str = "<1896.697170952@dbc.mtview.ca.us>";

/// Users: `alice`/`secret` (also reachable as `ALICE`), `broken` (no usable stored form).
struct TestAuth;

impl TestAuth {
    fn canonical(user: &str) -> Option<String> {
        match user.to_ascii_lowercase().as_str() {
            "alice" => Some("alice".into()),
            "broken" => Some("broken".into()),
            _ => None,
        }
    }
}

impl Authenticator for TestAuth {
    fn verify_password(&self, user: &str, password: &[u8]) -> Verdict {
        match Self::canonical(user).as_deref() {
            Some("broken") => Verdict::Unavailable("no usable hash"),
            Some(u) if password == b"secret" => Verdict::Ok(u.into()),
            _ => Verdict::BadCredentials,
        }
    }

    fn verify_cram_md5(&self, _: &str, _: &[u8], _: &[u8]) -> Verdict {
        Verdict::BadCredentials
    }

    fn verify_apop(&self, user: &str, timestamp: &[u8], digest: &[u8]) -> Verdict {
        let Some(u) = Self::canonical(user) else {
            return Verdict::BadCredentials;
        };
        if digest == apop_digest(timestamp, b"secret").as_bytes() {
            Verdict::Ok(u)
        } else {
            Verdict::BadCredentials
        }
    }

    fn lookup(&self, user: &str) -> Option<String> {
        Self::canonical(user)
    }
}

fn apop_digest(timestamp: &[u8], password: &[u8]) -> String {
    let mut md5 = Md5::new();
    md5.update(timestamp);
    md5.update(password);
    hex::encode(md5.finalize())
}

/// A test mechanism: without an initial response it challenges with the context nonce; the
/// response is `user NUL password`, checked through the authenticator.
struct XTest {
    nonce: String,
    challenged: bool,
}

impl Mechanism for XTest {
    fn step(&mut self, input: Option<&[u8]>) -> Step {
        let Some(input) = input else {
            if self.challenged {
                return Step::Failure(Failure::Malformed("missing response"));
            }
            self.challenged = true;
            return Step::Challenge(self.nonce.clone().into_bytes());
        };
        if input.is_empty() {
            return Step::Failure(Failure::Malformed("empty response"));
        }
        let Some(sep) = input.iter().position(|&b| b == 0) else {
            return Step::Failure(Failure::Malformed("no separator"));
        };
        let Ok(user) = std::str::from_utf8(&input[..sep]) else {
            return Step::Failure(Failure::Malformed("user not UTF-8"));
        };
        Step::Verify(crate::sasl::Check::Password {
            user: user.to_owned(),
            password: crate::auth::Secret::new(input[sep + 1..].to_vec()),
            authzid: None,
        })
    }

    fn resume(&mut self, answer: crate::sasl::Answer) -> Step {
        match answer.into_verdict() {
            Verdict::Ok(user) => Step::Success(Identity::new(user)),
            Verdict::BadCredentials => Step::Failure(Failure::BadCredentials),
            Verdict::Unavailable(why) => Step::Failure(Failure::Unavailable(why)),
            Verdict::Temporary(why) => Step::Failure(Failure::Temporary(why)),
        }
    }
}

/// Feeds `line` as the connection loop does: a credential check the machine asks for is
/// answered at once from the session's users.
fn drive(s: &mut Session, line: &[u8]) -> Output {
    let mut out = s.handle_line(line);
    while let Action::Verify(check) = out.action.clone() {
        let answer = crate::sasl::answer(&*s.settings().sasl.auth, check);
        out = s.handle_verified(answer);
    }
    out
}

fn start_xtest(ctx: &Context) -> Box<dyn Mechanism> {
    Box::new(XTest {
        nonce: ctx.nonce.clone(),
        challenged: false,
    })
}

static XTEST: Descriptor = Descriptor {
    name: "XTEST",
    plaintext: false,
    channel_binding: false,
    bearer_token: false,
    client_certificate: false,
    initial_response_verifies: true,
    kerberos: false,
    start: start_xtest,
};
static XPLAIN: Descriptor = Descriptor {
    name: "XPLAIN",
    plaintext: true,
    channel_binding: false,
    bearer_token: false,
    client_certificate: false,
    initial_response_verifies: true,
    kerberos: false,
    start: start_xtest,
};

/// The nonce of SASL attempt `k` in these tests' environment.
fn nonce(k: u32) -> String {
    settings(false).sasl.context(k).nonce
}

fn settings(plaintext_allowed: bool) -> Settings {
    Settings {
        hostname: "mx.example".into(),
        sasl: crate::sasl::Environment::basic(Arc::new(TestAuth), "mx.example", "n0nce", [1; 32]),
        mechanisms: vec![&XPLAIN, &XTEST],
        plaintext_allowed,
        stls_available: true,
        tls_active: false,
        apop_timestamp: Some(TIMESTAMP.into()),
        max_failures: 3,
        max_errors: 0,
        policy: Arc::new(crate::policy::Policy::default()),
        listener: "pop3",
        peer: "192.0.2.7".parse().expect("ip"),
        tls_info: None,
        tls_legacy: false,
    }
}

fn mailbox() -> Mailbox {
    let msg = |uid: &str, size| MessageInfo {
        uid: uid.into(),
        size,
        path: PathBuf::from(format!("/m/cur/{uid}:2,")),
    };
    Mailbox {
        messages: vec![msg("u1", 120), msg("u2", 200), msg("u3", 30)].into(),
    }
}

fn wire(out: &Output) -> String {
    String::from_utf8(out.reply.to_bytes()).unwrap()
}

/// Feeds `line` and checks the exact reply bytes and the action.
#[track_caller]
fn check(s: &mut Session, line: &str, reply: &str, action: Action) -> Output {
    let out = drive(s, line.as_bytes());
    assert_eq!(wire(&out), reply, "reply to {line:?}");
    assert_eq!(out.action, action, "action for {line:?}");
    out
}

/// The action of a failed login.
fn failed(user: Option<&str>, note: &'static str, close: bool) -> Action {
    Action::AuthFailed {
        user: user.map(str::to_owned),
        note,
        close,
    }
}

fn ok_continue(s: &mut Session, line: &str, reply: &str) {
    check(s, line, reply, Action::Continue);
}

fn open(user: &str, method: &str) -> Action {
    Action::OpenMailbox {
        user: user.into(),
        method: method.into(),
    }
}

/// A session logged in as alice over USER/PASS with [`mailbox`] open.
fn logged_in() -> Session {
    let mut s = Session::new(settings(true));
    ok_continue(&mut s, "USER alice", "+OK send PASS\r\n");
    check(&mut s, "PASS secret", "", open("alice", "USER"));
    let out = s.handle_mailbox(Ok(mailbox()));
    assert_eq!(wire(&out), "+OK maildrop has 3 messages (350 octets)\r\n");
    s
}

#[test]
fn greeting_carries_the_apop_timestamp_when_offered() {
    let s = Session::new(settings(true));
    assert_eq!(
        s.greeting().to_bytes(),
        format!("+OK mailgate ready {TIMESTAMP}\r\n").as_bytes()
    );
    let s = Session::new(Settings {
        apop_timestamp: None,
        ..settings(true)
    });
    assert_eq!(s.greeting().to_bytes(), b"+OK mailgate ready\r\n");
}

#[test]
fn transaction_commands_and_deletion_only_on_quit() {
    let mut s = logged_in();
    ok_continue(&mut s, "STAT", "+OK 3 350\r\n");
    ok_continue(
        &mut s,
        "LIST",
        "+OK 3 messages (350 octets)\r\n1 120\r\n2 200\r\n3 30\r\n.\r\n",
    );
    ok_continue(&mut s, "LIST 2", "+OK 2 200\r\n");
    ok_continue(&mut s, "LIST 4", "-ERR no such message\r\n");
    ok_continue(&mut s, "LIST 0", "-ERR no such message\r\n");
    ok_continue(
        &mut s,
        "UIDL",
        "+OK unique-id listing follows\r\n1 u1\r\n2 u2\r\n3 u3\r\n.\r\n",
    );
    ok_continue(&mut s, "uidl 3", "+OK 3 u3\r\n");
    let path = |uid: &str| PathBuf::from(format!("/m/cur/{uid}:2,"));
    check(
        &mut s,
        "RETR 1",
        "+OK 120 octets\r\n",
        Action::SendMessage {
            path: path("u1"),
            top: None,
        },
    );
    check(
        &mut s,
        "TOP 2 5",
        "+OK top of message follows\r\n",
        Action::SendMessage {
            path: path("u2"),
            top: Some(5),
        },
    );
    ok_continue(&mut s, "DELE 1", "+OK message 1 deleted\r\n");
    ok_continue(&mut s, "DELE 1", "-ERR message already deleted\r\n");
    ok_continue(&mut s, "STAT", "+OK 2 230\r\n");
    ok_continue(
        &mut s,
        "LIST",
        "+OK 2 messages (230 octets)\r\n2 200\r\n3 30\r\n.\r\n",
    );
    ok_continue(
        &mut s,
        "UIDL",
        "+OK unique-id listing follows\r\n2 u2\r\n3 u3\r\n.\r\n",
    );
    ok_continue(&mut s, "LIST 1", "-ERR message already deleted\r\n");
    ok_continue(&mut s, "RETR 1", "-ERR message already deleted\r\n");
    ok_continue(&mut s, "TOP 1 0", "-ERR message already deleted\r\n");
    ok_continue(
        &mut s,
        "RSET",
        "+OK maildrop has 3 messages (350 octets)\r\n",
    );
    ok_continue(&mut s, "STAT", "+OK 3 350\r\n");
    ok_continue(&mut s, "DELE 2", "+OK message 2 deleted\r\n");
    ok_continue(&mut s, "DELE 3", "+OK message 3 deleted\r\n");
    ok_continue(&mut s, "NOOP", "+OK\r\n");
    ok_continue(&mut s, "USER bob", "-ERR already authenticated\r\n");
    ok_continue(&mut s, "STLS", "-ERR already authenticated\r\n");
    ok_continue(&mut s, "XYZZ", "-ERR unknown command\r\n");
    check(
        &mut s,
        "QUIT",
        "",
        Action::Commit {
            delete: vec![path("u2"), path("u3")],
        },
    );
    // Lines that arrive while the loop removes files are refused.
    check(&mut s, "STAT", "-ERR session closed\r\n", Action::Close);
    let out = s.handle_commit(true);
    assert_eq!(wire(&out), "+OK mailgate signing off (1 messages left)\r\n");
    assert_eq!((out.action.clone(), out.closes()), (Action::Close, true));
    assert!(s.is_done());
}

#[test]
fn quit_without_deletions_commits_nothing_and_failed_commit_is_reported() {
    let mut s = logged_in();
    check(&mut s, "QUIT", "", Action::Commit { delete: vec![] });
    assert_eq!(
        wire(&s.handle_commit(true)),
        "+OK mailgate signing off (3 messages left)\r\n"
    );

    let mut s = logged_in();
    ok_continue(&mut s, "DELE 1", "+OK message 1 deleted\r\n");
    ok_continue(&mut s, "DELE 2", "+OK message 2 deleted\r\n");
    ok_continue(&mut s, "DELE 3", "+OK message 3 deleted\r\n");
    ok_continue(&mut s, "STAT", "+OK 0 0\r\n");
    ok_continue(&mut s, "LIST", "+OK 0 messages (0 octets)\r\n.\r\n");
    let out = check(
        &mut s,
        "quit",
        "",
        Action::Commit {
            delete: mailbox().messages.iter().map(|m| m.path.clone()).collect(),
        },
    );
    assert!(!out.closes());
    let out = s.handle_commit(false);
    assert_eq!(wire(&out), "-ERR some deleted messages not removed\r\n");
    assert_eq!(out.action, Action::Close);
}

#[test]
fn quit_in_authorization_closes_without_commit() {
    let mut s = Session::new(settings(true));
    ok_continue(&mut s, "USER alice", "+OK send PASS\r\n");
    let out = check(
        &mut s,
        "QUIT",
        "+OK mailgate signing off\r\n",
        Action::Close,
    );
    assert!(out.closes());
    check(&mut s, "NOOP", "-ERR session closed\r\n", Action::Close);
}

#[test]
fn maildrop_errors_return_to_authorization() {
    let mut s = Session::new(settings(true));
    ok_continue(&mut s, "USER ALICE", "+OK send PASS\r\n");
    // The canonical name from the authenticator names the maildrop.
    check(&mut s, "PASS secret", "", open("alice", "USER"));
    ok_continue(&mut s, "STAT", "-ERR maildrop not open yet\r\n");
    let out = s.handle_mailbox(Err(MailboxError::InUse));
    assert_eq!(wire(&out), "-ERR [IN-USE] maildrop already locked\r\n");
    assert_eq!(out.action, Action::Continue);
    ok_continue(&mut s, "STAT", "-ERR not authenticated\r\n");

    ok_continue(&mut s, "USER alice", "+OK send PASS\r\n");
    check(&mut s, "PASS secret", "", open("alice", "USER"));
    let out = s.handle_mailbox(Err(MailboxError::Io(io::Error::other("disk"))));
    assert_eq!(wire(&out), "-ERR [SYS/TEMP] unable to open maildrop\r\n");
    ok_continue(&mut s, "USER alice", "+OK send PASS\r\n");
    check(&mut s, "PASS secret", "", open("alice", "USER"));
    let out = s.handle_mailbox(Ok(Mailbox::default()));
    assert_eq!(wire(&out), "+OK maildrop has 0 messages (0 octets)\r\n");

    // A result nobody asked for ends the session.
    let out = s.handle_mailbox(Ok(Mailbox::default()));
    assert_eq!(out.action, Action::Close);
}

#[test]
fn failures_are_counted_and_close_the_session_at_the_limit() {
    let mut s = Session::new(settings(true));
    ok_continue(&mut s, "USER alice", "+OK send PASS\r\n");
    check(
        &mut s,
        "PASS wrong",
        "-ERR [AUTH] invalid credentials\r\n",
        failed(Some("alice"), "invalid credentials", false),
    );
    // After a failed PASS the client must start over with USER.
    ok_continue(&mut s, "PASS secret", "-ERR send USER first\r\n");
    ok_continue(&mut s, "USER broken", "+OK send PASS\r\n");
    check(
        &mut s,
        "PASS x",
        "-ERR [AUTH] invalid credentials\r\n",
        failed(Some("broken"), "no usable hash", false),
    );
    let out = check(
        &mut s,
        "APOP nobody 00",
        "-ERR [AUTH] invalid credentials\r\n",
        failed(Some("nobody"), "invalid credentials", true),
    );
    assert!(out.closes());
    assert!(s.is_done());
    check(
        &mut s,
        "USER alice",
        "-ERR session closed\r\n",
        Action::Close,
    );
}

#[test]
fn max_failures_zero_closes_on_the_first_failure() {
    let mut s = Session::new(Settings {
        max_failures: 0,
        ..settings(true)
    });
    ok_continue(&mut s, "USER alice", "+OK send PASS\r\n");
    assert!(drive(&mut s, b"PASS wrong").closes());
}

#[test]
fn plaintext_needs_tls_and_capa_follows() {
    let mut s = Session::new(Settings {
        mechanisms: vec![&XPLAIN, &XTEST],
        ..settings(false)
    });
    ok_continue(
        &mut s,
        "CAPA",
        "+OK capability list follows\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\n\
         PIPELINING\r\nSASL XTEST\r\nSTLS\r\nIMPLEMENTATION mailgate\r\n.\r\n",
    );
    let refused = "-ERR [AUTH] plaintext authentication requires TLS (use STLS)\r\n";
    ok_continue(&mut s, "USER alice", refused);
    ok_continue(&mut s, "PASS secret", refused);
    ok_continue(&mut s, "AUTH XPLAIN", refused);
    ok_continue(&mut s, "AUTH", "+OK available mechanisms\r\nXTEST\r\n.\r\n");
    let out = check(
        &mut s,
        "STLS",
        "+OK begin TLS negotiation\r\n",
        Action::StartTls,
    );
    assert!(!out.closes());

    let tls = Settings {
        plaintext_allowed: true,
        tls_active: true,
        ..settings(false)
    };
    let mut s = s.after_tls(tls);
    ok_continue(
        &mut s,
        "CAPA",
        "+OK capability list follows\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\n\
         PIPELINING\r\nUSER\r\nSASL XPLAIN XTEST\r\nIMPLEMENTATION mailgate\r\n.\r\n",
    );
    ok_continue(&mut s, "STLS", "-ERR TLS already active\r\n");
    ok_continue(&mut s, "USER alice", "+OK send PASS\r\n");
    check(&mut s, "PASS secret", "", open("alice", "USER"));
    s.handle_mailbox(Ok(mailbox()));
    ok_continue(
        &mut s,
        "CAPA",
        "+OK capability list follows\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\n\
         PIPELINING\r\nIMPLEMENTATION mailgate\r\n.\r\n",
    );
}

#[test]
fn registry_mechanisms_are_gated_without_being_started() {
    let plain = sasl::find("PLAIN").unwrap();
    let cram = sasl::find("CRAM-MD5").unwrap();
    let base = Settings {
        mechanisms: vec![plain, cram],
        stls_available: false,
        ..settings(false)
    };
    let mut s = Session::new(base.clone());
    let out = drive(&mut s, b"CAPA");
    let lines = out.reply.lines().unwrap();
    assert!(lines.contains(&"SASL CRAM-MD5".to_string()), "{lines:?}");
    assert!(
        !lines.iter().any(|l| l == "USER" || l == "STLS"),
        "{lines:?}"
    );
    let refused = "-ERR [AUTH] plaintext authentication requires TLS\r\n";
    ok_continue(&mut s, "AUTH plain AGFsaWNlAHNlY3JldA==", refused);
    ok_continue(&mut s, "STLS", "-ERR STLS not available\r\n");

    let mut s = Session::new(Settings {
        plaintext_allowed: true,
        ..base
    });
    let out = drive(&mut s, b"CAPA");
    assert!(
        out.reply
            .lines()
            .unwrap()
            .contains(&"SASL PLAIN CRAM-MD5".to_string())
    );
    ok_continue(
        &mut s,
        "AUTH LOGIN",
        "-ERR [AUTH] unsupported authentication mechanism\r\n",
    );
}

#[test]
fn apop_logs_in_when_offered() {
    let mut s = Session::new(settings(false));
    let digest = apop_digest(TIMESTAMP.as_bytes(), b"secret");
    check(
        &mut s,
        &format!("APOP alice {digest}"),
        "",
        open("alice", "APOP"),
    );

    let mut s = Session::new(Settings {
        apop_timestamp: None,
        ..settings(true)
    });
    ok_continue(
        &mut s,
        &format!("APOP alice {digest}"),
        "-ERR APOP not available\r\n",
    );
}

#[test]
fn sasl_exchange_with_challenge() {
    let mut s = Session::new(settings(false));
    let challenge = format!("+ {}\r\n", BASE64.encode(nonce(1)));
    ok_continue(&mut s, "AUTH xtest", &challenge);
    assert_eq!(s.line_limit(), command::MAX_SASL_LINE_LEN);
    let response = BASE64.encode("alice\0secret");
    check(&mut s, &response, "", open("alice", "SASL XTEST"));
    let out = s.handle_mailbox(Ok(mailbox()));
    assert!(out.reply.is_ok());
    ok_continue(&mut s, "AUTH XTEST", "-ERR already authenticated\r\n");
}

#[test]
fn sasl_initial_response_cancel_and_errors() {
    let mut s = Session::new(settings(false));
    // Each attempt gets its own nonce.
    ok_continue(
        &mut s,
        "AUTH XTEST",
        &format!("+ {}\r\n", BASE64.encode(nonce(1))),
    );
    ok_continue(&mut s, "*", "-ERR authentication cancelled\r\n");
    ok_continue(
        &mut s,
        "AUTH XTEST",
        &format!("+ {}\r\n", BASE64.encode(nonce(2))),
    );
    ok_continue(
        &mut s,
        "not base64!",
        "-ERR invalid base64 in authentication exchange\r\n",
    );
    // The exchange is over: the next line is a command again.
    ok_continue(
        &mut s,
        "AUTH XTEST ???",
        "-ERR invalid base64 in authentication exchange\r\n",
    );
    ok_continue(
        &mut s,
        "AUTH NOPE",
        "-ERR [AUTH] unsupported authentication mechanism\r\n",
    );
    // "=" is an empty initial response, which this mechanism rejects as malformed.
    check(
        &mut s,
        "AUTH XTEST =",
        "-ERR malformed authentication exchange\r\n",
        failed(None, "empty response", false),
    );
    let bad = BASE64.encode("alice\0wrong");
    let out = check(
        &mut s,
        &format!("AUTH XTEST {bad}"),
        "-ERR [AUTH] invalid credentials\r\n",
        failed(None, "invalid credentials", false),
    );
    assert!(!out.closes());
    // Padding may be left off.
    let good = BASE64.encode("alice\0secret");
    let good = good.trim_end_matches('=');
    check(
        &mut s,
        &format!("AUTH XTEST {good}"),
        "",
        open("alice", "SASL XTEST"),
    );
}

#[test]
fn sasl_failure_counts_toward_the_limit() {
    let mut s = Session::new(Settings {
        max_failures: 1,
        ..settings(false)
    });
    ok_continue(
        &mut s,
        "AUTH XTEST",
        &format!("+ {}\r\n", BASE64.encode(nonce(1))),
    );
    let out = check(
        &mut s,
        &BASE64.encode("broken\0x"),
        "-ERR [AUTH] invalid credentials\r\n",
        failed(None, "no usable hash", true),
    );
    assert!(out.closes());
}

#[test]
fn wrong_state_unknown_and_overlong_lines() {
    let mut s = Session::new(settings(true));
    for line in [
        "STAT", "LIST", "UIDL 1", "RETR 1", "TOP 1 1", "DELE 1", "RSET", "NOOP",
    ] {
        ok_continue(&mut s, line, "-ERR not authenticated\r\n");
    }
    ok_continue(&mut s, "PASS secret", "-ERR send USER first\r\n");
    ok_continue(&mut s, "HELO x", "-ERR unknown command\r\n");
    ok_continue(&mut s, "", "-ERR empty command\r\n");
    ok_continue(&mut s, "USER", "-ERR missing argument: user name\r\n");

    let limit = s.line_limit();
    assert_eq!(limit, command::MAX_AUTH_LINE_LEN);
    let long = "A".repeat(limit + 1);
    ok_continue(&mut s, &long, "-ERR line too long\r\n");
    let out = s.handle_overlong();
    assert_eq!(
        (wire(&out), out.action),
        ("-ERR line too long\r\n".into(), Action::Continue)
    );

    // Overlong during SASL abandons the exchange.
    ok_continue(
        &mut s,
        "AUTH XTEST",
        &format!("+ {}\r\n", BASE64.encode(nonce(1))),
    );
    s.handle_overlong();
    ok_continue(
        &mut s,
        &BASE64.encode("alice\0secret"),
        "-ERR unknown command\r\n",
    );

    let mut s = logged_in();
    assert_eq!(s.line_limit(), command::MAX_LINE_LEN);
    ok_continue(
        &mut s,
        &format!("NOOP {}", "x".repeat(300)),
        "-ERR line too long\r\n",
    );
    ok_continue(&mut s, "RETR x", "-ERR invalid number\r\n");
    ok_continue(&mut s, "STAT", "+OK 3 350\r\n");

    let s = Session::new(Settings {
        mechanisms: vec![],
        ..settings(true)
    });
    assert_eq!(s.line_limit(), 5 + command::MAX_PASSWORD_LEN);
}

#[test]
fn debug_output_hides_secrets() {
    let mut s = Session::new(settings(true));
    drive(&mut s, b"USER alice");
    let shown = format!("{s:?} {:?}", settings(true));
    assert!(
        !shown.contains("secret") && !shown.contains("n0nce"),
        "{shown}"
    );
}

#[test]
fn user_is_known_only_after_authentication() {
    let mut s = Session::new(settings(true));
    drive(&mut s, b"USER ALICE");
    assert_eq!(s.user(), None);
    drive(&mut s, b"PASS secret");
    assert_eq!(s.user(), Some("alice"));
    s.handle_mailbox(Ok(mailbox()));
    assert_eq!(s.user(), Some("alice"));
    drive(&mut s, b"QUIT");
    assert_eq!(s.user(), None);
}

#[test]
fn too_many_bad_commands_close_the_session() {
    let mut s = Session::new(Settings {
        max_errors: 2,
        ..settings(false)
    });
    for _ in 0..2 {
        let out = drive(&mut s, b"BOGUS");
        assert!(out.reply.is_err() && out.action == Action::Continue);
    }
    let out = drive(&mut s, b"BOGUS");
    assert_eq!(out.action, Action::Close);
}

#[test]
fn client_hint_keeps_verbs_and_known_mechanisms_only_and_is_bounded() {
    let mut s = Session::new(settings(true));
    assert_eq!(s.client_hint(), None);
    drive(&mut s, b"CAPA");
    drive(&mut s, b"AUTH NOT-A-MECH");
    drive(&mut s, b"hunter2 password-alone");
    drive(&mut s, b"USER alice");
    drive(&mut s, b"PASS secret");
    assert_eq!(s.client_hint().as_deref(), Some("CAPA AUTH ? ? USER PASS"));
    // Commands after the login are not part of the hint.
    s.handle_mailbox(Ok(mailbox()));
    drive(&mut s, b"STAT");
    assert_eq!(s.client_hint().as_deref(), Some("CAPA AUTH ? ? USER PASS"));

    let mut s = Session::new(settings(true));
    for _ in 0..40 {
        drive(&mut s, b"NOOP");
    }
    let hint = s.client_hint().expect("hint");
    assert_eq!(hint.split(' ').count(), MAX_HINT_COMMANDS + 1, "{hint}");
    assert!(hint.ends_with(" ..."), "{hint}");
}
