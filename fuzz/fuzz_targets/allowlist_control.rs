//! The allowlist control channel (`mailgate::control::parse_request`, and `respond` with the
//! allowlist service behind it): never panics; each input line is parsed and carried out
//! against one allowlist at a fixed time, every answer is a well-formed response, an `ADD`
//! the service accepts answers the entry it stored and that entry shows in `LIST`, and a
//! `REMOVE` it accepts removes the entry it answers.

#![no_main]

use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, SystemTime};

use libfuzzer_sys::fuzz_target;
use mailgate::allowlist::{Allowlist, Settings};
use mailgate::audit::Auditor;
use mailgate::control::{Request, parse_list, parse_request, parse_response, respond};
use mailgate::store::memory::MemoryAllowlist;

/// The output of a future ready at its first poll: the memory store answers at once.
fn ready<F: Future>(f: F) -> F::Output {
    match pin!(f).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("the memory store answers at once"),
    }
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let settings = Settings {
        enabled: true,
        ttl: Duration::from_secs(600),
        ipv6_prefix: 64,
    };
    let store = Arc::new(MemoryAllowlist::new(settings.ttl, 8, 0));
    let allowlist = Allowlist::new(store.clone(), settings, Auditor::disabled());
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let list = || parse_list(&ready(respond(&allowlist, "LIST", now))).expect("LIST parses");
    for line in text.lines().take(64) {
        let parsed = parse_request(line);
        let answer = ready(respond(&allowlist, line, now));
        assert!(answer.ends_with('\n'));
        let accepted = parse_response(&answer).is_ok();
        if !accepted {
            assert!(answer.starts_with("ERR "), "{answer}");
            assert_eq!(answer.matches('\n').count(), 1, "one line: {answer:?}");
        }
        match parsed {
            Err(_) => assert!(!accepted),
            Ok(Request::List) => assert!(list().len() <= 8),
            Ok(Request::Add { user, .. }) if accepted => {
                assert!(!user.chars().any(char::is_control));
                let stored = parse_list(&answer).expect("ADD answers the entry");
                assert_eq!(stored.len(), 1, "{answer}");
                assert!(
                    list().iter().any(|e| e.net == stored[0].net),
                    "{} missing from LIST",
                    stored[0].net
                );
            }
            Ok(Request::Remove { .. }) if accepted => {
                let removed = parse_list(&answer).expect("REMOVE answers the entry");
                assert_eq!(removed.len(), 1, "{answer}");
                assert!(
                    list().iter().all(|e| e.net != removed[0].net),
                    "{} still listed",
                    removed[0].net
                );
            }
            // No delivery worker here: every queue action is refused.
            Ok(Request::Queue(_)) => assert!(!accepted),
            Ok(_) => {}
        }
    }
    assert_eq!(list().len(), store.entries(now).len());
});
