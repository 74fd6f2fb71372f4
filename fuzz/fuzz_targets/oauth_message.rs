//! The XOAUTH2 and OAUTHBEARER (RFC 7628 §3.1) message parsers never panic.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = mailgate::sasl::xoauth2::parse_xoauth2(data);
    let _ = mailgate::sasl::oauthbearer::parse_oauthbearer(data);
    let _ = mailgate::sasl::oauth_message::parse_pairs(data);
});
