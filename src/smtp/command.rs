//! SMTP command parsing: one command line in, one [`Command`] (or a [`ParseError`] that knows
//! its reply) out.
//!
//! Implements the command syntax of RFC 5321 §4.1.1 (EHLO/HELO, MAIL, RCPT, DATA, RSET, VRFY,
//! EXPN, HELP, NOOP, QUIT) and §4.1.2 (parameters), SIZE of RFC 1870 §3, BODY of RFC 6152 §2,
//! AUTH and the MAIL `AUTH=` parameter of RFC 4954 §4-5, and STARTTLS of RFC 3207 §4. Keywords
//! are case-insensitive. Like common servers we accept spaces between `FROM:`/`TO:` and the
//! path, repeated spaces between arguments and trailing white space; the path itself must be in
//! angle brackets. The caller frames lines and bounds their length; this module never sees a
//! CRLF. Sans-IO.

use super::address::{AddressError, ForwardPath, ReversePath};
use super::reply::{self, Reply};

/// Most ESMTP parameters accepted on one MAIL or RCPT command.
pub const MAX_PARAMS: usize = 16;

/// One parsed command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `EHLO domain` (the argument as sent, trimmed).
    Ehlo(String),
    /// `HELO domain` (the argument as sent, trimmed).
    Helo(String),
    /// `MAIL FROM:<reverse-path> [params]`.
    Mail {
        /// The sender, or the null path.
        from: ReversePath,
        /// The interpreted ESMTP parameters.
        params: MailParams,
    },
    /// `RCPT TO:<forward-path>`. No RCPT parameter is supported (no DSN), so any parameter is
    /// [`ParseError::UnknownParameter`].
    Rcpt {
        /// The recipient.
        to: ForwardPath,
    },
    /// `DATA`.
    Data,
    /// `RSET`.
    Rset,
    /// `NOOP [string]` (the argument is ignored, RFC 5321 §4.1.1.9).
    Noop,
    /// `QUIT`.
    Quit,
    /// `VRFY string`.
    Vrfy(String),
    /// `EXPN string`.
    Expn(String),
    /// `HELP [string]` (the argument is ignored).
    Help,
    /// `STARTTLS`.
    Starttls,
    /// `AUTH mechanism [initial-response]` (RFC 4954 §4).
    Auth {
        /// The mechanism name, upper-cased.
        mechanism: String,
        /// The initial response exactly as sent: base64 text, or `=` for an empty one. Not
        /// decoded here.
        initial: Option<String>,
    },
}

/// The MAIL FROM parameters this server understands. Anything else is rejected with
/// [`ParseError::UnknownParameter`] (555 5.5.4).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MailParams {
    /// `SIZE=n`: the client's estimate of the message size (RFC 1870 §3).
    pub size: Option<u64>,
    /// `BODY=7BIT|8BITMIME` (RFC 6152 §2).
    pub body: Option<Body>,
    /// `AUTH=xtext`: the submitter identity, still xtext-encoded, `<>` included
    /// (RFC 4954 §5); decode with [`xtext_decode`].
    pub auth: Option<String>,
}

/// The BODY parameter value (RFC 6152).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    /// `BODY=7BIT`.
    SevenBit,
    /// `BODY=8BITMIME`.
    EightBitMime,
}

/// Why a command line was refused. [`ParseError::reply`] gives the answer to send.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Not an SMTP command (500 5.5.1).
    #[error("unrecognized command")]
    UnknownCommand,
    /// A command defined by an RFC that this server does not implement, such as TURN, ETRN or
    /// BDAT (502 5.5.1).
    #[error("command not implemented")]
    NotImplemented,
    /// Malformed or missing arguments (501 5.5.4).
    #[error("syntax error: {0}")]
    Syntax(&'static str),
    /// The MAIL FROM path is malformed (501 5.1.7).
    #[error("bad sender address: {0}")]
    BadSender(AddressError),
    /// The RCPT TO path is malformed (501 5.1.3).
    #[error("bad recipient address: {0}")]
    BadRecipient(AddressError),
    /// A well-formed MAIL or RCPT parameter we do not support, by keyword (555 5.5.4).
    #[error("unsupported parameter {0}")]
    UnknownParameter(String),
}

impl ParseError {
    /// The reply that answers this error.
    pub fn reply(&self) -> Reply {
        match self {
            ParseError::UnknownCommand => reply::unknown_command(),
            ParseError::NotImplemented => reply::not_implemented(),
            ParseError::Syntax(_) => reply::syntax_error(),
            ParseError::BadSender(_) => reply::bad_sender_syntax(),
            ParseError::BadRecipient(_) => reply::bad_recipient_syntax(),
            ParseError::UnknownParameter(_) => reply::unsupported_parameter(),
        }
    }
}

/// Parses one command line, without its CRLF.
pub fn parse(line: &[u8]) -> Result<Command, ParseError> {
    let line = trim_end(line);
    let (verb, args) = match line.iter().position(|&b| b == b' ' || b == b'\t') {
        Some(i) => (&line[..i], trim_start(&line[i + 1..])),
        None => (line, &[][..]),
    };
    let verb = verb.to_ascii_uppercase();
    // Arguments may carry UTF-8 (addresses are checked later); anything else is garbage.
    let args = std::str::from_utf8(args).map_err(|_| ParseError::Syntax("invalid UTF-8"))?;
    if args.chars().any(|c| c.is_control() && c != '\t') {
        return Err(ParseError::Syntax("control character in arguments"));
    }
    match verb.as_slice() {
        b"EHLO" => Ok(Command::Ehlo(required(args, "EHLO requires a domain")?)),
        b"HELO" => Ok(Command::Helo(required(args, "HELO requires a domain")?)),
        b"MAIL" => mail(args),
        b"RCPT" => rcpt(args),
        b"DATA" => no_args(args, Command::Data),
        b"RSET" => no_args(args, Command::Rset),
        b"QUIT" => no_args(args, Command::Quit),
        b"STARTTLS" => no_args(args, Command::Starttls),
        b"NOOP" => Ok(Command::Noop),
        b"HELP" => Ok(Command::Help),
        b"VRFY" => Ok(Command::Vrfy(required(args, "VRFY requires an argument")?)),
        b"EXPN" => Ok(Command::Expn(required(args, "EXPN requires an argument")?)),
        b"AUTH" => auth(args),
        b"SEND" | b"SOML" | b"SAML" | b"TURN" | b"ETRN" | b"ATRN" | b"BDAT" => {
            Err(ParseError::NotImplemented)
        }
        _ => Err(ParseError::UnknownCommand),
    }
}

/// Decodes RFC 3461 §4 xtext (`+XX` hex escapes), as used by the MAIL `AUTH=` parameter.
pub fn xtext_decode(s: &str) -> Result<String, ParseError> {
    let bad = ParseError::Syntax("bad xtext");
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => {
                let hex = b.get(i + 1..i + 3).ok_or(bad.clone())?;
                let hex = std::str::from_utf8(hex).map_err(|_| bad.clone())?;
                if !hex
                    .bytes()
                    .all(|c| c.is_ascii_digit() || (b'A'..=b'F').contains(&c))
                {
                    return Err(bad);
                }
                out.push(u8::from_str_radix(hex, 16).map_err(|_| bad.clone())?);
                i += 3;
            }
            c @ 33..=126 if c != b'=' => {
                out.push(c);
                i += 1;
            }
            _ => return Err(bad),
        }
    }
    String::from_utf8(out).map_err(|_| bad)
}

fn mail(args: &str) -> Result<Command, ParseError> {
    let rest =
        strip_prefix_ci(args, "FROM:").ok_or(ParseError::Syntax("expected FROM:<address>"))?;
    let rest = rest.trim_start_matches([' ', '\t']);
    let (from, rest) = ReversePath::parse(rest).map_err(ParseError::BadSender)?;
    let mut params = MailParams::default();
    for (key, value) in esmtp_params(rest)? {
        let key = key.to_ascii_uppercase();
        let dup = match key.as_str() {
            "SIZE" => {
                let v = value.ok_or(ParseError::Syntax("SIZE requires a value"))?;
                if !v.bytes().all(|b| b.is_ascii_digit()) || v.len() > 20 {
                    return Err(ParseError::Syntax("bad SIZE value"));
                }
                let n = v
                    .parse()
                    .map_err(|_| ParseError::Syntax("bad SIZE value"))?;
                params.size.replace(n).is_some()
            }
            "BODY" => {
                let v = value.ok_or(ParseError::Syntax("BODY requires a value"))?;
                let body = if v.eq_ignore_ascii_case("7BIT") {
                    Body::SevenBit
                } else if v.eq_ignore_ascii_case("8BITMIME") {
                    Body::EightBitMime
                } else {
                    return Err(ParseError::Syntax("bad BODY value"));
                };
                params.body.replace(body).is_some()
            }
            "AUTH" => {
                let v = value.ok_or(ParseError::Syntax("AUTH requires a value"))?;
                params.auth.replace(v.to_owned()).is_some()
            }
            _ => return Err(ParseError::UnknownParameter(key)),
        };
        if dup {
            return Err(ParseError::Syntax("duplicate parameter"));
        }
    }
    Ok(Command::Mail { from, params })
}

fn rcpt(args: &str) -> Result<Command, ParseError> {
    let rest = strip_prefix_ci(args, "TO:").ok_or(ParseError::Syntax("expected TO:<address>"))?;
    let rest = rest.trim_start_matches([' ', '\t']);
    let (to, rest) = ForwardPath::parse(rest).map_err(ParseError::BadRecipient)?;
    if let Some((key, _)) = esmtp_params(rest)?.into_iter().next() {
        return Err(ParseError::UnknownParameter(key.to_ascii_uppercase()));
    }
    Ok(Command::Rcpt { to })
}

fn auth(args: &str) -> Result<Command, ParseError> {
    let mut words = args.split([' ', '\t']).filter(|w| !w.is_empty());
    let mechanism = words
        .next()
        .ok_or(ParseError::Syntax("AUTH requires a mechanism"))?;
    // RFC 4954 §4: sasl-mech = 1*20 (UPPER-ALPHA / DIGIT / "-" / "_")
    let mech_ok = mechanism.len() <= 20
        && mechanism
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !mech_ok {
        return Err(ParseError::Syntax("bad mechanism name"));
    }
    let initial = words.next().map(str::to_owned);
    if let Some(i) = &initial {
        let b64 = i
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='));
        if !b64 {
            return Err(ParseError::Syntax("initial response is not base64"));
        }
    }
    if words.next().is_some() {
        return Err(ParseError::Syntax("too many AUTH arguments"));
    }
    Ok(Command::Auth {
        mechanism: mechanism.to_ascii_uppercase(),
        initial,
    })
}

/// Splits `SP keyword[=value] ...` after a path (RFC 5321 §4.1.2 `Mail-parameters`).
fn esmtp_params(rest: &str) -> Result<Vec<(&str, Option<&str>)>, ParseError> {
    if !rest.is_empty() && !rest.starts_with([' ', '\t']) {
        return Err(ParseError::Syntax("expected a space after the address"));
    }
    let mut params = Vec::new();
    for word in rest.split([' ', '\t']).filter(|w| !w.is_empty()) {
        if params.len() == MAX_PARAMS {
            return Err(ParseError::Syntax("too many parameters"));
        }
        let (key, value) = match word.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (word, None),
        };
        // esmtp-keyword = (ALPHA / DIGIT) *(ALPHA / DIGIT / "-")
        let key_ok = key
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric())
            && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
        // esmtp-value = 1*(%d33-60 / %d62-126), widened by UTF-8 (RFC 6531)
        let value_ok = value.is_none_or(|v| !v.is_empty() && !v.contains('='));
        if !key_ok || !value_ok {
            return Err(ParseError::Syntax("malformed parameter"));
        }
        params.push((key, value));
    }
    Ok(params)
}

fn required(args: &str, why: &'static str) -> Result<String, ParseError> {
    if args.is_empty() {
        Err(ParseError::Syntax(why))
    } else {
        Ok(args.to_owned())
    }
}

fn no_args(args: &str, cmd: Command) -> Result<Command, ParseError> {
    if args.is_empty() {
        Ok(cmd)
    } else {
        Err(ParseError::Syntax("command takes no arguments"))
    }
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

fn trim_start(b: &[u8]) -> &[u8] {
    let n = b.iter().take_while(|&&c| c == b' ' || c == b'\t').count();
    &b[n..]
}

fn trim_end(b: &[u8]) -> &[u8] {
    let n = b
        .iter()
        .rev()
        .take_while(|&&c| c == b' ' || c == b'\t')
        .count();
    &b[..b.len() - n]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::smtp::address::Address;

    fn a(s: &str) -> Address {
        Address::parse(s).unwrap()
    }

    #[test]
    fn parses_commands() {
        let mail = |from, params| Command::Mail { from, params };
        let plain = MailParams::default();
        let cases: Vec<(&str, Command)> = vec![
            ("EHLO client.test", Command::Ehlo("client.test".into())),
            ("ehlo [192.0.2.1]", Command::Ehlo("[192.0.2.1]".into())),
            ("HeLo  client.test  ", Command::Helo("client.test".into())),
            (
                "MAIL FROM:<u@x.test>",
                mail(ReversePath::Address(a("u@x.test")), plain.clone()),
            ),
            (
                "mail from: <u@x.test>",
                mail(ReversePath::Address(a("u@x.test")), plain.clone()),
            ),
            ("MAIL FROM:<>", mail(ReversePath::Null, plain.clone())),
            (
                "MAIL FROM:<u@x.test> SIZE=1000 BODY=8bitmime AUTH=<>",
                mail(
                    ReversePath::Address(a("u@x.test")),
                    MailParams {
                        size: Some(1000),
                        body: Some(Body::EightBitMime),
                        auth: Some("<>".into()),
                    },
                ),
            ),
            (
                "MAIL FROM:<> body=7BIT",
                mail(
                    ReversePath::Null,
                    MailParams {
                        body: Some(Body::SevenBit),
                        ..plain.clone()
                    },
                ),
            ),
            (
                "RCPT TO:<u@x.test>",
                Command::Rcpt {
                    to: ForwardPath::Address(a("u@x.test")),
                },
            ),
            (
                "rcpt to: <Postmaster>",
                Command::Rcpt {
                    to: ForwardPath::Postmaster,
                },
            ),
            ("DATA", Command::Data),
            ("data ", Command::Data),
            ("RSET", Command::Rset),
            ("NOOP", Command::Noop),
            ("NOOP hello there", Command::Noop),
            ("QUIT", Command::Quit),
            ("HELP", Command::Help),
            ("HELP MAIL", Command::Help),
            ("STARTTLS", Command::Starttls),
            ("VRFY postmaster", Command::Vrfy("postmaster".into())),
            ("EXPN staff", Command::Expn("staff".into())),
            (
                "AUTH plain",
                Command::Auth {
                    mechanism: "PLAIN".into(),
                    initial: None,
                },
            ),
            (
                "AUTH PLAIN AHVzZXIAcGFzcw==",
                Command::Auth {
                    mechanism: "PLAIN".into(),
                    initial: Some("AHVzZXIAcGFzcw==".into()),
                },
            ),
            (
                "AUTH LOGIN =",
                Command::Auth {
                    mechanism: "LOGIN".into(),
                    initial: Some("=".into()),
                },
            ),
            (
                "AUTH CRAM-MD5",
                Command::Auth {
                    mechanism: "CRAM-MD5".into(),
                    initial: None,
                },
            ),
        ];
        for (line, want) in cases {
            assert_eq!(parse(line.as_bytes()), Ok(want), "{line}");
        }
    }

    #[test]
    fn refuses_bad_commands_with_the_right_reply() {
        // (line, reply code and enhanced code)
        let cases: &[(&[u8], &str)] = &[
            (b"", "500 5.5.1"),
            (b"HELLO", "500 5.5.1"),
            (b"GET / HTTP/1.1", "500 5.5.1"),
            (b"MAILFROM:<u@x.test>", "500 5.5.1"),
            (b"TURN", "502 5.5.1"),
            (b"BDAT 100 LAST", "502 5.5.1"),
            (b"EHLO", "501 5.5.4"),
            (b"HELO ", "501 5.5.4"),
            (b"DATA now", "501 5.5.4"),
            (b"QUIT please", "501 5.5.4"),
            (b"VRFY", "501 5.5.4"),
            (b"MAIL TO:<u@x.test>", "501 5.5.4"),
            (b"MAIL FROM <u@x.test>", "501 5.5.4"),
            (b"MAIL FROM:<u@x.test> SIZE=abc", "501 5.5.4"),
            (
                b"MAIL FROM:<u@x.test> SIZE=99999999999999999999999",
                "501 5.5.4",
            ),
            (b"MAIL FROM:<u@x.test> SIZE", "501 5.5.4"),
            (b"MAIL FROM:<u@x.test> SIZE=1 SIZE=2", "501 5.5.4"),
            (b"MAIL FROM:<u@x.test> BODY=BINARYMIME", "501 5.5.4"),
            (b"MAIL FROM:<u@x.test> =x", "501 5.5.4"),
            (b"MAIL FROM:<u@x.test> SIZE=", "501 5.5.4"),
            (b"MAIL FROM:<u@x.test>SIZE=1", "501 5.5.4"),
            (
                b"MAIL FROM:<u@x.test> A B C D E F G H I J K L M N O P Q",
                "501 5.5.4",
            ),
            (b"MAIL FROM:<u@x.test> SIZE=1\x00", "501 5.5.4"),
            (b"MAIL FROM:<\xff@x.test>", "501 5.5.4"),
            (b"AUTH", "501 5.5.4"),
            (b"AUTH PLAIN abc def", "501 5.5.4"),
            (b"AUTH PLAIN a*b", "501 5.5.4"),
            (b"AUTH THIS-NAME-IS-WAY-TOO-LONG", "501 5.5.4"),
            (b"MAIL FROM:u@x.test", "501 5.1.7"),
            (b"MAIL FROM:<u@x.test", "501 5.1.7"),
            (b"MAIL FROM:<u@>", "501 5.1.7"),
            (b"RCPT TO:u@x.test", "501 5.1.3"),
            (b"RCPT TO:<>", "501 5.1.3"),
            (b"RCPT TO:<a b@x.test>", "501 5.1.3"),
            (b"MAIL FROM:<u@x.test> SMTPUTF8", "555 5.5.4"),
            (b"MAIL FROM:<u@x.test> RET=HDRS", "555 5.5.4"),
            (b"RCPT TO:<u@x.test> NOTIFY=NEVER", "555 5.5.4"),
        ];
        for &(line, want) in cases {
            let err = parse(line).expect_err(&String::from_utf8_lossy(line));
            let reply = err.reply();
            let (c, s, d) = reply.enhanced.unwrap_or_default();
            assert_eq!(format!("{} {c}.{s}.{d}", reply.code), want, "{err:?}");
        }
    }

    #[test]
    fn unknown_parameter_names_the_keyword() {
        let err = parse(b"MAIL FROM:<u@x.test> smtputf8").unwrap_err();
        assert_eq!(err, ParseError::UnknownParameter("SMTPUTF8".into()));
    }

    #[test]
    fn decodes_xtext() {
        let cases: &[(&str, Option<&str>)] = &[
            ("<>", Some("<>")),
            ("user+40example.org", Some("user@example.org")),
            ("a+2Bb", Some("a+b")),
            ("a+2b", None),
            ("a+4", None),
            ("a=b", None),
            ("", Some("")),
        ];
        for &(input, want) in cases {
            assert_eq!(xtext_decode(input).ok().as_deref(), want, "{input}");
        }
    }
}
