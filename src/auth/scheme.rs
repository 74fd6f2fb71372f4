//! Stored password forms of the users file (Dovecot password schemes) and the digests computed
//! from them.
//!
//! A password field reads `{SCHEME}data`; without a `{SCHEME}` prefix it is `CRYPT`, whose
//! hash kind is told by its `$id$` prefix. Schemes: `PLAIN` (alias `CLEARTEXT`), `CRAM-MD5`
//! (alias `HMAC-MD5`: the two MD5 states of RFC 2104 §2 after the padded key, as Dovecot's
//! `hmac-cram-md5.c` writes them), `SHA512-CRYPT` and `SHA256-CRYPT` (Drepper's SHA-crypt),
//! `BLF-CRYPT` (bcrypt), `ARGON2ID` and `ARGON2I` (PHC strings, RFC 9106) and `NTLM` (the NT
//! hash, MS-NLMP §3.3.1), `SCRAM-SHA-1` and `SCRAM-SHA-256` (RFC 5802 §3 keys in Dovecot's
//! form, see `scram.rs`), `DIGEST-MD5` (MD5 of `user:realm:password`, RFC 2831, see
//! `digest_md5.rs`), and the weak legacy schemes of `legacy.rs` (`MD5-CRYPT`, `SSHA`,
//! `PLAIN-MD5`, ...), with Dovecot's `.HEX` / `.B64` encoding suffixes. Also here: HMAC-MD5 for
//! CRAM-MD5 (RFC 2195 §2) and the APOP digest (RFC 1939 §7).

use std::str::FromStr;

use argon2::{Argon2, PasswordVerifier as _};
use md4::Md4;
use md5::Md5;
use md5::block_api::compress;
use sha_crypt::ShaCrypt;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroize;

use super::legacy::{self, Encoding};
use super::{Rejection, ScramCredentials, ScramHash, Secret, scram};

/// Largest Argon2 memory cost accepted from the users file, in KiB (1 GiB): a higher one would
/// let one login exhaust memory.
pub const MAX_ARGON2_M_COST: u32 = 1024 * 1024;

/// Length of a Dovecot `{CRAM-MD5}` context in bytes (64 hex digits).
pub const CRAM_CONTEXT_LEN: usize = 32;

const HINT_NEW: &str = "set a new password with `mailgate passwd USER`, which writes {ARGON2ID}";

/// One stored form of a user's password.
#[derive(Clone)]
pub(crate) enum Form {
    /// The cleartext password.
    Plain(Secret),
    /// The HMAC-MD5 context: outer then inner MD5 state, four little-endian words each.
    CramMd5(Secret),
    /// `$6$[rounds=N$]salt$hash`.
    Sha512Crypt(String),
    /// `$5$[rounds=N$]salt$hash`.
    Sha256Crypt(String),
    /// `$argon2id$v=19$m=..,t=..,p=..$salt$hash`.
    Argon2id(String),
    /// `$argon2i$v=19$m=..,t=..,p=..$salt$hash`.
    Argon2i(String),
    /// `$2y$NN$...` (also `$2a$`, `$2b$`).
    Bcrypt(String),
    /// The 16-byte NT hash: MD4 of the UTF-16LE password.
    Ntlm(Secret),
    /// SCRAM-SHA-1 salt, iteration count, StoredKey and ServerKey (RFC 5802 §3).
    ScramSha1(ScramCredentials),
    /// SCRAM-SHA-256 salt, iteration count, StoredKey and ServerKey (RFC 7677).
    ScramSha256(ScramCredentials),
    /// The DIGEST-MD5 secret MD5(user:realm:password) (RFC 2831 §2.1.2.1), bound to the user
    /// name and the realm it was made for: it serves DIGEST-MD5 in that realm only, and no
    /// cleartext check (which would need the realm it was made for).
    DigestMd5(Secret),
    /// `$1$salt$hash` (MD5-crypt; weak, import only).
    Md5Crypt(String),
    /// A fast digest, optionally salted (`SSHA`, `PLAIN-MD5`, ...; weak, import only).
    Digest(Box<legacy::Digest>),
}

impl std::fmt::Debug for Form {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Hashes are offline-attackable: print the scheme only.
        write!(f, "Form({})", self.scheme())
    }
}

fn reject(message: impl Into<String>, hint: impl Into<String>) -> Rejection {
    Rejection {
        message: message.into(),
        hint: hint.into(),
    }
}

impl Form {
    /// Parses a password field of the users file.
    pub fn parse(field: &str) -> Result<Form, Rejection> {
        let Some(rest) = field.strip_prefix('{') else {
            return crypt(field);
        };
        let Some(end) = rest.find('}') else {
            return Err(reject(
                "password field opens `{` but has no closing `}`",
                "write {SCHEME}data, e.g. {PLAIN}secret or {ARGON2ID}$argon2id$...",
            ));
        };
        let (scheme, data) = (&rest[..end], &rest[end + 1..]);
        let unknown = || {
            reject(
                format!("unknown password scheme {{{scheme}}}"),
                "use one of PLAIN, CRAM-MD5, SHA512-CRYPT, SHA256-CRYPT, BLF-CRYPT, ARGON2ID, \
                 ARGON2I, CRYPT, NTLM, SCRAM-SHA-1, SCRAM-SHA-256, DIGEST-MD5, or a legacy scheme \
                 (`mailgate passwd --scheme` lists them)",
            )
        };
        let Ok((name, encoding)) = legacy::split_suffix(scheme) else {
            return Err(unknown());
        };
        let upper = name.to_ascii_uppercase();
        // The crypt and PHC strings and the SCRAM keys have one text form: no suffix.
        let raw_only = |form: Result<Form, Rejection>| match encoding {
            Some(_) => Err(reject(
                format!("an encoding suffix does not apply to {{{upper}}}"),
                format!("write {{{upper}}} without `.HEX` / `.B64`"),
            )),
            None => form,
        };
        match upper.as_str() {
            "PLAIN" | "CLEARTEXT" => {
                let password =
                    legacy::decode(data, Encoding::Raw, encoding, None).ok_or_else(|| {
                        reject(
                            format!("{{{scheme}}} data is not decodable"),
                            "write {PLAIN}secret",
                        )
                    })?;
                if password.is_empty() {
                    return Err(reject("empty {PLAIN} password", "write {PLAIN}secret"));
                }
                Ok(Form::Plain(Secret::new(password)))
            }
            "CRAM-MD5" | "HMAC-MD5" => {
                let ctx = legacy::decode(data, Encoding::Hex, encoding, Some(CRAM_CONTEXT_LEN))
                    .ok_or_else(|| {
                        reject(
                            "{CRAM-MD5} data is not 64 hex digits",
                            "paste the output of `doveadm pw -s CRAM-MD5` or `mailgate passwd`",
                        )
                    })?;
                Ok(Form::CramMd5(Secret::new(ctx)))
            }
            "NTLM" => {
                let nt =
                    legacy::decode(data, Encoding::Hex, encoding, Some(16)).ok_or_else(|| {
                        reject(
                            "{NTLM} data is not 32 hex digits",
                            "write {NTLM} then the NT hash",
                        )
                    })?;
                Ok(Form::Ntlm(Secret::new(nt)))
            }
            "DIGEST-MD5" => {
                let secret =
                    legacy::decode(data, Encoding::Hex, encoding, Some(16)).ok_or_else(|| {
                        reject(
                            "{DIGEST-MD5} data is not 32 hex digits",
                            "paste the output of `doveadm pw -s DIGEST-MD5 -u user@realm` or \
                             run `mailgate passwd`",
                        )
                    })?;
                Ok(Form::DigestMd5(Secret::new(secret)))
            }
            "SHA512-CRYPT" => raw_only(sha_crypt(data, "6").map(Form::Sha512Crypt)),
            "SHA256-CRYPT" => raw_only(sha_crypt(data, "5").map(Form::Sha256Crypt)),
            "BLF-CRYPT" => raw_only(bcrypt(data).map(Form::Bcrypt)),
            "ARGON2ID" => raw_only(argon2(data, "argon2id").map(Form::Argon2id)),
            "ARGON2I" => raw_only(argon2(data, "argon2i").map(Form::Argon2i)),
            "CRYPT" => raw_only(crypt(data)),
            "MD5-CRYPT" => raw_only(legacy::md5_crypt(data).map(Form::Md5Crypt)),
            // Dovecot's `{MD5}` is MD5-crypt, or a bare MD5 digest where the data is one.
            "MD5" if data.starts_with("$1$") => {
                raw_only(legacy::md5_crypt(data).map(Form::Md5Crypt))
            }
            "SCRAM-SHA-1" => {
                raw_only(scram::parse_field(ScramHash::Sha1, data).map(Form::ScramSha1))
            }
            "SCRAM-SHA-256" => {
                raw_only(scram::parse_field(ScramHash::Sha256, data).map(Form::ScramSha256))
            }
            other => match legacy::Digest::parse(other, encoding, data) {
                Some(parsed) => parsed.map(|d| Form::Digest(Box::new(d))),
                None => Err(unknown()),
            },
        }
    }

    /// If `field` names a password scheme that this gateway does not implement (an unknown
    /// `{SCHEME}` or encoding suffix, DES crypt, yescrypt, ...), that scheme, for the warning
    /// that skips its line; `None` for the schemes [`Form::parse`] reads (which may still
    /// reject malformed data).
    pub fn unsupported(field: &str) -> Option<String> {
        let Some(rest) = field.strip_prefix('{') else {
            return legacy::unsupported_crypt(field);
        };
        let (scheme, data) = rest.split_once('}')?;
        let Ok((name, _)) = legacy::split_suffix(scheme) else {
            return Some(format!("{{{scheme}}}"));
        };
        let upper = name.to_ascii_uppercase();
        if upper == "CRYPT" {
            return legacy::unsupported_crypt(data);
        }
        let known = [
            "PLAIN",
            "CLEARTEXT",
            "CRAM-MD5",
            "HMAC-MD5",
            "NTLM",
            "SHA512-CRYPT",
            "SHA256-CRYPT",
            "BLF-CRYPT",
            "ARGON2ID",
            "ARGON2I",
            "MD5-CRYPT",
            "SCRAM-SHA-1",
            "SCRAM-SHA-256",
            "DIGEST-MD5",
        ];
        (!known.contains(&upper.as_str()) && !legacy::is_digest(&upper))
            .then(|| format!("{{{scheme}}}"))
    }

    /// The Dovecot scheme name of this form.
    pub fn scheme(&self) -> &'static str {
        match self {
            Form::Plain(_) => "PLAIN",
            Form::CramMd5(_) => "CRAM-MD5",
            Form::Sha512Crypt(_) => "SHA512-CRYPT",
            Form::Sha256Crypt(_) => "SHA256-CRYPT",
            Form::Argon2id(_) => "ARGON2ID",
            Form::Argon2i(_) => "ARGON2I",
            Form::Bcrypt(_) => "BLF-CRYPT",
            Form::Ntlm(_) => "NTLM",
            Form::ScramSha1(_) => "SCRAM-SHA-1",
            Form::ScramSha256(_) => "SCRAM-SHA-256",
            Form::DigestMd5(_) => "DIGEST-MD5",
            Form::Md5Crypt(_) => "MD5-CRYPT",
            Form::Digest(d) => d.scheme(),
        }
    }

    /// Whether this is a deliberately slow hash (worth replaying for unknown users; checked
    /// on the blocking pool rather than on an async worker).
    pub fn is_slow(&self) -> bool {
        !matches!(
            self,
            Form::Plain(_)
                | Form::CramMd5(_)
                | Form::Ntlm(_)
                | Form::Digest(_)
                | Form::DigestMd5(_)
        )
    }

    /// Whether this form was made from `password`. Slow for some forms ([`Form::is_slow`]):
    /// blocking. A `{DIGEST-MD5}` form never says yes: it was made for a user name and realm
    /// that a cleartext check does not have.
    pub fn verify_password(&self, password: &[u8]) -> bool {
        match self {
            Form::Plain(stored) => eq_hashed(stored.expose(), password),
            Form::CramMd5(stored) => {
                let ctx = Secret::new(HmacMd5State::new(password).context().to_vec());
                bool::from(ctx.expose().ct_eq(stored.expose()))
            }
            // The slow hashes take milliseconds each, by design: [`Form::is_slow`] tells the
            // caller to run them off the async workers.
            Form::Sha512Crypt(hash) | Form::Sha256Crypt(hash) => {
                match sha_crypt::PasswordHashRef::new(hash) {
                    Ok(parsed) => ShaCrypt::default()
                        .verify_password(password, parsed)
                        .is_ok(),
                    Err(_) => false,
                }
            }
            Form::Argon2id(hash) | Form::Argon2i(hash) => Argon2::default()
                .verify_password(password, hash.as_str())
                .is_ok(),
            Form::Bcrypt(hash) => bcrypt::verify(password, hash).unwrap_or(false),
            Form::Ntlm(stored) => match nt_hash(password) {
                Some(nt) => bool::from(nt.as_slice().ct_eq(stored.expose())),
                None => false,
            },
            Form::ScramSha1(keys) => ScramHash::Sha1.verify(keys, password),
            Form::ScramSha256(keys) => ScramHash::Sha256.verify(keys, password),
            Form::Md5Crypt(hash) => legacy::verify_md5_crypt(hash, password),
            Form::Digest(digest) => digest.verify(password),
            Form::DigestMd5(_) => false,
        }
    }

    /// The HMAC-MD5 of `challenge` keyed with the password, if this form can compute it.
    pub fn cram_md5(&self, challenge: &[u8]) -> Option<[u8; 16]> {
        match self {
            Form::Plain(pw) => Some(HmacMd5State::new(pw.expose()).finish(challenge)),
            Form::CramMd5(ctx) => Some(HmacMd5State::from_context(ctx.expose())?.finish(challenge)),
            _ => None,
        }
    }

    /// The stored SCRAM credentials for `hash`, if this is that form.
    pub fn scram(&self, hash: ScramHash) -> Option<&ScramCredentials> {
        match (self, hash) {
            (Form::ScramSha1(keys), ScramHash::Sha1)
            | (Form::ScramSha256(keys), ScramHash::Sha256) => Some(keys),
            _ => None,
        }
    }

    /// The stored DIGEST-MD5 secret, if this is that form.
    pub fn digest_md5(&self) -> Option<&Secret> {
        match self {
            Form::DigestMd5(secret) => Some(secret),
            _ => None,
        }
    }

    /// The cleartext password, if stored.
    pub fn plain(&self) -> Option<&[u8]> {
        match self {
            Form::Plain(pw) => Some(pw.expose()),
            _ => None,
        }
    }

    /// The same form, compared by value (for merging duplicate lines). Hashes compare as
    /// text, secrets in constant time.
    pub fn same_as(&self, other: &Form) -> bool {
        match (self, other) {
            (Form::Plain(a), Form::Plain(b))
            | (Form::CramMd5(a), Form::CramMd5(b))
            | (Form::Ntlm(a), Form::Ntlm(b))
            | (Form::DigestMd5(a), Form::DigestMd5(b)) => bool::from(a.expose().ct_eq(b.expose())),
            (Form::Sha512Crypt(a), Form::Sha512Crypt(b))
            | (Form::Sha256Crypt(a), Form::Sha256Crypt(b))
            | (Form::Argon2id(a), Form::Argon2id(b))
            | (Form::Argon2i(a), Form::Argon2i(b))
            | (Form::Bcrypt(a), Form::Bcrypt(b))
            | (Form::Md5Crypt(a), Form::Md5Crypt(b)) => a == b,
            (Form::Digest(a), Form::Digest(b)) => a.same_as(b),
            (Form::ScramSha1(a), Form::ScramSha1(b))
            | (Form::ScramSha256(a), Form::ScramSha256(b)) => scram::same(a, b),
            _ => false,
        }
    }
}

/// The `{CRAM-MD5}` field for `password`: Dovecot's context, lower-case hex.
pub(crate) fn cram_md5_field(password: &[u8]) -> String {
    format!(
        "{{CRAM-MD5}}{}",
        hex::encode(HmacMd5State::new(password).context())
    )
}

/// The APOP digest (RFC 1939 §7): MD5 of the timestamp followed by the password.
pub(crate) fn apop_digest(timestamp: &[u8], password: &[u8]) -> [u8; 16] {
    let mut md5 = Md5::new();
    md5.update(timestamp);
    md5.update(password);
    md5.finalize().into()
}

/// The NT hash: MD4 of the UTF-16LE password; `None` if the password is not UTF-8.
pub(crate) fn nt_hash(password: &[u8]) -> Option<[u8; 16]> {
    let text = std::str::from_utf8(password).ok()?;
    let mut md4 = Md4::new();
    for unit in text.encode_utf16() {
        md4.update(unit.to_le_bytes());
    }
    Some(md4.finalize().into())
}

/// Compares two secrets of any length in constant time, by comparing their SHA-256 digests
/// (so that not even the length leaks).
pub(crate) fn eq_hashed(a: &[u8], b: &[u8]) -> bool {
    bool::from(Sha256::digest(a).ct_eq(&Sha256::digest(b)))
}

/// A `CRYPT` field: the hash kind comes from the `$id$` prefix.
fn crypt(data: &str) -> Result<Form, Rejection> {
    if data.starts_with("$6$") {
        sha_crypt(data, "6").map(Form::Sha512Crypt)
    } else if data.starts_with("$5$") {
        sha_crypt(data, "5").map(Form::Sha256Crypt)
    } else if data.starts_with("$2") {
        bcrypt(data).map(Form::Bcrypt)
    } else if data.starts_with("$argon2id$") {
        argon2(data, "argon2id").map(Form::Argon2id)
    } else if data.starts_with("$argon2i$") {
        argon2(data, "argon2i").map(Form::Argon2i)
    } else if data.is_empty() {
        Err(reject(
            "empty password field",
            "write {PLAIN}secret or a hash from `mailgate passwd`",
        ))
    } else if data.starts_with("$1$") {
        legacy::md5_crypt(data).map(Form::Md5Crypt)
    } else if data.starts_with("$y$") || data.starts_with("$7$") {
        Err(reject(
            "yescrypt/scrypt ($y$, $7$) hashes are not supported",
            HINT_NEW,
        ))
    } else {
        Err(reject(
            "password field has no {SCHEME} prefix and is not a recognised crypt hash \
             ($6$, $5$, $2y$, $argon2id$, $1$)",
            "write {PLAIN}secret for a cleartext password, or a hash from `mailgate passwd`",
        ))
    }
}

/// Checks a SHA-crypt string `$id$[rounds=N$]salt$hash` strictly: the crate would read a bad
/// `rounds=` field as a salt and fail every login silently.
fn sha_crypt(data: &str, id: &str) -> Result<String, Rejection> {
    let (name, hash_len) = if id == "6" {
        ("SHA512-CRYPT", 86)
    } else {
        ("SHA256-CRYPT", 43)
    };
    let hint = format!(
        "write {{{name}}}${id}$salt$hash as `mkpasswd -m {}` prints it",
        { if id == "6" { "sha-512" } else { "sha-256" } }
    );
    let bad = |what: &str| reject(format!("{name} hash {what}"), hint.clone());
    let Some(body) = data.strip_prefix(&format!("${id}$")) else {
        return Err(bad(&format!("does not start with ${id}$")));
    };
    let mut fields: Vec<&str> = body.split('$').collect();
    if let Some(rounds) = fields.first().and_then(|f| f.strip_prefix("rounds=")) {
        match rounds.parse::<u32>() {
            Ok(1_000..=999_999_999) => {}
            _ => return Err(bad("has rounds outside 1000..=999999999")),
        }
        fields.remove(0);
    }
    let [salt, hash] = fields.as_slice() else {
        return Err(bad("does not have the fields salt$hash"));
    };
    if salt.len() > 16 {
        return Err(bad("has a salt longer than 16 characters"));
    }
    let crypt64 = |c: u8| c.is_ascii_alphanumeric() || c == b'.' || c == b'/';
    if hash.len() != hash_len || !hash.bytes().all(crypt64) {
        return Err(bad(&format!(
            "does not end in {hash_len} crypt-base64 characters"
        )));
    }
    if sha_crypt::PasswordHashRef::new(data).is_err() {
        return Err(bad("is not a valid modular crypt string"));
    }
    Ok(data.to_owned())
}

fn bcrypt(data: &str) -> Result<String, Rejection> {
    let hint = "write {BLF-CRYPT}$2y$NN$ followed by 53 characters, as `htpasswd -nB` prints it";
    if !(data.starts_with("$2y$") || data.starts_with("$2b$") || data.starts_with("$2a$")) {
        return Err(reject(
            "BLF-CRYPT hash does not start with $2y$, $2b$ or $2a$",
            hint,
        ));
    }
    if bcrypt::HashParts::from_str(data).is_err() {
        return Err(reject("BLF-CRYPT hash is malformed", hint));
    }
    Ok(data.to_owned())
}

fn argon2(data: &str, ident: &str) -> Result<String, Rejection> {
    let name = ident.to_ascii_uppercase();
    let hint = format!("write {{{name}}}${ident}$v=19$m=..,t=..,p=..$salt$hash (a PHC string)");
    let bad = |what: &str| reject(format!("{name} hash {what}"), hint.clone());
    let parsed = argon2::PasswordHash::new(data).map_err(|_| bad("is not a PHC string"))?;
    if parsed.algorithm.as_str() != ident {
        return Err(bad(&format!("is not ${ident}$")));
    }
    if parsed.salt.is_none() || parsed.hash.is_none() {
        return Err(bad("lacks its salt or hash"));
    }
    let params = argon2::Params::try_from(&parsed).map_err(|_| bad("has invalid parameters"))?;
    if params.m_cost() > MAX_ARGON2_M_COST {
        return Err(bad("asks for more than 1 GiB of memory (m=1048576)"));
    }
    Ok(data.to_owned())
}

/// MD5's initial state (RFC 1321 §3.3).
const MD5_IV: [u32; 4] = [0x6745_2301, 0xefcd_ab89, 0x98ba_dcfe, 0x1032_5476];

/// HMAC-MD5 (RFC 2104 §2) stopped after the padded key: the MD5 state after `K ^ ipad` and the
/// one after `K ^ opad`. This is what Dovecot stores as `{CRAM-MD5}`.
///
/// md-5 0.11 cannot start a hasher from a saved state, so resuming is written here on top of
/// its public block function (`block_api::compress`): the padding and length of RFC 1321
/// §3.1–3.2.
pub(crate) struct HmacMd5State {
    inner: [u32; 4],
    outer: [u32; 4],
}

impl HmacMd5State {
    /// Absorbs the key (hashed first if longer than a block, RFC 2104 §2).
    pub fn new(key: &[u8]) -> HmacMd5State {
        let mut block = [0u8; 64];
        if key.len() > 64 {
            block[..16].copy_from_slice(&Md5::digest(key));
        } else {
            block[..key.len()].copy_from_slice(key);
        }
        let mut ipad = block.map(|b| b ^ 0x36);
        let mut opad = block.map(|b| b ^ 0x5c);
        let (mut inner, mut outer) = (MD5_IV, MD5_IV);
        compress(&mut inner, &[ipad]);
        compress(&mut outer, &[opad]);
        block.zeroize();
        ipad.zeroize();
        opad.zeroize();
        HmacMd5State { inner, outer }
    }

    /// Reads Dovecot's 32-byte context: outer state a, b, c, d then inner a, b, c, d, each
    /// word little-endian (`hmac_md5_get_cram_context`).
    pub fn from_context(ctx: &[u8]) -> Option<HmacMd5State> {
        if ctx.len() != CRAM_CONTEXT_LEN {
            return None;
        }
        let mut words = [0u32; 8];
        for (word, bytes) in words.iter_mut().zip(ctx.chunks_exact(4)) {
            *word = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        }
        let outer = [words[0], words[1], words[2], words[3]];
        let inner = [words[4], words[5], words[6], words[7]];
        words.zeroize();
        Some(HmacMd5State { inner, outer })
    }

    /// Writes Dovecot's 32-byte context (see [`HmacMd5State::from_context`]).
    pub fn context(&self) -> [u8; CRAM_CONTEXT_LEN] {
        let mut out = [0u8; CRAM_CONTEXT_LEN];
        let words = self.outer.iter().chain(self.inner.iter());
        for (chunk, word) in out.chunks_exact_mut(4).zip(words) {
            chunk.copy_from_slice(&word.to_le_bytes());
        }
        out
    }

    /// Finishes HMAC-MD5 over `message`.
    pub fn finish(&self, message: &[u8]) -> [u8; 16] {
        let inner = md5_resume(self.inner, 64, message);
        md5_resume(self.outer, 64, &inner)
    }
}

impl Drop for HmacMd5State {
    fn drop(&mut self) {
        self.inner.zeroize();
        self.outer.zeroize();
    }
}

/// Finishes MD5 from `state`, reached after `done` bytes (a multiple of 64), over `data`.
fn md5_resume(mut state: [u32; 4], done: u64, data: &[u8]) -> [u8; 16] {
    let (blocks, rest) = data.as_chunks::<64>();
    compress(&mut state, blocks);
    let mut tail = [0u8; 128];
    tail[..rest.len()].copy_from_slice(rest);
    tail[rest.len()] = 0x80;
    let tail_len = if rest.len() < 56 { 64 } else { 128 };
    let bits = done.wrapping_add(data.len() as u64).wrapping_mul(8);
    tail[tail_len - 8..tail_len].copy_from_slice(&bits.to_le_bytes());
    let (tail_blocks, _) = tail[..tail_len].as_chunks::<64>();
    compress(&mut state, tail_blocks);
    tail.zeroize();
    let mut out = [0u8; 16];
    for (chunk, word) in out.chunks_exact_mut(4).zip(state) {
        chunk.copy_from_slice(&word.to_le_bytes());
    }
    state.zeroize();
    out
}

#[cfg(test)]
mod tests;
