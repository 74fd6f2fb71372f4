//! SMTP replies: the [`Reply`] type, its wire encoding, every named reply the server sends, and
//! an incremental [`ReplyParser`] for replies read from an upstream server.
//!
//! Implements reply syntax and codes of RFC 5321 §4.2 (multi-line replies §4.2.1, codes
//! §4.2.2-3), enhanced status codes of RFC 2034 §4 (repeated on every line) with values from
//! RFC 3463 and RFC 4954 §6, the 334 challenge form of RFC 4954 §4, and the STARTTLS replies of
//! RFC 3207 §4. Reply text never leaves this file: the session picks a named reply, it does not
//! write prose. Sans-IO.
//!
//! The parser for the upstream side lives in `parse.rs` and is re-exported here.

use std::borrow::Cow;
use std::fmt;

mod parse;

pub use parse::{MAX_REPLY_LINE, MAX_REPLY_LINES, Parsed, ReplyError, ReplyParser};

/// One SMTP reply: a code, an optional enhanced status code, and one or more lines of text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The three-digit reply code (RFC 5321 §4.2).
    pub code: u16,
    /// The enhanced status code `class.subject.detail` (RFC 3463), written on every line.
    pub enhanced: Option<(u8, u16, u16)>,
    /// The text lines, without code or line endings. May be empty (a bare `250`).
    pub lines: Vec<Cow<'static, str>>,
}

/// The class of a reply, from its first digit (RFC 5321 §4.2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// 2yz: the command succeeded.
    PositiveCompletion,
    /// 3yz: send more (DATA body, SASL response).
    PositiveIntermediate,
    /// 4yz: failed this time; retry later.
    TransientNegative,
    /// 5yz (or any code outside 2yz-4yz): failed for good.
    PermanentNegative,
}

impl Reply {
    /// A one-line reply.
    pub fn new(
        code: u16,
        enhanced: Option<(u8, u16, u16)>,
        text: impl Into<Cow<'static, str>>,
    ) -> Self {
        Reply {
            code,
            enhanced,
            lines: vec![text.into()],
        }
    }

    /// Appends the reply to `out` in wire form: `code-` on all lines but the last, `code ` on
    /// the last, the enhanced code (if any) after it on every line (RFC 2034 §4), CRLF after
    /// each. CR and LF inside the text are written as spaces so a line can never split. A reply
    /// with no lines is written as the bare code (plus enhanced code).
    pub fn encode(&self, out: &mut Vec<u8>) {
        let code = format!("{:03}", self.code);
        let enhanced = self.enhanced.map(|(c, s, d)| format!("{c}.{s}.{d}"));
        if self.lines.is_empty() {
            out.extend_from_slice(code.as_bytes());
            if let Some(e) = &enhanced {
                out.push(b' ');
                out.extend_from_slice(e.as_bytes());
            }
            out.extend_from_slice(b"\r\n");
            return;
        }
        let last = self.lines.len() - 1;
        for (i, line) in self.lines.iter().enumerate() {
            out.extend_from_slice(code.as_bytes());
            out.push(if i == last { b' ' } else { b'-' });
            if let Some(e) = &enhanced {
                out.extend_from_slice(e.as_bytes());
                if !line.is_empty() {
                    out.push(b' ');
                }
            }
            out.extend(
                line.bytes()
                    .map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
            );
            out.extend_from_slice(b"\r\n");
        }
    }

    /// The wire form as a new buffer.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode(&mut out);
        out
    }

    /// The class of the reply.
    pub fn severity(&self) -> Severity {
        match self.code / 100 {
            2 => Severity::PositiveCompletion,
            3 => Severity::PositiveIntermediate,
            4 => Severity::TransientNegative,
            _ => Severity::PermanentNegative,
        }
    }

    /// 2yz or 3yz.
    pub fn is_positive(&self) -> bool {
        matches!(self.code / 100, 2 | 3)
    }

    /// 2yz: the command succeeded.
    pub fn is_success(&self) -> bool {
        self.severity() == Severity::PositiveCompletion
    }

    /// 3yz: the server waits for more (354 after DATA, 334 during AUTH).
    pub fn is_intermediate(&self) -> bool {
        self.severity() == Severity::PositiveIntermediate
    }

    /// 4yz: try again later.
    pub fn is_transient(&self) -> bool {
        self.severity() == Severity::TransientNegative
    }

    /// 5yz: do not retry.
    pub fn is_permanent(&self) -> bool {
        self.severity() == Severity::PermanentNegative
    }

    /// All text lines joined with a space, for logs and bounce messages.
    pub fn text(&self) -> String {
        self.lines.join(" ")
    }

    /// The enhanced status code (if any) and the text, as the reply gave them, without the
    /// reply code: what a delivery status or bounce quotes (`5.1.1 No such user`).
    pub fn detail(&self) -> String {
        match self.enhanced {
            Some((c, s, d)) if self.lines.iter().all(|l| l.is_empty()) => format!("{c}.{s}.{d}"),
            Some((c, s, d)) => format!("{c}.{s}.{d} {}", self.text()),
            None => self.text(),
        }
    }
}

impl fmt::Display for Reply {
    /// `code [x.y.z] text`, lines joined by spaces: a log-friendly single line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:03}", self.code)?;
        if let Some((c, s, d)) = self.enhanced {
            write!(f, " {c}.{s}.{d}")?;
        }
        for line in &self.lines {
            write!(f, " {line}")?;
        }
        Ok(())
    }
}

fn r(code: u16, enhanced: (u8, u16, u16), text: &'static str) -> Reply {
    Reply::new(code, Some(enhanced), text)
}

// ---- Connection-level replies (RFC 5321 §4.2, §3.1, §3.8; RFC 3207 §4) ----

/// No reply yet: the command waits for the answer to an action (a credential check, the
/// allowlist). Code 0, never encoded; the reply comes with the machine's answer to the action's
/// result.
pub fn none() -> Reply {
    Reply {
        code: 0,
        enhanced: None,
        lines: Vec::new(),
    }
}

/// 220 greeting. RFC 2034 §4 exempts the greeting from enhanced codes.
pub fn greeting(hostname: &str) -> Reply {
    Reply::new(220, None, format!("{hostname} ESMTP ready"))
}

/// 250 answer to EHLO: our host name, then one line per extension keyword (RFC 5321 §4.1.1.1).
/// No enhanced code (RFC 2034 §4). `extensions` are keyword lines such as `"PIPELINING"`,
/// `"SIZE 10485760"` or `"AUTH PLAIN LOGIN"`, chosen by the session.
pub fn ehlo<I>(hostname: &str, extensions: I) -> Reply
where
    I: IntoIterator<Item = Cow<'static, str>>,
{
    let mut lines = vec![Cow::Owned(hostname.to_owned())];
    lines.extend(extensions);
    Reply {
        code: 250,
        enhanced: None,
        lines,
    }
}

/// 250 answer to HELO (RFC 5321 §4.1.1.1); no enhanced code.
pub fn helo(hostname: &str) -> Reply {
    Reply::new(250, None, hostname.to_owned())
}

/// 221 2.0.0 answer to QUIT.
pub fn closing(hostname: &str) -> Reply {
    Reply::new(
        221,
        Some((2, 0, 0)),
        format!("{hostname} closing connection"),
    )
}

/// 220 2.0.0 answer to STARTTLS (RFC 3207 §4): start the handshake now.
pub fn ready_to_start_tls() -> Reply {
    r(220, (2, 0, 0), "Ready to start TLS")
}

/// 421 4.3.2: the server is shutting down.
pub fn shutting_down(hostname: &str) -> Reply {
    Reply::new(
        421,
        Some((4, 3, 2)),
        format!("{hostname} service shutting down"),
    )
}

/// 421 4.4.2: the client was idle too long (RFC 5321 §4.5.3.2).
pub fn timeout(hostname: &str) -> Reply {
    Reply::new(
        421,
        Some((4, 4, 2)),
        format!("{hostname} timeout, closing connection"),
    )
}

/// 421 4.7.0 instead of the greeting: the connection caps are reached, in all or for the
/// client address (RFC 5321 §3.1).
pub fn too_many_connections(hostname: &str) -> Reply {
    Reply::new(
        421,
        Some((4, 7, 0)),
        format!("{hostname} too many connections, try again later"),
    )
}

/// 421 4.7.0: too many bad commands in one session.
pub fn too_many_errors(hostname: &str) -> Reply {
    Reply::new(
        421,
        Some((4, 7, 0)),
        format!("{hostname} too many errors, closing connection"),
    )
}

/// 421 4.7.0: too many failed authentications in one session.
pub fn too_many_auth_failures(hostname: &str) -> Reply {
    Reply::new(
        421,
        Some((4, 7, 0)),
        format!("{hostname} too many authentication failures"),
    )
}

// ---- Positive replies ----

/// 250 2.0.0 OK: RSET, NOOP, and anything else that just succeeded.
pub fn ok() -> Reply {
    r(250, (2, 0, 0), "OK")
}

/// 250 2.1.0: MAIL FROM accepted.
pub fn sender_ok() -> Reply {
    r(250, (2, 1, 0), "Sender OK")
}

/// 250 2.1.5: RCPT TO accepted.
pub fn recipient_ok() -> Reply {
    r(250, (2, 1, 5), "Recipient OK")
}

/// 250 2.0.0: message accepted and stored durably under queue id `id`.
pub fn queued(id: &str) -> Reply {
    Reply::new(250, Some((2, 0, 0)), format!("OK queued as {id}"))
}

/// 354: send the message (RFC 5321 §4.3.2). No enhanced code on 3yz (RFC 2034 §4).
pub fn start_data() -> Reply {
    Reply::new(354, None, "End data with <CR><LF>.<CR><LF>")
}

/// 252 2.5.0: VRFY is not answered truthfully (RFC 5321 §3.5.3, §7.3).
pub fn vrfy() -> Reply {
    r(
        252,
        (2, 5, 0),
        "Cannot VRFY user, but will accept message and attempt delivery",
    )
}

/// 214 2.0.0: answer to HELP.
pub fn help() -> Reply {
    r(214, (2, 0, 0), "See RFC 5321")
}

/// 235 2.7.0: authentication succeeded (RFC 4954 §6).
pub fn auth_ok() -> Reply {
    r(235, (2, 7, 0), "Authentication successful")
}

/// 334 challenge (RFC 4954 §4): `base64` is the already-encoded challenge, possibly empty.
pub fn auth_challenge(base64: String) -> Reply {
    Reply::new(334, None, base64)
}

// ---- Transient failures ----

/// 450 4.3.0: the requested action was not taken this time (e.g. a recipient lookup failed).
pub fn temporary_failure() -> Reply {
    r(450, (4, 3, 0), "Temporary failure, try again later")
}

/// 451 4.3.0: local error in processing (e.g. the spool write failed).
pub fn local_error() -> Reply {
    r(451, (4, 3, 0), "Local error in processing, try again later")
}

/// 452 4.3.1: insufficient system storage (RFC 1870 §6: SIZE exceeds what fits right now).
pub fn insufficient_storage() -> Reply {
    r(452, (4, 3, 1), "Insufficient system storage")
}

/// 452 4.5.3: too many recipients (RFC 5321 §4.5.3.1.10).
pub fn too_many_recipients() -> Reply {
    r(452, (4, 5, 3), "Too many recipients")
}

/// 454 4.7.0: temporary authentication failure (RFC 4954 §6).
pub fn auth_temp_failure() -> Reply {
    r(454, (4, 7, 0), "Temporary authentication failure")
}

/// 454 4.7.0: TLS is not available (RFC 3207 §4).
pub fn tls_unavailable() -> Reply {
    r(454, (4, 7, 0), "TLS not available due to temporary reason")
}

// ---- Permanent failures: protocol ----

/// 500 5.5.1: unrecognized command.
pub fn unknown_command() -> Reply {
    r(500, (5, 5, 1), "Unrecognized command")
}

/// 500 5.5.2: command line too long (RFC 5321 §4.5.3.1.4).
pub fn line_too_long() -> Reply {
    r(500, (5, 5, 2), "Line too long")
}

/// 501 5.5.4: syntax error in parameters or arguments.
pub fn syntax_error() -> Reply {
    r(501, (5, 5, 4), "Syntax error in parameters or arguments")
}

/// 501 5.5.2: an AUTH response that is not valid base64 or not a valid message for the
/// mechanism (RFC 4954 §4).
pub fn auth_malformed() -> Reply {
    r(501, (5, 5, 2), "Cannot decode response")
}

/// 501 5.1.7: the MAIL FROM address is malformed (RFC 3463 X.1.7).
pub fn bad_sender_syntax() -> Reply {
    r(501, (5, 1, 7), "Bad sender address syntax")
}

/// 501 5.1.3: the RCPT TO address is malformed (RFC 3463 X.1.3).
pub fn bad_recipient_syntax() -> Reply {
    r(501, (5, 1, 3), "Bad recipient address syntax")
}

/// 501 5.7.0: the client cancelled AUTH with `*` (RFC 4954 §4).
pub fn auth_cancelled() -> Reply {
    r(501, (5, 7, 0), "Authentication cancelled")
}

/// 502 5.5.1: a known command this server does not implement.
pub fn not_implemented() -> Reply {
    r(502, (5, 5, 1), "Command not implemented")
}

/// 503 5.5.1: bad sequence of commands.
pub fn bad_sequence() -> Reply {
    r(503, (5, 5, 1), "Bad sequence of commands")
}

/// A policy refusal of an authentication: 534 5.7.9 (mechanism too weak, RFC 4954 §6),
/// with the rule's message if it has one.
pub fn policy_too_weak(text: Option<&str>) -> Reply {
    policy(534, (5, 7, 9), "Authentication mechanism is too weak", text)
}

/// A policy refusal asking for a new password: 432 4.7.12 (RFC 4954 §6).
pub fn policy_transition(text: Option<&str>) -> Reply {
    policy(432, (4, 7, 12), "A password transition is needed", text)
}

/// A policy brownout of an authentication: 454 4.7.0, a temporary failure clients retry.
pub fn policy_brownout(text: Option<&str>) -> Reply {
    policy(
        454,
        (4, 7, 0),
        "Temporary authentication failure, try again later",
        text,
    )
}

/// A policy refusal of an address-authorized relay: 550 5.7.1.
pub fn policy_relay_denied(text: Option<&str>) -> Reply {
    policy(
        550,
        (5, 7, 1),
        "Relaying from this address is no longer allowed",
        text,
    )
}

/// A policy brownout of an address-authorized relay: 450 4.7.0.
pub fn policy_relay_brownout(text: Option<&str>) -> Reply {
    policy(
        450,
        (4, 7, 0),
        "Relaying temporarily refused, try again later",
        text,
    )
}

fn policy(code: u16, enhanced: (u8, u16, u16), default: &'static str, text: Option<&str>) -> Reply {
    match text {
        Some(t) => Reply::new(code, Some(enhanced), t.to_string()),
        None => r(code, enhanced, default),
    }
}

/// 503 5.5.1: a command that needs EHLO/HELO first (RFC 5321 §4.1.4).
pub fn need_helo() -> Reply {
    r(503, (5, 5, 1), "Send EHLO or HELO first")
}

/// 503 5.5.1: RCPT or DATA before MAIL (RFC 5321 §4.1.4).
pub fn need_mail() -> Reply {
    r(503, (5, 5, 1), "Need MAIL command first")
}

/// 503 5.5.1: AUTH after a successful AUTH (RFC 4954 §4).
pub fn already_authenticated() -> Reply {
    r(503, (5, 5, 1), "Already authenticated")
}

/// 500 5.5.6: an AUTH exchange line over the limit (RFC 4954 §4).
pub fn auth_line_too_long() -> Reply {
    r(500, (5, 5, 6), "Authentication exchange line is too long")
}

/// 504 5.5.4: AUTH with a mechanism we do not offer (RFC 4954 §4).
pub fn auth_unrecognized_mechanism() -> Reply {
    r(504, (5, 5, 4), "Unrecognized authentication mechanism")
}

/// 555 5.5.4: a MAIL FROM or RCPT TO parameter we do not recognize (RFC 5321 §4.1.1.11).
pub fn unsupported_parameter() -> Reply {
    r(
        555,
        (5, 5, 4),
        "Parameter not recognized or not implemented",
    )
}

// ---- Permanent failures: policy and authentication ----

/// 530 5.7.0: authentication required before this command (RFC 4954 §6).
pub fn auth_required() -> Reply {
    r(530, (5, 7, 0), "Authentication required")
}

/// 530 5.7.0: STARTTLS required before this command (RFC 3207 §4).
pub fn starttls_required() -> Reply {
    r(530, (5, 7, 0), "Must issue a STARTTLS command first")
}

/// 534 5.7.9: the mechanism is too weak for this policy (RFC 4954 §6).
pub fn auth_too_weak() -> Reply {
    r(534, (5, 7, 9), "Authentication mechanism is too weak")
}

/// 535 5.7.8: wrong user name or password (RFC 4954 §6).
pub fn auth_invalid() -> Reply {
    r(535, (5, 7, 8), "Authentication credentials invalid")
}

/// 538 5.7.11: this mechanism needs an encrypted connection (RFC 4954 §6).
pub fn auth_encryption_required() -> Reply {
    r(
        538,
        (5, 7, 11),
        "Encryption required for requested authentication mechanism",
    )
}

/// 550 5.1.1: no such local user.
pub fn no_such_user() -> Reply {
    r(550, (5, 1, 1), "No such user here")
}

/// 550 5.7.1: this client may not send as this sender.
pub fn sender_not_allowed() -> Reply {
    r(550, (5, 7, 1), "Sender address not allowed")
}

/// 552 5.3.4: message larger than the fixed maximum (RFC 1870 §6; at MAIL FROM SIZE= or after
/// DATA).
pub fn message_too_big() -> Reply {
    r(
        552,
        (5, 3, 4),
        "Message size exceeds fixed maximum message size",
    )
}

/// 452 4.3.1 at MAIL: the spool is full (`[limits] max_queue`); the client keeps the
/// message and tries again later (RFC 5321 §4.2.2, RFC 3463 "mail system full").
pub fn queue_full() -> Reply {
    r(
        452,
        (4, 3, 1),
        "Insufficient system storage: queue full, try again later",
    )
}

/// 554 5.7.1: relaying denied for this client and recipient.
pub fn relay_denied() -> Reply {
    r(554, (5, 7, 1), "Relay access denied")
}

/// 554 5.5.1: DATA with no accepted recipient (RFC 5321 §3.3).
pub fn no_valid_recipients() -> Reply {
    r(554, (5, 5, 1), "No valid recipients")
}

/// 554 5.5.0: transaction failed for a reason no other reply covers.
pub fn transaction_failed() -> Reply {
    r(554, (5, 5, 0), "Transaction failed")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_single_and_multi_line() {
        let cases: Vec<(Reply, &str)> = vec![
            (ok(), "250 2.0.0 OK\r\n"),
            (start_data(), "354 End data with <CR><LF>.<CR><LF>\r\n"),
            (auth_challenge(String::new()), "334 \r\n"),
            (
                Reply {
                    code: 250,
                    enhanced: None,
                    lines: vec![],
                },
                "250\r\n",
            ),
            (
                Reply {
                    code: 250,
                    enhanced: Some((2, 0, 0)),
                    lines: vec![],
                },
                "250 2.0.0\r\n",
            ),
            (
                ehlo("mx.test", ["PIPELINING".into(), "SIZE 1000".into()]),
                "250-mx.test\r\n250-PIPELINING\r\n250 SIZE 1000\r\n",
            ),
            (
                Reply {
                    code: 550,
                    enhanced: Some((5, 1, 1)),
                    lines: vec!["one".into(), "two".into()],
                },
                "550-5.1.1 one\r\n550 5.1.1 two\r\n",
            ),
            (Reply::new(250, None, "a\r\nb\nc"), "250 a  b c\r\n"),
            (
                auth_encryption_required(),
                "538 5.7.11 Encryption required for requested \
                authentication mechanism\r\n",
            ),
        ];
        for (reply, want) in cases {
            assert_eq!(String::from_utf8(reply.to_bytes()).unwrap(), want);
        }
    }

    #[test]
    fn named_replies_have_rfc_codes() {
        let cases: Vec<(Reply, &str)> = vec![
            (greeting("h"), "220"),
            (closing("h"), "221 2.0.0"),
            (ready_to_start_tls(), "220 2.0.0"),
            (sender_ok(), "250 2.1.0"),
            (recipient_ok(), "250 2.1.5"),
            (queued("X1"), "250 2.0.0"),
            (vrfy(), "252 2.5.0"),
            (auth_ok(), "235 2.7.0"),
            (shutting_down("h"), "421 4.3.2"),
            (timeout("h"), "421 4.4.2"),
            (too_many_connections("h"), "421 4.7.0"),
            (local_error(), "451 4.3.0"),
            (too_many_recipients(), "452 4.5.3"),
            (auth_temp_failure(), "454 4.7.0"),
            (tls_unavailable(), "454 4.7.0"),
            (unknown_command(), "500 5.5.1"),
            (line_too_long(), "500 5.5.2"),
            (syntax_error(), "501 5.5.4"),
            (auth_cancelled(), "501 5.7.0"),
            (not_implemented(), "502 5.5.1"),
            (bad_sequence(), "503 5.5.1"),
            (auth_unrecognized_mechanism(), "504 5.5.4"),
            (auth_required(), "530 5.7.0"),
            (starttls_required(), "530 5.7.0"),
            (auth_too_weak(), "534 5.7.9"),
            (auth_invalid(), "535 5.7.8"),
            (auth_encryption_required(), "538 5.7.11"),
            (no_such_user(), "550 5.1.1"),
            (message_too_big(), "552 5.3.4"),
            (relay_denied(), "554 5.7.1"),
            (unsupported_parameter(), "555 5.5.4"),
        ];
        for (reply, want) in cases {
            let got = match reply.enhanced {
                Some((c, s, d)) => format!("{} {c}.{s}.{d}", reply.code),
                None => reply.code.to_string(),
            };
            assert_eq!(got, want, "{reply}");
            // Enhanced class always agrees with the reply class (RFC 3463 §2).
            if let Some((class, ..)) = reply.enhanced {
                assert_eq!(u16::from(class), reply.code / 100, "{reply}");
            }
        }
        assert_eq!(queued("X1").text(), "OK queued as X1");
    }

    #[test]
    fn severity_classes() {
        assert!(ok().is_positive());
        assert!(start_data().is_positive());
        assert!(local_error().is_transient());
        assert!(relay_denied().is_permanent());
        assert_eq!(start_data().severity(), Severity::PositiveIntermediate);
    }
}
