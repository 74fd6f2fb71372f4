//! Envelope addresses: the `<...>` paths of MAIL FROM and RCPT TO.
//!
//! Implements the Path and Mailbox grammar of RFC 5321 §4.1.2 (Dot-string and Quoted-string
//! local parts, domains, address literals of §4.1.3, source routes), the bare `<postmaster>`
//! recipient of §4.1.1.3, and the size bounds of §4.5.3.1.1-3. The parser is strict about
//! framing (angle brackets, quoting, characters) but deliberately lenient about a few forms that
//! are syntactically recoverable yet dangerous for a relay: source routes, empty domain labels
//! and non-ASCII text. Those parse, and [`Address::relay_trick`] names them so the session can
//! refuse them for clients that may not relay. Sans-IO.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

/// Longest local part, in octets (RFC 5321 §4.5.3.1.1).
pub const MAX_LOCAL_LEN: usize = 64;
/// Longest domain, in octets (RFC 5321 §4.5.3.1.2).
pub const MAX_DOMAIN_LEN: usize = 255;
/// Longest path including the angle brackets and any source route (RFC 5321 §4.5.3.1.3).
pub const MAX_PATH_LEN: usize = 256;

/// Why a path or mailbox did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    /// The path does not start with `<` or has no closing `>`.
    #[error("address must be enclosed in <>")]
    MissingBrackets,
    /// `<>` where a recipient is required.
    #[error("null path not allowed here")]
    NullPath,
    /// A component is longer than RFC 5321 §4.5.3.1 allows.
    #[error("{what} is {actual} octets, limit {limit}")]
    TooLong {
        /// "local part", "domain" or "path".
        what: &'static str,
        /// The limit in octets.
        limit: usize,
        /// The actual length in octets.
        actual: usize,
    },
    /// Anything else; the text says what.
    #[error("{0}")]
    Syntax(&'static str),
}

/// A mailbox: `local@domain` (RFC 5321 §4.1.2 `Mailbox`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    /// The local part exactly as sent, quotes and backslashes included (`"john doe"`).
    pub local: String,
    /// The local part with quoting removed (`john doe`); equal to `local` when unquoted.
    pub local_unquoted: String,
    /// Whether the local part was a Quoted-string.
    pub quoted: bool,
    /// The domain, ASCII lower-cased. An address literal keeps its brackets (`[192.0.2.1]`).
    pub domain: String,
    /// Source-route domains (`<@a,@b:user@c>` gives `["a", "b"]`), lower-cased. RFC 5321
    /// §4.1.1.3 says to ignore them; a gateway should refuse them instead.
    pub route: Vec<String>,
    /// Whether a source route was present (`!route.is_empty()`).
    pub had_source_route: bool,
}

/// The argument of MAIL FROM (RFC 5321 §4.1.2 `Reverse-path`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReversePath {
    /// `<>`: bounces and other notifications (RFC 5321 §4.5.5).
    Null,
    /// A sender mailbox.
    Address(Address),
}

/// The argument of RCPT TO (RFC 5321 §4.1.2 `Forward-path`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ForwardPath {
    /// Bare `<postmaster>` in any case, with no domain (RFC 5321 §4.1.1.3).
    Postmaster,
    /// A recipient mailbox.
    Address(Address),
}

impl Address {
    /// Parses a bare mailbox such as `user@example.org` (no angle brackets, no route), the whole
    /// string.
    pub fn parse(s: &str) -> Result<Address, AddressError> {
        let mut p = Parser {
            s: s.as_bytes(),
            pos: 0,
        };
        let addr = p.mailbox(Vec::new())?;
        if p.pos != s.len() {
            return Err(AddressError::Syntax("unexpected text after address"));
        }
        Ok(addr)
    }

    /// Why this address must be refused from a client that may not relay, or `None`.
    ///
    /// Each of these forms can make a downstream system route the message somewhere other than
    /// the domain we checked: a source route, `%` (the "percent hack") or `!` (UUCP bang path) in
    /// the local part, a quoted local part hiding `@`, `%` or `!`, an address-literal domain, a
    /// domain with a trailing dot or empty labels, and non-ASCII text (this server does not offer
    /// SMTPUTF8, RFC 6531, so non-ASCII is never legitimate here).
    pub fn relay_trick(&self) -> Option<&'static str> {
        if self.had_source_route {
            return Some("source route");
        }
        if !self.local.is_ascii() || !self.domain.is_ascii() {
            return Some("non-ASCII address without SMTPUTF8");
        }
        if self.quoted && self.local_unquoted.contains(['@', '%', '!']) {
            return Some("quoted local part hides a routing character");
        }
        if self.local_unquoted.contains('%') {
            return Some("'%' in local part");
        }
        if self.local_unquoted.contains('!') {
            return Some("'!' in local part");
        }
        if self.is_address_literal() {
            return Some("address literal domain");
        }
        if self.domain.split('.').any(str::is_empty) {
            return Some("empty label in domain");
        }
        None
    }

    /// Whether the domain is an address literal (`[192.0.2.1]`, `[IPv6:...]`).
    pub fn is_address_literal(&self) -> bool {
        self.domain.starts_with('[')
    }
}

impl fmt::Display for Address {
    /// The mailbox as it goes on the wire: local part as sent, `@`, domain (no route).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.local, self.domain)
    }
}

impl ReversePath {
    /// Parses a reverse-path at the start of `s` (which must begin with `<`) and returns it with
    /// the text after the closing `>`.
    pub fn parse(s: &str) -> Result<(ReversePath, &str), AddressError> {
        let (path, end) = parse_path(s, false)?;
        let path = match path {
            Parsed::Null => ReversePath::Null,
            Parsed::Address(a) => ReversePath::Address(a),
            // parse_path only yields Postmaster when asked to (postmaster_ok = true).
            Parsed::Postmaster => return Err(AddressError::Syntax("missing @domain")),
        };
        Ok((path, &s[end..]))
    }

    /// The mailbox, unless this is the null path.
    pub fn address(&self) -> Option<&Address> {
        match self {
            ReversePath::Null => None,
            ReversePath::Address(a) => Some(a),
        }
    }
}

impl fmt::Display for ReversePath {
    /// The path in angle brackets, as used in MAIL FROM.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReversePath::Null => f.write_str("<>"),
            ReversePath::Address(a) => write!(f, "<{a}>"),
        }
    }
}

impl ForwardPath {
    /// Parses a forward-path at the start of `s` (which must begin with `<`) and returns it with
    /// the text after the closing `>`.
    pub fn parse(s: &str) -> Result<(ForwardPath, &str), AddressError> {
        let (path, end) = parse_path(s, true)?;
        let path = match path {
            Parsed::Null => return Err(AddressError::NullPath),
            Parsed::Postmaster => ForwardPath::Postmaster,
            Parsed::Address(a) => ForwardPath::Address(a),
        };
        Ok((path, &s[end..]))
    }

    /// The mailbox, unless this is the bare `<postmaster>`.
    pub fn address(&self) -> Option<&Address> {
        match self {
            ForwardPath::Postmaster => None,
            ForwardPath::Address(a) => Some(a),
        }
    }
}

impl fmt::Display for ForwardPath {
    /// The path in angle brackets, as used in RCPT TO.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ForwardPath::Postmaster => f.write_str("<postmaster>"),
            ForwardPath::Address(a) => write!(f, "<{a}>"),
        }
    }
}

enum Parsed {
    Null,
    Postmaster,
    Address(Address),
}

/// Parses `<...>` at the start of `s`; returns the path and the offset just past `>`.
fn parse_path(s: &str, postmaster_ok: bool) -> Result<(Parsed, usize), AddressError> {
    let mut p = Parser {
        s: s.as_bytes(),
        pos: 0,
    };
    if !p.eat(b'<') {
        return Err(AddressError::MissingBrackets);
    }
    let parsed = if p.eat(b'>') {
        Parsed::Null
    } else {
        let route = p.route()?;
        if route.is_empty() && postmaster_ok && p.rest_starts_with_ci(b"postmaster>") {
            p.pos += b"postmaster".len();
            Parsed::Postmaster
        } else {
            Parsed::Address(p.mailbox(route)?)
        }
    };
    if parsed_needs_close(&parsed) && !p.eat(b'>') {
        return Err(match p.peek() {
            None => AddressError::MissingBrackets,
            Some(_) => AddressError::Syntax("unexpected character in address"),
        });
    }
    if p.pos > MAX_PATH_LEN {
        return Err(AddressError::TooLong {
            what: "path",
            limit: MAX_PATH_LEN,
            actual: p.pos,
        });
    }
    Ok((parsed, p.pos))
}

/// `<>` has already consumed its `>`; the other forms have not.
fn parsed_needs_close(p: &Parsed) -> bool {
    !matches!(p, Parsed::Null)
}

struct Parser<'a> {
    s: &'a [u8],
    pos: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    fn eat(&mut self, b: u8) -> bool {
        let hit = self.peek() == Some(b);
        if hit {
            self.pos += 1;
        }
        hit
    }

    fn rest_starts_with_ci(&self, prefix: &[u8]) -> bool {
        self.s.len() - self.pos >= prefix.len()
            && self.s[self.pos..self.pos + prefix.len()].eq_ignore_ascii_case(prefix)
    }

    /// The text between `start` and the cursor. Every cut point is an ASCII delimiter, so it
    /// always falls on a UTF-8 boundary of the original `&str`.
    fn text(&self, start: usize) -> String {
        String::from_utf8_lossy(&self.s[start..self.pos]).into_owned()
    }

    /// `[ A-d-l ":" ]`: `@a,@b:` before the mailbox.
    fn route(&mut self) -> Result<Vec<String>, AddressError> {
        let mut route = Vec::new();
        if self.peek() != Some(b'@') {
            return Ok(route);
        }
        loop {
            if !self.eat(b'@') {
                return Err(AddressError::Syntax("bad source route"));
            }
            route.push(self.domain()?);
            if self.eat(b':') {
                return Ok(route);
            }
            if !self.eat(b',') {
                return Err(AddressError::Syntax("bad source route"));
            }
        }
    }

    /// `Local-part "@" ( Domain / address-literal )`.
    fn mailbox(&mut self, route: Vec<String>) -> Result<Address, AddressError> {
        let start = self.pos;
        let (unquoted, quoted) = if self.peek() == Some(b'"') {
            (self.quoted_string()?, true)
        } else {
            (self.dot_string()?, false)
        };
        let local = self.text(start);
        if local.len() > MAX_LOCAL_LEN {
            return Err(AddressError::TooLong {
                what: "local part",
                limit: MAX_LOCAL_LEN,
                actual: local.len(),
            });
        }
        if !self.eat(b'@') {
            return Err(AddressError::Syntax("missing @domain"));
        }
        let domain = if self.peek() == Some(b'[') {
            self.literal()?
        } else {
            self.domain()?
        };
        let had_source_route = !route.is_empty();
        Ok(Address {
            local,
            local_unquoted: unquoted,
            quoted,
            domain,
            route,
            had_source_route,
        })
    }

    /// `Dot-string = Atom *("." Atom)`, atext widened by non-ASCII (flagged later).
    fn dot_string(&mut self) -> Result<String, AddressError> {
        let start = self.pos;
        let mut prev_dot = true; // a leading dot is as bad as a doubled one
        while let Some(b) = self.peek() {
            if b == b'.' {
                if prev_dot {
                    return Err(AddressError::Syntax("empty atom in local part"));
                }
                prev_dot = true;
            } else if is_atext(b) || b >= 0x80 {
                prev_dot = false;
            } else {
                break;
            }
            self.pos += 1;
        }
        if self.pos == start {
            return Err(AddressError::Syntax("empty local part"));
        }
        if prev_dot {
            return Err(AddressError::Syntax("local part ends with a dot"));
        }
        Ok(self.text(start))
    }

    /// `Quoted-string = DQUOTE *QcontentSMTP DQUOTE`; returns the dequoted content.
    fn quoted_string(&mut self) -> Result<String, AddressError> {
        self.pos += 1; // the opening quote, checked by the caller
        let mut out = Vec::new();
        loop {
            match self.peek() {
                None => return Err(AddressError::Syntax("unterminated quoted string")),
                Some(b'"') => break,
                Some(b'\\') => {
                    self.pos += 1;
                    match self.peek() {
                        Some(c @ 32..=126) => out.push(c),
                        _ => return Err(AddressError::Syntax("bad quoted pair")),
                    }
                }
                Some(c @ (32..=126 | 0x80..=0xff)) => out.push(c),
                Some(_) => return Err(AddressError::Syntax("control character in quoted string")),
            }
            self.pos += 1;
        }
        self.pos += 1;
        if out.is_empty() {
            return Err(AddressError::Syntax("empty local part"));
        }
        // Only ASCII bytes were removed (quotes, backslashes) from valid UTF-8, so this is
        // lossless; the lossy form only guards the invariant.
        Ok(String::from_utf8_lossy(&out).into_owned())
    }

    /// `Domain = sub-domain *("." sub-domain)`, lower-cased. Empty labels are accepted here and
    /// reported by `relay_trick`; so are U-labels (non-ASCII).
    fn domain(&mut self) -> Result<String, AddressError> {
        let start = self.pos;
        while let Some(b) = self.peek() {
            if !(b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b >= 0x80) {
                break;
            }
            self.pos += 1;
        }
        let domain = self.text(start).to_ascii_lowercase();
        if domain.is_empty() || domain == "." {
            return Err(AddressError::Syntax("missing domain"));
        }
        if domain.len() > MAX_DOMAIN_LEN {
            return Err(AddressError::TooLong {
                what: "domain",
                limit: MAX_DOMAIN_LEN,
                actual: domain.len(),
            });
        }
        if domain
            .split('.')
            .any(|l| l.starts_with('-') || l.ends_with('-'))
        {
            return Err(AddressError::Syntax("domain label starts or ends with '-'"));
        }
        Ok(domain)
    }

    /// `address-literal = "[" ( IPv4 / "IPv6:" IPv6 / General-address-literal ) "]"` (§4.1.3).
    fn literal(&mut self) -> Result<String, AddressError> {
        let start = self.pos;
        self.pos += 1; // '[', checked by the caller
        let body_start = self.pos;
        while let Some(b) = self.peek() {
            if b == b']' {
                break;
            }
            // dcontent: %d33-90 / %d94-126
            if !matches!(b, 33..=90 | 94..=126) {
                return Err(AddressError::Syntax("bad character in address literal"));
            }
            self.pos += 1;
        }
        let body = String::from_utf8_lossy(&self.s[body_start..self.pos]).into_owned();
        if !self.eat(b']') {
            return Err(AddressError::Syntax("unterminated address literal"));
        }
        let ok = match body.split_once(':') {
            None => body.parse::<Ipv4Addr>().is_ok(),
            Some((tag, v6)) if tag.eq_ignore_ascii_case("IPv6") => v6.parse::<Ipv6Addr>().is_ok(),
            // General-address-literal: Standardized-tag ":" 1*dcontent
            Some((tag, rest)) => {
                !tag.is_empty()
                    && !rest.is_empty()
                    && tag.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            }
        };
        if !ok {
            return Err(AddressError::Syntax("bad address literal"));
        }
        let literal = self.text(start).to_ascii_lowercase();
        if literal.len() > MAX_DOMAIN_LEN {
            return Err(AddressError::TooLong {
                what: "domain",
                limit: MAX_DOMAIN_LEN,
                actual: literal.len(),
            });
        }
        Ok(literal)
    }
}

/// RFC 5322 §3.2.3 atext.
fn is_atext(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fwd(s: &str) -> Result<ForwardPath, AddressError> {
        match ForwardPath::parse(s)? {
            (p, "") => Ok(p),
            _ => Err(AddressError::Syntax("trailing text")),
        }
    }

    fn addr(s: &str) -> Address {
        match fwd(s) {
            Ok(ForwardPath::Address(a)) => a,
            other => panic!("{s}: {other:?}"),
        }
    }

    #[test]
    fn parses_valid_paths() {
        // (input, local as sent, local unquoted, domain, route)
        let cases: &[(&str, &str, &str, &str, &[&str])] = &[
            ("<user@example.org>", "user", "user", "example.org", &[]),
            (
                "<First.Last@EXAMPLE.Org>",
                "First.Last",
                "First.Last",
                "example.org",
                &[],
            ),
            ("<a+tag@x.y>", "a+tag", "a+tag", "x.y", &[]),
            ("<\"john doe\"@x.y>", "\"john doe\"", "john doe", "x.y", &[]),
            ("<\"a\\\"b\"@x.y>", "\"a\\\"b\"", "a\"b", "x.y", &[]),
            ("<u@[192.0.2.1]>", "u", "u", "[192.0.2.1]", &[]),
            (
                "<u@[IPv6:2001:DB8::1]>",
                "u",
                "u",
                "[ipv6:2001:db8::1]",
                &[],
            ),
            (
                "<@a.test,@B.test:u@c.test>",
                "u",
                "u",
                "c.test",
                &["a.test", "b.test"],
            ),
            ("<postmaster@x.y>", "postmaster", "postmaster", "x.y", &[]),
        ];
        for &(input, local, unq, domain, route) in cases {
            let a = addr(input);
            assert_eq!(a.local, local, "{input}");
            assert_eq!(a.local_unquoted, unq, "{input}");
            assert_eq!(a.domain, domain, "{input}");
            assert_eq!(a.route, route, "{input}");
            assert_eq!(a.had_source_route, !route.is_empty(), "{input}");
        }
    }

    #[test]
    fn rejects_bad_paths() {
        let long_local = format!("<{}@x.y>", "a".repeat(65));
        let long_domain = format!("<a@{}.y>", "d".repeat(254));
        let long_path = format!(
            "<{}@{}.{}>",
            "a".repeat(64),
            "b".repeat(100),
            "c".repeat(100)
        );
        let cases: &[&str] = &[
            "user@x.y",
            "<user@x.y",
            "<>",
            "<user>",
            "<user@>",
            "<@x.y>",
            "<.u@x.y>",
            "<u.@x.y>",
            "<a..b@x.y>",
            "<\"unterminated@x.y>",
            "<\"\"@x.y>",
            "<a b@x.y>",
            "<u@x.y >",
            "<u@x_y.z>",
            "<u@-x.y>",
            "<u@[1.2.3]>",
            "<u@[IPv6:zz]>",
            "<u@[1.2.3.4>",
            "<@a.test u@b.test>",
            "<@:u@b.test>",
            "<u@x.y>>",
            "<\"a\x01\"@x.y>",
            &long_local,
            &long_domain,
            &long_path,
        ];
        for &input in cases {
            assert!(fwd(input).is_err(), "accepted {input:?}");
        }
    }

    #[test]
    fn length_bounds_are_exact() {
        let ok = format!("<{}@x.y>", "a".repeat(64));
        assert!(fwd(&ok).is_ok());
        let bad = format!("<{}@x.y>", "a".repeat(65));
        assert!(matches!(
            fwd(&bad),
            Err(AddressError::TooLong {
                what: "local part",
                limit: 64,
                actual: 65
            })
        ));
        // 1 + 64 + 1 + 189 + 1 = 256 octets: the longest path allowed.
        let edge = format!("<{}@{}.{}>", "a".repeat(64), "b".repeat(94), "c".repeat(94));
        assert!(fwd(&edge).is_ok());
        let over = format!("<{}@{}.{}>", "a".repeat(64), "b".repeat(95), "c".repeat(94));
        assert!(matches!(
            fwd(&over),
            Err(AddressError::TooLong { what: "path", .. })
        ));
    }

    #[test]
    fn null_and_postmaster() {
        assert_eq!(
            ReversePath::parse("<> SIZE=1"),
            Ok((ReversePath::Null, " SIZE=1"))
        );
        assert_eq!(ForwardPath::parse("<>"), Err(AddressError::NullPath));
        assert_eq!(fwd("<PostMaster>"), Ok(ForwardPath::Postmaster));
        assert!(ReversePath::parse("<postmaster>").is_err());
        let (p, rest) = ForwardPath::parse("<u@x.y> NOTIFY=NEVER").unwrap();
        assert_eq!(
            p.address().map(|a| a.to_string()),
            Some("u@x.y".to_string())
        );
        assert_eq!(rest, " NOTIFY=NEVER");
    }

    #[test]
    fn relay_tricks_are_named() {
        let cases: &[(&str, Option<&str>)] = &[
            ("<user@local.test>", None),
            ("<\"john doe\"@local.test>", None),
            (
                "<\"user@evil.com\"@local.test>",
                Some("quoted local part hides a routing character"),
            ),
            (
                "<\"user%evil.com\"@local.test>",
                Some("quoted local part hides a routing character"),
            ),
            (
                "<\"evil.com!user\"@local.test>",
                Some("quoted local part hides a routing character"),
            ),
            (
                "<\"user\\@evil.com\"@local.test>",
                Some("quoted local part hides a routing character"),
            ),
            ("<user%evil.com@local.test>", Some("'%' in local part")),
            ("<evil.com!user@local.test>", Some("'!' in local part")),
            ("<@local.test:user@evil.com>", Some("source route")),
            ("<user@[127.0.0.1]>", Some("address literal domain")),
            ("<user@[IPv6:::1]>", Some("address literal domain")),
            ("<user@local.test.>", Some("empty label in domain")),
            ("<user@local..test>", Some("empty label in domain")),
            ("<user@.local.test>", Some("empty label in domain")),
            (
                "<üser@local.test>",
                Some("non-ASCII address without SMTPUTF8"),
            ),
            (
                "<user@lökal.test>",
                Some("non-ASCII address without SMTPUTF8"),
            ),
        ];
        for &(input, want) in cases {
            assert_eq!(addr(input).relay_trick(), want, "{input}");
        }
    }

    #[test]
    fn display_round_trips() {
        for input in ["<u@x.y>", "<\"a b\"@x.y>", "<u@[192.0.2.1]>"] {
            assert_eq!(fwd(input).unwrap().to_string(), input);
        }
        assert_eq!(ReversePath::Null.to_string(), "<>");
        assert_eq!(Address::parse("A@B.C").unwrap().to_string(), "A@b.c");
        assert!(Address::parse("a@b.c junk").is_err());
    }
}
