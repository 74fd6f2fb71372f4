//! Notices to users still on legacy authentication: under a `warn` or `brownout` policy rule
//! with `notify = true`, a short message is dropped into the user's own mailbox, at most once
//! per `[notices] interval` per user and mechanism, naming the client address, the mechanism,
//! the software seen and the date from which it will be refused.
//!
//! The rate limit is kept in memory and saved to `<state_dir>/notices.json` now and then and
//! at shutdown, so a restart does not send a user a second notice within the interval (after
//! a crash, one may come that was sent less than five minutes before it).

use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use dashmap::DashMap;
use serde::{Deserialize, Serialize};

use crate::clock::{millis, unix_secs};

/// Upper bound on remembered (user, mechanism) pairs.
const MAX_REMEMBERED: usize = 100_000;

/// Largest saved file read back (the remembered pairs at their longest fit well within).
const MAX_SAVED_BYTES: u64 = 64 * 1024 * 1024;

/// Version of the saved file's format.
const SAVED_VERSION: u32 = 1;

/// What `notices.json` holds: `(user, mechanism, when sent in Unix seconds)`.
#[derive(Debug, Serialize, Deserialize)]
struct Saved {
    version: u32,
    sent: Vec<(String, String, u64)>,
}

/// What a notice says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    /// The canonical user (also the mailbox).
    pub user: String,
    /// The mechanism as recorded.
    pub mechanism: String,
    /// The client address.
    pub client: String,
    /// The client software seen (User-Agent, X-Mailer, or EHLO name).
    pub software: Option<String>,
    /// The date from which the mechanism will be refused.
    pub refuse_from: Option<String>,
    /// The policy rule's message.
    pub message: Option<String>,
}

/// Decides when a notice is due and writes it.
#[derive(Debug)]
pub struct Notices {
    /// The interval in milliseconds (changed by a reload).
    interval_ms: std::sync::atomic::AtomicU64,
    maildir: PathBuf,
    hostname: String,
    sent: DashMap<(String, String), SystemTime>,
    software: DashMap<String, String>,
}

impl Notices {
    /// Notices delivered into `maildir`, at most one per `interval` per user and mechanism.
    pub fn new(interval: Duration, maildir: PathBuf, hostname: String) -> Self {
        Notices {
            interval_ms: std::sync::atomic::AtomicU64::new(millis(interval)),
            maildir,
            hostname,
            sent: DashMap::new(),
            software: DashMap::new(),
        }
    }

    /// Remembers `software` (a `User-Agent` or `X-Mailer`) as the last seen in `user`'s mail,
    /// for the notices that come at AUTH time, before this session's message is seen.
    pub fn saw_software(&self, user: &str, software: &str) {
        if self.software.get(user).is_some_and(|s| *s == software) {
            return;
        }
        if self.software.len() >= MAX_REMEMBERED && !self.software.contains_key(user) {
            // Bounded: forget everything rather than track ages; a notice then names the
            // EHLO name or client hint instead.
            self.software.clear();
        }
        self.software.insert(user.to_string(), software.to_string());
    }

    /// The software last seen in `user`'s mail, if any.
    pub fn software(&self, user: &str) -> Option<String> {
        self.software.get(user).map(|s| s.clone())
    }

    /// The interval between two notices for one user and mechanism.
    pub fn interval(&self) -> Duration {
        Duration::from_millis(self.interval_ms.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// Changes the interval (SIGHUP); notices already sent keep their time.
    pub fn set_interval(&self, interval: Duration) {
        self.interval_ms
            .store(millis(interval), std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether a notice for `user` and `mechanism` is due at `now`; if so, records it as sent.
    pub fn due(&self, user: &str, mechanism: &str, now: SystemTime) -> bool {
        let key = (user.to_string(), mechanism.to_string());
        let interval = self.interval();
        if let Some(last) = self.sent.get(&key)
            && now.duration_since(*last).unwrap_or_default() < interval
        {
            return false;
        }
        if self.sent.len() >= MAX_REMEMBERED {
            self.sent
                .retain(|_, t| now.duration_since(*t).unwrap_or_default() < interval);
        }
        self.sent.insert(key, now);
        true
    }

    /// Writes the notices sent within the interval before `now` to `path`, atomically
    /// (blocking file I/O).
    pub fn save(&self, path: &Path, now: SystemTime) -> io::Result<()> {
        let sent = self
            .sent
            .iter()
            .filter(|e| now.duration_since(*e.value()).unwrap_or_default() < self.interval())
            .map(|e| (e.key().0.clone(), e.key().1.clone(), unix_secs(*e.value())))
            .collect();
        let saved = Saved {
            version: SAVED_VERSION,
            sent,
        };
        let bytes = serde_json::to_vec(&saved).map_err(io::Error::other)?;
        crate::durable::replace(path, &bytes)
    }

    /// Takes the notices saved at `path` that are still within the interval at `now`; returns
    /// how many. A missing file is not an error (0); an unreadable or corrupt one is, and
    /// nothing is taken from it.
    pub fn load(&self, path: &Path, now: SystemTime) -> io::Result<usize> {
        let file = match std::fs::File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(e),
        };
        let mut bytes = Vec::new();
        file.take(MAX_SAVED_BYTES + 1).read_to_end(&mut bytes)?;
        if bytes.len() as u64 > MAX_SAVED_BYTES {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "file too large"));
        }
        let saved: Saved = serde_json::from_slice(&bytes)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        if saved.version != SAVED_VERSION {
            let why = format!("unknown version {}", saved.version);
            return Err(io::Error::new(io::ErrorKind::InvalidData, why));
        }
        let mut taken = 0;
        for (user, mechanism, secs) in saved.sent.into_iter().take(MAX_REMEMBERED) {
            let at = SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
            if now.duration_since(at).unwrap_or_default() < self.interval() {
                self.sent.insert((user, mechanism), at);
                taken += 1;
            }
        }
        Ok(taken)
    }

    /// Writes `notice` into the user's mailbox (blocking file I/O: call off the runtime).
    pub fn deliver(&self, notice: &Notice, now: SystemTime) -> std::io::Result<PathBuf> {
        let text = render(notice, &self.hostname, now);
        let unique = format!("{}.notice", crate::clock::unix_secs(now));
        crate::maildir::deliver(
            &self.maildir,
            &notice.user,
            &unique,
            &self.hostname,
            text.as_bytes(),
        )
    }
}

/// The admin digest: the legacy-authentication report of the last `period` as a message for
/// `to`, or `None` when the period saw no legacy authentication.
pub fn digest(
    files: &[PathBuf],
    period: Duration,
    to: &str,
    hostname: &str,
    now: SystemTime,
) -> Result<Option<String>, crate::audit::report::Error> {
    use crate::audit::report::{self, Filter, Format, GroupBy, TimeSpec};
    let filter = Filter {
        since: Some(TimeSpec::Ago(period)),
        ..Filter::default()
    };
    let by_user = report::report(files, &filter, GroupBy::User, now)?;
    if by_user.groups.is_empty() {
        return Ok(None);
    }
    let by_client = report::report(files, &filter, GroupBy::Client, now)?;
    let mut table = Vec::new();
    let _ = report::render(&by_user, GroupBy::User, Format::Table, now, &mut table);
    table.extend_from_slice(b"\n");
    let _ = report::render(&by_client, GroupBy::Client, Format::Table, now, &mut table);
    let text = String::from_utf8_lossy(&table).replace('\n', "\r\n");
    Ok(Some(format!(
        "From: mailgate <postmaster@{hostname}>\r\nTo: <{to}>\r\nSubject: Legacy \
         authentication digest: {} users\r\nDate: {}\r\nAuto-Submitted: auto-generated\r\n\
         MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nUsers and clients \
         that used legacy authentication in the last {} (`mailgate audit --since {}`):\r\n\r\n{text}",
        by_user.groups.len(),
        httpdate::fmt_http_date(now),
        humantime::format_duration(period),
        humantime::format_duration(period),
    )))
}

/// The notice as a complete message (CRLF line ends).
pub fn render(n: &Notice, hostname: &str, now: SystemTime) -> String {
    let clean = |s: &str| -> String { s.chars().filter(|c| !c.is_control()).take(200).collect() };
    let mut body = vec![
        format!(
            "A mail program signed in to your mailbox \"{}\" from {} using {}.",
            clean(&n.user),
            clean(&n.client),
            clean(&n.mechanism)
        ),
        String::new(),
    ];
    if let Some(s) = &n.software {
        body.push(format!("The program identified itself as: {}", clean(s)));
        body.push(String::new());
    }
    body.push("This way of signing in is outdated and is being phased out.".into());
    if let Some(date) = &n.refuse_from {
        body.push(format!("From {} it will be refused.", clean(date)));
    }
    if let Some(m) = &n.message {
        body.push(String::new());
        body.push(clean(m));
    }
    body.push(String::new());
    body.push(
        "Please update the program's account settings (use TLS and a modern sign-in method), \
         or ask your mail administrator for help."
            .into(),
    );
    let mut out = format!(
        "From: Mail administrator <postmaster@{hostname}>\r\nTo: <{}>\r\nSubject: Your mail \
         program uses an outdated sign-in method\r\nDate: {}\r\nAuto-Submitted: auto-generated\r\n\
         MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n",
        clean(&n.user),
        httpdate::fmt_http_date(now)
    );
    for line in body {
        out.push_str(&line);
        out.push_str("\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: SystemTime = SystemTime::UNIX_EPOCH;

    #[test]
    fn at_most_one_notice_per_interval_per_user_and_mechanism() {
        let dir = tempfile::tempdir().unwrap();
        let n = Notices::new(Duration::from_secs(3600), dir.path().into(), "mx".into());
        assert!(n.due("alice", "CRAM-MD5", T0));
        assert!(!n.due("alice", "CRAM-MD5", T0 + Duration::from_secs(3599)));
        assert!(n.due("alice", "PLAIN", T0));
        assert!(n.due("bob", "CRAM-MD5", T0));
        assert!(n.due("alice", "CRAM-MD5", T0 + Duration::from_secs(3600)));
    }

    #[test]
    fn the_rate_limit_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notices.json");
        let hour = Duration::from_secs(3600);
        let t = T0 + Duration::from_secs(1_700_000_000);
        let n = Notices::new(hour, dir.path().into(), "mx".into());
        assert!(n.due("alice", "CRAM-MD5", t));
        assert!(n.due("bob", "PLAIN", t - Duration::from_secs(3000)));
        n.save(&path, t).unwrap();

        // The next run: alice's notice is remembered; bob's has run out by then.
        let later = t + Duration::from_secs(1000);
        let again = Notices::new(hour, dir.path().into(), "mx".into());
        assert_eq!(again.load(&path, later).unwrap(), 1);
        assert!(!again.due("alice", "CRAM-MD5", later));
        assert!(again.due("bob", "PLAIN", later));
        assert!(again.due("alice", "CRAM-MD5", t + hour));

        // Missing: nothing to take; corrupt: an error, and nothing taken.
        let fresh = Notices::new(hour, dir.path().into(), "mx".into());
        assert_eq!(fresh.load(&dir.path().join("none.json"), later).unwrap(), 0);
        std::fs::write(&path, b"{\"version\": 1, \"sent\": [[\"a\"").unwrap();
        assert!(fresh.load(&path, later).is_err());
        std::fs::write(&path, b"{\"version\": 9, \"sent\": []}").unwrap();
        assert!(fresh.load(&path, later).is_err());
        assert!(fresh.due("alice", "CRAM-MD5", later));
    }

    #[test]
    fn digest_lists_legacy_users_of_the_period() {
        use crate::audit::{Class, Event, Kind, Outcome};
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("audit.log");
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let mut lines = String::new();
        for (user, mech, class, ago) in [
            ("alice", "CRAM-MD5", Class::Weak, 60),
            ("bob", "SCRAM-SHA-256", Class::Modern, 60),
            ("carol", "PLAIN", Class::Insecure, 3 * 86_400),
        ] {
            let t = crate::audit::event::rfc3339(now - Duration::from_secs(ago));
            let mut e = Event::new(Kind::Auth, "smtp", t, Outcome::Success);
            e.user = Some(user.into());
            e.mechanism = Some(mech.into());
            e.class = Some(class);
            lines.push_str(&serde_json::to_string(&e).unwrap());
            lines.push('\n');
        }
        std::fs::write(&log, lines).unwrap();
        let text = digest(
            std::slice::from_ref(&log),
            Duration::from_secs(86_400),
            "postmaster",
            "mx",
            now,
        )
        .unwrap()
        .expect("alice used CRAM-MD5 today");
        assert!(
            text.contains("alice") && text.contains("CRAM-MD5"),
            "{text}"
        );
        assert!(
            !text.contains("bob"),
            "modern logins are not legacy: {text}"
        );
        assert!(!text.contains("carol"), "outside the period: {text}");
        let quiet = digest(&[log], Duration::from_secs(10), "postmaster", "mx", now).unwrap();
        assert!(quiet.is_none());
    }

    #[test]
    fn notice_lands_in_the_mailbox_and_names_everything() {
        let dir = tempfile::tempdir().unwrap();
        let n = Notices::new(
            Duration::from_secs(1),
            dir.path().into(),
            "mx.example.test".into(),
        );
        let notice = Notice {
            user: "alice".into(),
            mechanism: "CRAM-MD5".into(),
            client: "192.0.2.7".into(),
            software: Some("Outlook Express 6".into()),
            refuse_from: Some("2027-01-01".into()),
            message: Some("See https://example.test/migrate".into()),
        };
        let path = n.deliver(&notice, T0).unwrap();
        let text = std::fs::read_to_string(path).unwrap();
        for want in [
            "192.0.2.7",
            "CRAM-MD5",
            "Outlook Express 6",
            "From 2027-01-01",
            "migrate",
            "To: <alice>",
        ] {
            assert!(text.contains(want), "{want} missing in {text}");
        }
    }
}
