//! The CRAM-MD5 (RFC 2195) server mechanism, started with
//! `mailgate::sasl::find("CRAM-MD5")` and stepped with the fuzzer's messages (see
//! `mailgate_fuzz::sasl_exchange`): never panics, and a success names the one known user.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    mailgate_fuzz::sasl_exchange("CRAM-MD5", data);
});
