//! The PLAIN (RFC 4616) server mechanism, started with
//! `mailgate::sasl::find("PLAIN")` and stepped with the fuzzer's messages (see
//! `mailgate_fuzz::sasl_exchange`): never panics, and a success names the one known user.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    mailgate_fuzz::sasl_exchange("PLAIN", data);
});
