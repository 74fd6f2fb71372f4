//! The users file (`mailgate::auth::UserStore::parse`): never panics on any text, and a store
//! that loads answers its queries consistently. Input is capped at 4 KiB; credential checks
//! run only for users whose stored forms are all cheap to verify (`PLAIN`, `CRAM-MD5`, `NTLM`
//! and the one-round legacy digests), so that slow hashes (and their attacker-chosen costs) do
//! not stall the run.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mailgate::auth::{Authenticator, MAX_FORMS_PER_USER, UserStore, Verdict};

const CHEAP: &[&str] = &[
    "PLAIN",
    "CRAM-MD5",
    "NTLM",
    "PLAIN-MD4",
    "PLAIN-MD5",
    "SMD5",
    "SHA",
    "SSHA",
    "SHA256",
    "SSHA256",
    "SHA512",
    "SSHA512",
];

fuzz_target!(|data: &[u8]| {
    if data.len() > 4096 {
        return;
    }
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(store) = UserStore::parse(text, "fuzz") else {
        return;
    };
    assert_eq!(store.users().len(), store.len());
    for user in store.users() {
        let user = user.as_str();
        assert_eq!(store.lookup(user).as_deref(), Some(user));
        if user.is_ascii() {
            assert_eq!(store.lookup(&user.to_uppercase()).as_deref(), Some(user));
        }
        let schemes = store.schemes(user);
        assert!(!schemes.is_empty() && schemes.len() <= MAX_FORMS_PER_USER);
        for mech in [
            "PLAIN",
            "LOGIN",
            "CRAM-MD5",
            "APOP",
            "NTLM",
            "SCRAM-SHA-256",
            "X",
        ] {
            let _ = store.can_serve(user, mech);
        }
        let _ = store.nt_hash(user);
        if !schemes.iter().all(|s| CHEAP.contains(s)) {
            continue;
        }
        let verdict = store.verify_password(user, b"\0not the password");
        assert!(!matches!(verdict, Verdict::Ok(ref u) if u != user));
        let verdict =
            store.verify_cram_md5(user, b"<1.2@fuzz>", b"0123456789abcdef0123456789abcdef");
        assert!(!matches!(verdict, Verdict::Ok(ref u) if u != user));
        let _ = store.verify_apop(user, b"<1.2@fuzz>", b"0123456789abcdef0123456789abcdef");
    }
});
