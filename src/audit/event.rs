//! The audit event: one JSON object per line in the audit log, one per fact (an
//! authentication decision, a relay authorized by address, an allowlist change, a delivery
//! outcome). The schema is documented in `docs/audit.md`; readers (`mailgate audit`, the admin
//! API) parse the same struct.
//!
//! Events never carry a secret: no password, hash, challenge, response or token.

use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// Current schema version, written in every event as `v`.
pub const VERSION: u32 = 1;

/// What an event records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// An authentication decision (SMTP AUTH, POP3 USER/PASS, APOP, AUTH).
    Auth,
    /// A relay authorized by address (POP-before-SMTP or a trusted network), or refused by
    /// policy.
    Relay,
    /// A message accepted for delivery (after DATA).
    Accept,
    /// An allowlist entry added (login or admin), removed or expired.
    Allowlist,
    /// A client disconnected after too many failed logins.
    Lockout,
    /// A delivery attempt deferred (transient failure).
    Defer,
    /// A message bounced or moved to dead letters.
    Bounce,
    /// An admin's action on a queued message (`mailgate queue flush|delete|hold|release`).
    Queue,
}

/// The outcome of the decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Allowed.
    Success,
    /// Wrong credentials, malformed exchange, unavailable mechanism.
    Failure,
    /// Refused by a policy rule (`deny`, `transition`).
    Denied,
    /// Allowed under a `warn` rule.
    Warned,
    /// Refused temporarily by a `brownout` rule.
    Brownout,
    /// A dry-run rule would have denied; allowed.
    WouldDeny,
}

impl Outcome {
    /// Every outcome, in the order reports list them.
    pub const ALL: [Outcome; 6] = [
        Outcome::Success,
        Outcome::Failure,
        Outcome::Denied,
        Outcome::Warned,
        Outcome::Brownout,
        Outcome::WouldDeny,
    ];

    /// Whether the client got through.
    pub fn allowed(self) -> bool {
        matches!(
            self,
            Outcome::Success | Outcome::Warned | Outcome::WouldDeny
        )
    }

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Failure => "failure",
            Outcome::Denied => "denied",
            Outcome::Warned => "warned",
            Outcome::Brownout => "brownout",
            Outcome::WouldDeny => "would_deny",
        }
    }
}

/// How strong an authentication is, from weakest to strongest (see `docs/migration.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Class {
    /// Credentials in the clear without TLS, NTLMv1, or relay authorized only by address
    /// (POP-before-SMTP, trusted network).
    Insecure,
    /// Challenge-response over password-equivalent secrets: CRAM-MD5, APOP, NTLMv2.
    Weak,
    /// Cleartext passwords over TLS: PLAIN, LOGIN, USER/PASS.
    Basic,
    /// SCRAM, OAUTHBEARER, XOAUTH2, EXTERNAL (a TLS client certificate).
    Modern,
}

impl Class {
    /// Every class, weakest first.
    pub const ALL: [Class; 4] = [Class::Insecure, Class::Weak, Class::Basic, Class::Modern];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Class::Insecure => "insecure",
            Class::Weak => "weak",
            Class::Basic => "basic",
            Class::Modern => "modern",
        }
    }

    /// Parses a wire name.
    pub fn parse(s: &str) -> Option<Class> {
        Class::ALL
            .into_iter()
            .find(|c| c.as_str().eq_ignore_ascii_case(s))
    }

    /// Whether this class counts as legacy (anything below `modern`).
    pub fn is_legacy(self) -> bool {
        self < Class::Modern
    }
}

impl fmt::Display for Class {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The class of an authentication with `mechanism` (as recorded: "PLAIN", "CRAM-MD5",
/// "NTLMv1", "NTLMv2", "USER", "APOP", "SCRAM-SHA-256", "pop-before-smtp",
/// "trusted-network", ...) over TLS or not.
pub fn classify(mechanism: &str, tls: bool) -> Class {
    let m = mechanism.to_ascii_uppercase();
    match m.as_str() {
        "POP-BEFORE-SMTP" | "TRUSTED-NETWORK" | "NTLMV1" | "NTLMV1-ESS" | "NTLM2-SESSION" => {
            Class::Insecure
        }
        "PLAIN" | "LOGIN" | "USER" if !tls => Class::Insecure,
        "PLAIN" | "LOGIN" | "USER" => Class::Basic,
        "CRAM-MD5" | "APOP" | "NTLM" | "NTLMV2" | "LMV2" | "DIGEST-MD5" => Class::Weak,
        "XOAUTH2" | "OAUTHBEARER" if !tls => Class::Insecure,
        "XOAUTH2" | "OAUTHBEARER" => Class::Modern,
        m if m.starts_with("SCRAM-") => Class::Modern,
        // A client certificate exists only over TLS.
        "EXTERNAL" if tls => Class::Modern,
        // Kerberos: no password crosses the wire, with or without TLS.
        "GSSAPI" => Class::Modern,
        // Anything unknown is treated as the weakest, so it shows up in the legacy report.
        _ => Class::Insecure,
    }
}

/// The class of an authentication with `mechanism` on a session whose transport is plaintext
/// (`tls` false), TLS 1.2 or later, or an older TLS (`legacy_tls`: every mechanism is then
/// `insecure`, so that the report shows the devices still on old TLS).
pub fn classify_session(mechanism: &str, tls: bool, legacy_tls: bool) -> Class {
    if legacy_tls {
        Class::Insecure
    } else {
        classify(mechanism, tls)
    }
}

/// One audit event. Optional fields are omitted when empty.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Schema version ([`VERSION`]).
    pub v: u32,
    /// When, RFC 3339 in UTC with milliseconds, e.g. `2026-11-28T21:05:05.123Z`.
    pub time: String,
    /// What happened.
    pub kind: Kind,
    /// "smtp", "pop3", "control" or "relay".
    pub protocol: String,
    /// The listener role ("smtp", "submission", "submissions", "pop3", "pop3s"), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listener: Option<String>,
    /// The session id, as in the log lines.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    /// The client address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ip: Option<IpAddr>,
    /// The client port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_port: Option<u16>,
    /// TLS version and cipher, e.g. "TLSv1.3 TLS13_AES_256_GCM_SHA384"; absent without TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<String>,
    /// The EHLO/HELO name (SMTP) or a client hint (POP3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_name: Option<String>,
    /// The user name as the client gave it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_given: Option<String>,
    /// The canonical user it resolved to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The Kerberos principal that authenticated (GSSAPI), e.g. `alice@EXAMPLE.ORG`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal: Option<String>,
    /// The mechanism or method ("PLAIN", "NTLMv2", "USER", "APOP", "pop-before-smtp", ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mechanism: Option<String>,
    /// The outcome.
    pub result: Outcome,
    /// The class of the authentication or authorization.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class: Option<Class>,
    /// The policy rule that decided, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// Why (a failure reason or the policy message); never a secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The client software from the message's `User-Agent` or `X-Mailer` header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_software: Option<String>,
    /// The queue id of the message concerned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_id: Option<String>,
    /// Number of recipients concerned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipients: Option<u32>,
    /// The subject of the TLS client certificate the session presented (one from the
    /// `[auth.external]` CA), on authentication events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_subject: Option<String>,
    /// The SHA-256 fingerprint (lower-case hex) of that certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_sha256: Option<String>,
}

impl Event {
    /// A new event of `kind` at `time` (RFC 3339 text) with everything else empty.
    pub fn new(kind: Kind, protocol: &str, time: String, result: Outcome) -> Event {
        Event {
            v: VERSION,
            time,
            kind,
            protocol: protocol.to_string(),
            listener: None,
            session: None,
            client_ip: None,
            client_port: None,
            tls: None,
            client_name: None,
            user_given: None,
            user: None,
            principal: None,
            mechanism: None,
            result,
            class: None,
            rule: None,
            reason: None,
            client_software: None,
            queue_id: None,
            recipients: None,
            cert_subject: None,
            cert_sha256: None,
        }
    }
}

/// Formats `t` as RFC 3339 UTC with milliseconds.
pub fn rfc3339(t: std::time::SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_follow_the_migration_ladder() {
        let cases = [
            ("PLAIN", false, Class::Insecure),
            ("LOGIN", false, Class::Insecure),
            ("USER", false, Class::Insecure),
            ("PLAIN", true, Class::Basic),
            ("user", true, Class::Basic),
            ("CRAM-MD5", false, Class::Weak),
            ("APOP", false, Class::Weak),
            ("NTLMv2", true, Class::Weak),
            ("NTLMv1", true, Class::Insecure),
            ("pop-before-smtp", false, Class::Insecure),
            ("trusted-network", true, Class::Insecure),
            ("SCRAM-SHA-256", false, Class::Modern),
            ("SCRAM-SHA-256-PLUS", true, Class::Modern),
            ("XOAUTH2", true, Class::Modern),
            ("OAUTHBEARER", false, Class::Insecure),
            ("SOMETHING-NEW", true, Class::Insecure),
            ("EXTERNAL", true, Class::Modern),
            ("EXTERNAL", false, Class::Insecure),
        ];
        for (m, tls, want) in cases {
            assert_eq!(classify(m, tls), want, "{m} tls={tls}");
        }
        // Below TLS 1.2 every mechanism is insecure; on TLS 1.2+ the mechanism decides.
        for m in ["SCRAM-SHA-256", "PLAIN", "XOAUTH2", "CRAM-MD5"] {
            assert_eq!(classify_session(m, true, true), Class::Insecure, "{m}");
            assert_eq!(classify_session(m, true, false), classify(m, true), "{m}");
        }
        assert!(Class::Weak.is_legacy() && !Class::Modern.is_legacy());
        assert!(Class::Insecure < Class::Weak && Class::Basic < Class::Modern);
    }

    #[test]
    fn events_round_trip_and_omit_empty_fields() {
        let mut e = Event::new(
            Kind::Auth,
            "smtp",
            "2026-11-28T21:05:05.123Z".into(),
            Outcome::Success,
        );
        e.user = Some("alice".into());
        e.class = Some(Class::Basic);
        let line = serde_json::to_string(&e).unwrap();
        assert_eq!(
            line,
            r#"{"v":1,"time":"2026-11-28T21:05:05.123Z","kind":"auth","protocol":"smtp","user":"alice","result":"success","class":"basic"}"#
        );
        let back: Event = serde_json::from_str(&line).unwrap();
        assert_eq!(back, e);
    }
}
