//! The digest-response of RFC 2831 §2.1.2: comma-separated `name=value` directives, each value
//! a token or a quoted string with `\` escapes (RFC 2616 §2.2), with optional white space
//! around the separators and empty list elements allowed (the `#rule` of RFC 2616 §2.1).
//!
//! Bounded: the whole response (RFC 2831 §2.1.2 keeps it under 4096 bytes), the number of
//! directives and each value. A directive given twice is refused (RFC 2831 makes most of them
//! at-most-once and lets none repeat meaningfully); unknown directives are skipped (RFC 2831
//! §2.1.2: they are to be ignored). Names are case-insensitive. Nothing here interprets a
//! value: `digest_md5.rs` does.

/// Largest digest-response accepted, in bytes (RFC 2831 §2.1.2: "less than 4096 bytes").
pub const MAX_RESPONSE_LEN: usize = 4096;
/// Most directives in one response (twelve are defined).
pub const MAX_DIRECTIVES: usize = 32;
/// Longest value of one directive, in bytes (after unquoting).
pub const MAX_VALUE_LEN: usize = 1024;

/// The directives of a digest-response that the server reads, as sent (unquoted, unescaped).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Response {
    /// `username`: in ISO 8859-1, or UTF-8 with `charset=utf-8`.
    pub username: Option<Vec<u8>>,
    /// `realm`: the realm the client hashed with.
    pub realm: Option<Vec<u8>>,
    /// `nonce`: the server's, echoed.
    pub nonce: Option<Vec<u8>>,
    /// `cnonce`: the client's nonce.
    pub cnonce: Option<Vec<u8>>,
    /// `nc`: the nonce count, 8 hex digits.
    pub nc: Option<Vec<u8>>,
    /// `qop`: `auth`, `auth-int` or `auth-conf`.
    pub qop: Option<Vec<u8>>,
    /// `digest-uri`: `serv-type/host[/serv-name]`.
    pub digest_uri: Option<Vec<u8>>,
    /// `response`: 32 hex digits.
    pub response: Option<Vec<u8>>,
    /// `charset`: only `utf-8` is defined.
    pub charset: Option<Vec<u8>>,
    /// `authzid`: the authorization identity, UTF-8.
    pub authzid: Option<Vec<u8>>,
}

/// Parses a digest-response.
pub fn parse(input: &[u8]) -> Result<Response, &'static str> {
    if input.len() >= MAX_RESPONSE_LEN {
        return Err("digest-response too long");
    }
    let mut out = Response::default();
    let mut seen: Vec<Vec<u8>> = Vec::new();
    let mut p = Parser { input, at: 0 };
    loop {
        p.skip_space();
        match p.peek() {
            None => break,
            Some(b',') => {
                p.at += 1;
                continue;
            }
            Some(_) => {}
        }
        let name = p
            .token()
            .ok_or("expected a directive name")?
            .to_ascii_lowercase();
        p.skip_space();
        if p.peek() != Some(b'=') {
            return Err("expected `=` after a directive name");
        }
        p.at += 1;
        p.skip_space();
        let value = match p.peek() {
            Some(b'"') => p.quoted()?,
            _ => p
                .token()
                .ok_or("expected a token or a quoted string")?
                .to_vec(),
        };
        if value.len() > MAX_VALUE_LEN {
            return Err("directive value too long");
        }
        if seen.contains(&name) {
            return Err("directive given twice");
        }
        if seen.len() == MAX_DIRECTIVES {
            return Err("too many directives");
        }
        seen.push(name.clone());
        let slot = match name.as_slice() {
            b"username" => &mut out.username,
            b"realm" => &mut out.realm,
            b"nonce" => &mut out.nonce,
            b"cnonce" => &mut out.cnonce,
            b"nc" => &mut out.nc,
            b"qop" => &mut out.qop,
            b"digest-uri" => &mut out.digest_uri,
            b"response" => &mut out.response,
            b"charset" => &mut out.charset,
            b"authzid" => &mut out.authzid,
            _ => continue,
        };
        *slot = Some(value);
        p.skip_space();
        match p.peek() {
            None | Some(b',') => {}
            Some(_) => return Err("expected `,` between directives"),
        }
    }
    Ok(out)
}

struct Parser<'a> {
    input: &'a [u8],
    at: usize,
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<u8> {
        self.input.get(self.at).copied()
    }

    /// Linear white space between elements (SP, HT, CR, LF).
    fn skip_space(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\r' | b'\n')) {
            self.at += 1;
        }
    }

    /// A token (RFC 2616 §2.2): visible ASCII other than the separators; `None` if empty.
    fn token(&mut self) -> Option<&'a [u8]> {
        let start = self.at;
        while self.peek().is_some_and(is_token_char) {
            self.at += 1;
        }
        (self.at > start).then(|| &self.input[start..self.at])
    }

    /// A quoted string starting at `"`: its content with `\` escapes undone. Control
    /// characters other than HT are refused.
    fn quoted(&mut self) -> Result<Vec<u8>, &'static str> {
        self.at += 1;
        let mut value = Vec::new();
        loop {
            let Some(b) = self.peek() else {
                return Err("unterminated quoted string");
            };
            self.at += 1;
            let b = match b {
                b'"' => return Ok(value),
                b'\\' => {
                    let escaped = self.peek().ok_or("unterminated quoted string")?;
                    self.at += 1;
                    escaped
                }
                b => b,
            };
            if (b < 0x20 && b != b'\t') || b == 0x7f {
                return Err("control character in a quoted string");
            }
            if value.len() == MAX_VALUE_LEN {
                return Err("directive value too long");
            }
            value.push(b);
        }
    }
}

fn is_token_char(b: u8) -> bool {
    b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Option<Vec<u8>> {
        Some(s.as_bytes().to_vec())
    }

    #[test]
    fn rfc2831_example_response() {
        let r = parse(
            b"charset=utf-8,username=\"chris\",realm=\"elwood.innosoft.com\",\
              nonce=\"OA6MG9tEQGm2hh\",nc=00000001,cnonce=\"OA6MHXh6VqTrRk\",\
              digest-uri=\"imap/elwood.innosoft.com\",\
              response=d388dad90d4bbd760a152321f2143af7,qop=auth",
        )
        .expect("parses");
        assert_eq!(
            r,
            Response {
                username: v("chris"),
                realm: v("elwood.innosoft.com"),
                nonce: v("OA6MG9tEQGm2hh"),
                cnonce: v("OA6MHXh6VqTrRk"),
                nc: v("00000001"),
                qop: v("auth"),
                digest_uri: v("imap/elwood.innosoft.com"),
                response: v("d388dad90d4bbd760a152321f2143af7"),
                charset: v("utf-8"),
                authzid: None,
            }
        );
    }

    #[test]
    fn quoting_spaces_case_and_empty_elements() {
        let r = parse(
            b" , USERNAME = \"a\\\"b\\\\c,d\" ,, Realm=\"\" , qop=\"auth\", maxbuf=65536,\
              x-unknown=\"skipped\" ,",
        )
        .expect("parses");
        assert_eq!(r.username, v("a\"b\\c,d"));
        assert_eq!(r.realm, v(""));
        assert_eq!(r.qop, v("auth"));
        assert_eq!(r.nonce, None);
        assert_eq!(parse(b"").expect("empty"), Response::default());
        assert_eq!(
            parse(b"username=\"caf\xc3\xa9\"").expect("8-bit").username,
            v("café")
        );
    }

    #[test]
    fn malformed_and_unbounded_responses_are_refused() {
        let long_value = format!("cnonce=\"{}\"", "x".repeat(MAX_VALUE_LEN + 1));
        let long_token = format!("cnonce={}", "x".repeat(MAX_VALUE_LEN + 1));
        let many: String = (0..=MAX_DIRECTIVES).map(|i| format!("x{i}=1,")).collect();
        let huge = format!("username=\"{}\"", "x".repeat(MAX_RESPONSE_LEN));
        let cases: Vec<(&[u8], &str)> = vec![
            (b"username=\"a\",username=\"b\"", "twice"),
            (b"nc=1,NC=1", "twice"),
            (b"x=1,x=2", "twice"),
            (b"username=\"a", "unterminated"),
            (b"username=\"a\\", "unterminated"),
            (b"username", "expected `=`"),
            (b"=a", "directive name"),
            (b"username=", "token or a quoted string"),
            (b"username=a b", "expected `,`"),
            (b"username=\"a\"b", "expected `,`"),
            (b"username=\"a\x01\"", "control character"),
            (b"username=\"a\\\x00\"", "control character"),
            (b"user\xffname=a", "expected `=`"),
            (long_value.as_bytes(), "too long"),
            (long_token.as_bytes(), "too long"),
            (many.as_bytes(), "too many"),
            (huge.as_bytes(), "digest-response too long"),
        ];
        for (input, want) in cases {
            match parse(input) {
                Err(why) => assert!(why.contains(want), "{input:?}: {why}"),
                Ok(r) => panic!("{input:?} parsed: {r:?}"),
            }
        }
    }
}
