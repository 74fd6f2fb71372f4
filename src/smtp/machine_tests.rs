//! Transcript tests for the SMTP machine: lines in, reply codes and actions out, no IO.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;

use super::*;
use crate::auth::UserStore;

const T0: SystemTime = SystemTime::UNIX_EPOCH;

fn settings(role: SmtpRole, plaintext_allowed: bool) -> Settings {
    let users = UserStore::parse(
        "alice:{PLAIN}pw\nbob:{PLAIN}pw\npostmaster:{PLAIN}pw\n",
        "test",
    )
    .expect("users");
    Settings {
        role,
        hostname: "mx.example.test".into(),
        peer: "192.0.2.7:40000".parse::<SocketAddr>().expect("addr"),
        tls_active: false,
        tls_info: None,
        tls_legacy: false,
        starttls_available: true,
        plaintext_allowed,
        trusted: false,
        pop_before_smtp: false,
        restrict_sender: false,
        sasl: sasl::Environment::basic(Arc::new(users), "mx.example.test", "n", [1; 32]),
        policy: Arc::new(crate::policy::Policy::default()),
        mechanisms: ["PLAIN", "LOGIN", "CRAM-MD5"]
            .iter()
            .filter_map(|m| sasl::find(m))
            .collect(),
        local_domains: Arc::new(vec!["example.test".into()]),
        route_unmigrated: false,
        max_message_size: 1000,
        max_recipients: 2,
        max_auth_failures: 3,
        max_errors: 10,
        queue: Default::default(),
    }
}

/// Feeds `line` and returns (code, action).
fn send(s: &mut Session, line: &str) -> (u16, Action) {
    let out = drive(s, T0, line.as_bytes());
    (out.reply.code, out.action)
}

/// Feeds `line` as the connection loop does: a credential check the machine asks for is
/// answered at once from the session's users.
fn drive(s: &mut Session, now: SystemTime, line: &[u8]) -> Output {
    let mut out = s.handle_line(now, line);
    while let Action::Verify(check) = out.action {
        let answer = crate::sasl::answer(&*s.settings().sasl.auth, check);
        out = s.handle_verified(answer);
    }
    out
}

fn code(s: &mut Session, line: &str) -> u16 {
    send(s, line).0
}

fn plain(user: &str, pass: &str) -> String {
    B64.encode(format!("\0{user}\0{pass}"))
}

fn ehlo_text(s: &mut Session) -> String {
    let out = drive(s, T0, b"EHLO client.example");
    assert_eq!(out.reply.code, 250);
    out.reply.lines.join("\n")
}

#[test]
fn sequence_errors() {
    let mut s = Session::new(settings(SmtpRole::Smtp, false));
    assert_eq!(s.greeting().code, 220);
    assert_eq!(code(&mut s, "MAIL FROM:<a@remote.example>"), 503);
    assert_eq!(code(&mut s, "HELO client"), 250);
    assert_eq!(code(&mut s, "RCPT TO:<alice@example.test>"), 503);
    assert_eq!(code(&mut s, "DATA"), 503);
    assert_eq!(
        code(&mut s, "AUTH PLAIN"),
        503,
        "AUTH needs EHLO (RFC 4954 §3)"
    );
    assert_eq!(code(&mut s, "NOOP"), 250);
    assert_eq!(code(&mut s, "VRFY alice"), 252);
    assert_eq!(code(&mut s, "FROB"), 500);
    assert_eq!(send(&mut s, "QUIT"), (221, Action::Close));
}

#[test]
fn ehlo_advertises_only_what_this_connection_may_use() {
    let mut s = Session::new(settings(SmtpRole::Submission, false));
    let text = ehlo_text(&mut s);
    for ext in [
        "PIPELINING",
        "SIZE 1000",
        "8BITMIME",
        "ENHANCEDSTATUSCODES",
        "STARTTLS",
    ] {
        assert!(text.contains(ext), "{ext}: {text}");
    }
    assert!(
        text.contains("AUTH CRAM-MD5") && !text.contains("PLAIN"),
        "{text}"
    );
    assert!(
        !text.contains("AUTH="),
        "no LOGIN offered, no legacy line: {text}"
    );

    let mut s = Session::new(settings(SmtpRole::Submission, true));
    let text = ehlo_text(&mut s);
    assert!(text.contains("AUTH PLAIN LOGIN CRAM-MD5"), "{text}");
    assert!(text.contains("AUTH=PLAIN LOGIN CRAM-MD5"), "{text}");
}

#[test]
fn plaintext_mechanisms_need_tls() {
    let mut s = Session::new(settings(SmtpRole::Submission, false));
    ehlo_text(&mut s);
    assert_eq!(
        code(&mut s, &format!("AUTH PLAIN {}", plain("alice", "pw"))),
        530
    );
    assert_eq!(code(&mut s, "AUTH LOGIN"), 530);
    let mut no_tls = settings(SmtpRole::Submission, false);
    no_tls.starttls_available = false;
    let mut s = Session::new(no_tls);
    ehlo_text(&mut s);
    assert_eq!(code(&mut s, "AUTH LOGIN"), 538);
}

#[test]
fn a_quoted_local_part_names_the_same_local_user() {
    // RFC 5321 §2.4: "alice" and alice are the same local part.
    let mut s = Session::new(settings(SmtpRole::Smtp, false));
    ehlo_text(&mut s);
    assert_eq!(code(&mut s, "MAIL FROM:<x@remote.example>"), 250);
    assert_eq!(code(&mut s, "RCPT TO:<\"alice\"@example.test>"), 250);
    assert_eq!(code(&mut s, "RCPT TO:<\"no body\"@example.test>"), 550);
    assert_eq!(send(&mut s, "DATA"), (354, Action::ReceiveData));
    let t = s.data_transaction().expect("transaction").clone();
    assert_eq!(t.recipients[0].local_user.as_deref(), Some("alice"));
}

#[test]
fn local_delivery_and_relay_refusal() {
    let mut s = Session::new(settings(SmtpRole::Smtp, false));
    ehlo_text(&mut s);
    assert_eq!(code(&mut s, "MAIL FROM:<x@remote.example>"), 250);
    assert_eq!(code(&mut s, "RCPT TO:<nobody@example.test>"), 550);
    assert_eq!(code(&mut s, "RCPT TO:<elsewhere@remote.example>"), 554);
    for trick in [
        "<\"x@remote.example\"@example.test>",
        "<x%remote.example@example.test>",
        "<remote.example!x@example.test>",
        "<@example.test:x@remote.example>",
        "<alice@[192.0.2.1]>",
    ] {
        let c = code(&mut s, &format!("RCPT TO:{trick}"));
        assert!(c >= 500, "{trick} got {c}");
    }
    assert_eq!(code(&mut s, "RCPT TO:<ALICE@Example.TEST>"), 250);
    assert_eq!(code(&mut s, "RCPT TO:<postmaster>"), 250);
    assert_eq!(
        code(&mut s, "RCPT TO:<bob@example.test>"),
        452,
        "max_recipients is 2"
    );
    assert_eq!(send(&mut s, "DATA"), (354, Action::ReceiveData));
    let t = s.data_transaction().expect("transaction").clone();
    assert_eq!(t.recipients[0].local_user.as_deref(), Some("alice"));
    assert_eq!(t.relay_authorization, None);
    let out = s.handle_data_end(DataOutcome::Queued("q1".into()));
    assert_eq!(out.reply.code, 250);
    assert_eq!(
        code(&mut s, "RCPT TO:<alice@example.test>"),
        503,
        "transaction ended"
    );
}

#[test]
fn submission_needs_authorization_then_relays() {
    let mut s = Session::new(settings(SmtpRole::Submission, true));
    ehlo_text(&mut s);
    assert_eq!(code(&mut s, "MAIL FROM:<alice@example.test>"), 530);
    let (c, action) = send(&mut s, &format!("AUTH PLAIN {}", plain("alice", "wrong")));
    assert_eq!(c, 535);
    assert!(matches!(action, Action::AuthFailed { .. }));
    let (c, action) = send(&mut s, &format!("AUTH PLAIN {}", plain("alice", "pw")));
    assert_eq!(c, 235);
    assert_eq!(
        action,
        Action::Authenticated {
            user: "alice".into(),
            mechanism: "PLAIN"
        }
    );
    assert_eq!(code(&mut s, "AUTH PLAIN"), 503, "AUTH twice");
    assert_eq!(code(&mut s, "MAIL FROM:<alice@example.test>"), 250);
    assert_eq!(code(&mut s, "RCPT TO:<friend@remote.example>"), 250);
    assert_eq!(send(&mut s, "DATA").0, 354);
    let t = s.data_transaction().expect("transaction");
    assert_eq!(t.recipients[0].local_user, None);
    assert_eq!(s.protocol_name(), "ESMTPA");
}

#[test]
fn auth_exchange_codes() {
    let mut s = Session::new(settings(SmtpRole::Submission, true));
    ehlo_text(&mut s);
    assert_eq!(code(&mut s, "AUTH NOPE"), 504);
    assert_eq!(code(&mut s, "AUTH PLAIN ***"), 501);
    assert_eq!(code(&mut s, "AUTH PLAIN *"), 501);
    assert_eq!(code(&mut s, "AUTH PLAIN"), 334);
    assert!(s.in_sasl());
    assert_eq!(code(&mut s, "*"), 501, "cancel");
    assert!(!s.in_sasl());
    assert_eq!(code(&mut s, "AUTH LOGIN"), 334);
    assert_eq!(code(&mut s, "not base64!"), 501);
    assert_eq!(code(&mut s, "AUTH LOGIN"), 334);
    let out = s.handle_overlong();
    assert_eq!(out.reply.code, 500);
    assert_eq!(out.reply.enhanced, Some((5, 5, 6)));
    assert!(!s.in_sasl());
    assert_eq!(
        code(&mut s, "MAIL FROM:<a@example.test>"),
        530,
        "state restored, still unauthorized"
    );
    assert_eq!(
        code(&mut s, &format!("AUTH LOGIN {}", B64.encode("alice"))),
        334
    );
    assert_eq!(code(&mut s, &B64.encode("pw")), 235);
}

#[test]
fn auth_inside_a_transaction_is_refused() {
    let mut s = Session::new(settings(SmtpRole::Smtp, true));
    ehlo_text(&mut s);
    assert_eq!(code(&mut s, "MAIL FROM:<a@remote.example>"), 250);
    assert_eq!(
        code(&mut s, &format!("AUTH PLAIN {}", plain("alice", "pw"))),
        503
    );
}

#[test]
fn too_many_auth_failures_close() {
    let mut s = Session::new(settings(SmtpRole::Submission, true));
    ehlo_text(&mut s);
    for _ in 0..2 {
        assert_eq!(
            code(&mut s, &format!("AUTH PLAIN {}", plain("alice", "x"))),
            535
        );
    }
    let (c, action) = send(&mut s, &format!("AUTH PLAIN {}", plain("alice", "x")));
    assert_eq!(c, 535);
    assert!(
        matches!(action, Action::AuthFailed { close: true, ref user, .. } if user.as_deref() == Some("alice")),
        "{action:?}"
    );
}

#[test]
fn too_many_errors_close() {
    let mut s = Session::new(settings(SmtpRole::Smtp, false));
    for _ in 0..10 {
        assert_eq!(code(&mut s, "BOGUS"), 500);
    }
    assert_eq!(send(&mut s, "BOGUS"), (421, Action::Close));
}

#[test]
fn starttls_resets_the_session() {
    let mut s = Session::new(settings(SmtpRole::Submission, false));
    ehlo_text(&mut s);
    assert_eq!(send(&mut s, "STARTTLS"), (220, Action::StartTls));
    let mut tls = settings(SmtpRole::Submission, true);
    tls.tls_active = true;
    tls.tls_info = Some("TLSv1.3 TLS13_AES_128_GCM_SHA256".into());
    let mut s = s.after_tls(tls);
    assert_eq!(
        code(&mut s, "MAIL FROM:<a@example.test>"),
        503,
        "EHLO again first"
    );
    let text = ehlo_text(&mut s);
    assert!(
        !text.contains("STARTTLS") && text.contains("AUTH PLAIN"),
        "{text}"
    );
    assert_eq!(code(&mut s, "STARTTLS"), 503);
}

/// The allowlist as the connection loop would consult it: `user`'s live entry, if any.
fn entry(user: Option<&str>) -> Option<Entry> {
    user.map(|u| Entry {
        user: u.into(),
        inserted_at: T0,
        expires_at: T0 + Duration::from_secs(1800),
    })
}

/// Feeds `line`; if the machine asks the allowlist, answers with `allowlisted` (the user
/// whose entry covers the client, if any). Returns the final code and how many times the
/// allowlist was asked.
fn relay_line(s: &mut Session, line: &str, allowlisted: Option<&str>) -> (u16, usize) {
    let mut out = drive(s, T0, line.as_bytes());
    let mut asked = 0;
    while let Action::CheckAllowlist { ip } = out.action {
        assert_eq!(ip, s.settings().peer.ip());
        assert_eq!(out.reply.code, 0, "no reply while the allowlist is asked");
        asked += 1;
        out = s.handle_allowlist(T0, entry(allowlisted));
    }
    (out.reply.code, asked)
}

#[test]
fn the_allowlist_is_asked_once_per_transaction_and_only_for_relays() {
    let mut cfg = settings(SmtpRole::Smtp, false);
    cfg.pop_before_smtp = true;
    cfg.max_recipients = 10;
    let mut s = Session::new(cfg.clone());
    ehlo_text(&mut s);
    // Port 25 MAIL and local delivery never ask.
    assert_eq!(
        relay_line(&mut s, "MAIL FROM:<alice@example.test>", None),
        (250, 0)
    );
    assert_eq!(
        relay_line(&mut s, "RCPT TO:<bob@example.test>", None),
        (250, 0)
    );
    // The first relay asks; the answer holds for the rest of the transaction.
    assert_eq!(
        relay_line(&mut s, "RCPT TO:<x@remote.example>", Some("alice")),
        (250, 1)
    );
    assert_eq!(
        relay_line(&mut s, "RCPT TO:<y@remote.example>", None),
        (250, 0)
    );
    assert_eq!(
        relay_line(&mut s, "RCPT TO:<bob@example.test>", None),
        (250, 0)
    );
    assert_eq!(send(&mut s, "DATA").0, 354);
    let t = s.data_transaction().expect("transaction");
    assert_eq!(t.recipients.len(), 4);
    assert_eq!(
        t.relay_authorization,
        Some(Authorization::PopBeforeSmtp {
            user: "alice".into()
        })
    );
    s.handle_data_end(DataOutcome::Queued("q1".into()));
    // A new transaction asks afresh: the entry is gone now.
    assert_eq!(
        relay_line(&mut s, "MAIL FROM:<alice@example.test>", None),
        (250, 0)
    );
    assert_eq!(
        relay_line(&mut s, "RCPT TO:<x@remote.example>", None),
        (554, 1)
    );
    assert_eq!(
        relay_line(&mut s, "RCPT TO:<y@remote.example>", Some("alice")),
        (554, 0)
    );
    // A source-route trick to a local domain needs authorization too.
    assert_eq!(relay_line(&mut s, "RSET", None), (250, 0));
    assert_eq!(
        relay_line(&mut s, "MAIL FROM:<a@example.test>", None),
        (250, 0)
    );
    assert_eq!(
        relay_line(&mut s, "RCPT TO:<x%remote.example@example.test>", None),
        (554, 1)
    );
    // SMTP AUTH needs no allowlist.
    let mut tls = cfg.clone();
    tls.plaintext_allowed = true;
    let mut s = Session::new(tls);
    ehlo_text(&mut s);
    let auth = format!("AUTH PLAIN {}", plain("alice", "pw"));
    assert_eq!(relay_line(&mut s, &auth, None).0, 235);
    assert_eq!(
        relay_line(&mut s, "MAIL FROM:<alice@example.test>", None),
        (250, 0)
    );
    assert_eq!(
        relay_line(&mut s, "RCPT TO:<x@remote.example>", None),
        (250, 0)
    );
    // A role that does not honour the allowlist never asks.
    cfg.pop_before_smtp = false;
    let mut s = Session::new(cfg);
    ehlo_text(&mut s);
    assert_eq!(
        relay_line(&mut s, "MAIL FROM:<alice@example.test>", None),
        (250, 0)
    );
    assert_eq!(
        relay_line(&mut s, "RCPT TO:<x@remote.example>", Some("alice")),
        (554, 0)
    );
}

#[test]
fn submission_mail_waits_for_the_allowlist() {
    let mut cfg = settings(SmtpRole::Submission, false);
    cfg.pop_before_smtp = true;
    // Not allowlisted: MAIL needs AUTH.
    let mut s = Session::new(cfg.clone());
    ehlo_text(&mut s);
    let out = s.handle_line(T0, b"MAIL FROM:<alice@example.test>");
    assert_eq!(out.action, Action::CheckAllowlist { ip: cfg.peer.ip() });
    // A line fed before the answer is refused and does not disturb the waiting command.
    assert_eq!(code(&mut s, "NOOP"), 503);
    assert_eq!(s.handle_allowlist(T0, None).reply.code, 530);
    // An answer nobody asked for is a sequence error.
    assert_eq!(s.handle_allowlist(T0, entry(Some("alice"))).reply.code, 503);
    // Allowlisted: MAIL is accepted, and its answer serves the transaction's relays.
    let mut s = Session::new(cfg.clone());
    ehlo_text(&mut s);
    assert_eq!(
        relay_line(&mut s, "MAIL FROM:<alice@example.test>", Some("alice")),
        (250, 1)
    );
    assert_eq!(
        relay_line(&mut s, "RCPT TO:<x@remote.example>", None),
        (250, 0)
    );
    assert_eq!(send(&mut s, "DATA").0, 354);
    assert_eq!(
        s.data_transaction()
            .expect("transaction")
            .relay_authorization,
        Some(Authorization::PopBeforeSmtp {
            user: "alice".into()
        })
    );
    // Without POP-before-SMTP on this role, a trusted network needs no lookup.
    cfg.pop_before_smtp = false;
    cfg.trusted = true;
    let mut s = Session::new(cfg);
    ehlo_text(&mut s);
    assert_eq!(
        relay_line(&mut s, "MAIL FROM:<scanner@example.test>", None),
        (250, 0)
    );
    assert_eq!(
        relay_line(&mut s, "RCPT TO:<x@remote.example>", None),
        (250, 0)
    );
}

#[test]
fn pop_before_smtp_and_trusted_networks_authorize_relay() {
    let mut cfg = settings(SmtpRole::Smtp, false);
    cfg.pop_before_smtp = true;
    let mut s = Session::new(cfg.clone());
    ehlo_text(&mut s);
    assert_eq!(
        relay_line(&mut s, "MAIL FROM:<alice@example.test>", None),
        (250, 0)
    );
    assert_eq!(
        relay_line(&mut s, "RCPT TO:<x@remote.example>", None),
        (554, 1)
    );
    // A POP3 login in between: the next transaction sees it.
    assert_eq!(relay_line(&mut s, "RSET", None), (250, 0));
    assert_eq!(
        relay_line(&mut s, "MAIL FROM:<alice@example.test>", None),
        (250, 0)
    );
    assert_eq!(
        relay_line(&mut s, "RCPT TO:<x@remote.example>", Some("alice")),
        (250, 1)
    );
    assert_eq!(send(&mut s, "DATA").0, 354);

    // Both: POP-before-SMTP comes first, as it names the user.
    cfg.trusted = true;
    let mut s = Session::new(cfg.clone());
    ehlo_text(&mut s);
    relay_line(&mut s, "MAIL FROM:<alice@example.test>", None);
    assert_eq!(
        relay_line(&mut s, "RCPT TO:<x@remote.example>", Some("alice")),
        (250, 1)
    );
    assert_eq!(send(&mut s, "DATA").0, 354);
    assert_eq!(
        s.data_transaction()
            .expect("transaction")
            .relay_authorization,
        Some(Authorization::PopBeforeSmtp {
            user: "alice".into()
        })
    );
    // Trusted and not allowlisted: the network authorizes.
    let mut s = Session::new(cfg.clone());
    ehlo_text(&mut s);
    relay_line(&mut s, "MAIL FROM:<printer@example.test>", None);
    assert_eq!(
        relay_line(&mut s, "RCPT TO:<x@remote.example>", None),
        (250, 1)
    );
    assert_eq!(send(&mut s, "DATA").0, 354);
    assert_eq!(
        s.data_transaction()
            .expect("transaction")
            .relay_authorization,
        Some(Authorization::TrustedNetwork)
    );

    cfg.pop_before_smtp = false;
    let mut s = Session::new(cfg);
    ehlo_text(&mut s);
    assert_eq!(code(&mut s, "MAIL FROM:<printer@example.test>"), 250);
    assert_eq!(code(&mut s, "RCPT TO:<x@remote.example>"), 250);
}

#[test]
fn restrict_sender_limits_pop_before_smtp_relays() {
    let mut cfg = settings(SmtpRole::Smtp, false);
    cfg.pop_before_smtp = true;
    cfg.restrict_sender = true;
    let mut s = Session::new(cfg);
    ehlo_text(&mut s);
    assert_eq!(
        relay_line(&mut s, "MAIL FROM:<bob@example.test>", None),
        (250, 0)
    );
    assert_eq!(
        relay_line(&mut s, "RCPT TO:<x@remote.example>", Some("alice")),
        (550, 1)
    );
    assert_eq!(
        relay_line(&mut s, "RCPT TO:<alice@example.test>", None),
        (250, 0),
        "local delivery is not relay"
    );
    assert_eq!(code(&mut s, "RSET"), 250);
    assert_eq!(
        relay_line(&mut s, "MAIL FROM:<Alice@Example.Test>", None),
        (250, 0)
    );
    assert_eq!(
        relay_line(&mut s, "RCPT TO:<x@remote.example>", Some("alice")),
        (250, 1)
    );
}

#[test]
fn a_full_queue_defers_new_transactions_only() {
    let mut cfg = settings(SmtpRole::Smtp, false);
    let gauge = std::sync::Arc::new(crate::spool::QueueGauge::new(2));
    cfg.queue = gauge.clone();
    let mut s = Session::new(cfg);
    ehlo_text(&mut s);
    assert_eq!(code(&mut s, "MAIL FROM:<a@remote.example>"), 250);
    gauge.update(2);
    // The transaction already open goes on.
    assert_eq!(code(&mut s, "RCPT TO:<alice@example.test>"), 250);
    assert_eq!(code(&mut s, "RSET"), 250);
    let out = drive(
        &mut s,
        SystemTime::UNIX_EPOCH,
        b"MAIL FROM:<a@remote.example>",
    );
    assert_eq!(out.reply.code, 452);
    assert_eq!(out.reply.enhanced, Some((4, 3, 1)));
    assert_eq!(out.action, Action::Continue);
    gauge.update(1);
    assert_eq!(code(&mut s, "MAIL FROM:<a@remote.example>"), 250);
}

#[test]
fn size_limits() {
    let mut s = Session::new(settings(SmtpRole::Smtp, false));
    ehlo_text(&mut s);
    assert_eq!(code(&mut s, "MAIL FROM:<a@remote.example> SIZE=1001"), 552);
    assert_eq!(
        code(
            &mut s,
            "MAIL FROM:<a@remote.example> SIZE=1000 BODY=8BITMIME"
        ),
        250
    );
    assert_eq!(code(&mut s, "RCPT TO:<alice@example.test>"), 250);
    assert_eq!(send(&mut s, "DATA").0, 354);
    assert_eq!(s.handle_data_end(DataOutcome::TooBig).reply.code, 552);
    assert_eq!(
        code(&mut s, "MAIL FROM:<a@remote.example>"),
        250,
        "a new transaction may start"
    );
}

/// Each refusal names its reason, the sender and the recipient (for the log line and the
/// counter); an accepted command carries none.
#[test]
fn refusals_say_why() {
    let mut s = Session::new(settings(SmtpRole::Smtp, false));
    ehlo_text(&mut s);
    let refusal = |s: &mut Session, line: &str| {
        s.handle_line(SystemTime::UNIX_EPOCH, line.as_bytes())
            .refusal
            .map(|r| (r.reason, r.sender, r.recipient))
    };
    assert_eq!(refusal(&mut s, "MAIL FROM:<x@remote.example>"), None);
    assert_eq!(refusal(&mut s, "RCPT TO:<alice@example.test>"), None);
    assert_eq!(
        refusal(&mut s, "RCPT TO:<nobody@example.test>"),
        Some((
            "unknown-recipient",
            Some("x@remote.example".into()),
            Some("nobody@example.test".into())
        ))
    );
    assert_eq!(
        refusal(&mut s, "RCPT TO:<elsewhere@remote.example>").map(|r| r.0),
        Some("relay-denied")
    );
    assert_eq!(refusal(&mut s, "RSET"), None);
    assert_eq!(
        refusal(&mut s, "MAIL FROM:<x@remote.example> SIZE=999999999999").map(|r| r.0),
        Some("size")
    );
}
