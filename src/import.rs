//! `mailgate import pop3` and `mailgate import maildir`: a mailbox brought from the old server
//! (over POP3, or from its Maildir on disk) into the local Maildir, each message keeping the
//! unique-id (UIDL) it had there (`maildir::uidlist`), so a client that leaves mail on the
//! server downloads nothing again after the move. `dovecot.rs` reads an old Dovecot Maildir's
//! `dovecot-uidlist` to know those UIDLs.
//!
//! - **The switch is atomic.** A user whose Maildir does not exist yet is imported into
//!   `<maildir>/.import-<user>` (a name no user can have) and that folder is renamed to
//!   `<maildir>/<user>` at the end: until then the user is served from the old server
//!   (`[pop3.proxy]`), never from a half-copied mailbox.
//! - **Resumable and idempotent.** Each message is written under `tmp/`, fsynced, its UIDL
//!   recorded, then renamed into `cur/`; a message whose UIDL is recorded and whose file is in
//!   `cur/` is not fetched again. Running it twice copies nothing twice; an interrupted run
//!   goes on where it stopped.
//! - **The old mailbox is left untouched:** no DELE is ever sent.

use std::collections::HashSet;
use std::io::{self, IsTerminal, Write as _};
use std::path::{Path, PathBuf};

use crate::auth::Secret;
use crate::config::Config;
use crate::maildir::uidlist;
use crate::upstream::proxy::{MultiLine, Pop3Proxy};

mod dovecot;

pub use dovecot::UidlFormat;

/// Most messages one mailbox may list.
pub const MAX_MESSAGES: usize = 1_000_000;

/// What an import did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Report {
    /// Messages on the old server.
    pub listed: u64,
    /// Messages copied by this run.
    pub copied: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Messages already imported before (skipped).
    pub present: u64,
}

/// Where an import writes: the user's Maildir if it exists, else the staging folder that
/// [`switch`] moves into place at the end.
struct Target {
    user: String,
    target: PathBuf,
    work: PathBuf,
    staged: bool,
    present: HashSet<String>,
}

impl Target {
    fn open(config: &Config, user: &str) -> Result<Target, String> {
        let user =
            crate::auth::user_name(user).ok_or_else(|| format!("{user:?} is not a user name"))?;
        let root = &config.delivery.maildir;
        let target = root.join(&user);
        let staged = !target.is_dir();
        let work = if staged {
            root.join(format!(".import-{user}"))
        } else {
            target.clone()
        };
        make_maildir(&work).map_err(|e| format!("{}: {e}", work.display()))?;
        let present = present_uids(&work).map_err(|e| format!("{}: {e}", work.display()))?;
        Ok(Target {
            user,
            target,
            work,
            staged,
            present,
        })
    }

    fn finish(&self) -> Result<(), String> {
        if self.staged {
            switch(&self.work, &self.target)
                .map_err(|e| format!("{}: {e}", self.target.display()))?;
        }
        Ok(())
    }
}

/// Copies `user`'s mailbox from an old Dovecot (or plain) Maildir at `source` on disk,
/// keeping the POP3 UIDLs its `dovecot-uidlist` gives under `format` (messages it does not
/// list keep their file name as UIDL). Line endings become CRLF, as POP3 sends them.
/// Blocking.
pub fn maildir(
    config: &Config,
    user: &str,
    source: &Path,
    format: &UidlFormat,
) -> Result<Report, String> {
    let t = Target::open(config, user)?;
    let listing =
        dovecot::list(source, format).map_err(|e| format!("{}: {e}", source.display()))?;
    let mut report = Report {
        listed: listing.len() as u64,
        ..Report::default()
    };
    let started = crate::clock::unix_secs(crate::clock::Clock::now(&crate::clock::SystemClock));
    let terminal = io::stderr().is_terminal();
    for (i, (path, uid)) in listing.iter().enumerate() {
        if t.present.contains(uid) {
            report.present += 1;
            continue;
        }
        let raw = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let body = crlf(&raw);
        let base = format!(
            "{started}.M{i:08}P{}.import,W={}",
            std::process::id(),
            body.len()
        );
        store(&t.work, &base, uid, &body).map_err(|e| format!("{}: {e}", t.work.display()))?;
        report.copied += 1;
        report.bytes += body.len() as u64;
        progress(terminal, i + 1, listing.len(), report.bytes);
    }
    progress_done(terminal);
    t.finish()?;
    Ok(report)
}

/// The progress line on a terminal: messages done of all, bytes copied.
fn progress(terminal: bool, done: usize, all: usize, bytes: u64) {
    if terminal {
        eprint!("\r{done}/{all} messages, {bytes} bytes");
        let _ = io::stderr().flush();
    }
}

/// Ends the progress line.
fn progress_done(terminal: bool) {
    if terminal {
        eprintln!();
    }
}

/// `bytes` with every bare LF made CRLF.
fn crlf(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() + bytes.len() / 40);
    let mut prev = 0u8;
    for &b in bytes {
        if b == b'\n' && prev != b'\r' {
            out.push(b'\r');
        }
        out.push(b);
        prev = b;
    }
    out
}

/// Pulls `user`'s mailbox from the old server (`[pop3.proxy]`): logged in with `password`,
/// or as the master user when it is `None`.
pub async fn pop3(config: &Config, user: &str, password: Option<Secret>) -> Result<Report, String> {
    let proxy_config = config
        .pop3_proxy
        .as_ref()
        .ok_or("import pop3 needs a [pop3.proxy] table: the old server to import from")?;
    let t = Target::open(config, user)?;
    let (user, work, present) = (&t.user, &t.work, &t.present);

    let proxy = Pop3Proxy::new(proxy_config)?;
    let (conn, outcome) = proxy.open(user, password.as_ref()).await;
    let mut conn = conn.ok_or_else(|| format!("cannot log in to the old server: {outcome:?}"))?;
    let timeout = proxy.timeout();
    let listing = tokio::time::timeout(timeout, uidl(&mut conn))
        .await
        .map_err(|_| "the old server did not answer UIDL in time".to_string())??;
    let mut report = Report {
        listed: listing.len() as u64,
        ..Report::default()
    };
    let started = crate::clock::unix_secs(crate::clock::Clock::now(&crate::clock::SystemClock));
    let terminal = io::stderr().is_terminal();
    for (i, (n, uid)) in listing.iter().enumerate() {
        if present.contains(uid) {
            report.present += 1;
            continue;
        }
        let body = tokio::time::timeout(timeout, retr(&mut conn, *n))
            .await
            .map_err(|_| format!("the old server did not send message {n} in time"))??;
        let base = format!(
            "{started}.M{n:08}P{}.import,W={}",
            std::process::id(),
            body.len()
        );
        let (work2, base2, uid2) = (work.clone(), base.clone(), uid.clone());
        let size = body.len() as u64;
        tokio::task::spawn_blocking(move || store(&work2, &base2, &uid2, &body))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("{}: {e}", work.display()))?;
        report.copied += 1;
        report.bytes += size;
        progress(terminal, i + 1, listing.len(), report.bytes);
    }
    progress_done(terminal);
    // No DELE was sent: QUIT changes nothing on the old server.
    conn.logout(std::time::Duration::from_secs(5)).await;
    t.finish()?;
    Ok(report)
}

/// The UIDL listing: `(message number, unique-id)` pairs.
async fn uidl(conn: &mut crate::upstream::Connection) -> Result<Vec<(u32, String)>, String> {
    let e = |e: crate::upstream::ConnError| e.to_string();
    conn.write(b"UIDL\r\n").await.map_err(e)?;
    let first = conn.read_line().await.map_err(e)?;
    if !first.starts_with(b"+OK") {
        return Err(format!(
            "the old server refused UIDL: {}",
            crate::upstream::excerpt(&first)
        ));
    }
    let mut out = Vec::new();
    loop {
        let line = conn.read_line().await.map_err(e)?;
        if line == b"." {
            return Ok(out);
        }
        let text = String::from_utf8_lossy(&line);
        let mut words = text.split_ascii_whitespace();
        let n = words.next().and_then(|n| n.parse::<u32>().ok());
        let uid = words.next().filter(|u| uidlist::valid_uid(u));
        match (n, uid) {
            (Some(n), Some(uid)) if out.len() < MAX_MESSAGES => out.push((n, uid.to_owned())),
            (Some(_), Some(_)) => return Err(format!("more than {MAX_MESSAGES} messages")),
            _ => {
                return Err(format!(
                    "the old server sent a bad UIDL line: {}",
                    crate::upstream::excerpt(&line)
                ));
            }
        }
    }
}

/// Message `n`, dot-stuffing removed, CRLF line endings.
async fn retr(conn: &mut crate::upstream::Connection, n: u32) -> Result<Vec<u8>, String> {
    let e = |e: crate::upstream::ConnError| e.to_string();
    conn.write(format!("RETR {n}\r\n").as_bytes())
        .await
        .map_err(e)?;
    let first = conn.read_line().await.map_err(e)?;
    if !first.starts_with(b"+OK") {
        return Err(format!(
            "the old server refused RETR {n}: {}",
            crate::upstream::excerpt(&first)
        ));
    }
    let mut raw = Vec::new();
    let mut scan = MultiLine::default();
    loop {
        let start = raw.len();
        conn.read_some(&mut raw).await.map_err(e)?;
        if let Some(end) = scan.feed(&raw[start..]) {
            raw.truncate(start + end);
            break;
        }
    }
    Ok(unstuff(&raw))
}

/// The message inside a multi-line answer (its terminating `.` line included in `raw`): the
/// leading dot of stuffed lines removed (RFC 1939 §3), lines ending in CRLF.
fn unstuff(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len());
    let mut lines: Vec<&[u8]> = raw.split(|&b| b == b'\n').collect();
    // The split leaves an empty piece after the last LF, and before it the "." line.
    lines.pop();
    lines.pop();
    for line in lines {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let line = line.strip_prefix(b".").unwrap_or(line);
        out.extend_from_slice(line);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Creates the Maildir folders of `dir`.
fn make_maildir(dir: &Path) -> io::Result<()> {
    for sub in ["tmp", "new", "cur"] {
        std::fs::create_dir_all(dir.join(sub))?;
    }
    Ok(())
}

/// The unique-ids already imported: recorded in the uidlist with their file in `cur/`.
fn present_uids(dir: &Path) -> io::Result<HashSet<String>> {
    let map = uidlist::read(dir)?;
    let mut present = HashSet::new();
    for entry in std::fs::read_dir(dir.join("cur"))? {
        let name = entry?.file_name();
        let name = name.to_string_lossy();
        let base = name.split(':').next().unwrap_or_default();
        if let Some(uid) = map.get(base) {
            present.insert(uid.clone());
        }
    }
    Ok(present)
}

/// Writes one message durably: under `tmp/`, fsynced, its unique-id recorded, then renamed
/// into `cur/` and the folder fsynced.
fn store(dir: &Path, base: &str, uid: &str, body: &[u8]) -> io::Result<()> {
    let tmp = dir.join("tmp").join(base);
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(body)?;
    f.sync_all()?;
    drop(f);
    uidlist::add(dir, base, uid)?;
    let cur = dir.join("cur");
    std::fs::rename(&tmp, cur.join(format!("{base}:2,S")))?;
    std::fs::File::open(&cur)?.sync_all()
}

/// Makes the imported folder the user's mailbox: renamed into place, or (should a mailbox
/// have appeared meanwhile) its messages and unique-ids moved into that one.
fn switch(work: &Path, target: &Path) -> io::Result<()> {
    let root: PathBuf = target.parent().map(Path::to_path_buf).unwrap_or_default();
    if !target.exists() {
        std::fs::rename(work, target)?;
        return std::fs::File::open(&root)?.sync_all();
    }
    make_maildir(target)?;
    let map = uidlist::read(work)?;
    for entry in std::fs::read_dir(work.join("cur"))? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let base = name.split(':').next().unwrap_or_default();
        if let Some(uid) = map.get(base) {
            uidlist::add(target, base, uid)?;
        }
        std::fs::rename(entry.path(), target.join("cur").join(&name))?;
    }
    std::fs::File::open(target.join("cur"))?.sync_all()?;
    std::fs::remove_dir_all(work)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_stuffing_is_undone() {
        let raw = b"Subject: x\r\n\r\n..leading dot\r\nbody\r\n.\r\n";
        assert_eq!(unstuff(raw), b"Subject: x\r\n\r\n.leading dot\r\nbody\r\n");
        assert_eq!(unstuff(b".\r\n"), b"");
    }
}
