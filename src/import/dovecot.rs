//! The POP3 UIDLs of an old Dovecot Maildir, from its `dovecot-uidlist`: version 3 (a header
//! `3 V<uidvalidity> N<next uid> ...`, then `<uid> [<key><value> ...] :<file name>`) or the
//! old version 1 (`1 <uidvalidity> <next uid>`, then `<uid> <file name>`). A record's `P`
//! extension is the UIDL Dovecot kept for it; otherwise the UIDL is Dovecot's
//! `pop3_uidl_format` applied to the record ([`UidlFormat`], default `%08Xu%08Xv`). A message
//! the list does not name keeps its file name as UIDL (as mailgate's own Maildir does).
//!
//! Bounded: the list file at most [`MAX_LIST_BYTES`]; lines that do not parse are skipped.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};

use crate::maildir::uidlist::valid_uid;

/// The largest `dovecot-uidlist` read.
pub const MAX_LIST_BYTES: u64 = 64 * 1024 * 1024;

/// Dovecot's `pop3_uidl_format`, the variables it is likely to hold: `%u` and `%08Xu` (the
/// IMAP UID, decimal or 8 lower-case hex digits, as Dovecot writes them), `%v` and `%08Xv` (the UIDVALIDITY likewise), `%f` (the
/// file name), `%%`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UidlFormat(Vec<Part>);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Uid { hex: bool },
    Validity { hex: bool },
    File,
}

impl Default for UidlFormat {
    fn default() -> Self {
        UidlFormat(vec![Part::Uid { hex: true }, Part::Validity { hex: true }])
    }
}

impl UidlFormat {
    /// Parses a format; an unknown variable is an error naming it.
    pub fn parse(text: &str) -> Result<UidlFormat, String> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(i) = rest.find('%') {
            if i > 0 {
                parts.push(Part::Text(rest[..i].to_owned()));
            }
            let after = &rest[i + 1..];
            let (part, len) = if after.starts_with("08Xu") {
                (Part::Uid { hex: true }, 4)
            } else if after.starts_with("08Xv") {
                (Part::Validity { hex: true }, 4)
            } else if after.starts_with('u') {
                (Part::Uid { hex: false }, 1)
            } else if after.starts_with('v') {
                (Part::Validity { hex: false }, 1)
            } else if after.starts_with('f') {
                (Part::File, 1)
            } else if after.starts_with('%') {
                (Part::Text("%".into()), 1)
            } else {
                return Err(format!(
                    "{text:?}: only %u, %08Xu, %v, %08Xv, %f and %% are understood"
                ));
            };
            parts.push(part);
            rest = &after[len..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_owned()));
        }
        Ok(UidlFormat(parts))
    }

    fn render(&self, uid: u32, validity: u32, file: &str) -> String {
        self.0
            .iter()
            .map(|p| match p {
                Part::Text(t) => t.clone(),
                // Dovecot's %X modifier writes lower-case hex.
                Part::Uid { hex: true } => format!("{uid:08x}"),
                Part::Uid { hex: false } => uid.to_string(),
                Part::Validity { hex: true } => format!("{validity:08x}"),
                Part::Validity { hex: false } => validity.to_string(),
                Part::File => file.to_owned(),
            })
            .collect()
    }
}

/// One record of the list: the message's UID and its UIDL.
struct Record {
    uid: u32,
    uidl: String,
}

/// Parses a `dovecot-uidlist`: base file name to record.
fn parse(text: &str, format: &UidlFormat) -> HashMap<String, Record> {
    let mut lines = text.lines();
    let header: Vec<&str> = lines
        .next()
        .unwrap_or_default()
        .split_ascii_whitespace()
        .collect();
    let (version, validity) = match header.as_slice() {
        ["1", validity, ..] => (1, validity.parse().unwrap_or(0)),
        ["3", fields @ ..] => (
            3,
            fields
                .iter()
                .find_map(|f| f.strip_prefix('V')?.parse().ok())
                .unwrap_or(0),
        ),
        _ => return HashMap::new(),
    };
    let mut out = HashMap::new();
    for line in lines {
        let (uid, rest) = line.split_once(' ').unwrap_or((line, ""));
        let Ok(uid) = uid.parse::<u32>() else {
            continue;
        };
        let (exts, file) = if version == 3 {
            match rest.split_once(':') {
                Some((exts, file)) => (exts, file),
                None => continue,
            }
        } else {
            ("", rest)
        };
        let base = file.split(':').next().unwrap_or_default();
        if base.is_empty() || base.contains('/') {
            continue;
        }
        let kept = exts
            .split_ascii_whitespace()
            .find_map(|e| e.strip_prefix('P'))
            .filter(|p| valid_uid(p));
        let uidl = kept.map_or_else(|| format.render(uid, validity, base), str::to_owned);
        if valid_uid(&uidl) {
            out.insert(base.to_owned(), Record { uid, uidl });
        }
    }
    out
}

/// The messages of the Maildir at `source` (`cur/` and `new/`), each with its UIDL, in the
/// order Dovecot numbered them (listed messages by UID, then the rest by name).
pub fn list(source: &Path, format: &UidlFormat) -> io::Result<Vec<(PathBuf, String)>> {
    let list_path = source.join("dovecot-uidlist");
    let records = match std::fs::metadata(&list_path) {
        Ok(m) if m.len() > MAX_LIST_BYTES => {
            return Err(io::Error::other(format!(
                "dovecot-uidlist is larger than {MAX_LIST_BYTES} bytes"
            )));
        }
        Ok(_) => parse(
            &String::from_utf8_lossy(&std::fs::read(&list_path)?),
            format,
        ),
        Err(e) if e.kind() == io::ErrorKind::NotFound => HashMap::new(),
        Err(e) => return Err(e),
    };
    let mut messages: Vec<(u64, String, PathBuf, String)> = Vec::new();
    for sub in ["cur", "new"] {
        let dir = source.join(sub);
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') || !entry.file_type()?.is_file() {
                continue;
            }
            let base = name.split(':').next().unwrap_or_default().to_owned();
            let (order, uidl) = match records.get(&base) {
                Some(r) => (u64::from(r.uid), r.uidl.clone()),
                None if valid_uid(&base) => (u64::MAX, base.clone()),
                None => continue,
            };
            messages.push((order, name, entry.path(), uidl));
        }
    }
    messages.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
    Ok(messages.into_iter().map(|(_, _, p, u)| (p, u)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_3_lists_give_the_uidls_dovecot_served() {
        let text = "3 V1700000000 N4 G0123456789abcdef\n\
                    1 :1700000000.M0P1.oldbox\n\
                    2 W123 S120 :1700000001.M1P1.oldbox:2,S\n\
                    3 P kept-uidl W9 :1700000002.M2P1.oldbox\n\
                    junk\n";
        let map = parse(text, &UidlFormat::default());
        assert_eq!(map["1700000000.M0P1.oldbox"].uidl, "000000016553f100");
        assert_eq!(map["1700000001.M1P1.oldbox"].uidl, "000000026553f100");
        assert_eq!(map["1700000002.M2P1.oldbox"].uid, 3);
        let map = parse(text, &UidlFormat::parse("%v.%u").unwrap());
        assert_eq!(map["1700000000.M0P1.oldbox"].uidl, "1700000000.1");
    }

    #[test]
    fn a_kept_uidl_wins_and_version_1_is_read() {
        let map = parse("3 V1 N2\n1 Pold-uidl-1 :a.b\n", &UidlFormat::default());
        assert_eq!(map["a.b"].uidl, "old-uidl-1");
        let map = parse("1 1700000000 3\n1 a.b\n2 c.d:2,\n", &UidlFormat::default());
        assert_eq!(map["c.d"].uidl, "000000026553f100");
    }

    #[test]
    fn formats_parse_or_name_what_is_unknown() {
        assert_eq!(
            UidlFormat::parse("%08Xu%08Xv").unwrap(),
            UidlFormat::default()
        );
        assert!(UidlFormat::parse("%m").unwrap_err().contains("%m"));
        let f = UidlFormat::parse("x%%%f").unwrap();
        assert_eq!(f.render(1, 2, "file"), "x%file");
    }
}
