//! The last SMTP refusals, kept in memory for the admin endpoint (`GET /api/refusals`) so that
//! "why was this refused?" has an answer without reading the log. Bounded: the newest
//! [`KEPT`] are kept and every text field is cut to [`MAX_FIELD`] characters, so a client
//! cannot grow it. The same refusals are logged and counted (`mailgate_smtp_rejects_total`).

use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::Mutex;

use serde::Serialize;

/// Refusals kept.
pub const KEPT: usize = 100;

/// Longest text kept per field (HELO names and addresses come from the client).
pub const MAX_FIELD: usize = 256;

/// One refusal as the admin endpoint shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Refusal {
    /// When (RFC 3339, UTC).
    pub time: String,
    /// The listener role (`smtp`, `submission`, `submissions`).
    pub listener: &'static str,
    /// The client's address.
    pub client: IpAddr,
    /// The client's HELO/EHLO name, if it gave one.
    pub helo: Option<String>,
    /// The envelope sender, when a transaction was open.
    pub from: Option<String>,
    /// The recipient refused, for RCPT.
    pub to: Option<String>,
    /// The reply sent.
    pub reply: String,
    /// Why: one of the `reason` words of `mailgate_smtp_rejects_total`.
    pub reason: &'static str,
}

/// The newest refusals, oldest first.
#[derive(Debug, Default)]
pub struct Recent {
    kept: Mutex<VecDeque<Refusal>>,
}

impl Recent {
    /// Keeps `r` (its texts cut to [`MAX_FIELD`]), dropping the oldest beyond [`KEPT`].
    pub fn push(&self, mut r: Refusal) {
        for field in [&mut r.helo, &mut r.from, &mut r.to].into_iter().flatten() {
            cut(field);
        }
        cut(&mut r.reply);
        let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        if kept.len() == KEPT {
            kept.pop_front();
        }
        kept.push_back(r);
    }

    /// The refusals kept, newest first.
    pub fn newest_first(&self) -> Vec<Refusal> {
        let kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        kept.iter().rev().cloned().collect()
    }
}

fn cut(s: &mut String) {
    if let Some((i, _)) = s.char_indices().nth(MAX_FIELD) {
        s.truncate(i);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(n: usize, to: &str) -> Refusal {
        Refusal {
            time: format!("2026-12-01T00:00:{:02}Z", n % 60),
            listener: "smtp",
            client: "192.0.2.7".parse().unwrap(),
            helo: Some("printer".into()),
            from: None,
            to: Some(to.into()),
            reply: "554 5.7.1 Relay access denied".into(),
            reason: "relay-denied",
        }
    }

    #[test]
    fn keeps_the_newest_and_cuts_long_fields() {
        let recent = Recent::default();
        for n in 0..KEPT + 5 {
            recent.push(refusal(n, &format!("r{n}@elsewhere.test")));
        }
        let got = recent.newest_first();
        assert_eq!(got.len(), KEPT);
        assert_eq!(
            got[0].to.as_deref(),
            Some(format!("r{}@elsewhere.test", KEPT + 4).as_str())
        );
        assert_eq!(got[KEPT - 1].to.as_deref(), Some("r5@elsewhere.test"));

        recent.push(refusal(0, &"é".repeat(MAX_FIELD + 10)));
        let long = recent.newest_first().remove(0);
        assert_eq!(long.to.map(|t| t.chars().count()), Some(MAX_FIELD));
    }
}
