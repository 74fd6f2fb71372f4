//! Spool envelope files (`mailgate::spool::entry::Envelope::parse`): never panics, a parsed
//! envelope has a safe id, and `to_bytes` gives a file that parses back to the same envelope.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mailgate::spool::entry::{Envelope, MAX_ENVELOPE_LEN, VERSION, is_valid_id};

fuzz_target!(|data: &[u8]| {
    let Ok(env) = Envelope::parse(data) else {
        return;
    };
    assert_eq!(env.version, VERSION);
    assert!(is_valid_id(&env.id) && !env.id.contains(['/', '\\']) && env.id != "..");
    let bytes = env.to_bytes().expect("a parsed envelope serializes");
    if bytes.len() <= MAX_ENVELOPE_LEN {
        let again = Envelope::parse(&bytes).expect("a written envelope parses");
        assert_eq!(again, env);
    }
});
