//! The cluster's change messages (`mailgate::store::cluster::parse_change_message`), read
//! from the Redis channel every node follows: never a panic; a message that parses encodes
//! back to one that parses to the same change; a user name stays bounded and free of control
//! characters.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mailgate::store::MAX_USER_LEN;
use mailgate::store::cluster::{ChangeMessage, parse_change_message};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Some(message) = parse_change_message(text) else {
        return;
    };
    if let ChangeMessage::Put(_, entry) = &message {
        assert!(entry.user.len() <= MAX_USER_LEN);
        assert!(!entry.user.chars().any(char::is_control));
    }
    assert_eq!(parse_change_message(&message.encode()), Some(message));
});
