//! The SCRAM-SHA-256 (RFC 5802, RFC 7677) server mechanism stepped with the fuzzer's
//! messages: never panics.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    mailgate_fuzz::sasl_exchange("SCRAM-SHA-256", data);
});
