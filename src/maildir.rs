//! Maildir storage: delivery into `<root>/<user>/{tmp,new,cur}` and the read side that POP3
//! serves from.
//!
//! Delivery follows the Maildir protocol: write under `tmp/` with a unique name, fsync, then
//! rename into `new/` and fsync the directory, so a message is either fully there or absent.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

static DELIVERIES: AtomicU64 = AtomicU64::new(0);

/// Creates `<root>/<user>/{tmp,new,cur}` if missing and returns the mailbox path.
pub fn ensure_mailbox(root: &Path, user: &str) -> io::Result<PathBuf> {
    let dir = mailbox_path(root, user)?;
    for sub in ["tmp", "new", "cur"] {
        fs::create_dir_all(dir.join(sub))?;
    }
    Ok(dir)
}

/// The mailbox folder of `user`, refusing names that could escape `root`.
pub fn mailbox_path(root: &Path, user: &str) -> io::Result<PathBuf> {
    let bad = user.is_empty()
        || user.starts_with('.')
        || user.contains(['/', '\\', '\0'])
        || user.chars().any(char::is_control);
    if bad {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "invalid mailbox name"));
    }
    Ok(root.join(user))
}

/// Delivers the message `bytes` (already carrying its headers) into `user`'s mailbox, durably.
/// `unique` must be unique for this host and time (e.g. `<unix secs>.<id>`); the file name is
/// `<unique>.<counter>.<hostname>`. Returns the final path.
pub fn deliver(
    root: &Path,
    user: &str,
    unique: &str,
    hostname: &str,
    bytes: &[u8],
) -> io::Result<PathBuf> {
    let dir = ensure_mailbox(root, user)?;
    let n = DELIVERIES.fetch_add(1, Ordering::Relaxed);
    // Maildir file names must not contain '/' or ':'.
    let host: String = hostname.chars().map(|c| if c == '/' || c == ':' { '_' } else { c }).collect();
    let name = format!("{unique}.M{n}P{}.{host},S={}", std::process::id(), bytes.len());
    let tmp = dir.join("tmp").join(&name);
    let dst = dir.join("new").join(&name);
    let mut f = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    fs::rename(&tmp, &dst)?;
    File::open(dir.join("new"))?.sync_all()?;
    Ok(dst)
}
