//! Helpers shared by the fuzz targets in `fuzz_targets/`: splitting input at fuzzer-chosen
//! points, and mapping raw bytes into a protocol's alphabet of tokens.
//!
//! It also drives a SASL mechanism the way the SMTP and POP3 sessions do ([`sasl_exchange`]).
//!
//! Inputs keep a two-byte prefix that steers these helpers; everything after it is the payload,
//! so a seed is the prefix followed by readable protocol text.

use std::sync::{Arc, OnceLock};

use mailgate::auth::UserStore;
use mailgate::sasl::{self, Step};

/// Splits `data` into a two-byte control prefix and the payload. Short inputs have a zero
/// prefix and no payload.
pub fn control(data: &[u8]) -> ([u8; 2], &[u8]) {
    match data {
        [a, b, rest @ ..] => ([*a, *b], rest),
        _ => ([0, 0], &[]),
    }
}

/// Cuts `payload` into consecutive chunks whose sizes follow from `seed`: a small xorshift
/// generator picks each size between 0 and a seed-chosen maximum (1 to 512), so the same
/// payload can be replayed as one byte per call, as odd-sized pieces, or nearly whole. Empty
/// chunks are included on purpose: feeding nothing must change nothing.
pub fn chunks(seed: [u8; 2], payload: &[u8]) -> Vec<&[u8]> {
    let max = [1usize, 2, 3, 4, 7, 16, 64, 512][usize::from(seed[0] & 7)];
    let mut state = u32::from(u16::from_le_bytes(seed)) | 0x1_0000;
    let mut out = Vec::new();
    let mut rest = payload;
    while !rest.is_empty() {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        let n = (state as usize) % (max + 1);
        let n = n.min(rest.len());
        let (head, tail) = rest.split_at(n);
        out.push(head);
        rest = tail;
    }
    out
}

/// Maps each payload byte to one of `tokens` (by value modulo the table length) and joins the
/// results, so that short inputs spell keyword-rich protocol text.
pub fn tokens(payload: &[u8], table: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() * 4);
    for &b in payload {
        out.extend_from_slice(table[usize::from(b) % table.len()]);
    }
    out
}

/// Splits `payload` at every `sep` byte into separate messages (empty ones included).
pub fn messages(payload: &[u8], sep: u8) -> Vec<&[u8]> {
    payload.split(|&b| b == sep).collect()
}

/// Whether `bytes` holds a CR not followed by LF, or an LF not preceded by CR.
pub fn has_bare_cr_or_lf(bytes: &[u8]) -> bool {
    bytes.iter().enumerate().any(|(i, &b)| match b {
        b'\r' => bytes.get(i + 1) != Some(&b'\n'),
        b'\n' => i == 0 || bytes[i - 1] != b'\r',
        _ => false,
    })
}

/// The one user the SASL targets know: `alice`, password `pw`.
pub const USERS: &str = "alice:{PLAIN}pw\n";

/// Runs one exchange of the mechanism called `name` over `data`, as a session would.
///
/// The first control byte's low bit says whether the first message is an initial response;
/// the payload is split at each `0xFF` byte into client messages. Stepping stops at `Success`
/// or `Failure`, as the contract requires. Checks that a success names the known user, that
/// an exchange ends within the messages given or waits for more, and that challenges are
/// bounded. Returns `Some(true)` on success, `Some(false)` on failure, `None` if the mechanism
/// still waits for a message.
pub fn sasl_exchange(name: &str, data: &[u8]) -> Option<bool> {
    static AUTH: OnceLock<Arc<UserStore>> = OnceLock::new();
    let auth = AUTH.get_or_init(|| match UserStore::parse(USERS, "fuzz") {
        Ok(store) => Arc::new(store),
        Err(e) => panic!("the fuzz users file does not parse: {e}"),
    });
    let auth: Arc<dyn mailgate::auth::Authenticator> = auth.clone();
    let mut ctx = sasl::Environment::basic(auth, "mx.fuzz.test", "fuzz", [7; 32]).context(1);
    ctx.nonce = "1234.5678".to_owned();
    let Some(descriptor) = sasl::find(name) else {
        panic!("no mechanism {name}");
    };
    let mut mechanism = (descriptor.start)(&ctx);
    let (ctl, payload) = control(data);
    let mut inputs: Vec<Option<&[u8]>> = Vec::new();
    if ctl[0] & 1 == 0 {
        inputs.push(None);
    }
    inputs.extend(messages(payload, 0xff).into_iter().map(Some));
    for input in inputs {
        match mechanism.step(input) {
            Step::Challenge(c) => assert!(c.len() <= sasl::MAX_TOKEN_LEN),
            Step::Success(identity) => {
                assert_eq!(identity.user, "alice");
                return Some(true);
            }
            Step::Failure(_) => return Some(false),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_cover_the_payload_in_order() {
        let payload: Vec<u8> = (0..=255).collect();
        for a in 0..=255u8 {
            let parts = chunks([a, a.wrapping_mul(7)], &payload);
            assert_eq!(parts.concat(), payload);
        }
    }

    #[test]
    fn bare_line_endings() {
        let cases: &[(&[u8], bool)] = &[
            (b"", false),
            (b"a\r\nb\r\n", false),
            (b"a\nb", true),
            (b"a\rb", true),
            (b"\r", true),
            (b"\n", true),
            (b"\r\r\n", true),
        ];
        for (input, want) in cases {
            assert_eq!(has_bare_cr_or_lf(input), *want, "{input:?}");
        }
    }

    #[test]
    fn sasl_exchanges() {
        let cases: &[(&str, &[u8], Option<bool>)] = &[
            ("PLAIN", b"\x01\0\0alice\0pw", Some(true)),
            ("PLAIN", b"\0\0\0alice\0pw", Some(true)),
            ("PLAIN", b"\x01\0\0alice\0nope", Some(false)),
            ("PLAIN", b"\0\0", Some(false)),
            ("LOGIN", b"\0\0alice\xffpw", Some(true)),
            ("LOGIN", b"\x01\0alice\xffpw", Some(true)),
            ("LOGIN", b"\0\0alice", None),
            (
                "CRAM-MD5",
                b"\0\0alice 51c3033c70e7ea68b402848c9d745978",
                Some(true),
            ),
            (
                "cram-md5",
                b"\0\0alice 0123456789abcdef0123456789abcdef",
                Some(false),
            ),
            ("CRAM-MD5", b"\x01\0alice", Some(false)),
        ];
        for (name, data, want) in cases {
            assert_eq!(sasl_exchange(name, data), *want, "{name} {data:?}");
        }
    }
}
