//! The OAUTHBEARER (RFC 7628) server mechanism, without a token validator, stepped with the
//! fuzzer's messages: never panics, never succeeds.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    assert_ne!(
        mailgate_fuzz::sasl_exchange("OAUTHBEARER", data),
        Some(true)
    );
});
