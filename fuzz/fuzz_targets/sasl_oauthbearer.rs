//! The OAUTHBEARER (RFC 7628) server mechanism with a real token validator (HS256 on the fixed
//! fuzz key, see `mailgate_fuzz::validator`), stepped with the fuzzer's messages: never panics,
//! and succeeds only as the one known user (the seeds carry a token that verifies, so the
//! claim checks and the RFC 7628 error exchange are reached).

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = mailgate_fuzz::sasl_exchange("OAUTHBEARER", data);
});
