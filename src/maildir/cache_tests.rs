//! Tests of the listing cache on real directories: after every kind of change another process
//! can make (a delivery, a deletion, a rename from `new/` to `cur/`, a flag change, a file
//! replaced under its name), an open through the cache answers what a fresh [`list`] answers.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::*;
use crate::maildir::{deliver, ensure_mailbox, list};

/// Well after any change the test made: every listing is trusted.
fn later() -> SystemTime {
    crate::clock::SystemClock.now() + Duration::from_secs(3600)
}

fn put(dir: &Path, sub: &str, name: &str, body: &[u8]) -> PathBuf {
    let path = dir.join(sub).join(name);
    fs::write(&path, body).unwrap();
    path
}

/// A mailbox with three messages in cur/ and one in new/.
fn mailbox() -> (tempfile::TempDir, PathBuf) {
    let root = tempfile::tempdir().unwrap();
    let dir = ensure_mailbox(root.path(), "alice").unwrap();
    put(&dir, "cur", "1700000001.M1P1.h,S=3:2,", b"a\r\n");
    put(&dir, "cur", "1700000002.M2P1.h,S=5:2,S", b"bb\r\nc");
    put(&dir, "cur", "1700000003.M3P1.h,S=4,W=6:2,", b"d\ne\n");
    put(&dir, "new", "1700000004.M4P1.h,S=2", b"f\n");
    (root, dir)
}

/// Opens through the cache and checks the answer against a fresh listing.
fn open_checked(cache: &Cache, root: &Path) -> Mailbox {
    let cached = cache.open_at(root, "alice", later()).unwrap();
    let fresh = list(root, "alice").unwrap();
    assert_eq!(cached, fresh);
    cached
}

fn uids(mb: &Mailbox) -> Vec<&str> {
    mb.messages.iter().map(|m| m.uid.as_str()).collect()
}

#[test]
fn first_open_lists_like_list_then_hits() {
    let (root, _dir) = mailbox();
    let cache = Cache::new();
    let mb = open_checked(&cache, root.path());
    assert_eq!(mb.messages.len(), 4);
    assert_eq!(
        mb.messages.iter().map(|m| m.size).collect::<Vec<_>>(),
        [3, 5, 6, 2]
    );
    let first = cache.counters();
    assert_eq!((first.reads, first.hits, first.stats), (1, 0, 4));

    let again = cache.open_at(root.path(), "alice", later()).unwrap();
    assert_eq!(again, mb);
    let second = cache.counters();
    assert_eq!((second.reads, second.hits, second.stats), (1, 1, 4));
    // The hit shares the listing rather than copying it.
    assert!(Arc::ptr_eq(&again.messages, &mb.messages));
}

#[test]
fn a_delivery_shows_up() {
    let (root, _dir) = mailbox();
    let cache = Cache::new();
    open_checked(&cache, root.path());
    deliver(root.path(), "alice", "1700000000.X", "mx", b"new\r\n").unwrap();
    let mb = open_checked(&cache, root.path());
    assert_eq!(mb.messages.len(), 5);
    // Only the delivered file was stat'ed again.
    assert_eq!(cache.counters().stats, 4 + 1);
    // It sorts by the time its name starts with: first.
    assert!(mb.messages[0].uid.starts_with("1700000000.X."));
}

#[test]
fn a_file_moved_from_new_to_cur_by_another_reader_shows_up() {
    let (root, dir) = mailbox();
    let cache = Cache::new();
    open_checked(&cache, root.path());
    put(&dir, "new", "1700000005.M5P1.h", b"g\r\n");
    // Another reader (a second mailgate, Dovecot, an admin) moves it into cur/.
    fs::rename(
        dir.join("new/1700000005.M5P1.h"),
        dir.join("cur/1700000005.M5P1.h:2,"),
    )
    .unwrap();
    let mb = open_checked(&cache, root.path());
    assert_eq!(uids(&mb).last(), Some(&"1700000005.M5P1.h"));
}

#[test]
fn a_removal_by_another_process_shows_up() {
    let (root, dir) = mailbox();
    let cache = Cache::new();
    open_checked(&cache, root.path());
    fs::remove_file(dir.join("cur/1700000002.M2P1.h,S=5:2,S")).unwrap();
    let mb = open_checked(&cache, root.path());
    assert_eq!(
        uids(&mb),
        [
            "1700000001.M1P1.h,S=3",
            "1700000003.M3P1.h,S=4,W=6",
            "1700000004.M4P1.h,S=2"
        ]
    );
    // Nothing new to stat.
    assert_eq!(cache.counters().stats, 4);
}

#[test]
fn a_removal_through_remove_shows_up() {
    let (root, _dir) = mailbox();
    let cache = Cache::new();
    let mb = open_checked(&cache, root.path());
    super::super::remove(&[mb.messages[0].path.clone()]).unwrap();
    assert_eq!(open_checked(&cache, root.path()).messages.len(), 3);
}

#[test]
fn a_flag_change_keeps_the_unique_id() {
    let (root, dir) = mailbox();
    let cache = Cache::new();
    let before = open_checked(&cache, root.path());
    fs::rename(
        dir.join("cur/1700000001.M1P1.h,S=3:2,"),
        dir.join("cur/1700000001.M1P1.h,S=3:2,S"),
    )
    .unwrap();
    let after = open_checked(&cache, root.path());
    assert_eq!(uids(&before), uids(&after));
}

#[test]
fn a_file_replaced_under_its_name_is_read_again() {
    let (root, dir) = mailbox();
    let cache = Cache::new();
    open_checked(&cache, root.path());
    // A new file (new inode) renamed over an old name: a different size.
    let name = "1700000001.M1P1.h,S=3:2,";
    put(&dir, "tmp", "x", b"longer\r\n");
    fs::rename(dir.join("tmp/x"), dir.join("cur").join(name)).unwrap();
    let mb = open_checked(&cache, root.path());
    assert_eq!(mb.messages[0].size, 8);
}

#[test]
fn the_mailbox_removed_and_made_again() {
    let (root, dir) = mailbox();
    let cache = Cache::new();
    open_checked(&cache, root.path());
    fs::remove_dir_all(&dir).unwrap();
    assert_eq!(open_checked(&cache, root.path()).messages.len(), 0);
    put(&dir, "cur", "1.a:2,", b"a\r\n");
    assert_eq!(open_checked(&cache, root.path()).messages.len(), 1);
}

#[test]
fn hidden_files_and_folders_are_skipped() {
    let (root, dir) = mailbox();
    let cache = Cache::new();
    open_checked(&cache, root.path());
    put(&dir, "cur", ".hidden", b"x");
    fs::create_dir(dir.join("cur/folder")).unwrap();
    assert_eq!(open_checked(&cache, root.path()).messages.len(), 4);
}

#[test]
fn a_recent_change_is_not_trusted() {
    let (root, dir) = mailbox();
    let cache = Cache::new();
    // Opened within the margin of the last change: the listing is kept but not trusted.
    let stamp = fs::metadata(dir.join("cur")).unwrap().modified().unwrap();
    cache.open_at(root.path(), "alice", stamp).unwrap();
    cache.open_at(root.path(), "alice", stamp).unwrap();
    let c = cache.counters();
    assert_eq!((c.reads, c.hits), (2, 0));
    // Read again, but nothing stat'ed again.
    assert_eq!(c.stats, 4);
    // Once the change is old enough, the next read is trusted.
    cache.open_at(root.path(), "alice", later()).unwrap();
    cache.open_at(root.path(), "alice", later()).unwrap();
    assert_eq!(cache.counters().hits, 1);
}

#[test]
fn settled_needs_the_margin_and_no_future_times() {
    let at = |secs: i64| Stamp {
        dev: 1,
        ino: 2,
        mtime: (secs, 5),
        ctime: (secs, 5),
    };
    let now = UNIX_EPOCH + Duration::from_secs(1_000);
    assert!(at(997).settled_before(now));
    assert!(!at(998).settled_before(now));
    assert!(!at(1_100).settled_before(now));
    assert!(!at(-1).settled_before(now));
    let mixed = Stamp {
        ctime: (999, 0),
        ..at(500)
    };
    assert!(
        !mixed.settled_before(now),
        "a recent ctime is enough to distrust"
    );
}

#[test]
fn least_recently_used_mailboxes_are_evicted() {
    let root = tempfile::tempdir().unwrap();
    for user in ["a", "b", "c"] {
        let dir = ensure_mailbox(root.path(), user).unwrap();
        put(&dir, "cur", "1.x:2,", b"x");
        put(&dir, "cur", "2.y:2,", b"y");
    }
    let cache = Cache::with_limits(2, 100);
    let open = |u: &str| cache.open_at(root.path(), u, later()).unwrap();
    open("a");
    open("b");
    open("a"); // hit; b is now the least recently used
    open("c"); // evicts b
    assert_eq!(cache.len(), 2);
    let before = cache.counters();
    open("a");
    assert_eq!(cache.counters().hits, before.hits + 1);
    open("b");
    assert_eq!(cache.counters().reads, before.reads + 1);

    // A message budget of 5: two mailboxes of two fit, a third evicts one.
    let cache = Cache::with_limits(10, 5);
    for u in ["a", "b", "c"] {
        cache.open_at(root.path(), u, later()).unwrap();
    }
    assert_eq!(cache.len(), 2);
    // A mailbox over the whole budget is not kept.
    let cache = Cache::with_limits(10, 1);
    cache.open_at(root.path(), "a", later()).unwrap();
    assert!(cache.is_empty());
}

#[test]
fn many_changes_in_a_row_stay_right() {
    let (root, dir) = mailbox();
    let cache = Cache::new();
    for round in 0..20u32 {
        match round % 4 {
            0 => {
                let body = vec![b'x'; round as usize];
                deliver(
                    root.path(),
                    "alice",
                    &format!("{}.r{round}", 1_600_000_000 + round),
                    "h",
                    &body,
                )
                .unwrap();
            }
            1 => {
                put(&dir, "cur", &format!("1500000000.same{round}:2,"), b"z\r\n");
            }
            2 => {
                let mb = list(root.path(), "alice").unwrap();
                if let Some(m) = mb.messages.get(round as usize % mb.messages.len().max(1)) {
                    fs::remove_file(&m.path).unwrap();
                }
                continue;
            }
            _ => {
                open_checked(&cache, root.path());
                continue;
            }
        };
        open_checked(&cache, root.path());
    }
}
