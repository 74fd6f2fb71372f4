//! The end of a multi-line POP3 answer relayed from the old server
//! (`mailgate::upstream::proxy::MultiLine`): never panics, and where the bytes split does not
//! change where the answer ends.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mailgate::upstream::proxy::MultiLine;

fuzz_target!(|data: &[u8]| {
    let Some((&cut, bytes)) = data.split_first() else {
        return;
    };
    let whole = MultiLine::default().feed(bytes);
    if let Some(end) = whole {
        assert!(end <= bytes.len());
        assert_eq!(bytes[end - 1], b'\n');
    }
    let split = usize::from(cut) % (bytes.len() + 1);
    let mut m = MultiLine::default();
    let (a, b) = bytes.split_at(split);
    let parts = m.feed(a).or_else(|| m.feed(b).map(|n| n + a.len()));
    assert_eq!(parts, whole, "split at {split}");
});
