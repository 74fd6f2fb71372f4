//! The DIGEST-MD5 secret (RFC 2831 §2.1.2.1): `H({ username ":" realm ":" password })`, the
//! 16-byte MD5 that every response of a user in a realm is computed from, and Dovecot's
//! `{DIGEST-MD5}` scheme, which stores exactly that in hex.
//!
//! RFC 2831 has the client hash the user name, realm and password in ISO 8859-1 when they can
//! be written in it (and in UTF-8 otherwise, with `charset=utf-8`); a client that sends no
//! `charset` uses ISO 8859-1 throughout. Either way, each string that fits ISO 8859-1 is hashed
//! in it, which is what [`latin1_or_utf8`] does. For ASCII, all of these are the same bytes.

use md5::{Digest, Md5};

/// `H({ username ":" realm ":" password })`: the secret a DIGEST-MD5 response is computed
/// from, and what `{DIGEST-MD5}` stores.
pub(crate) fn secret(user: &str, realm: &str, password: &[u8]) -> [u8; 16] {
    let mut md5 = Md5::new();
    md5.update(latin1_or_utf8(user.as_bytes()));
    md5.update(b":");
    md5.update(latin1_or_utf8(realm.as_bytes()));
    md5.update(b":");
    md5.update(zeroize::Zeroizing::new(latin1_or_utf8(password)));
    md5.finalize().into()
}

/// The `{DIGEST-MD5}` field of `user` (as the users file holds the name) in `realm`.
pub(crate) fn field(user: &str, realm: &str, password: &[u8]) -> String {
    format!(
        "{{DIGEST-MD5}}{}",
        hex::encode(secret(user, realm, password))
    )
}

/// `text` in ISO 8859-1 when it is UTF-8 whose characters all fit (RFC 2831 §2.1.2.1), else
/// unchanged.
fn latin1_or_utf8(text: &[u8]) -> Vec<u8> {
    match std::str::from_utf8(text) {
        Ok(s) if s.chars().all(|c| u32::from(c) <= 0xff) => {
            s.chars().map(|c| u32::from(c) as u8).collect()
        }
        _ => text.to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc2831_example_secret_and_field() {
        // RFC 2831 §4: user "chris", realm "elwood.innosoft.com", password "secret". The
        // response of the example is computed from this secret in sasl::digest_md5's tests.
        let s = secret("chris", "elwood.innosoft.com", b"secret");
        let want: [u8; 16] = Md5::digest(b"chris:elwood.innosoft.com:secret").into();
        assert_eq!(s, want);
        assert_eq!(
            field("chris", "elwood.innosoft.com", b"secret"),
            format!("{{DIGEST-MD5}}{}", hex::encode(want))
        );
    }

    #[test]
    fn dovecot_vector() {
        // tests/fixtures/dovecot-schemes.users: `doveadm pw -s DIGEST-MD5` for the user
        // "digest-md5" (no `@realm`: the empty realm) and the password "correct horse 7".
        assert_eq!(
            field("digest-md5", "", b"correct horse 7"),
            "{DIGEST-MD5}b65cef46b515da9537c278f97eae3375"
        );
    }

    #[test]
    fn latin1_where_it_fits() {
        assert_eq!(latin1_or_utf8("caf\u{e9}".as_bytes()), b"caf\xe9");
        assert_eq!(
            latin1_or_utf8("\u{20ac}5".as_bytes()),
            "\u{20ac}5".as_bytes()
        );
        assert_eq!(latin1_or_utf8(b"\xff\xfe"), b"\xff\xfe");
        assert_eq!(
            secret("j\u{f6}rg", "r", "p\u{e4}ss".as_bytes()),
            <[u8; 16]>::from(Md5::digest(b"j\xf6rg:r:p\xe4ss"))
        );
    }
}
