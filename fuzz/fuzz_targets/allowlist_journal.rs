//! The state files read at start: the allowlist journal replayed over an empty list
//! (`MemoryAllowlist::open_journal`) and the known-networks snapshot
//! (`MemoryKnownAddresses::load`). Never panics, and the list stays within its bound.

#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use libfuzzer_sys::fuzz_target;
use mailgate::store::known::MemoryKnownAddresses;
use mailgate::store::memory::MemoryAllowlist;

/// A folder of this process's own, made once.
fn dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = std::env::temp_dir().join(format!("mailgate-fuzz-journal-{}", std::process::id()));
        std::fs::create_dir_all(&d).expect("fuzz folder");
        d
    })
}

fuzz_target!(|data: &[u8]| {
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let journal = dir().join("allowlist.journal");
    std::fs::write(&journal, data).expect("write journal");
    let mut list = MemoryAllowlist::new(Duration::from_secs(1800), 8, 3);
    if list.open_journal(&journal, now).is_ok() {
        assert!(list.len() <= 8, "over max_entries: {}", list.len());
        assert!(list.entries(now).iter().all(|(_, e)| e.expires_at > now));
    }
    drop(list);

    let known = dir().join("known_networks.json");
    std::fs::write(&known, data).expect("write snapshot");
    let k = MemoryKnownAddresses::new(Duration::from_secs(30 * 86_400), 8);
    let _ = k.load(&known, now);
    assert!(k.purge_now(now) <= 8);
});
