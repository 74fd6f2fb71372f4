//! Micro-benchmarks for the gateway's hot paths, on a small harness of its own (std::time
//! only): the SMTP and POP3 command parsers (RFC 5321 §4.1, RFC 1939), the DATA receiver
//! (RFC 5321 §4.5.2), one complete server exchange of each SASL mechanism against a users file
//! of 1,000 `{PLAIN}` users (PLAIN RFC 4616, LOGIN, CRAM-MD5 RFC 2195, NTLMv2 MS-NLMP), and the
//! POP-before-SMTP allowlist at 1,000 to 1,000,000 entries: insert, lookup and an expiry sweep.
//!
//! `cargo bench --bench hot` runs everything; `cargo bench --bench hot -- allowlist` only the
//! benchmarks whose name contains `allowlist`. Each figure is the median of 5 rounds.

// Benchmarks measure wall-clock time; the gateway's clock rule (clippy.toml) is for the gateway.
#![allow(clippy::disallowed_methods)]

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ipnet::IpNet;
use mailgate::allowlist::{Allowlist, Settings};
use mailgate::auth::{Authenticator, UserStore};
use mailgate::sasl::{self, Environment, Step};
use mailgate::store::memory::MemoryAllowlist;
use mailgate_testkit::sasl as client;

const ROUNDS: usize = 5;
const PASSWORD: &str = "bench-password";

/// Runs `f` `iters` times per round; prints the median time per call.
fn bench(filter: &Option<String>, name: &str, iters: u64, mut f: impl FnMut(u64)) {
    if filter.as_ref().is_some_and(|p| !name.contains(p.as_str())) {
        return;
    }
    let mut per_call: Vec<f64> = (0..ROUNDS)
        .map(|_| {
            let start = Instant::now();
            for i in 0..iters {
                f(i);
            }
            start.elapsed().as_nanos() as f64 / iters as f64
        })
        .collect();
    per_call.sort_by(f64::total_cmp);
    println!("{name:<52} {:>12}", human(per_call[ROUNDS / 2]));
}

/// Times one call of `f` (for operations too slow to repeat), median of `ROUNDS`, each round
/// on fresh state from `setup`.
fn bench_once<S>(
    filter: &Option<String>,
    name: &str,
    mut setup: impl FnMut() -> S,
    mut f: impl FnMut(&S),
) {
    if filter.as_ref().is_some_and(|p| !name.contains(p.as_str())) {
        return;
    }
    let mut times: Vec<f64> = (0..ROUNDS)
        .map(|_| {
            let state = setup();
            let start = Instant::now();
            f(&state);
            start.elapsed().as_nanos() as f64
        })
        .collect();
    times.sort_by(f64::total_cmp);
    println!("{name:<52} {:>12}", human(times[ROUNDS / 2]));
}

fn human(ns: f64) -> String {
    match ns {
        n if n < 1e3 => format!("{n:.1} ns"),
        n if n < 1e6 => format!("{:.2} µs", n / 1e3),
        n if n < 1e9 => format!("{:.2} ms", n / 1e6),
        n => format!("{:.2} s", n / 1e9),
    }
}

fn users() -> Arc<dyn Authenticator> {
    let text: String = (0..1000)
        .map(|i| format!("user{i:04}:{{PLAIN}}{PASSWORD}\n"))
        .collect();
    match UserStore::parse(&text, "bench users") {
        Ok(store) => Arc::new(store),
        Err(e) => panic!("bench users: {e}"),
    }
}

fn parsers(filter: &Option<String>) {
    let smtp_lines: &[&[u8]] = &[
        b"EHLO client.example.org",
        b"MAIL FROM:<user0042@example.test> SIZE=1024 BODY=8BITMIME",
        b"RCPT TO:<sink@relay.bench.test>",
        b"DATA",
        b"AUTH PLAIN AHVzZXIwMDQyAGJlbmNoLXBhc3N3b3Jk",
        b"QUIT",
    ];
    for line in smtp_lines {
        let name = format!(
            "smtp::command::parse {}",
            String::from_utf8_lossy(&line[..4])
        );
        bench(filter, &name, 200_000, |_| {
            let _ = black_box(mailgate::smtp::command::parse(black_box(line)));
        });
    }
    let pop_lines: &[&[u8]] = &[b"USER user0042", b"PASS bench-password", b"STAT", b"RETR 1"];
    for line in pop_lines {
        let name = format!(
            "pop3::command::parse {}",
            String::from_utf8_lossy(&line[..4])
        );
        bench(filter, &name, 200_000, |_| {
            let _ = black_box(mailgate::pop3::command::parse(black_box(line)));
        });
    }
    let message = message_1k();
    let mut out = Vec::with_capacity(2048);
    bench(
        filter,
        "smtp::data::DataReceiver 1 KiB message",
        100_000,
        |_| {
            out.clear();
            let mut rx = mailgate::smtp::data::DataReceiver::new(1 << 20);
            black_box(rx.feed(black_box(&message), &mut out));
        },
    );
}

fn message_1k() -> Vec<u8> {
    let mut m = b"Subject: x\r\n\r\n".to_vec();
    while m.len() < 1024 - 5 {
        m.extend_from_slice(b"a line of text in the message body ...\r\n");
    }
    m.truncate(1024 - 5);
    m.extend_from_slice(b"\r\n.\r\n");
    m
}

/// One complete server-side exchange of `mechanism`, with the client's messages made by the
/// test kit's encoders (`mailgate_testkit::sasl`) from the server's challenge; panics unless it
/// ends in success.
fn exchange(env: &Environment, mechanism: &str, user: &str, attempt: u32) {
    let Some(desc) = sasl::find(mechanism) else {
        panic!("{mechanism} is not registered");
    };
    let mut m = (desc.start)(&env.context(attempt));
    let mut step = match mechanism {
        "PLAIN" => m.step(Some(client::plain("", user, PASSWORD).as_bytes())),
        "NTLM" => {
            let negotiate = B64.decode(client::ntlm_negotiate_b64()).unwrap_or_default();
            m.step(Some(&negotiate))
        }
        _ => m.step(None),
    };
    let mut sent_user = false;
    for _ in 0..8 {
        let challenge = match step {
            Step::Success(_) => return,
            Step::Failure(f) => panic!("{mechanism}: {f}"),
            Step::Challenge(c) => c,
            // Answered at once, as the session driver does for a cheap check.
            Step::Verify(check) => {
                step = m.resume(mailgate::sasl::answer(&*env.auth, check));
                continue;
            }
        };
        let answer = match mechanism {
            "LOGIN" if !sent_user => {
                sent_user = true;
                user.as_bytes().to_vec()
            }
            "LOGIN" => PASSWORD.as_bytes().to_vec(),
            "CRAM-MD5" => client::cram_md5(user, PASSWORD.as_bytes(), &challenge).into_bytes(),
            "NTLM" => {
                let b64 = client::ntlm_authenticate_b64(
                    &B64.encode(&challenge),
                    &client::ntlm_credentials(user, "", PASSWORD),
                );
                B64.decode(b64.unwrap_or_default()).unwrap_or_default()
            }
            _ => panic!("{mechanism}: unexpected challenge"),
        };
        step = m.step(Some(&answer));
    }
    panic!("{mechanism}: no outcome after 8 steps");
}

fn mechanisms(filter: &Option<String>) {
    let env = Environment::basic(users(), "mail.bench.test", "benchsession", [7; 32]);
    for mechanism in ["PLAIN", "LOGIN", "CRAM-MD5", "NTLM"] {
        let name = format!("sasl {mechanism} full exchange (server + client)");
        bench(filter, &name, 20_000, |i| {
            let user = format!("user{:04}", i % 1000);
            exchange(&env, mechanism, &user, (i % 1000) as u32 + 1);
        });
    }
    // The client's share, to subtract: what the server step alone costs is the difference.
    let challenge = B64.encode("<benchsession.1.0123456789abcdef@mail.bench.test>");
    bench(filter, "sasl CRAM-MD5 client answer alone", 20_000, |_| {
        black_box(client::cram_md5_b64("user0001", PASSWORD.as_bytes(), &challenge).ok());
    });
    let ntlm_challenge = {
        let Some(desc) = sasl::find("NTLM") else {
            return;
        };
        let mut m = (desc.start)(&env.context(1));
        let negotiate = B64.decode(client::ntlm_negotiate_b64()).unwrap_or_default();
        match m.step(Some(&negotiate)) {
            Step::Challenge(c) => B64.encode(c),
            _ => return,
        }
    };
    let creds = client::ntlm_credentials("user0001", "", PASSWORD);
    bench(filter, "sasl NTLM client messages alone", 20_000, |_| {
        black_box(client::ntlm_negotiate_b64());
        black_box(client::ntlm_authenticate_b64(&ntlm_challenge, &creds).ok());
    });
}

/// The output of a future that is ready at its first poll (the memory store's answers).
fn ready<F: Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("the memory store answers at once"),
    }
}

fn ip(n: u32) -> IpNet {
    // 10.0.0.0/8 and onward: distinct IPv4 keys, as the allowlist service makes them.
    mailgate::allowlist::network_key(
        IpAddr::V4(Ipv4Addr::from(0x0a00_0000u32.wrapping_add(n))),
        64,
    )
}

fn filled(entries: u32, now: SystemTime) -> MemoryAllowlist {
    let list = MemoryAllowlist::new(Duration::from_secs(1800), entries as usize + 1, 5);
    for n in 0..entries {
        list.insert(ip(n), "user0001", now);
    }
    list
}

fn allowlist(filter: &Option<String>) {
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    for entries in [1_000u32, 100_000, 1_000_000] {
        if filter
            .as_ref()
            .is_some_and(|p| !p.contains("allowlist") && !"allowlist".contains(p.as_str()))
        {
            return;
        }
        let list = Arc::new(filled(entries, now));
        // Spread lookups over the whole map: a multiplicative step visits every key.
        let pick = |i: u64| ip(((i.wrapping_mul(2_654_435_761)) % u64::from(entries)) as u32);
        // The relay path: the service's lookup through the store trait, as SMTP asks it.
        let service = Allowlist::new(
            list.clone(),
            Settings {
                enabled: true,
                ttl: Duration::from_secs(1800),
                ipv6_prefix: 64,
            },
            mailgate::audit::Auditor::disabled(),
        );
        bench(
            filter,
            &format!("allowlist service relay_lookup hit @{entries}"),
            1_000_000,
            |i| {
                black_box(ready(service.relay_lookup(pick(i).addr(), now)));
            },
        );
        bench(
            filter,
            &format!("allowlist is_allowed hit @{entries}"),
            1_000_000,
            |i| {
                black_box(list.is_allowed(pick(i), now));
            },
        );
        bench(
            filter,
            &format!("allowlist is_allowed miss @{entries}"),
            1_000_000,
            |i| {
                black_box(list.is_allowed(ip(entries + (i % 1_000_000) as u32), now));
            },
        );
        bench(
            filter,
            &format!("allowlist lookup (clones entry) @{entries}"),
            1_000_000,
            |i| {
                black_box(list.lookup(pick(i), now));
            },
        );
        bench(
            filter,
            &format!("allowlist insert refresh @{entries}"),
            200_000,
            |i| {
                black_box(list.insert(pick(i), "user0002", now));
            },
        );
    }
    let million = 1_000_000u32;
    bench_once(
        filter,
        "allowlist insert 1M new keys (whole fill)",
        || (),
        |_| {
            black_box(filled(million, now).len());
        },
    );
    // Insert at capacity: every insert of a new key evicts (in batches).
    let full = MemoryAllowlist::new(Duration::from_secs(1800), million as usize, 5);
    for n in 0..million {
        full.insert(ip(n), "user0001", now);
    }
    bench(
        filter,
        "allowlist insert new key at capacity @1000000",
        100_000,
        |i| {
            black_box(full.insert(ip(million + i as u32), "user0003", now));
        },
    );
    drop(full);
    // Sweep: half the entries expired (inserted a TTL ago), half live.
    bench_once(
        filter,
        "allowlist expire 1M entries, half expired",
        || {
            let list = MemoryAllowlist::new(Duration::from_secs(1800), million as usize + 1, 5);
            for n in 0..million {
                let at = if n % 2 == 0 {
                    now - Duration::from_secs(3600)
                } else {
                    now
                };
                list.insert(ip(n), "user0001", at);
            }
            list
        },
        |list| {
            black_box(list.expire_now(now).len());
        },
    );
}

fn main() {
    // `cargo bench` passes `--bench`; the first other argument filters by name.
    let filter = std::env::args().skip(1).find(|a| !a.starts_with("--"));
    println!(
        "{:<52} {:>12}",
        "benchmark (median of 5 rounds)", "per call"
    );
    parsers(&filter);
    mechanisms(&filter);
    allowlist(&filter);
}
