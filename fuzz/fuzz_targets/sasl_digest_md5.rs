//! The DIGEST-MD5 (RFC 2831) server mechanism, started with
//! `mailgate::sasl::find("DIGEST-MD5")` and stepped with the fuzzer's messages (see
//! `mailgate_fuzz::sasl_exchange`): the digest-response parser (quoted strings, escapes,
//! duplicates, bounds) and every refusal after it; never panics, and a success names the one
//! known user.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    mailgate_fuzz::sasl_exchange("DIGEST-MD5", data);
});
