//! POP3 command parsing: one line (CRLF already removed) in, one [`Command`] out.
//!
//! Implements the command syntax of RFC 1939 §3 (keywords are case-insensitive, arguments
//! separated by spaces) with the bounds of RFC 2449 §4 (keywords of 3-4 characters, arguments
//! of at most 40 octets, printable ASCII). Two commands need more room: `PASS` takes the rest of
//! the line as the password (RFC 1939 §7 allows spaces in it), up to [`MAX_PASSWORD_LEN`]
//! octets, and `AUTH` (RFC 5034 §4) carries a base64 initial response up to
//! [`MAX_SASL_LINE_LEN`] octets. Also covers `CAPA` (RFC 2449 §5) and `STLS` (RFC 2595 §4).

use crate::sasl;

/// Longest argument in octets (RFC 2449 §4).
pub const MAX_ARG_LEN: usize = 40;

/// Longest password accepted by `PASS`, in octets.
pub const MAX_PASSWORD_LEN: usize = 255;

/// Longest command line in octets, without CRLF, for commands other than `AUTH` and `PASS`
/// (RFC 2449 §4: 255 octets including CRLF).
pub const MAX_LINE_LEN: usize = 253;

/// Longest base64 line of a SASL exchange: a [`sasl::MAX_TOKEN_LEN`] token, encoded.
pub const MAX_SASL_LINE_LEN: usize = sasl::MAX_TOKEN_LEN * 4 / 3 + 4;

/// Longest line the parser accepts at all: `AUTH <mechanism> <initial response>`.
pub const MAX_AUTH_LINE_LEN: usize = "AUTH ".len() + MAX_ARG_LEN + 1 + MAX_SASL_LINE_LEN;

/// A secret the client sent (a password or a SASL initial response): zeroized on drop, with a
/// `Debug` that shows nothing.
pub use crate::auth::Secret;

/// A parsed POP3 command. Variants are spelled as the RFC keywords.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `USER name` (RFC 1939 §7).
    User(String),
    /// `PASS string` (RFC 1939 §7); the password may contain spaces.
    Pass(Secret),
    /// `APOP name digest` (RFC 1939 §7).
    Apop {
        /// The mailbox name.
        user: String,
        /// The hex MD5 digest as sent.
        digest: String,
    },
    /// `AUTH [mechanism [initial-response]]` (RFC 5034 §4). Without a mechanism the client asks
    /// for the list of mechanisms.
    Auth {
        /// The mechanism name as sent.
        mechanism: Option<String>,
        /// The base64 initial response as sent (`=` stands for an empty one).
        initial: Option<Secret>,
    },
    /// `CAPA` (RFC 2449 §5).
    Capa,
    /// `STLS` (RFC 2595 §4).
    Stls,
    /// `STAT` (RFC 1939 §5).
    Stat,
    /// `LIST [msg]` (RFC 1939 §5).
    List(Option<u32>),
    /// `UIDL [msg]` (RFC 1939 §7).
    Uidl(Option<u32>),
    /// `RETR msg` (RFC 1939 §5).
    Retr(u32),
    /// `TOP msg n` (RFC 1939 §7).
    Top(u32, u64),
    /// `DELE msg` (RFC 1939 §5).
    Dele(u32),
    /// `RSET` (RFC 1939 §5).
    Rset,
    /// `NOOP` (RFC 1939 §5).
    Noop,
    /// `QUIT` (RFC 1939 §4, §6).
    Quit,
}

/// Why a line is not a valid command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The line is empty.
    #[error("empty command")]
    Empty,
    /// The keyword is not a POP3 command.
    #[error("unknown command")]
    Unknown,
    /// A required argument is missing.
    #[error("missing argument: {0}")]
    MissingArgument(&'static str),
    /// More arguments than the command takes.
    #[error("too many arguments")]
    TooManyArguments,
    /// An argument exceeds its bound.
    #[error("argument too long (limit {limit} octets)")]
    ArgumentTooLong {
        /// The bound in octets.
        limit: usize,
    },
    /// The line exceeds [`MAX_AUTH_LINE_LEN`].
    #[error("line too long (limit {limit} octets)")]
    LineTooLong {
        /// The bound in octets.
        limit: usize,
    },
    /// An argument holds bytes outside printable ASCII.
    #[error("invalid characters in argument")]
    InvalidCharacters,
    /// A number is not decimal digits or does not fit.
    #[error("invalid number")]
    InvalidNumber,
}

/// Parses one command line (without CRLF).
pub fn parse(line: &[u8]) -> Result<Command, ParseError> {
    if line.len() > MAX_AUTH_LINE_LEN {
        return Err(ParseError::LineTooLong {
            limit: MAX_AUTH_LINE_LEN,
        });
    }
    let (keyword, rest) = match line.iter().position(|&b| b == b' ') {
        Some(i) => (&line[..i], &line[i + 1..]),
        None => (line, &[][..]),
    };
    if keyword.is_empty() {
        return Err(if line.iter().all(|&b| b == b' ') {
            ParseError::Empty
        } else {
            ParseError::Unknown
        });
    }
    if keyword.len() > 4 {
        return Err(ParseError::Unknown);
    }
    let mut upper = [0u8; 4];
    upper[..keyword.len()].copy_from_slice(keyword);
    upper.make_ascii_uppercase();
    let keyword = &upper[..keyword.len()];

    // PASS takes the rest of the line verbatim, spaces included.
    if keyword == b"PASS" {
        if rest.is_empty() {
            return Err(ParseError::MissingArgument("password"));
        }
        if rest.len() > MAX_PASSWORD_LEN {
            return Err(ParseError::ArgumentTooLong {
                limit: MAX_PASSWORD_LEN,
            });
        }
        if rest.iter().any(|&b| b == 0 || b == b'\r' || b == b'\n') {
            return Err(ParseError::InvalidCharacters);
        }
        return Ok(Command::Pass(Secret::new(rest.to_vec())));
    }
    if keyword != b"AUTH" && line.len() > MAX_LINE_LEN {
        return Err(ParseError::LineTooLong {
            limit: MAX_LINE_LEN,
        });
    }

    let mut args = Args::new(rest);
    let cmd = match keyword {
        b"USER" => Command::User(args.text("user name", MAX_ARG_LEN)?),
        b"APOP" => Command::Apop {
            user: args.text("user name", MAX_ARG_LEN)?,
            digest: args.text("digest", MAX_ARG_LEN)?,
        },
        b"AUTH" => {
            let mechanism = args.optional_text(MAX_ARG_LEN)?;
            let initial = match mechanism {
                Some(_) => args
                    .optional_text(MAX_SASL_LINE_LEN)?
                    .map(|s| Secret::new(s.into())),
                None => None,
            };
            Command::Auth { mechanism, initial }
        }
        b"CAPA" => Command::Capa,
        b"STLS" => Command::Stls,
        b"STAT" => Command::Stat,
        b"LIST" => Command::List(args.optional_number()?),
        b"UIDL" => Command::Uidl(args.optional_number()?),
        b"RETR" => Command::Retr(args.number("message number")?),
        b"TOP" => Command::Top(args.number("message number")?, args.number("line count")?),
        b"DELE" => Command::Dele(args.number("message number")?),
        b"RSET" => Command::Rset,
        b"NOOP" => Command::Noop,
        b"QUIT" => Command::Quit,
        _ => return Err(ParseError::Unknown),
    };
    args.end()?;
    Ok(cmd)
}

/// The space-separated arguments after the keyword. Runs of spaces are accepted as one
/// separator: some clients send them, and nothing is ambiguous about it.
struct Args<'a> {
    rest: &'a [u8],
}

impl<'a> Args<'a> {
    fn new(rest: &'a [u8]) -> Self {
        Self { rest }
    }

    fn next_word(&mut self) -> Option<&'a [u8]> {
        let start = self.rest.iter().position(|&b| b != b' ')?;
        let rest = &self.rest[start..];
        let end = rest.iter().position(|&b| b == b' ').unwrap_or(rest.len());
        self.rest = &rest[end..];
        Some(&rest[..end])
    }

    fn optional_text(&mut self, limit: usize) -> Result<Option<String>, ParseError> {
        let Some(word) = self.next_word() else {
            return Ok(None);
        };
        if word.len() > limit {
            return Err(ParseError::ArgumentTooLong { limit });
        }
        if !word.iter().all(|b| (0x21..=0x7e).contains(b)) {
            return Err(ParseError::InvalidCharacters);
        }
        // Printable ASCII was just checked, so every byte maps to the same char.
        Ok(Some(word.iter().map(|&b| char::from(b)).collect()))
    }

    fn text(&mut self, what: &'static str, limit: usize) -> Result<String, ParseError> {
        self.optional_text(limit)?
            .ok_or(ParseError::MissingArgument(what))
    }

    fn optional_number<T: std::str::FromStr>(&mut self) -> Result<Option<T>, ParseError> {
        let Some(word) = self.optional_text(MAX_ARG_LEN)? else {
            return Ok(None);
        };
        // `FromStr` for integers accepts a leading '+'; RFC 1939 numbers are bare digits.
        if !word.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ParseError::InvalidNumber);
        }
        word.parse()
            .map(Some)
            .map_err(|_| ParseError::InvalidNumber)
    }

    fn number<T: std::str::FromStr>(&mut self, what: &'static str) -> Result<T, ParseError> {
        self.optional_number()?
            .ok_or(ParseError::MissingArgument(what))
    }

    fn end(mut self) -> Result<(), ParseError> {
        match self.next_word() {
            Some(_) => Err(ParseError::TooManyArguments),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(s: &str) -> Command {
        Command::User(s.into())
    }

    fn pass(s: &[u8]) -> Command {
        Command::Pass(Secret::new(s.to_vec()))
    }

    #[test]
    fn parses_valid_commands() {
        let cases: Vec<(&[u8], Command)> = vec![
            (b"USER alice", user("alice")),
            (b"user alice", user("alice")),
            (b"uSeR  alice ", user("alice")),
            (b"PASS secret", pass(b"secret")),
            (b"PASS with  two spaces ", pass(b"with  two spaces ")),
            (b"pass \xc3\xa9t\xc3\xa9", pass("été".as_bytes())),
            (
                b"APOP mrose c4c9334bac560ecc979e58001b3e22fb",
                Command::Apop {
                    user: "mrose".into(),
                    digest: "c4c9334bac560ecc979e58001b3e22fb".into(),
                },
            ),
            (
                b"AUTH",
                Command::Auth {
                    mechanism: None,
                    initial: None,
                },
            ),
            (
                b"auth plain",
                Command::Auth {
                    mechanism: Some("plain".into()),
                    initial: None,
                },
            ),
            (
                b"AUTH PLAIN AGFsaWNlAHB3",
                Command::Auth {
                    mechanism: Some("PLAIN".into()),
                    initial: Some(Secret::new(b"AGFsaWNlAHB3".to_vec())),
                },
            ),
            (
                b"AUTH PLAIN =",
                Command::Auth {
                    mechanism: Some("PLAIN".into()),
                    initial: Some(Secret::new(b"=".to_vec())),
                },
            ),
            (b"CAPA", Command::Capa),
            (b"stls", Command::Stls),
            (b"STAT", Command::Stat),
            (b"LIST", Command::List(None)),
            (b"LIST 2", Command::List(Some(2))),
            (b"UIDL", Command::Uidl(None)),
            (b"uidl 4294967295", Command::Uidl(Some(u32::MAX))),
            (b"RETR 1", Command::Retr(1)),
            (b"TOP 1 0", Command::Top(1, 0)),
            (b"top 3 18446744073709551615", Command::Top(3, u64::MAX)),
            (b"DELE 0", Command::Dele(0)),
            (b"RSET", Command::Rset),
            (b"NOOP", Command::Noop),
            (b"QUIT", Command::Quit),
            (b"QUIT ", Command::Quit),
        ];
        for (line, want) in cases {
            assert_eq!(parse(line), Ok(want), "{}", String::from_utf8_lossy(line));
        }
    }

    #[test]
    fn rejects_invalid_commands() {
        let long_arg = format!("USER {}", "a".repeat(41));
        let long_pass = format!("PASS {}", "p".repeat(256));
        let long_line = format!("NOOP{}", " ".repeat(260));
        let huge = vec![b'A'; MAX_AUTH_LINE_LEN + 1];
        let cases: Vec<(&[u8], ParseError)> = vec![
            (b"", ParseError::Empty),
            (b"   ", ParseError::Empty),
            (b" USER a", ParseError::Unknown),
            (b"HELO", ParseError::Unknown),
            (b"USERS a", ParseError::Unknown),
            (b"XY", ParseError::Unknown),
            (b"USER", ParseError::MissingArgument("user name")),
            (b"USER a b", ParseError::TooManyArguments),
            (
                long_arg.as_bytes(),
                ParseError::ArgumentTooLong { limit: MAX_ARG_LEN },
            ),
            (b"USER al\xc3\xa9", ParseError::InvalidCharacters),
            (b"USER a\x01", ParseError::InvalidCharacters),
            (b"PASS", ParseError::MissingArgument("password")),
            (b"PASS ", ParseError::MissingArgument("password")),
            (b"PASS a\0b", ParseError::InvalidCharacters),
            (
                long_pass.as_bytes(),
                ParseError::ArgumentTooLong {
                    limit: MAX_PASSWORD_LEN,
                },
            ),
            (b"APOP mrose", ParseError::MissingArgument("digest")),
            (b"AUTH PLAIN a b", ParseError::TooManyArguments),
            (b"LIST x", ParseError::InvalidNumber),
            (b"LIST +1", ParseError::InvalidNumber),
            (b"LIST -1", ParseError::InvalidNumber),
            (b"LIST 4294967296", ParseError::InvalidNumber),
            (b"LIST 1 2", ParseError::TooManyArguments),
            (b"RETR", ParseError::MissingArgument("message number")),
            (b"TOP 1", ParseError::MissingArgument("line count")),
            (b"TOP 1 18446744073709551616", ParseError::InvalidNumber),
            (b"DELE 1 1", ParseError::TooManyArguments),
            (b"STAT 1", ParseError::TooManyArguments),
            (b"QUIT now", ParseError::TooManyArguments),
            (
                long_line.as_bytes(),
                ParseError::LineTooLong {
                    limit: MAX_LINE_LEN,
                },
            ),
            (
                &huge,
                ParseError::LineTooLong {
                    limit: MAX_AUTH_LINE_LEN,
                },
            ),
        ];
        for (line, want) in cases {
            assert_eq!(parse(line), Err(want), "{}", String::from_utf8_lossy(line));
        }
    }

    #[test]
    fn auth_initial_response_may_be_long() {
        let b64 = "A".repeat(MAX_SASL_LINE_LEN);
        let line = format!("AUTH PLAIN {b64}");
        let want = Command::Auth {
            mechanism: Some("PLAIN".into()),
            initial: Some(Secret::new(b64.clone().into_bytes())),
        };
        assert_eq!(parse(line.as_bytes()), Ok(want));
        let line = format!("AUTH PLAIN {b64}A");
        assert_eq!(
            parse(line.as_bytes()),
            Err(ParseError::ArgumentTooLong {
                limit: MAX_SASL_LINE_LEN
            })
        );
    }

    #[test]
    fn secrets_do_not_leak_through_debug() {
        let shown = format!("{:?}", parse(b"PASS hunter2"));
        assert!(!shown.contains("hunter2"), "{shown}");
        let shown = format!("{:?}", parse(b"AUTH PLAIN AGFsaWNlAGh1bnRlcjI="));
        assert!(!shown.contains("AGFsaWNl"), "{shown}");
    }
}
