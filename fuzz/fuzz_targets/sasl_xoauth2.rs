//! The XOAUTH2 server mechanism with a real token validator (HS256 on the fixed fuzz key, see
//! `mailgate_fuzz::validator`), stepped with the fuzzer's messages: never panics, and succeeds
//! only as the one known user.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = mailgate_fuzz::sasl_exchange("XOAUTH2", data);
});
