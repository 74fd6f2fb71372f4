//! The NTLM message parsers (MS-NLMP §2.2): NEGOTIATE, CHALLENGE, AUTHENTICATE and the
//! target-info list never panic or read out of bounds on any input.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = mailgate::sasl::ntlm::message::Negotiate::parse(data);
    let _ = mailgate::sasl::ntlm::message::Challenge::parse(data);
    let _ = mailgate::sasl::ntlm::message::Authenticate::parse(data);
    let _ = mailgate::sasl::ntlm::message::parse_target_info(data);
});
