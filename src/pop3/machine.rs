//! The POP3 session as a sans-IO state machine: command lines in, a [`Reply`] and an
//! [`Action`] out. The connection loop owns the socket, the maildrop IO, timers and TLS.
//!
//! Implements the AUTHORIZATION, TRANSACTION and UPDATE states of RFC 1939 (§3-§7: USER, PASS,
//! APOP, STAT, LIST, UIDL, RETR, TOP, DELE, RSET, NOOP, QUIT), CAPA and response codes
//! (RFC 2449 §5, §8), STLS (RFC 2595 §4), AUTH (RFC 5034 §4, with the SASL exchange driven
//! through [`sasl::Mechanism`]) and the `[AUTH]` / `[SYS/TEMP]` codes of RFC 3206. Messages
//! marked with DELE are removed only in the UPDATE state, entered by QUIT: a session that
//! ends any other way removes nothing.
//!
//! This file holds the session, its states and what every state shares (CAPA, line limits,
//! the maildrop round trip); the AUTHORIZATION state is `machine/authorization.rs`, the
//! TRANSACTION and UPDATE states `machine/transaction.rs`.

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

use base64::Engine;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use zeroize::Zeroizing;

use super::command::{self, Command, Secret};
use super::reply::Reply;
use crate::audit::{Kind, Outcome, Record, classify_session};
use crate::auth::Verdict;
use crate::maildir::{Mailbox, MailboxError, MessageInfo};
use crate::policy::{Action as PolicyAction, Attempt, Policy};
use crate::sasl::{self, Failure, Mechanism, Step};

mod authorization;
mod transaction;

use transaction::{Deleted, totals};

/// What a session may offer; fixed for its lifetime (STLS starts a new session).
#[derive(Clone)]
pub struct Settings {
    /// Our host name.
    pub hostname: String,
    /// The SASL environment (credentials, token validator, channel binding, randomness).
    pub sasl: sasl::Environment,
    /// The enabled SASL mechanisms, in the order they are advertised.
    pub mechanisms: Vec<&'static sasl::Descriptor>,
    /// Whether cleartext passwords are acceptable: TLS is active, or the client is in
    /// `insecure_plaintext_networks`.
    pub plaintext_allowed: bool,
    /// Whether STLS can be offered on this listener.
    pub stls_available: bool,
    /// Whether the connection is already protected by TLS.
    pub tls_active: bool,
    /// The APOP timestamp such as `<1234.5678@host>`; APOP is offered iff this is set.
    pub apop_timestamp: Option<String>,
    /// The migration policy.
    pub policy: Arc<Policy>,
    /// The listener role ("pop3" or "pop3s"), for policy rules and the audit.
    pub listener: &'static str,
    /// The client address, for policy rules.
    pub peer: IpAddr,
    /// The TLS version and cipher, for the audit log.
    pub tls_info: Option<String>,
    /// The TLS session is below TLS 1.2: every login on it is audited as class `insecure`.
    pub tls_legacy: bool,
    /// Failed authentications before the session closes (0 is treated as 1).
    pub max_failures: u32,
    /// Unparseable or over-long command lines before the session closes (0 means no limit).
    pub max_errors: u32,
}

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
            .field("hostname", &self.hostname)
            .field("mechanisms", &self.mechanisms)
            .field("plaintext_allowed", &self.plaintext_allowed)
            .field("stls_available", &self.stls_available)
            .field("tls_active", &self.tls_active)
            .field("apop_timestamp", &self.apop_timestamp)
            .field("max_failures", &self.max_failures)
            .finish_non_exhaustive()
    }
}

/// What the session produced for one input.
#[derive(Debug, PartialEq, Eq)]
pub struct Output {
    /// Write this first (it may be empty: see [`Action::OpenMailbox`] and [`Action::Commit`]).
    pub reply: Reply,
    /// Then do this.
    pub action: Action,
    /// An audit fact to record (authentication decisions).
    pub audit: Option<Record>,
}

/// What the connection loop does after writing [`Output::reply`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Read the next line.
    Continue,
    /// Close the connection.
    Close,
    /// Discard buffered input, run the TLS handshake, then continue with
    /// [`Session::after_tls`].
    StartTls,
    /// Have this credential checked (the reply is empty), then call
    /// [`Session::handle_verified`] and write its reply.
    Verify(sasl::Check),
    /// An authentication failed: apply the failure delay and record the failure for
    /// throttling before writing the reply (as SMTP's `Action::AuthFailed` does).
    AuthFailed {
        /// The user name tried, when the method names one (USER, APOP, most SASL
        /// mechanisms), for per-user throttling and the log.
        user: Option<String>,
        /// Why, for the log (never a secret).
        note: &'static str,
        /// Too many failures (`max_failures`): close the connection after the reply.
        close: bool,
    },
    /// Credentials are good. Lock and list the maildrop of `user` (the reply is empty), then
    /// call [`Session::handle_mailbox`] and write its reply.
    OpenMailbox {
        /// The canonical user name.
        user: String,
        /// How the user authenticated, for the log: `USER`, `APOP`, `SASL <mechanism>`.
        method: String,
    },
    /// Stream the message at `path` through [`MessageEncoder::new(top)`] after the
    /// reply, which is the `+OK` line.
    ///
    /// [`MessageEncoder::new(top)`]: super::reply::MessageEncoder::new
    SendMessage {
        /// The message file.
        path: PathBuf,
        /// For TOP, the number of body lines.
        top: Option<u64>,
    },
    /// QUIT in TRANSACTION: remove these files (possibly none; see `maildir::remove`), release
    /// the maildrop, then call [`Session::handle_commit`] and write its reply. The reply
    /// here is empty.
    Commit {
        /// Messages marked as deleted.
        delete: Vec<PathBuf>,
    },
}

impl Output {
    fn new(reply: Reply, action: Action) -> Self {
        Self {
            reply,
            action,
            audit: None,
        }
    }

    /// Whether the connection closes after this output: [`Action::Close`], or the
    /// [`Action::AuthFailed`] that reaches `max_failures`.
    pub fn closes(&self) -> bool {
        matches!(
            self.action,
            Action::Close | Action::AuthFailed { close: true, .. }
        )
    }

    fn cont(reply: Reply) -> Self {
        Self::new(reply, Action::Continue)
    }

    fn closing(reply: Reply) -> Self {
        Self::new(reply, Action::Close)
    }
}

/// One POP3 session.
pub struct Session {
    settings: Settings,
    state: State,
    failures: u32,
    errors: u32,
    attempts: u32,
    hint: ClientHint,
}

/// The most commands [`ClientHint`] keeps.
pub const MAX_HINT_COMMANDS: usize = 12;

/// The client hint: the verbs of the commands the client sent before logging in, with the
/// mechanism for `AUTH`, e.g. "CAPA STLS CAPA AUTH PLAIN". Clients differ in what they ask
/// first (CAPA or not, STLS, USER/PASS, APOP, AUTH and which mechanism), which helps tell the
/// software apart where POP3 has no EHLO. Only known verbs and mechanism names are kept (never
/// an argument), at most [`MAX_HINT_COMMANDS`], then "...".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientHint {
    words: Vec<&'static str>,
    truncated: bool,
}

impl ClientHint {
    fn push(&mut self, cmd: &Command) {
        if self.words.len() >= MAX_HINT_COMMANDS {
            self.truncated = true;
            return;
        }
        let verb = match cmd {
            Command::User(_) => "USER",
            Command::Pass(_) => "PASS",
            Command::Apop { .. } => "APOP",
            Command::Auth {
                mechanism: None, ..
            } => "AUTH",
            Command::Auth {
                mechanism: Some(m), ..
            } => {
                // A name outside the registry could be anything the client typed.
                let name = crate::sasl::find(m).map(|d| d.name).unwrap_or("?");
                self.words.push("AUTH");
                name
            }
            Command::Capa => "CAPA",
            Command::Stls => "STLS",
            Command::Stat => "STAT",
            Command::List(_) => "LIST",
            Command::Uidl(_) => "UIDL",
            Command::Retr(_) => "RETR",
            Command::Top(..) => "TOP",
            Command::Dele(_) => "DELE",
            Command::Rset => "RSET",
            Command::Noop => "NOOP",
            Command::Quit => "QUIT",
        };
        self.words.push(verb);
    }

    fn push_unknown(&mut self) {
        if self.words.len() >= MAX_HINT_COMMANDS {
            self.truncated = true;
        } else {
            self.words.push("?");
        }
    }

    /// The hint as recorded, or `None` before any command.
    pub fn text(&self) -> Option<String> {
        if self.words.is_empty() {
            return None;
        }
        let mut s = self.words.join(" ");
        if self.truncated {
            s.push_str(" ...");
        }
        Some(s)
    }
}

/// The session state; each variant holds what that state needs, so nothing before
/// authentication can reach a maildrop.
enum State {
    /// AUTHORIZATION, waiting for USER, APOP or AUTH.
    AwaitingUser,
    /// AUTHORIZATION after USER.
    AwaitingPass { user: String },
    /// AUTHORIZATION: USER/PASS or APOP credentials are being checked.
    Verifying { tried: String, method: &'static str },
    /// AUTHORIZATION inside an AUTH exchange.
    InSasl {
        mechanism: Box<dyn Mechanism>,
        name: &'static str,
    },
    /// Authenticated; the connection loop is opening the maildrop.
    AwaitingMailbox { user: String },
    /// TRANSACTION.
    Transaction {
        user: String,
        mailbox: Mailbox,
        deleted: Deleted,
    },
    /// UPDATE: the connection loop is removing deleted messages.
    Updating { remaining: usize },
    /// Nothing more to do.
    Done,
}

impl State {
    fn name(&self) -> &'static str {
        match self {
            State::AwaitingUser => "AwaitingUser",
            State::AwaitingPass { .. } => "AwaitingPass",
            State::Verifying { .. } => "Verifying",
            State::InSasl { .. } => "InSasl",
            State::AwaitingMailbox { .. } => "AwaitingMailbox",
            State::Transaction { .. } => "Transaction",
            State::Updating { .. } => "Updating",
            State::Done => "Done",
        }
    }
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("state", &self.state.name())
            .field("failures", &self.failures)
            .finish_non_exhaustive()
    }
}

impl Session {
    /// A session for a new connection; write [`Session::greeting`] first.
    pub fn new(settings: Settings) -> Self {
        Self {
            settings,
            state: State::AwaitingUser,
            failures: 0,
            errors: 0,
            attempts: 0,
            hint: ClientHint::default(),
        }
    }

    /// The session that continues a connection after the STLS handshake (RFC 2595 §4: no new
    /// greeting; everything learnt before TLS is forgotten).
    pub fn after_tls(self, settings: Settings) -> Self {
        // Failed logins before STLS still count toward max_failures.
        let failures = self.failures;
        let mut next = Self::new(settings);
        next.failures = failures;
        // The hint describes the client, which has not changed.
        next.hint = self.hint;
        next
    }

    /// The greeting, with the APOP timestamp when APOP is offered.
    pub fn greeting(&self) -> Reply {
        Reply::greeting(self.settings.apop_timestamp.as_deref())
    }

    /// The longest line (without CRLF) the session accepts now; longer lines go to
    /// [`Session::handle_overlong`].
    pub fn line_limit(&self) -> usize {
        match self.state {
            State::AwaitingUser | State::AwaitingPass { .. }
                if self.settings.mechanisms.is_empty() =>
            {
                command::MAX_LINE_LEN.max("PASS ".len() + command::MAX_PASSWORD_LEN)
            }
            State::AwaitingUser | State::AwaitingPass { .. } => command::MAX_AUTH_LINE_LEN,
            State::InSasl { .. } => command::MAX_SASL_LINE_LEN,
            _ => command::MAX_LINE_LEN,
        }
    }

    /// The authenticated user, once credentials were accepted and until the session ends.
    pub fn user(&self) -> Option<&str> {
        match &self.state {
            State::AwaitingMailbox { user } | State::Transaction { user, .. } => Some(user),
            _ => None,
        }
    }

    /// The client hint: the commands sent before logging in (see [`ClientHint`]).
    pub fn client_hint(&self) -> Option<String> {
        self.hint.text()
    }

    /// The settings this session runs with.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Whether an AUTH exchange is waiting for a client line.
    pub fn in_sasl(&self) -> bool {
        matches!(self.state, State::InSasl { .. })
    }

    /// Whether the next line of the running SASL exchange may check a credential (see
    /// [`Mechanism::verifies_next`]); false outside an exchange.
    pub fn sasl_next_verifies(&self) -> bool {
        match &self.state {
            State::InSasl { mechanism, .. } => mechanism.verifies_next(),
            _ => false,
        }
    }

    /// Whether the session has ended.
    pub fn is_done(&self) -> bool {
        matches!(self.state, State::Done)
    }

    /// Handles one line from the client, without CRLF.
    pub fn handle_line(&mut self, line: &[u8]) -> Output {
        if line.len() > self.line_limit() {
            return self.handle_overlong();
        }
        match self.state {
            State::InSasl { .. } => return self.sasl_response(line),
            State::AwaitingMailbox { .. } | State::Verifying { .. } => {
                return Output::cont(Reply::maildrop_not_ready());
            }
            State::Updating { .. } | State::Done => return Output::closing(Reply::session_closed()),
            _ => {}
        }
        let before_login = matches!(self.state, State::AwaitingUser | State::AwaitingPass { .. });
        let cmd = match command::parse(line) {
            Ok(cmd) => cmd,
            Err(e) => {
                if before_login {
                    self.hint.push_unknown();
                }
                return self.error(Reply::syntax(&e));
            }
        };
        if before_login {
            self.hint.push(&cmd);
        }
        if matches!(self.state, State::Transaction { .. }) {
            self.transaction(cmd)
        } else {
            self.authorization(cmd)
        }
    }

    /// Handles a line longer than [`Session::line_limit`] (the loop discards it). An AUTH
    /// exchange in progress is abandoned.
    pub fn handle_overlong(&mut self) -> Output {
        match self.state {
            State::InSasl { .. } => self.state = State::AwaitingUser,
            State::Updating { .. } | State::Done => return Output::closing(Reply::session_closed()),
            _ => {}
        }
        self.error(Reply::line_too_long())
    }

    /// Answers a protocol error, closing the session once `max_errors` is exceeded (the
    /// maildrop is left untouched: no UPDATE state).
    fn error(&mut self, reply: Reply) -> Output {
        self.errors = self.errors.saturating_add(1);
        if self.settings.max_errors > 0 && self.errors > self.settings.max_errors {
            self.state = State::Done;
            return Output::closing(Reply::too_many_errors());
        }
        Output::cont(reply)
    }

    /// Handles the result of [`Action::OpenMailbox`].
    pub fn handle_mailbox(&mut self, result: Result<Mailbox, MailboxError>) -> Output {
        let State::AwaitingMailbox { user } = std::mem::replace(&mut self.state, State::Done)
        else {
            return Output::closing(Reply::session_closed());
        };
        match result {
            Ok(mailbox) => {
                let (count, octets) = totals(&mailbox, &Deleted::new(0));
                let deleted = Deleted::new(mailbox.messages.len());
                self.state = State::Transaction {
                    user,
                    mailbox,
                    deleted,
                };
                Output::cont(Reply::maildrop(count, octets))
            }
            Err(MailboxError::InUse) => {
                self.state = State::AwaitingUser;
                Output::cont(Reply::in_use())
            }
            Err(MailboxError::Io(_)) => {
                self.state = State::AwaitingUser;
                Output::cont(Reply::maildrop_unavailable())
            }
        }
    }

    /// Handles the result of [`Action::Commit`]: `ok` is whether every marked message was
    /// removed. The session then ends.
    pub fn handle_commit(&mut self, ok: bool) -> Output {
        let state = std::mem::replace(&mut self.state, State::Done);
        match state {
            State::Updating { remaining } if ok => Output::closing(Reply::committed(remaining)),
            State::Updating { .. } => Output::closing(Reply::commit_failed()),
            _ => Output::closing(Reply::session_closed()),
        }
    }

    fn plaintext_refused(&self) -> Reply {
        Reply::plaintext_needs_tls(self.settings.stls_available && !self.settings.tls_active)
    }

    fn allowed_mechanisms(&self) -> Vec<String> {
        let plaintext = self.settings.plaintext_allowed;
        self.settings
            .mechanisms
            .iter()
            .filter(|d| {
                (plaintext || !(d.plaintext || d.bearer_token)) && self.settings.sasl.can_offer(d)
            })
            .map(|d| d.name.to_owned())
            .collect()
    }

    fn capabilities(&self) -> Reply {
        let mut lines: Vec<String> = ["TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING"]
            .map(String::from)
            .into();
        if !matches!(self.state, State::Transaction { .. }) {
            if self.settings.plaintext_allowed {
                lines.push("USER".into());
            }
            let mechanisms = self.allowed_mechanisms();
            if !mechanisms.is_empty() {
                lines.push(format!("SASL {}", mechanisms.join(" ")));
            }
            if self.settings.stls_available && !self.settings.tls_active {
                lines.push("STLS".into());
            }
        }
        lines.push("IMPLEMENTATION mailgate".into());
        Reply::capabilities(lines)
    }
}

#[cfg(test)]
#[path = "machine_tests.rs"]
mod tests;
