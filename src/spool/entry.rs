//! The versioned on-disk envelope of a spooled message: who sent it, to whom, how each
//! recipient fared, and when to try again.
//!
//! An envelope is one JSON document (`env/<id>.json`) beside the message body (`msg/<id>`). The
//! `version` field comes first in every file; a reader refuses versions it does not know rather
//! than guessing. Parsing is bounded ([`MAX_ENVELOPE_LEN`]) and never panics; the id is checked
//! to be filename-safe, because the spool builds paths from it. The reverse-path and recipient
//! addresses are those of RFC 5321 §4.1.1.2–3 without the angle brackets (`""` is the null
//! reverse-path of §4.5.5).

use serde::{Deserialize, Serialize};

/// The envelope format this build writes and reads.
pub const VERSION: u32 = 1;

/// Largest envelope file accepted (a generous bound: 1000 recipients of 256 octets fit).
pub const MAX_ENVELOPE_LEN: usize = 1024 * 1024;

/// Longest message id accepted from disk.
pub const MAX_ID_LEN: usize = 128;

/// The spooled envelope of one message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// Format version; always [`VERSION`] when written by this build.
    pub version: u32,
    /// The spool id (also the file names); assigned at commit.
    pub id: String,
    /// Reverse-path without angle brackets; `""` is the null sender.
    pub mail_from: String,
    /// Forward-paths with their delivery state.
    pub recipients: Vec<Recipient>,
    /// When the message was accepted (Unix seconds).
    pub received_at: u64,
    /// Delivery attempts that left some recipient pending.
    pub attempts: u32,
    /// When the next attempt is due (Unix seconds).
    pub next_attempt: u64,
    /// The peer that handed the message in, for logs.
    pub client: String,
    /// The user the client was authorized as (SMTP AUTH or POP-before-SMTP), if any.
    pub authorized_as: Option<String>,
    /// Size of the stored message in octets; set at commit.
    pub size: u64,
    /// Held by an admin (`mailgate queue hold`): not tried until released. Absent from the
    /// file when false, so that an earlier build reads the envelope unchanged.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub held: bool,
}

/// One forward-path and its state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recipient {
    /// The address without angle brackets.
    pub address: String,
    /// `Some(user)`: deliver into this user's Maildir; `None`: relay upstream.
    pub local_user: Option<String>,
    /// Where delivery stands.
    pub status: Status,
    /// The last temporary failure (reply code and text), while the recipient is pending.
    /// Absent from the file when none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// Delivery state of one recipient.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Status {
    /// Not yet delivered; will be tried (again).
    Pending,
    /// Delivered (locally, or accepted by the smarthost).
    Delivered,
    /// Given up; the reply that decided it goes into the bounce.
    Failed {
        /// The SMTP reply code (RFC 5321 §4.2).
        code: u16,
        /// The reply text, or our own reason.
        text: String,
    },
}

/// Why an envelope file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    /// The file is larger than [`MAX_ENVELOPE_LEN`].
    #[error("envelope is {size} bytes, limit is {limit}")]
    TooLarge {
        /// The actual size.
        size: u64,
        /// The limit.
        limit: usize,
    },
    /// The file names a format version this build does not know.
    #[error("envelope format version {found} is not supported (this build reads {supported})")]
    UnsupportedVersion {
        /// The version found in the file.
        found: u32,
        /// The version this build reads.
        supported: u32,
    },
    /// The file is not a valid envelope document.
    #[error("envelope is not valid JSON for this format: {0}")]
    Json(#[from] serde_json::Error),
    /// The id is empty, too long or not filename-safe.
    #[error("envelope id {0:?} is not a valid spool id")]
    BadId(String),
}

/// Only the version, read before the rest so that a future format gives a clear error instead
/// of a confusing field mismatch.
#[derive(Deserialize)]
struct VersionProbe {
    version: u32,
}

impl Envelope {
    /// A fresh envelope for a message received at `received_at`, due at once. The id and size
    /// are filled in by the spool at commit.
    pub fn new(
        mail_from: impl Into<String>,
        recipients: Vec<Recipient>,
        received_at: u64,
        client: impl Into<String>,
        authorized_as: Option<String>,
    ) -> Self {
        Self {
            version: VERSION,
            id: String::new(),
            mail_from: mail_from.into(),
            recipients,
            received_at,
            attempts: 0,
            next_attempt: received_at,
            client: client.into(),
            authorized_as,
            size: 0,
            held: false,
        }
    }

    /// Parses an envelope file, refusing oversized input, unknown versions and unsafe ids.
    pub fn parse(bytes: &[u8]) -> Result<Self, FormatError> {
        if bytes.len() > MAX_ENVELOPE_LEN {
            return Err(FormatError::TooLarge {
                size: bytes.len() as u64,
                limit: MAX_ENVELOPE_LEN,
            });
        }
        let probe: VersionProbe = serde_json::from_slice(bytes)?;
        if probe.version != VERSION {
            return Err(FormatError::UnsupportedVersion {
                found: probe.version,
                supported: VERSION,
            });
        }
        let env: Envelope = serde_json::from_slice(bytes)?;
        if !is_valid_id(&env.id) {
            return Err(FormatError::BadId(env.id));
        }
        Ok(env)
    }

    /// Serializes the envelope (pretty-printed, so an operator can read it).
    pub fn to_bytes(&self) -> Result<Vec<u8>, FormatError> {
        let mut out = serde_json::to_vec_pretty(self)?;
        out.push(b'\n');
        Ok(out)
    }

    /// Whether no recipient is pending any more.
    pub fn is_settled(&self) -> bool {
        !self.recipients.iter().any(|r| r.status == Status::Pending)
    }

    /// Whether the sender is the null reverse-path (a bounce must not be bounced).
    pub fn is_null_sender(&self) -> bool {
        self.mail_from.is_empty()
    }
}

impl Recipient {
    /// A pending recipient; `local_user` set means Maildir delivery.
    pub fn new(address: impl Into<String>, local_user: Option<String>) -> Self {
        Self {
            address: address.into(),
            local_user,
            status: Status::Pending,
            last_error: None,
        }
    }
}

/// Whether `id` is a usable spool id: 1 to [`MAX_ID_LEN`] characters of `[A-Za-z0-9._-]`,
/// not starting with a dot.
pub fn is_valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Envelope {
        let mut env = Envelope::new(
            "alice@example.org",
            vec![
                Recipient::new("bob@example.org", Some("bob".into())),
                Recipient {
                    address: "carol@remote.example".into(),
                    local_user: None,
                    status: Status::Failed {
                        code: 550,
                        text: "5.1.1 no such user".into(),
                    },
                    last_error: None,
                },
                Recipient {
                    address: "dave@remote.example".into(),
                    local_user: None,
                    status: Status::Delivered,
                    last_error: Some("451 4.3.0 try again".into()),
                },
            ],
            1_700_000_000,
            "[192.0.2.7]:4711",
            Some("alice".into()),
        );
        env.id = "1700000000.000123.000001.42".into();
        env.size = 1234;
        env
    }

    #[test]
    fn round_trip() {
        let env = sample();
        let bytes = env.to_bytes().unwrap();
        assert_eq!(Envelope::parse(&bytes).unwrap(), env);
    }

    #[test]
    fn new_is_due_at_once_and_pending() {
        let env = Envelope::new("", vec![Recipient::new("x@y", None)], 99, "peer", None);
        assert_eq!(
            (env.version, env.attempts, env.next_attempt),
            (VERSION, 0, 99)
        );
        assert!(env.is_null_sender());
        assert!(!env.is_settled());
    }

    #[test]
    fn settled_when_nothing_pending() {
        let mut env = sample();
        assert!(!env.is_settled());
        env.recipients[0].status = Status::Delivered;
        assert!(env.is_settled());
    }

    #[test]
    fn rejects_bad_input() {
        let good = String::from_utf8(sample().to_bytes().unwrap()).unwrap();
        let future = good.replace("\"version\": 1", "\"version\": 7");
        let bad_id = good.replace("1700000000.000123.000001.42", "../../etc/passwd");
        let dot_id = good.replace("1700000000.000123.000001.42", ".hidden");
        let bad_status = good.replace("\"delivered\"", "\"exploded\"");
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("empty", vec![]),
            ("not json", b"\x00\xff garbage".to_vec()),
            ("no version", b"{\"id\":\"a\"}".to_vec()),
            ("version wrong type", b"{\"version\":\"1\"}".to_vec()),
            ("truncated", good.as_bytes()[..good.len() / 2].to_vec()),
            ("future version", future.into_bytes()),
            ("path in id", bad_id.into_bytes()),
            ("dot id", dot_id.into_bytes()),
            ("unknown status", bad_status.into_bytes()),
            ("deep nesting", "[".repeat(10_000).into_bytes()),
            ("oversized", vec![b' '; MAX_ENVELOPE_LEN + 1]),
        ];
        for (name, input) in cases {
            assert!(Envelope::parse(&input).is_err(), "{name} was accepted");
        }
    }

    #[test]
    fn unknown_version_error_names_both_versions() {
        let err = Envelope::parse(b"{\"version\": 9}").unwrap_err();
        assert!(matches!(
            err,
            FormatError::UnsupportedVersion {
                found: 9,
                supported: VERSION
            }
        ));
        assert!(err.to_string().contains("version 9"));
    }

    #[test]
    fn every_truncation_fails_cleanly() {
        let bytes = sample().to_bytes().unwrap();
        // The trailing newline and closing brace are the only optional bytes at the end.
        for cut in 0..bytes.len() - 2 {
            assert!(
                Envelope::parse(&bytes[..cut]).is_err(),
                "cut at {cut} was accepted"
            );
        }
    }

    #[test]
    fn id_rules() {
        let cases = [
            ("1700000000.000123.000001.42", true),
            ("a", true),
            ("A-b_c.9", true),
            ("", false),
            (".x", false),
            ("a/b", false),
            ("a\\b", false),
            ("a b", false),
            ("a:b", false),
            ("é", false),
        ];
        for (id, ok) in cases {
            assert_eq!(is_valid_id(id), ok, "{id:?}");
        }
        assert!(!is_valid_id(&"x".repeat(MAX_ID_LEN + 1)));
    }
}
