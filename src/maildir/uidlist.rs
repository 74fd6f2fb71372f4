//! The unique-ids messages brought from the old server keep (`mailgate import`): a client that
//! leaves mail on the server must see the same UIDLs after its mailbox moves, or it downloads
//! everything again. The old UIDL cannot always be the file name (RFC 1939 allows `/` and `:`
//! in it, which a Maildir name cannot hold), so each mailbox may hold a `mailgate-uidlist`
//! beside `cur/`: one line per imported message, `<base name> <uidl>`. A message not listed
//! there keeps the unique-id its name gives.
//!
//! Lines are only ever added (by the import, before the message they name appears in
//! `cur/`), so a listing made once stays right. Bounded when read: at most
//! [`MAX_FILE_BYTES`]; a line that does not parse is skipped.

use std::collections::HashMap;
use std::io;
use std::path::Path;

/// The file's name, in the mailbox folder.
pub const FILE: &str = "mailgate-uidlist";

/// The largest file read (about 100,000 messages).
pub const MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;

/// Whether `uid` is a unique-id as RFC 1939 §7 defines it: 1 to 70 characters in 0x21..=0x7E.
pub fn valid_uid(uid: &str) -> bool {
    (1..=70).contains(&uid.len()) && uid.bytes().all(|b| (0x21..=0x7e).contains(&b))
}

/// The map of base name to unique-id in the mailbox folder `dir`; empty when there is none.
pub fn read(dir: &Path) -> io::Result<HashMap<String, String>> {
    let path = dir.join(FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(HashMap::new()),
        Err(e) => return Err(e),
    };
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(io::Error::other(format!(
            "{} is larger than {MAX_FILE_BYTES} bytes",
            path.display()
        )));
    }
    Ok(parse(&String::from_utf8_lossy(&bytes)))
}

/// Parses the file's text.
pub fn parse(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter_map(|line| {
            let (base, uid) = line.split_once(' ')?;
            let ok = !base.is_empty() && !base.contains(['/', ':']) && valid_uid(uid);
            ok.then(|| (base.to_owned(), uid.to_owned()))
        })
        .collect()
}

/// Adds `base uid` to the file in `dir`, durably (written, fsynced, renamed, folder fsynced)
/// before it returns.
pub fn add(dir: &Path, base: &str, uid: &str) -> io::Result<()> {
    if base.contains(['/', ':', ' ', '\n']) || !valid_uid(uid) {
        return Err(io::Error::other("not a base name and unique-id"));
    }
    let path = dir.join(FILE);
    let mut text = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e),
    };
    text.extend_from_slice(format!("{base} {uid}\n").as_bytes());
    crate::durable::replace(&path, &text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_map_names_to_old_unique_ids() {
        let map = parse("1.M1.import a/b:c\nbad\n2.M2.import ok\n3/x y\n4.x \n5.x é\n");
        assert_eq!(map.len(), 2);
        assert_eq!(map["1.M1.import"], "a/b:c");
        assert_eq!(map["2.M2.import"], "ok");
    }

    #[test]
    fn added_lines_are_read_back() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read(dir.path()).unwrap().is_empty());
        add(dir.path(), "1.M1.import", "UID/1:x").unwrap();
        add(dir.path(), "2.M2.import", "00000002").unwrap();
        assert!(add(dir.path(), "3", "has space").is_err());
        let map = read(dir.path()).unwrap();
        assert_eq!(map.len(), 2);
        assert_eq!(map["1.M1.import"], "UID/1:x");
    }
}
