//! The NTLM (MS-NLMP) server mechanism stepped with the fuzzer's messages: never panics.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    mailgate_fuzz::sasl_exchange("NTLM", data);
});
