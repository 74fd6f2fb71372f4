//! SCRAM key material (RFC 5802 §3, RFC 7677): `Hi()` (PBKDF2 with HMAC, RFC 2898 §5.2), the
//! ClientKey / StoredKey / ServerKey derivation, and Dovecot's `{SCRAM-SHA-1}` and
//! `{SCRAM-SHA-256}` stored form, `iterations,salt,StoredKey,ServerKey` with the last three in
//! base64 (as `doveadm pw -s SCRAM-SHA-256` writes it).
//!
//! Passwords are normalized with SASLprep (RFC 5802 §2.2, RFC 4013) before they are hashed; a
//! password SASLprep refuses (or one that is not UTF-8) is used as its raw bytes, so that what
//! `mailgate passwd` stores and what a login checks always agree.

use std::borrow::Cow;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::Rejection;
use super::{ScramCredentials, ScramHash, Secret};

/// The iteration count of the SCRAM keys this gateway makes (RFC 5802 §5.1 and RFC 7677 §4:
/// at least 4096), for both SCRAM-SHA-1 and SCRAM-SHA-256.
pub const SCRAM_ITERATIONS: u32 = 4096;
/// Smallest iteration count accepted from the users file (Dovecot's lower bound too).
pub const MIN_ITERATIONS: u32 = 4096;
/// Largest iteration count accepted from the users file: a password login against the stored
/// keys runs this many HMACs, so a larger one would let one login burn seconds of CPU.
pub const MAX_ITERATIONS: u32 = 1_000_000;
/// Length of the salts this gateway makes, in bytes (Dovecot's too).
pub const SALT_LEN: usize = 16;
/// Longest salt accepted from the users file, in bytes.
const MAX_SALT_LEN: usize = 256;

impl ScramHash {
    /// The SASL mechanism name without `-PLUS`, which is also the Dovecot scheme name.
    pub fn name(self) -> &'static str {
        match self {
            ScramHash::Sha1 => "SCRAM-SHA-1",
            ScramHash::Sha256 => "SCRAM-SHA-256",
        }
    }

    /// Output length of the hash, in bytes: the length of every key and proof.
    pub fn output_len(self) -> usize {
        match self {
            ScramHash::Sha1 => 20,
            ScramHash::Sha256 => 32,
        }
    }

    /// `H(data)`.
    pub fn digest(self, data: &[u8]) -> Vec<u8> {
        match self {
            ScramHash::Sha1 => Sha1::digest(data).to_vec(),
            ScramHash::Sha256 => Sha256::digest(data).to_vec(),
        }
    }

    /// `HMAC(key, part1 || part2 || ...)`.
    pub fn hmac(self, key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
        match self {
            ScramHash::Sha1 => mac::<Hmac<Sha1>>(key, parts),
            ScramHash::Sha256 => mac::<Hmac<Sha256>>(key, parts),
        }
    }

    /// `SaltedPassword = Hi(password, salt, iterations)` (RFC 5802 §2.2): PBKDF2 with this
    /// hash's HMAC and one output block. `password` is already normalized.
    pub fn salted_password(self, password: &[u8], salt: &[u8], iterations: u32) -> Secret {
        match self {
            ScramHash::Sha1 => hi::<Hmac<Sha1>>(password, salt, iterations),
            ScramHash::Sha256 => hi::<Hmac<Sha256>>(password, salt, iterations),
        }
    }

    /// The stored credentials for `password` (normalized with [`normalize_password`] here).
    pub fn credentials(self, password: &[u8], salt: Vec<u8>, iterations: u32) -> ScramCredentials {
        let password = normalize_password(password);
        let salted = self.salted_password(&password, &salt, iterations);
        let client_key = Secret::new(self.hmac(salted.expose(), &[b"Client Key"]));
        ScramCredentials {
            stored_key: Secret::new(self.digest(client_key.expose())),
            server_key: Secret::new(self.hmac(salted.expose(), &[b"Server Key"])),
            salt,
            iterations,
        }
    }

    /// Whether `credentials` were made from `password`: recomputes the StoredKey and compares
    /// it in constant time.
    pub fn verify(self, credentials: &ScramCredentials, password: &[u8]) -> bool {
        let got = self.credentials(password, credentials.salt.clone(), credentials.iterations);
        bool::from(
            got.stored_key
                .expose()
                .ct_eq(credentials.stored_key.expose()),
        )
    }
}

/// The password as SCRAM hashes it: SASLprep'd (RFC 5802 §2.2) when it is UTF-8 that SASLprep
/// accepts, its raw bytes otherwise.
pub fn normalize_password(password: &[u8]) -> Zeroizing<Vec<u8>> {
    let prepared = std::str::from_utf8(password)
        .ok()
        .and_then(|text| stringprep::saslprep(text).ok());
    Zeroizing::new(match prepared {
        Some(Cow::Owned(text)) => Zeroizing::new(text).as_bytes().to_vec(),
        Some(Cow::Borrowed(text)) => text.as_bytes().to_vec(),
        None => password.to_vec(),
    })
}

/// The Dovecot field `{SCRAM-SHA-…}iterations,salt,StoredKey,ServerKey`.
pub(crate) fn field(hash: ScramHash, credentials: &ScramCredentials) -> String {
    format!(
        "{{{}}}{},{},{},{}",
        hash.name(),
        credentials.iterations,
        B64.encode(&credentials.salt),
        B64.encode(credentials.stored_key.expose()),
        B64.encode(credentials.server_key.expose())
    )
}

/// The field for `password` with a fresh random salt and [`SCRAM_ITERATIONS`].
pub(crate) fn new_field(hash: ScramHash, password: &[u8]) -> String {
    let salt: [u8; SALT_LEN] = rand::random();
    field(
        hash,
        &hash.credentials(password, salt.to_vec(), SCRAM_ITERATIONS),
    )
}

/// Parses the data of a `{SCRAM-SHA-…}` field (after the scheme prefix).
pub(crate) fn parse_field(hash: ScramHash, data: &str) -> Result<ScramCredentials, Rejection> {
    let name = hash.name();
    let bad = |what: &str| Rejection {
        message: format!("{{{name}}} data {what}"),
        hint: format!(
            "write {{{name}}}iterations,salt,StoredKey,ServerKey (base64) as `doveadm pw -s \
             {name}` or `mailgate passwd` prints it"
        ),
    };
    let [iterations, salt, stored, server] = data.split(',').collect::<Vec<_>>()[..] else {
        return Err(bad("does not have four comma-separated fields"));
    };
    let iterations = match iterations.parse::<u32>() {
        Ok(n @ MIN_ITERATIONS..=MAX_ITERATIONS) => n,
        _ => {
            return Err(bad(&format!(
                "has an iteration count outside {MIN_ITERATIONS}..={MAX_ITERATIONS}"
            )));
        }
    };
    let salt = B64
        .decode(salt)
        .map_err(|_| bad("has a salt that is not base64"))?;
    if salt.is_empty() || salt.len() > MAX_SALT_LEN {
        return Err(bad(&format!(
            "has a salt not 1..={MAX_SALT_LEN} bytes long"
        )));
    }
    let key = |text: &str, what: &str| match B64.decode(text) {
        Ok(bytes) if bytes.len() == hash.output_len() => Ok(Secret::new(bytes)),
        _ => Err(bad(&format!(
            "has a {what} that is not {} bytes of base64",
            hash.output_len()
        ))),
    };
    Ok(ScramCredentials {
        iterations,
        salt,
        stored_key: key(stored, "StoredKey")?,
        server_key: key(server, "ServerKey")?,
    })
}

/// Whether two credentials are the same, the keys compared in constant time.
pub(crate) fn same(a: &ScramCredentials, b: &ScramCredentials) -> bool {
    a.iterations == b.iterations
        && a.salt == b.salt
        && bool::from(a.stored_key.expose().ct_eq(b.stored_key.expose()))
        && bool::from(a.server_key.expose().ct_eq(b.server_key.expose()))
}

fn mac<M: Mac + KeyInit>(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    // HMAC takes keys of any length (RFC 2104 §2: longer ones are hashed first), so this
    // cannot fail.
    let mut m = <M as KeyInit>::new_from_slice(key).expect("HMAC takes keys of any length");
    for part in parts {
        m.update(part);
    }
    m.finalize().into_bytes().to_vec()
}

fn hi<M: Mac + KeyInit + Clone>(password: &[u8], salt: &[u8], iterations: u32) -> Secret {
    // As in `mac`: HMAC keys may have any length.
    let keyed = <M as KeyInit>::new_from_slice(password).expect("HMAC takes keys of any length");
    let mut first = keyed.clone();
    first.update(salt);
    first.update(&1u32.to_be_bytes());
    let mut u = Zeroizing::new(first.finalize().into_bytes().to_vec());
    let mut out = Zeroizing::new(u.to_vec());
    for _ in 1..iterations {
        let mut m = keyed.clone();
        m.update(&u);
        u.copy_from_slice(&m.finalize().into_bytes());
        for (o, b) in out.iter_mut().zip(u.iter()) {
            *o ^= b;
        }
    }
    Secret::new(out.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 5802 §5 ("pencil", SHA-1) and RFC 7677 §3 ("pencil", SHA-256): the salts and the
    /// keys the examples' proofs and signatures imply.
    const VECTORS: [(ScramHash, &str, &str, &str); 2] = [
        (
            ScramHash::Sha1,
            "QSXCR+Q6sek8bf92",
            "6dlGYMOdZcOPutkcNY8U2g7vK9Y=",
            "D+CSWLOshSulAsxiupA+qs2/fTE=",
        ),
        (
            ScramHash::Sha256,
            "W22ZaJ0SNY7soEsUEjb6gQ==",
            "WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=",
            "wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
        ),
    ];

    #[test]
    fn rfc_example_keys() {
        for (hash, salt, stored, server) in VECTORS {
            let salt = B64.decode(salt).expect("salt");
            let c = hash.credentials(b"pencil", salt, 4096);
            assert_eq!(B64.encode(c.stored_key.expose()), stored, "{hash:?}");
            assert_eq!(B64.encode(c.server_key.expose()), server, "{hash:?}");
            assert!(hash.verify(&c, b"pencil"));
            assert!(!hash.verify(&c, b"pencim"));
        }
    }

    #[test]
    fn pbkdf2_rfc6070_vectors() {
        // RFC 6070 §2: PBKDF2-HMAC-SHA1, dkLen 20.
        let cases: [(&[u8], &[u8], u32, &str); 3] = [
            (
                b"password",
                b"salt",
                1,
                "0c60c80f961f0e71f3a9b524af6012062fe037a6",
            ),
            (
                b"password",
                b"salt",
                2,
                "ea6c014dc72d6f8ccd1ed92ace1d41f0d8de8957",
            ),
            (
                b"password",
                b"salt",
                4096,
                "4b007901b765489abead49d926f721d065a429c1",
            ),
        ];
        for (pw, salt, n, want) in cases {
            let got = ScramHash::Sha1.salted_password(pw, salt, n);
            assert_eq!(hex::encode(got.expose()), want, "{n}");
        }
    }

    #[test]
    fn fields_round_trip_and_bad_fields_are_rejected() {
        for hash in [ScramHash::Sha1, ScramHash::Sha256] {
            let f = new_field(hash, "pass\u{AD}word".as_bytes());
            let data = f
                .strip_prefix(&format!("{{{}}}", hash.name()))
                .expect("prefix");
            let c = parse_field(hash, data).unwrap_or_else(|r| panic!("{}", r.message));
            assert_eq!(c.iterations, SCRAM_ITERATIONS);
            assert_eq!(c.salt.len(), SALT_LEN);
            // SASLprep maps SOFT HYPHEN to nothing.
            assert!(hash.verify(&c, b"password"));
            assert_eq!(field(hash, &c), f);
        }
        let key = B64.encode([1u8; 32]);
        let cases = [
            ("4096,c2FsdA==,AAAA".to_string(), "four comma-separated"),
            (format!("100,c2FsdA==,{key},{key}"), "iteration count"),
            (format!("x,c2FsdA==,{key},{key}"), "iteration count"),
            (format!("4096,!!,{key},{key}"), "salt that is not base64"),
            (format!("4096,,{key},{key}"), "salt not"),
            (format!("4096,c2FsdA==,AAAA,{key}"), "StoredKey"),
            (
                format!("4096,c2FsdA==,{key},{key},x"),
                "four comma-separated",
            ),
        ];
        for (data, want) in cases {
            match parse_field(ScramHash::Sha256, &data) {
                Ok(_) => panic!("{data} parsed"),
                Err(r) => assert!(r.message.contains(want), "{data}: {}", r.message),
            }
        }
    }

    #[test]
    fn password_normalization() {
        assert_eq!(&normalize_password("I\u{AD}X".as_bytes())[..], b"IX");
        assert_eq!(&normalize_password(b"\xff\xfe")[..], b"\xff\xfe");
        // A prohibited character (BELL): SASLprep fails, the raw bytes are used.
        assert_eq!(&normalize_password(b"a\x07b")[..], b"a\x07b");
    }
}
