//! The allowlist control channel (`mailgate::control::parse_request`, and `respond` behind it):
//! never panics; each input line is parsed and carried out against one allowlist at a fixed
//! time, every answer is a well-formed response, and a `LIST` answer parses back into entries
//! that include the address just added.

#![no_main]

use std::time::{Duration, SystemTime};

use libfuzzer_sys::fuzz_target;
use mailgate::allowlist::Allowlist;
use mailgate::control::{Request, parse_list, parse_request, parse_response, respond};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let allowlist = Allowlist::new(Duration::from_secs(600), 64, 8, 0);
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    for line in text.lines().take(64) {
        let parsed = parse_request(line);
        let answer = respond(&allowlist, line, now);
        assert!(answer.ends_with('\n'));
        match parsed {
            Err(_) => assert!(parse_response(&answer).is_err()),
            Ok(Request::List) => {
                let entries = parse_list(&answer).expect("LIST answer parses");
                assert!(entries.len() <= 8);
            }
            Ok(Request::Add { ip, user, .. }) => {
                assert!(!user.chars().any(char::is_control));
                assert_eq!(answer, "OK\n");
                assert!(allowlist.is_allowed(ip, now), "{ip} not allowed after ADD");
                let net = allowlist.key(ip).to_string();
                let listed = parse_list(&respond(&allowlist, "LIST", now)).expect("LIST parses");
                assert!(
                    listed.iter().any(|e| e.net == net),
                    "{net} missing from LIST"
                );
            }
            Ok(Request::Remove { ip }) => {
                assert!(!allowlist.is_allowed(ip, now));
            }
        }
    }
    let listed = parse_list(&respond(&allowlist, "LIST", now)).expect("LIST answer parses");
    assert_eq!(listed.len(), allowlist.entries(now).len());
});
