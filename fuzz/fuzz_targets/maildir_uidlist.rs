//! The unique-ids kept by `mailgate import` (`mailgate::maildir::uidlist::parse`): never
//! panics, and every entry it keeps is a base name a Maildir can hold mapped to an RFC 1939
//! unique-id.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mailgate::maildir::uidlist;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    for (base, uid) in uidlist::parse(&text) {
        assert!(!base.is_empty() && !base.contains(['/', ':']), "{base:?}");
        assert!(uidlist::valid_uid(&uid), "{uid:?}");
    }
});
