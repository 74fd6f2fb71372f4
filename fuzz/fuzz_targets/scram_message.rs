//! The SCRAM client-first and client-final parsers (RFC 5802 §7) never panic.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = mailgate::sasl::scram::message::parse_client_first(data);
    let _ = mailgate::sasl::scram::message::parse_client_final(data);
});
