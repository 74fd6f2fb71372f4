//! Maildir storage: delivery into `<root>/<user>/{tmp,new,cur}` and the read side that POP3
//! serves from.
//!
//! Delivery follows the Maildir protocol: write under `tmp/` with a unique name, fsync, then
//! rename into `new/` and fsync the directory, so a message is either fully there or absent.
//! The read side lists a maildrop for a POP3 session; [`cache`] keeps those listings between
//! sessions.

pub mod cache;
pub mod uidlist;

pub use cache::Cache;

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

static DELIVERIES: AtomicU64 = AtomicU64::new(0);

/// Creates `<root>/<user>/{tmp,new,cur}` if missing and returns the mailbox path. Folders it
/// creates are made durable (their parent is fsynced), so a first delivery survives a crash.
pub fn ensure_mailbox(root: &Path, user: &str) -> io::Result<PathBuf> {
    let dir = mailbox_path(root, user)?;
    if dir.join("new").is_dir() && dir.join("cur").is_dir() && dir.join("tmp").is_dir() {
        return Ok(dir);
    }
    create_durably(root)?;
    create_durably(&dir)?;
    for sub in ["tmp", "new", "cur"] {
        create_durably(&dir.join(sub))?;
    }
    Ok(dir)
}

/// Creates `dir` (and missing parents); if it was created, fsyncs its parent folder.
fn create_durably(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    fs::create_dir_all(dir)?;
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        File::open(parent)?.sync_all()?;
    }
    Ok(())
}

/// The mailbox folder of `user`, refusing names that could escape `root`.
pub fn mailbox_path(root: &Path, user: &str) -> io::Result<PathBuf> {
    let bad = user.is_empty()
        || user.starts_with('.')
        || user.contains(['/', '\\', '\0'])
        || user.chars().any(char::is_control);
    if bad {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "invalid mailbox name",
        ));
    }
    Ok(root.join(user))
}

/// Delivers the message `bytes` (already carrying its headers) into `user`'s mailbox, durably.
/// `unique` must be unique for this host and time (e.g. `<unix secs>.<id>`); the file name is
/// `<unique>.M<counter>P<pid>.<hostname>,S=<size>`. Returns the final path.
pub fn deliver(
    root: &Path,
    user: &str,
    unique: &str,
    hostname: &str,
    bytes: &[u8],
) -> io::Result<PathBuf> {
    deliver_with(root, user, unique, hostname, bytes.len() as u64, |f| {
        f.write_all(bytes)
    })
}

/// Delivers `prefix` (e.g. a `Return-Path:` line) followed by `size` bytes read from `source`
/// into `user`'s mailbox, durably, streaming rather than holding the message in memory.
pub fn deliver_from(
    root: &Path,
    user: &str,
    unique: &str,
    hostname: &str,
    prefix: &[u8],
    source: &mut impl io::Read,
    size: u64,
) -> io::Result<PathBuf> {
    let total = prefix.len() as u64 + size;
    deliver_with(root, user, unique, hostname, total, |f| {
        f.write_all(prefix)?;
        let copied = io::copy(source, f)?;
        if copied != size {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("message ended after {copied} of {size} octets"),
            ));
        }
        Ok(())
    })
}

fn deliver_with(
    root: &Path,
    user: &str,
    unique: &str,
    hostname: &str,
    size: u64,
    write: impl FnOnce(&mut File) -> io::Result<()>,
) -> io::Result<PathBuf> {
    let draft = Draft::write(root, user, unique, hostname, size, write)?;
    if let Err(e) = draft.file().sync_all() {
        draft.discard();
        return Err(e);
    }
    let published = draft.publish()?;
    sync_parent(&published.path)?;
    Ok(published.path)
}

/// The steps of a delivery, in order. A message is *delivered* only after [`Step::DirSynced`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Step {
    /// The message is written into a new file under `tmp/` ([`Draft::write`]).
    Written,
    /// Its content is durable (the file's fsync, or one `syncfs` for a batch of files), under
    /// a name no reader looks at.
    Synced,
    /// It is renamed into `new/` ([`Draft::publish`]): readers see it, complete, but a crash
    /// may still undo the rename.
    Renamed,
    /// The rename is durable too (`new/` fsynced, or a second `syncfs`).
    DirSynced,
}

/// A message written under `tmp/` and not yet in `new/`: the first [`Step`] of a delivery.
/// The caller makes it durable ([`Step::Synced`]) before [`Draft::publish`], so that `new/`
/// never holds a file whose content a crash could lose.
#[derive(Debug)]
pub struct Draft {
    file: File,
    tmp: PathBuf,
    dst: PathBuf,
    root: PathBuf,
    user: String,
}

/// A message renamed into `new/`, with its file still open (for a `syncfs` of its file
/// system).
#[derive(Debug)]
pub struct Published {
    /// Its path under `new/`.
    pub path: PathBuf,
    /// The file, still open.
    pub file: File,
}

impl Draft {
    /// Writes the message through `write` into `<root>/<user>/tmp/<name>`, where `<name>` is
    /// `<unique>.M<counter>P<pid>.<hostname>,S=<size>`; not synced.
    ///
    /// The mailbox folders are created (durably) only if the first attempt finds them
    /// missing, so a delivery into an existing mailbox costs no `stat`.
    pub fn write(
        root: &Path,
        user: &str,
        unique: &str,
        hostname: &str,
        size: u64,
        write: impl FnOnce(&mut File) -> io::Result<()>,
    ) -> io::Result<Draft> {
        let dir = mailbox_path(root, user)?;
        let n = DELIVERIES.fetch_add(1, Ordering::Relaxed);
        // Maildir file names must not contain '/' or ':'.
        let host: String = hostname
            .chars()
            .map(|c| if c == '/' || c == ':' { '_' } else { c })
            .collect();
        let name = format!("{unique}.M{n}P{}.{host},S={size}", std::process::id());
        let tmp = dir.join("tmp").join(&name);
        let dst = dir.join("new").join(&name);
        let create = || OpenOptions::new().write(true).create_new(true).open(&tmp);
        let mut file = match create() {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                ensure_mailbox(root, user)?;
                create()?
            }
            other => other?,
        };
        if let Err(e) = write(&mut file) {
            drop(file);
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        Ok(Draft {
            file,
            tmp,
            dst,
            root: root.to_path_buf(),
            user: user.to_string(),
        })
    }

    /// The open file, for syncing it.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Renames the file into `new/`; on failure the file under `tmp/` is removed.
    pub fn publish(self) -> io::Result<Published> {
        let renamed = match fs::rename(&self.tmp, &self.dst) {
            // new/ went missing (a broken mailbox): make it again, then retry once.
            Err(e) if e.kind() == io::ErrorKind::NotFound => ensure_mailbox(&self.root, &self.user)
                .and_then(|_| fs::rename(&self.tmp, &self.dst)),
            other => other,
        };
        match renamed {
            Ok(()) => Ok(Published {
                path: self.dst,
                file: self.file,
            }),
            Err(e) => {
                self.discard();
                Err(e)
            }
        }
    }

    /// Gives the message up: removes the file under `tmp/`.
    pub fn discard(self) {
        drop(self.file);
        let _ = fs::remove_file(&self.tmp);
    }
}

/// Fsyncs the folder `path` is in: the last [`Step`] of a single delivery.
pub fn sync_parent(path: &Path) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    File::open(dir)?.sync_all()
}

/// How old a file under a mailbox's `tmp/` must be before [`clean_tmp`] removes it: the
/// Maildir convention's 36 hours. A delivery keeps its file there for milliseconds.
pub const STALE_TMP: Duration = Duration::from_secs(36 * 3600);

/// Removes the files under `<root>/<user>/tmp/` last modified before `before`, for every
/// mailbox under `root`: what deliveries cut short by a crash left there. Folders, and
/// entries whose age cannot be read, are left alone. Returns how many files went. Blocking:
/// run it off the async workers.
pub fn clean_tmp(root: &Path, before: SystemTime) -> io::Result<usize> {
    let users = match fs::read_dir(root) {
        Ok(d) => d,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let mut removed = 0;
    for user in users.flatten() {
        let Ok(files) = fs::read_dir(user.path().join("tmp")) else {
            continue;
        };
        for file in files.flatten() {
            let stale = file
                .metadata()
                .is_ok_and(|m| m.is_file() && m.modified().is_ok_and(|t| t < before));
            if stale && fs::remove_file(file.path()).is_ok() {
                removed += 1;
            }
        }
    }
    Ok(removed)
}

/// Why a maildrop could not be opened for a POP3 session.
#[derive(Debug, thiserror::Error)]
pub enum MailboxError {
    /// Another session holds the maildrop (RFC 2449 `[IN-USE]`).
    #[error("maildrop in use by another session")]
    InUse,
    /// Reading the maildrop failed.
    #[error("maildrop unreadable: {0}")]
    Io(#[from] io::Error),
}

/// A snapshot of a maildrop, in delivery order; POP3 message `n` is `messages[n - 1]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Mailbox {
    /// The messages, oldest first; shared with the [`Cache`], so handing a large maildrop to
    /// a session copies nothing.
    pub messages: Arc<[MessageInfo]>,
}

/// One message of a [`Mailbox`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageInfo {
    /// The unique-id (RFC 1939 §7 UIDL): stable across sessions, 1 to 70 characters in
    /// 0x21..=0x7E.
    pub uid: String,
    /// The size in octets as sent over POP3 (CRLF line endings).
    pub size: u64,
    /// The file, under `cur/`.
    pub path: PathBuf,
}

/// Opens `user`'s maildrop: creates it if missing, moves every message of `new/` into `cur/`
/// (adding the `:2,` info suffix, as a Maildir reader must), and lists `cur/` oldest first.
///
/// Order is by the Unix time that starts each file name, then modification time, then name.
/// The size is the `,W=<n>` field of the name when present, else the file size (mailgate
/// stores messages with CRLF line endings). The unique-id is the base name (the part before
/// `:`), or its SHA-256 in hex when that does not fit RFC 1939's unique-id syntax.
///
/// This reads and `stat`s every file; [`Cache::open`] gives the same answer from what it
/// kept of the last open.
pub fn list(root: &Path, user: &str) -> io::Result<Mailbox> {
    let dir = ensure_mailbox(root, user)?;
    move_new(&dir)?;
    let (listing, _) = cache::scan(&dir.join("cur"), None)?;
    Ok(Mailbox {
        messages: listing.messages,
    })
}

/// Moves every message of `<dir>/new` into `<dir>/cur`, adding the `:2,` info suffix, and
/// makes the moves durable (both folders fsynced) if there were any.
fn move_new(dir: &Path) -> io::Result<()> {
    let (new, cur) = (dir.join("new"), dir.join("cur"));
    let mut moved = false;
    for entry in fs::read_dir(&new)? {
        let entry = entry?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if name.starts_with('.') || !entry.file_type()?.is_file() {
            continue;
        }
        let target = if name.contains(':') {
            name
        } else {
            format!("{name}:2,")
        };
        match fs::rename(entry.path(), cur.join(target)) {
            Ok(()) => moved = true,
            // Another reader moved it first; the listing of cur/ will find it.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    if moved {
        File::open(&new)?.sync_all()?;
        File::open(&cur)?.sync_all()?;
    }
    Ok(())
}

/// Removes the messages at `paths` (the POP3 UPDATE state). A file that is already gone
/// counts as removed. Every path is tried; the first error is returned.
pub fn remove(paths: &[PathBuf]) -> io::Result<()> {
    let mut first_error = None;
    let mut dirs: Vec<&Path> = Vec::new();
    for path in paths {
        match fs::remove_file(path) {
            Ok(()) => {
                if let Some(dir) = path.parent().filter(|d| !dirs.contains(d)) {
                    dirs.push(dir);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    for dir in dirs {
        if let Err(e) = File::open(dir).and_then(|d| d.sync_all()) {
            first_error.get_or_insert(e);
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// The `,W=<n>` field of a Maildir base name: the message size with CRLF line endings.
fn wire_size(base: &str) -> Option<u64> {
    let rest = &base[base.find(",W=")? + 3..];
    let end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// The decimal number a Maildir base name starts with (its delivery time), 0 if none.
fn leading_number(base: &str) -> u64 {
    let end = base
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(base.len());
    base[..end].parse().unwrap_or(0)
}

/// The POP3 unique-id for a base name (RFC 1939 §7: 1 to 70 characters in 0x21..=0x7E).
fn unique_id(base: &str) -> String {
    let fits = (1..=70).contains(&base.len()) && base.bytes().all(|b| (0x21..=0x7e).contains(&b));
    if fits {
        base.to_owned()
    } else {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(base.as_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(dir: &Path, sub: &str, name: &str, body: &[u8]) -> PathBuf {
        let path = dir.join(sub).join(name);
        fs::write(&path, body).unwrap();
        path
    }

    #[test]
    fn list_moves_new_into_cur_and_orders_by_delivery() {
        let root = tempfile::tempdir().unwrap();
        let dir = ensure_mailbox(root.path(), "alice").unwrap();
        put(&dir, "new", "1700000100.M2P1.host,S=5", b"b\r\nc\r");
        put(&dir, "cur", "1700000050.M1P1.host,S=3:2,S", b"a\r\n");
        put(&dir, "new", "999999999.M9P1.host", b"old\r\n");
        put(&dir, "new", ".hidden", b"x");
        fs::create_dir(dir.join("new").join("subdir")).unwrap();
        let delivered = deliver(root.path(), "alice", "1700000200.X", "mx", b"d\r\n").unwrap();

        let mbox = list(root.path(), "alice").unwrap();
        let uids: Vec<&str> = mbox.messages.iter().map(|m| m.uid.as_str()).collect();
        let want_last = delivered.file_name().unwrap().to_str().unwrap().to_owned();
        assert_eq!(
            uids,
            [
                "999999999.M9P1.host",
                "1700000050.M1P1.host,S=3",
                "1700000100.M2P1.host,S=5",
                want_last.as_str()
            ]
        );
        let sizes: Vec<u64> = mbox.messages.iter().map(|m| m.size).collect();
        assert_eq!(sizes, [5, 3, 5, 3]);
        assert!(
            mbox.messages
                .iter()
                .all(|m| m.path.parent() == Some(&dir.join("cur")))
        );
        let names: Vec<String> = mbox
            .messages
            .iter()
            .map(|m| m.path.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names[0], "999999999.M9P1.host:2,");
        assert_eq!(names[1], "1700000050.M1P1.host,S=3:2,S");
        // Only the hidden file and the directory stay in new/.
        assert_eq!(fs::read_dir(dir.join("new")).unwrap().count(), 2);

        // A second session sees the same messages with the same unique-ids.
        assert_eq!(list(root.path(), "alice").unwrap(), mbox);
    }

    #[test]
    fn a_draft_is_seen_only_once_published_and_leaves_nothing_in_tmp() {
        let root = tempfile::tempdir().unwrap();
        let dir = ensure_mailbox(root.path(), "bob").unwrap();
        let count = |sub: &str| fs::read_dir(dir.join(sub)).unwrap().count();
        let draft = Draft::write(root.path(), "bob", "1.a", "mx", 5, |f| {
            f.write_all(b"hi\r\n")
        })
        .unwrap();
        assert_eq!(count("new"), 0);
        draft.file().sync_all().unwrap();
        let published = draft.publish().unwrap();
        assert_eq!(fs::read(&published.path).unwrap(), b"hi\r\n");
        assert_eq!(published.path.parent(), Some(dir.join("new").as_path()));
        assert_eq!((count("new"), count("tmp")), (1, 0));

        // Given up: nothing anywhere.
        Draft::write(root.path(), "bob", "2.a", "mx", 1, |f| f.write_all(b"x"))
            .unwrap()
            .discard();
        // A failed write: nothing either.
        let failed = Draft::write(root.path(), "bob", "3.a", "mx", 1, |_| {
            Err(io::Error::other("disk gone"))
        });
        assert!(failed.is_err());
        assert_eq!((count("new"), count("tmp")), (1, 0));

        // new/ went missing between write and publish: made again.
        let draft =
            Draft::write(root.path(), "bob", "4.a", "mx", 1, |f| f.write_all(b"y")).unwrap();
        fs::remove_dir_all(dir.join("new")).unwrap();
        assert_eq!(fs::read(draft.publish().unwrap().path).unwrap(), b"y");
    }

    #[test]
    fn stale_tmp_files_are_removed_and_fresh_ones_kept() {
        let root = tempfile::tempdir().unwrap();
        let now = crate::clock::Clock::now(&crate::clock::SystemClock);
        let old = now - STALE_TMP - Duration::from_secs(60);
        for user in ["alice", "bob"] {
            let dir = ensure_mailbox(root.path(), user).unwrap();
            let stale = File::create(dir.join("tmp/1.crashed")).unwrap();
            stale.set_modified(old).unwrap();
            File::create(dir.join("tmp/2.writing")).unwrap();
            fs::create_dir(dir.join("tmp/subdir")).unwrap();
            let kept = File::create(dir.join("new/3.delivered")).unwrap();
            kept.set_modified(old).unwrap();
        }
        assert_eq!(clean_tmp(root.path(), now - STALE_TMP).unwrap(), 2);
        for user in ["alice", "bob"] {
            let dir = root.path().join(user);
            assert!(!dir.join("tmp/1.crashed").exists());
            assert!(dir.join("tmp/2.writing").exists());
            assert!(dir.join("tmp/subdir").is_dir());
            assert!(dir.join("new/3.delivered").exists());
        }
        assert_eq!(clean_tmp(&root.path().join("missing"), now).unwrap(), 0);
    }

    #[test]
    fn list_creates_a_missing_mailbox_and_rejects_bad_names() {
        let root = tempfile::tempdir().unwrap();
        assert_eq!(list(root.path(), "bob").unwrap(), Mailbox::default());
        assert!(root.path().join("bob").join("cur").is_dir());
        assert!(list(root.path(), "../x").is_err());
    }

    #[test]
    fn size_comes_from_w_field_when_present() {
        let root = tempfile::tempdir().unwrap();
        let dir = ensure_mailbox(root.path(), "alice").unwrap();
        put(&dir, "cur", "1.a,S=4,W=6:2,", b"a\nb\n");
        let mbox = list(root.path(), "alice").unwrap();
        assert_eq!(mbox.messages[0].size, 6);
    }

    #[test]
    fn unique_ids_fit_rfc_1939() {
        let long = "1".repeat(71);
        let cases: Vec<(&str, Option<&str>)> = vec![
            ("1700000000.M1P2.host", Some("1700000000.M1P2.host")),
            ("x", Some("x")),
            (&long[..70], Some(&long[..70])),
            (&long, None),
            ("with space", None),
            ("caf\u{e9}", None),
        ];
        for (base, want) in cases {
            let uid = unique_id(base);
            match want {
                Some(w) => assert_eq!(uid, w),
                None => {
                    assert_eq!(uid.len(), 64, "{base}");
                    assert!(uid.bytes().all(|b| b.is_ascii_hexdigit()));
                    assert_eq!(uid, unique_id(base), "stable");
                }
            }
        }
    }

    #[test]
    fn name_fields_parse() {
        assert_eq!(wire_size("1.a,S=4,W=6"), Some(6));
        assert_eq!(wire_size("1.a,W=12,S=4"), Some(12));
        assert_eq!(wire_size("1.a,S=4"), None);
        assert_eq!(wire_size("1.a,W=x"), None);
        assert_eq!(leading_number("1700000000.M1"), 1_700_000_000);
        assert_eq!(leading_number("abc"), 0);
    }

    #[test]
    fn remove_deletes_and_tolerates_missing_files() {
        let root = tempfile::tempdir().unwrap();
        let dir = ensure_mailbox(root.path(), "alice").unwrap();
        let a = put(&dir, "cur", "1.a:2,", b"a");
        let b = put(&dir, "cur", "2.b:2,", b"b");
        let gone = dir.join("cur").join("3.c:2,");
        remove(&[a.clone(), gone]).unwrap();
        assert!(!a.exists());
        assert!(b.exists());
        remove(&[a]).unwrap();
        let mbox = list(root.path(), "alice").unwrap();
        assert_eq!(mbox.messages.len(), 1);
        assert_eq!(mbox.messages[0].uid, "2.b");
    }

    #[test]
    fn remove_reports_errors() {
        let root = tempfile::tempdir().unwrap();
        // A directory cannot be removed with remove_file.
        let err = remove(&[root.path().to_path_buf()]);
        assert!(err.is_err());
    }
}
