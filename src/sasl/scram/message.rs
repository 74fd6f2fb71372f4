//! SCRAM messages (RFC 5802 §7): parsers for the client-first and client-final messages and
//! encoders for the server-first and server-final messages. Sans-IO and bounded: a message is
//! at most [`MAX_TOKEN_LEN`] bytes and must be UTF-8.
//!
//! Errors are `&'static str` reasons for the log; each starts with the RFC 5802 §7
//! `server-error` value that names it (`invalid-encoding`, `extensions-not-supported`,
//! `invalid-username-encoding`, ...). The gs2 header (RFC 5801 §4) is kept verbatim, since the
//! client-final `c=` attribute must repeat it byte for byte.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

use crate::sasl::MAX_TOKEN_LEN;

/// The gs2 channel-binding flag (RFC 5802 §7 `gs2-cbind-flag`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CbFlag<'a> {
    /// `n`: the client does not support channel binding.
    None,
    /// `y`: the client supports channel binding but thinks the server does not.
    Unused,
    /// `p=name`: the client binds to the channel with this binding type.
    Binding(&'a str),
}

/// A parsed client-first message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientFirst<'a> {
    /// The gs2 header as sent, with its trailing comma (e.g. `n,,`).
    pub gs2_header: &'a str,
    /// The channel-binding flag.
    pub cb_flag: CbFlag<'a>,
    /// The authorization identity (`a=`), decoded; `None` if absent.
    pub authzid: Option<String>,
    /// The client-first-message-bare, as sent (part of the AuthMessage).
    pub bare: &'a str,
    /// The user name (`n=`), decoded (`=2C` and `=3D`) but not yet SASLprep'd.
    pub user: String,
    /// The client nonce (`r=`).
    pub nonce: &'a str,
}

/// A parsed client-final message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientFinal<'a> {
    /// The decoded `c=` attribute: the gs2 header followed by the channel-binding data.
    pub channel_binding: Vec<u8>,
    /// The nonce (`r=`): client nonce followed by server nonce.
    pub nonce: &'a str,
    /// The client-final-message-without-proof, as sent (part of the AuthMessage).
    pub without_proof: &'a str,
    /// The decoded ClientProof (`p=`).
    pub proof: Vec<u8>,
}

/// Parses a client-first message (RFC 5802 §7 `client-first-message`).
pub fn parse_client_first(message: &[u8]) -> Result<ClientFirst<'_>, &'static str> {
    let text = utf8(message)?;
    let (flag, rest) = match text.as_bytes().first() {
        Some(b'n') => (CbFlag::None, &text[1..]),
        Some(b'y') => (CbFlag::Unused, &text[1..]),
        Some(b'p') => {
            let body = text[1..]
                .strip_prefix('=')
                .ok_or("invalid-encoding: p without =cb-name")?;
            let end = body.find(',').ok_or("invalid-encoding: no gs2 header")?;
            let name = &body[..end];
            let cb_char = |c: char| c.is_ascii_alphanumeric() || c == '.' || c == '-';
            if name.is_empty() || !name.chars().all(cb_char) {
                return Err("invalid-encoding: bad channel-binding name");
            }
            (CbFlag::Binding(name), &body[end..])
        }
        _ => return Err("invalid-encoding: gs2 header must start with n, y or p="),
    };
    let rest = rest
        .strip_prefix(',')
        .ok_or("invalid-encoding: no comma after the channel-binding flag")?;
    let (authzid, bare) = if let Some(after) = rest.strip_prefix("a=") {
        let end = after
            .find(',')
            .ok_or("invalid-encoding: gs2 header not ended")?;
        let authzid = decode_saslname(&after[..end])?;
        if authzid.is_empty() {
            return Err("invalid-encoding: empty authzid");
        }
        (Some(authzid), &after[end + 1..])
    } else {
        let bare = rest
            .strip_prefix(',')
            .ok_or("invalid-encoding: gs2 header not ended")?;
        (None, bare)
    };
    let gs2_header = &text[..text.len() - bare.len()];
    let mut attrs = bare.split(',');
    let first = attrs.next().unwrap_or_default();
    if first.starts_with("m=") {
        return Err("extensions-not-supported: mandatory extension m=");
    }
    let user = first
        .strip_prefix("n=")
        .ok_or("invalid-encoding: expected n=username")?;
    let user = decode_saslname(user)?;
    if user.is_empty() {
        return Err("invalid-encoding: empty username");
    }
    let nonce = attrs
        .next()
        .and_then(|a| a.strip_prefix("r="))
        .ok_or("invalid-encoding: expected r=nonce")?;
    check_nonce(nonce)?;
    extensions(attrs)?;
    Ok(ClientFirst {
        gs2_header,
        cb_flag: flag,
        authzid,
        bare,
        user,
        nonce,
    })
}

/// Parses a client-final message (RFC 5802 §7 `client-final-message`).
pub fn parse_client_final(message: &[u8]) -> Result<ClientFinal<'_>, &'static str> {
    let text = utf8(message)?;
    let (without_proof, proof) = text
        .rsplit_once(",p=")
        .ok_or("invalid-encoding: expected p=proof last")?;
    let proof = B64
        .decode(proof)
        .map_err(|_| "invalid-encoding: proof is not base64")?;
    let mut attrs = without_proof.split(',');
    let cbind = attrs
        .next()
        .and_then(|a| a.strip_prefix("c="))
        .ok_or("invalid-encoding: expected c=channel-binding first")?;
    let channel_binding = B64
        .decode(cbind)
        .map_err(|_| "invalid-encoding: channel binding is not base64")?;
    let nonce = attrs
        .next()
        .and_then(|a| a.strip_prefix("r="))
        .ok_or("invalid-encoding: expected r=nonce second")?;
    check_nonce(nonce)?;
    extensions(attrs)?;
    Ok(ClientFinal {
        channel_binding,
        nonce,
        without_proof,
        proof,
    })
}

/// The server-first message `r=nonce,s=salt,i=iterations`.
pub fn server_first(nonce: &str, salt: &[u8], iterations: u32) -> String {
    format!("r={nonce},s={},i={iterations}", B64.encode(salt))
}

/// The server-final message on success, `v=ServerSignature`.
pub fn server_final(signature: &[u8]) -> String {
    format!("v={}", B64.encode(signature))
}

/// Encodes a name as a `saslname` (RFC 5802 §5.1: `,` as `=2C`, `=` as `=3D`).
pub fn encode_saslname(name: &str) -> String {
    name.replace('=', "=3D").replace(',', "=2C")
}

/// Decodes a `saslname`: `=2C` and `=3D` are the only escapes, and a bare `,` cannot occur.
pub fn decode_saslname(text: &str) -> Result<String, &'static str> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('=') {
        out.push_str(&rest[..at]);
        match rest.get(at..at + 3) {
            Some("=2C") => out.push(','),
            Some("=3D") => out.push('='),
            _ => return Err("invalid-username-encoding: = not followed by 2C or 3D"),
        }
        rest = &rest[at + 3..];
    }
    out.push_str(rest);
    Ok(out)
}

fn utf8(message: &[u8]) -> Result<&str, &'static str> {
    if message.len() > MAX_TOKEN_LEN {
        return Err("invalid-encoding: message too long");
    }
    std::str::from_utf8(message).map_err(|_| "invalid-encoding: message is not UTF-8")
}

/// A nonce is one or more printable ASCII characters other than `,` (RFC 5802 §7).
fn check_nonce(nonce: &str) -> Result<(), &'static str> {
    let printable = |b: u8| (0x21..=0x7e).contains(&b) && b != b',';
    if nonce.is_empty() || !nonce.bytes().all(printable) {
        return Err("invalid-encoding: nonce is empty or not printable ASCII");
    }
    Ok(())
}

/// Optional extensions (`attr=value` with a one-letter attribute): ignored, but well-formed.
fn extensions<'a>(attrs: impl Iterator<Item = &'a str>) -> Result<(), &'static str> {
    for attr in attrs {
        let b = attr.as_bytes();
        if b.len() < 2 || !b[0].is_ascii_alphabetic() || b[1] != b'=' {
            return Err("invalid-encoding: malformed attribute");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_first_messages() {
        let m = parse_client_first(b"n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL").expect("rfc 5802");
        assert_eq!(m.gs2_header, "n,,");
        assert_eq!(m.cb_flag, CbFlag::None);
        assert_eq!(m.authzid, None);
        assert_eq!(m.bare, "n=user,r=fyko+d2lbbFgONRv9qkxdawL");
        assert_eq!(m.user, "user");
        assert_eq!(m.nonce, "fyko+d2lbbFgONRv9qkxdawL");

        let m = parse_client_first(b"p=tls-exporter,a=b=3Dc=2Cd,n=u=2C,r=x,z=ext").expect("p");
        assert_eq!(m.gs2_header, "p=tls-exporter,a=b=3Dc=2Cd,");
        assert_eq!(m.cb_flag, CbFlag::Binding("tls-exporter"));
        assert_eq!(m.authzid.as_deref(), Some("b=c,d"));
        assert_eq!(m.user, "u,");
        assert_eq!(m.bare, "n=u=2C,r=x,z=ext");

        let m = parse_client_first(b"y,,n=user,r=abc").expect("y");
        assert_eq!(m.cb_flag, CbFlag::Unused);
    }

    #[test]
    fn malformed_client_first_messages() {
        let long = [b"n,,n=user,r=".as_slice(), &[b'a'; MAX_TOKEN_LEN]].concat();
        let cases: Vec<(&[u8], &str)> = vec![
            (b"", "must start with"),
            (b"x,,n=user,r=abc", "must start with"),
            (b"n", "no comma"),
            (b"n,", "not ended"),
            (b"n,n=user,r=abc", "not ended"),
            (b"p,,n=user,r=abc", "p without"),
            (b"p=,,n=user,r=abc", "bad channel-binding name"),
            (b"p=tls_x,,n=user,r=abc", "bad channel-binding name"),
            (b"p=tls-exporter", "no gs2 header"),
            (b"n,a=,n=user,r=abc", "empty authzid"),
            (b"n,a=x", "not ended"),
            (b"n,,m=ext,n=user,r=abc", "extensions-not-supported"),
            (b"n,,r=abc,n=user", "expected n=username"),
            (b"n,,n=,r=abc", "empty username"),
            (b"n,,n=us=er,r=abc", "invalid-username-encoding"),
            (b"n,,n=us=2,r=abc", "invalid-username-encoding"),
            (b"n,,n=user", "expected r=nonce"),
            (b"n,,n=user,s=abc", "expected r=nonce"),
            (b"n,,n=user,r=", "nonce is empty"),
            (b"n,,n=user,r=a b", "not printable"),
            (b"n,,n=user,r=abc,", "malformed attribute"),
            (b"n,,n=user,r=abc,=x", "malformed attribute"),
            (b"n,,n=\xff,r=abc", "not UTF-8"),
            (&long, "too long"),
        ];
        for (message, want) in cases {
            match parse_client_first(message) {
                Ok(m) => panic!("{message:?} parsed: {m:?}"),
                Err(why) => assert!(why.contains(want), "{message:?}: {why}"),
            }
        }
    }

    #[test]
    fn client_final_messages() {
        let text = "c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,\
                    p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=";
        let m = parse_client_final(text.as_bytes()).expect("rfc 5802");
        assert_eq!(m.channel_binding, b"n,,");
        assert_eq!(m.nonce, "fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j");
        assert_eq!(
            m.without_proof,
            "c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j"
        );
        assert_eq!(m.proof.len(), 20);
        let m = parse_client_final(b"c=biws,r=abc,x=ext,p=AAAA").expect("extension");
        assert_eq!(m.without_proof, "c=biws,r=abc,x=ext");
    }

    #[test]
    fn malformed_client_final_messages() {
        let cases: Vec<(&[u8], &str)> = vec![
            (b"", "p=proof"),
            (b"c=biws,r=abc", "p=proof"),
            (b"c=biws,r=abc,p=!!", "proof is not base64"),
            (b"r=abc,c=biws,p=AAAA", "c=channel-binding"),
            (b"c=b!ws,r=abc,p=AAAA", "channel binding is not base64"),
            (b"c=biws,p=AAAA", "r=nonce"),
            (b"c=biws,x=1,r=abc,p=AAAA", "r=nonce"),
            (b"c=biws,r=,p=AAAA", "nonce is empty"),
            (b"c=biws,r=abc,,p=AAAA", "malformed attribute"),
            (b"c=biws,r=\xc3\x28,p=AAAA", "not UTF-8"),
        ];
        for (message, want) in cases {
            match parse_client_final(message) {
                Ok(m) => panic!("{message:?} parsed: {m:?}"),
                Err(why) => assert!(why.contains(want), "{message:?}: {why}"),
            }
        }
    }

    #[test]
    fn saslnames_round_trip() {
        for name in ["user", "a,b=c", "=2C", "", "ü,="] {
            let encoded = encode_saslname(name);
            assert!(!encoded.contains(','));
            assert_eq!(decode_saslname(&encoded).as_deref(), Ok(name));
        }
    }

    #[test]
    fn server_messages() {
        assert_eq!(
            server_first("abc", b"salt", 4096),
            "r=abc,s=c2FsdA==,i=4096"
        );
        assert_eq!(server_final(&[0xff, 0x00]), "v=/wA=");
    }
}
