//! The legacy Dovecot password schemes, accepted so that an old passwd-file imports line for
//! line, and Dovecot's encoding suffixes.
//!
//! All of these are weak: fast hashes (one MD4, MD5, SHA-1 or SHA-2 round, optionally salted)
//! or MD5-crypt (1000 MD5 rounds). A stolen users file gives up their passwords to a modest
//! guessing effort, so `mailgate passwd` never writes them; they only verify the cleartext
//! password of PLAIN, LOGIN and USER/PASS until the user's next password change.
//!
//! | scheme (aliases) | stored | default encoding |
//! |---|---|---|
//! | `MD5-CRYPT` (`MD5` with `$1$`, `CRYPT` with `$1$`) | `$1$salt$hash` (Kamp's MD5-crypt) | none |
//! | `PLAIN-MD5` (`MD5` without `$1$`), `LDAP-MD5` | MD5(password) | hex, `LDAP-MD5` base64 |
//! | `SMD5` | MD5(password salt) salt | base64 |
//! | `PLAIN-MD4` | MD4(password) | hex |
//! | `SHA` (`SHA1`), `SHA256`, `SHA512` | SHA-x(password) | base64 |
//! | `SSHA`, `SSHA256`, `SSHA512` | SHA-x(password salt) salt | base64 |
//!
//! A scheme may carry Dovecot's encoding suffix: `{SHA256.HEX}`, `{PLAIN.b64}`,
//! `{SSHA.BASE64}` (case-insensitive). With a suffix only that encoding is read. Without one,
//! the scheme's default encoding is read; a fixed-length digest is also read in the other
//! encoding when its length fits exactly (Dovecot tells the encoding by the length too).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_PAD_INDIFFERENT as BASE64;
use md4::Md4;
use md5::Md5;
use sha1::Sha1;
use sha2::{Sha256, Sha512};
use subtle::ConstantTimeEq;

use super::Rejection;
use super::Secret;

/// How the data of a `{SCHEME}` field is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Encoding {
    /// As written (`PLAIN`, the crypt forms).
    Raw,
    /// Hexadecimal, either case (`.HEX`).
    Hex,
    /// Standard base64 (`.B64`, `.BASE64`); padding optional.
    Base64,
}

/// Splits Dovecot's encoding suffix off a scheme name: `SHA256.HEX` gives `("SHA256",
/// Some(Hex))`. An unknown suffix is `Err(())`: the whole name is then an unknown scheme.
pub(crate) fn split_suffix(scheme: &str) -> Result<(&str, Option<Encoding>), ()> {
    let Some((name, suffix)) = scheme.rsplit_once('.') else {
        return Ok((scheme, None));
    };
    let encoding = match suffix.to_ascii_uppercase().as_str() {
        "HEX" => Encoding::Hex,
        "B64" | "BASE64" => Encoding::Base64,
        _ => return Err(()),
    };
    Ok((name, Some(encoding)))
}

/// Decodes `data`: in `explicit` if given, else in `default`, and, for a digest of fixed
/// length `fixed`, in the other of hex and base64 when that gives exactly `fixed` bytes.
pub(crate) fn decode(
    data: &str,
    default: Encoding,
    explicit: Option<Encoding>,
    fixed: Option<usize>,
) -> Option<Vec<u8>> {
    let one = |encoding| match encoding {
        Encoding::Raw => Some(data.as_bytes().to_vec()),
        Encoding::Hex => hex::decode(data).ok(),
        Encoding::Base64 => BASE64.decode(data).ok(),
    };
    let fits = |bytes: &Vec<u8>| fixed.is_none_or(|n| bytes.len() == n);
    if let Some(encoding) = explicit {
        return one(encoding).filter(fits);
    }
    if let Some(bytes) = one(default).filter(fits) {
        return Some(bytes);
    }
    let other = match default {
        Encoding::Hex => Encoding::Base64,
        Encoding::Base64 => Encoding::Hex,
        Encoding::Raw => return None,
    };
    fixed.and(one(other).filter(fits))
}

/// The hash function of a digest scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DigestHash {
    Md4,
    Md5,
    Sha1,
    Sha256,
    Sha512,
}

impl DigestHash {
    fn len(self) -> usize {
        match self {
            DigestHash::Md4 | DigestHash::Md5 => 16,
            DigestHash::Sha1 => 20,
            DigestHash::Sha256 => 32,
            DigestHash::Sha512 => 64,
        }
    }

    fn digest(self, password: &[u8], salt: &[u8]) -> Vec<u8> {
        fn run<D: sha2::Digest>(password: &[u8], salt: &[u8]) -> Vec<u8> {
            let mut d = D::new();
            d.update(password);
            d.update(salt);
            d.finalize().to_vec()
        }
        match self {
            DigestHash::Md4 => run::<Md4>(password, salt),
            DigestHash::Md5 => run::<Md5>(password, salt),
            DigestHash::Sha1 => run::<Sha1>(password, salt),
            DigestHash::Sha256 => run::<Sha256>(password, salt),
            DigestHash::Sha512 => run::<Sha512>(password, salt),
        }
    }
}

/// The digest schemes: (name as written, canonical name, hash, salted, default encoding).
const DIGESTS: &[(&str, &str, DigestHash, bool, Encoding)] = &[
    (
        "PLAIN-MD4",
        "PLAIN-MD4",
        DigestHash::Md4,
        false,
        Encoding::Hex,
    ),
    (
        "PLAIN-MD5",
        "PLAIN-MD5",
        DigestHash::Md5,
        false,
        Encoding::Hex,
    ),
    ("MD5", "PLAIN-MD5", DigestHash::Md5, false, Encoding::Hex),
    (
        "LDAP-MD5",
        "PLAIN-MD5",
        DigestHash::Md5,
        false,
        Encoding::Base64,
    ),
    ("SMD5", "SMD5", DigestHash::Md5, true, Encoding::Base64),
    ("SHA", "SHA", DigestHash::Sha1, false, Encoding::Base64),
    ("SHA1", "SHA", DigestHash::Sha1, false, Encoding::Base64),
    ("SSHA", "SSHA", DigestHash::Sha1, true, Encoding::Base64),
    (
        "SHA256",
        "SHA256",
        DigestHash::Sha256,
        false,
        Encoding::Base64,
    ),
    (
        "SSHA256",
        "SSHA256",
        DigestHash::Sha256,
        true,
        Encoding::Base64,
    ),
    (
        "SHA512",
        "SHA512",
        DigestHash::Sha512,
        false,
        Encoding::Base64,
    ),
    (
        "SSHA512",
        "SSHA512",
        DigestHash::Sha512,
        true,
        Encoding::Base64,
    ),
];

/// Whether `upper` (an upper-case scheme name without suffix) is a digest scheme.
pub(crate) fn is_digest(upper: &str) -> bool {
    DIGESTS.iter().any(|d| d.0 == upper)
}

/// A stored digest, optionally salted: `hash(password salt)` followed by `salt`.
#[derive(Clone)]
pub(crate) struct Digest {
    scheme: &'static str,
    hash: DigestHash,
    /// The digest, then the salt (empty for an unsalted scheme).
    raw: Secret,
}

impl Digest {
    /// Parses the data of digest scheme `upper` (see [`is_digest`]); `None` if it is not one.
    pub fn parse(
        upper: &str,
        explicit: Option<Encoding>,
        data: &str,
    ) -> Option<Result<Digest, Rejection>> {
        let &(written, scheme, hash, salted, default) = DIGESTS.iter().find(|d| d.0 == upper)?;
        let len = hash.len();
        let fixed = (!salted).then_some(len);
        let raw = decode(data, default, explicit, fixed).filter(|raw| raw.len() > len || !salted);
        let Some(raw) = raw else {
            let what = match (salted, explicit.unwrap_or(default)) {
                (false, Encoding::Hex) => format!("{} hex digits", 2 * len),
                (false, _) => format!("the base64 of {len} bytes"),
                (true, Encoding::Hex) => format!("hex of more than {len} bytes (digest, salt)"),
                (true, _) => format!("the base64 of more than {len} bytes (digest, salt)"),
            };
            return Some(Err(Rejection {
                message: format!("{{{written}}} data is not {what}"),
                hint: format!("paste the output of `doveadm pw -s {written}`"),
            }));
        };
        Some(Ok(Digest {
            scheme,
            hash,
            raw: Secret::new(raw),
        }))
    }

    /// The canonical scheme name (`LDAP-MD5` is `PLAIN-MD5`, `SHA1` is `SHA`).
    pub fn scheme(&self) -> &'static str {
        self.scheme
    }

    /// Whether this digest was made from `password`, compared in constant time.
    pub fn verify(&self, password: &[u8]) -> bool {
        let (digest, salt) = self.raw.expose().split_at(self.hash.len());
        let got = Secret::new(self.hash.digest(password, salt));
        bool::from(got.expose().ct_eq(digest))
    }

    /// Whether `other` stores the same bytes, compared in constant time.
    pub fn same_as(&self, other: &Digest) -> bool {
        self.scheme == other.scheme && self.raw == other.raw
    }
}

/// Number of crypt-base64 characters of an MD5-crypt hash.
const MD5_CRYPT_HASH_LEN: usize = 22;
/// Longest salt MD5-crypt reads; a longer one is cut here (as glibc and Dovecot do).
const MD5_CRYPT_SALT_MAX: usize = 8;

/// Checks an MD5-crypt string `$1$salt$hash` (salt up to 8 characters, hash 22 crypt-base64
/// characters).
pub(crate) fn md5_crypt(data: &str) -> Result<String, Rejection> {
    let bad = |what: &str| Rejection {
        message: format!("MD5-CRYPT hash {what}"),
        hint: "write {MD5-CRYPT}$1$salt$hash as `doveadm pw -s MD5-CRYPT` or `openssl passwd -1` \
               prints it"
            .into(),
    };
    let Some(body) = data.strip_prefix("$1$") else {
        return Err(bad("does not start with $1$"));
    };
    let Some((salt, hash)) = body.split_once('$') else {
        return Err(bad("does not have the fields salt$hash"));
    };
    if salt.len() > 16 || salt.contains('$') {
        return Err(bad("has a salt longer than 16 characters or holding `$`"));
    }
    let crypt64 = |c: u8| c.is_ascii_alphanumeric() || c == b'.' || c == b'/';
    if hash.len() != MD5_CRYPT_HASH_LEN || !hash.bytes().all(crypt64) {
        return Err(bad("does not end in 22 crypt-base64 characters"));
    }
    Ok(data.to_owned())
}

/// Whether the MD5-crypt string `stored` (checked by [`md5_crypt`]) was made from `password`;
/// the hash parts are compared in constant time.
pub(crate) fn verify_md5_crypt(stored: &str, password: &[u8]) -> bool {
    let Some((salt, hash)) = stored
        .strip_prefix("$1$")
        .and_then(|body| body.split_once('$'))
    else {
        return false;
    };
    let salt = &salt.as_bytes()[..salt.len().min(MD5_CRYPT_SALT_MAX)];
    let computed = Secret::new(md5crypt::md5crypt(password, salt));
    let got = computed
        .expose()
        .rsplit(|&b| b == b'$')
        .next()
        .unwrap_or_default();
    bool::from(got.ct_eq(hash.as_bytes()))
}

/// What a crypt string (no `{SCHEME}`, or `{CRYPT}`) that no scheme here reads is, for the
/// warning that skips its line: DES crypt (13 characters), or a `$id$` we do not implement
/// (yescrypt `$y$`, scrypt `$7$`, ...). `None` if it is not recognisably a crypt string.
pub(crate) fn unsupported_crypt(data: &str) -> Option<String> {
    let crypt64 = |c: u8| c.is_ascii_alphanumeric() || c == b'.' || c == b'/';
    if data.len() == 13 && data.bytes().all(crypt64) {
        return Some("DES-CRYPT".into());
    }
    let id = data.strip_prefix('$')?.split('$').next()?;
    let known = ["1", "5", "6", "2a", "2b", "2y", "argon2id", "argon2i"];
    let plausible =
        !id.is_empty() && id.len() <= 16 && id.bytes().all(|c| c.is_ascii_alphanumeric());
    (plausible && !known.contains(&id)).then(|| format!("crypt ${id}$"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suffixes() {
        assert_eq!(split_suffix("SHA256"), Ok(("SHA256", None)));
        assert_eq!(
            split_suffix("SHA256.HEX"),
            Ok(("SHA256", Some(Encoding::Hex)))
        );
        assert_eq!(
            split_suffix("plain.b64"),
            Ok(("plain", Some(Encoding::Base64)))
        );
        assert_eq!(
            split_suffix("SSHA.base64"),
            Ok(("SSHA", Some(Encoding::Base64)))
        );
        assert_eq!(split_suffix("SHA.ZZ"), Err(()));
    }

    #[test]
    fn decode_by_default_explicit_and_length() {
        let md5_hex = "5f4dcc3b5aa765d61d8327deb882cf99";
        let md5_b64 = "X03MO1qnZdYdgyfeuILPmQ==";
        let want = hex::decode(md5_hex).expect("hex");
        for (data, default, explicit) in [
            (md5_hex, Encoding::Hex, None),
            (md5_b64, Encoding::Hex, None),
            (md5_hex, Encoding::Base64, None),
            (md5_b64, Encoding::Base64, None),
            ("X03MO1qnZdYdgyfeuILPmQ", Encoding::Base64, None),
            (md5_hex, Encoding::Base64, Some(Encoding::Hex)),
        ] {
            assert_eq!(
                decode(data, default, explicit, Some(16)).as_ref(),
                Some(&want),
                "{data}"
            );
        }
        assert_eq!(
            decode(md5_b64, Encoding::Hex, Some(Encoding::Hex), Some(16)),
            None
        );
        assert_eq!(decode(md5_hex, Encoding::Hex, None, Some(20)), None);
        assert_eq!(decode("!!", Encoding::Base64, None, None), None);
    }

    #[test]
    fn md5_crypt_published_vector() {
        // `openssl passwd -1 -salt saltstri 'Hello world!'` prints this.
        let stored = "$1$saltstri$YMyguxXMBpd2TEZ.vS/3q1";
        assert!(md5_crypt(stored).is_ok());
        assert!(verify_md5_crypt(stored, b"Hello world!"));
        assert!(!verify_md5_crypt(stored, b"Hello world?"));
        // A salt longer than 8 is cut to 8, as glibc does.
        assert!(verify_md5_crypt(
            "$1$saltstring$YMyguxXMBpd2TEZ.vS/3q1",
            b"Hello world!"
        ));
    }

    #[test]
    fn unsupported_crypts() {
        assert_eq!(
            unsupported_crypt("wPsDRxM0SjWBs").as_deref(),
            Some("DES-CRYPT")
        );
        assert_eq!(
            unsupported_crypt("$y$j9T$abc$def").as_deref(),
            Some("crypt $y$")
        );
        assert_eq!(unsupported_crypt("$7$abc").as_deref(), Some("crypt $7$"));
        assert_eq!(unsupported_crypt("$1$abc$def"), None);
        assert_eq!(unsupported_crypt("secret"), None);
        assert_eq!(unsupported_crypt("$ $"), None);
    }
}
