//! The POP3 session as a sans-IO state machine: command lines in, a [`Reply`] and an
//! [`Action`] out. The connection loop owns the socket, the maildrop IO, timers and TLS.
//!
//! Implements the AUTHORIZATION, TRANSACTION and UPDATE states of RFC 1939 (§3-§7: USER, PASS,
//! APOP, STAT, LIST, UIDL, RETR, TOP, DELE, RSET, NOOP, QUIT), CAPA and response codes
//! (RFC 2449 §5, §8), STLS (RFC 2595 §4), AUTH (RFC 5034 §4, with the SASL exchange driven
//! through [`sasl::Mechanism`]) and the `[AUTH]` / `[SYS/TEMP]` codes of RFC 3206. Messages
//! marked with DELE are removed only in the UPDATE state, entered by QUIT: a session that
//! ends any other way removes nothing.

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
use crate::audit::{Kind, Outcome, Record, classify};
use crate::auth::Verdict;
use crate::maildir::{Mailbox, MailboxError, MessageInfo};
use crate::policy::{Action as PolicyAction, Attempt, Policy};
use crate::sasl::{self, Failure, Mechanism, Step};

/// Base64 for client SASL lines: padding is accepted but not required, as some clients drop it.
const SASL_BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

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
    /// A reason for the log, e.g. why credentials could not be checked. Never a secret.
    pub note: Option<&'static str>,
    /// With [`Action::AuthFailed`]: the user name tried, when the method names one (USER,
    /// APOP), for per-user throttling and the log.
    pub user: Option<String>,
    /// Close the connection after writing the reply and doing the action. Set with
    /// [`Action::Close`] and with the [`Action::AuthFailed`] that reaches `max_failures`.
    pub close: bool,
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
    /// throttling before writing the reply.
    AuthFailed,
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
        let close = action == Action::Close;
        Self {
            reply,
            action,
            note: None,
            user: None,
            close,
            audit: None,
        }
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

    fn authorization(&mut self, cmd: Command) -> Output {
        match cmd {
            Command::Capa => Output::cont(self.capabilities()),
            Command::Quit => {
                self.state = State::Done;
                Output::closing(Reply::bye())
            }
            Command::User(user) => {
                if !self.settings.plaintext_allowed {
                    return Output::cont(self.plaintext_refused());
                }
                self.state = State::AwaitingPass { user };
                Output::cont(Reply::send_pass())
            }
            Command::Pass(password) => self.pass(password),
            Command::Apop { user, digest } => {
                let Some(ts) = &self.settings.apop_timestamp else {
                    return Output::cont(Reply::apop_unavailable());
                };
                let check = sasl::Check::Apop {
                    user: user.clone(),
                    timestamp: ts.as_bytes().to_vec(),
                    digest: digest.into_bytes(),
                };
                self.state = State::Verifying {
                    tried: user,
                    method: "APOP",
                };
                Output::new(Reply::empty(), Action::Verify(check))
            }
            Command::Auth {
                mechanism: None, ..
            } => Output::cont(Reply::mechanisms(self.allowed_mechanisms())),
            Command::Auth {
                mechanism: Some(name),
                initial,
            } => self.start_sasl(&name, initial),
            Command::Stls => {
                if self.settings.tls_active {
                    Output::cont(Reply::tls_active())
                } else if !self.settings.stls_available {
                    Output::cont(Reply::tls_unavailable())
                } else {
                    self.state = State::Done;
                    Output::new(Reply::begin_tls(), Action::StartTls)
                }
            }
            Command::Stat
            | Command::List(_)
            | Command::Uidl(_)
            | Command::Retr(_)
            | Command::Top(..)
            | Command::Dele(_)
            | Command::Rset
            | Command::Noop => Output::cont(Reply::not_authenticated()),
        }
    }

    fn pass(&mut self, password: Secret) -> Output {
        if !self.settings.plaintext_allowed {
            return Output::cont(self.plaintext_refused());
        }
        let State::AwaitingPass { user } = std::mem::replace(&mut self.state, State::AwaitingUser)
        else {
            return Output::cont(Reply::user_first());
        };
        let check = sasl::Check::Password {
            user: user.clone(),
            password,
            authzid: None,
        };
        self.state = State::Verifying {
            tried: user,
            method: "USER",
        };
        Output::new(Reply::empty(), Action::Verify(check))
    }

    /// Takes the answer to the check of an [`Action::Verify`] and finishes the login (or the
    /// AUTH step) it belongs to.
    pub fn handle_verified(&mut self, answer: sasl::Answer) -> Output {
        match std::mem::replace(&mut self.state, State::AwaitingUser) {
            State::Verifying { tried, method } => {
                self.verdict(answer.into_verdict(), tried, method)
            }
            State::InSasl {
                mut mechanism,
                name,
            } => {
                let step = mechanism.resume(answer);
                self.sasl_step(step, mechanism, name)
            }
            other => {
                self.state = other;
                Output::cont(Reply::session_closed())
            }
        }
    }

    fn verdict(&mut self, verdict: Verdict, tried: String, method: &str) -> Output {
        match verdict {
            Verdict::Ok(user) => self.authenticated(user, Some(tried), method, method.to_owned()),
            Verdict::BadCredentials => {
                self.failed(Reply::invalid_credentials(), None, Some(tried), method)
            }
            Verdict::Unavailable(why) => {
                self.failed(Reply::invalid_credentials(), Some(why), Some(tried), method)
            }
        }
    }

    /// Credentials verified: the policy decides whether the login goes on.
    fn authenticated(
        &mut self,
        user: String,
        given: Option<String>,
        mechanism: &str,
        method: String,
    ) -> Output {
        let class = classify(mechanism, self.settings.tls_active);
        let decision = self.settings.policy.evaluate(&Attempt {
            mechanism,
            class,
            user: Some(&user),
            ip: crate::canonical_ip(self.settings.peer),
            listener: self.settings.listener,
            // Policy windows are days long; the connection's start time is precise enough.
            now: self.settings.sasl.now,
            // A fresh draw per login (attempts count SASL starts, failures the rest).
            roll: self.settings.sasl.policy_roll(
                "auth",
                self.attempts.wrapping_add(self.failures).wrapping_add(1),
            ),
        });
        let mut record =
            Record::new(Kind::Auth, mechanism, class, Outcome::Success).with_decision(&decision);
        record.user_given = given;
        record.user = Some(user.clone());
        if !decision.allowed() {
            // Refused by policy: no maildrop, and (the caller's rule) no allowlist entry.
            self.state = State::AwaitingUser;
            let text = decision.text.as_deref();
            let reply = match decision.action {
                PolicyAction::Brownout => Reply::policy_brownout(text),
                _ => Reply::policy_denied(text),
            };
            let mut out = Output::cont(reply);
            out.audit = Some(record);
            return out;
        }
        self.state = State::AwaitingMailbox { user: user.clone() };
        let mut out = Output::new(Reply::empty(), Action::OpenMailbox { user, method });
        out.audit = Some(record);
        out
    }

    fn failed(
        &mut self,
        reply: Reply,
        note: Option<&'static str>,
        user: Option<String>,
        mechanism: &str,
    ) -> Output {
        let class = classify(mechanism, self.settings.tls_active);
        let mut record = Record::new(Kind::Auth, mechanism, class, Outcome::Failure);
        record.user_given = user.clone();
        // The canonical user when the name exists, so that "Alice" failing and "alice"
        // succeeding land in one report group.
        record.user = user
            .as_deref()
            .and_then(|u| self.settings.sasl.auth.lookup(u));
        record.reason = Some(note.unwrap_or("invalid credentials").to_string());
        self.failures = self.failures.saturating_add(1);
        let close = self.failures >= self.settings.max_failures.max(1);
        self.state = if close {
            State::Done
        } else {
            State::AwaitingUser
        };
        Output {
            note,
            user,
            close,
            audit: Some(record),
            ..Output::new(reply, Action::AuthFailed)
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

    fn start_sasl(&mut self, name: &str, initial: Option<Secret>) -> Output {
        let found = self
            .settings
            .mechanisms
            .iter()
            .find(|d| d.name.eq_ignore_ascii_case(name));
        let Some(&desc) = found else {
            return Output::cont(Reply::unsupported_mechanism());
        };
        if !self.settings.sasl.can_offer(desc) {
            return Output::cont(Reply::unsupported_mechanism());
        }
        if (desc.plaintext || desc.bearer_token) && !self.settings.plaintext_allowed {
            return Output::cont(self.plaintext_refused());
        }
        // RFC 5034 §4: "=" is an empty initial response.
        let initial = match initial {
            None => None,
            Some(s) if s.expose() == b"=" => Some(Zeroizing::new(Vec::new())),
            Some(s) => match SASL_BASE64.decode(s.expose()) {
                Ok(bytes) => Some(Zeroizing::new(bytes)),
                Err(_) => return Output::cont(Reply::bad_base64()),
            },
        };
        self.attempts = self.attempts.saturating_add(1);
        let ctx = self.settings.sasl.context(self.attempts);
        let mut mechanism = (desc.start)(&ctx);
        let step = mechanism.step(initial.as_ref().map(|b| b.as_slice()));
        self.sasl_step(step, mechanism, desc.name)
    }

    fn sasl_response(&mut self, line: &[u8]) -> Output {
        let State::InSasl {
            mut mechanism,
            name,
        } = std::mem::replace(&mut self.state, State::AwaitingUser)
        else {
            return Output::cont(Reply::session_closed());
        };
        if line == b"*" {
            return Output::cont(Reply::auth_cancelled());
        }
        let Ok(bytes) = SASL_BASE64.decode(line).map(Zeroizing::new) else {
            return Output::cont(Reply::bad_base64());
        };
        let step = mechanism.step(Some(&bytes));
        self.sasl_step(step, mechanism, name)
    }

    fn sasl_step(
        &mut self,
        step: Step,
        mechanism: Box<dyn Mechanism>,
        name: &'static str,
    ) -> Output {
        match step {
            Step::Challenge(bytes) => {
                self.state = State::InSasl { mechanism, name };
                Output::cont(Reply::challenge(&bytes))
            }
            Step::Verify(check) => {
                self.state = State::InSasl { mechanism, name };
                Output::new(Reply::empty(), Action::Verify(check))
            }
            Step::Success(identity) => {
                let mech = mechanism.detail().unwrap_or(name);
                let given = mechanism.user().map(str::to_owned);
                self.authenticated(identity.user, given, mech, format!("SASL {mech}"))
            }
            Step::Failure(failure) => {
                // The name the client tried feeds the per-user throttle and the log.
                let user = mechanism.user().map(str::to_owned);
                let mech = mechanism.detail().unwrap_or(name);
                match failure {
                    Failure::BadCredentials => {
                        self.failed(Reply::invalid_credentials(), None, user, mech)
                    }
                    Failure::Unavailable(why) | Failure::Refused(why) => {
                        self.failed(Reply::invalid_credentials(), Some(why), user, mech)
                    }
                    Failure::Malformed(why) => {
                        self.failed(Reply::malformed_auth(), Some(why), user, mech)
                    }
                }
            }
        }
    }

    fn transaction(&mut self, cmd: Command) -> Output {
        match cmd {
            Command::Capa => return Output::cont(self.capabilities()),
            Command::Quit => return self.quit(),
            _ => {}
        }
        let State::Transaction {
            mailbox, deleted, ..
        } = &mut self.state
        else {
            return Output::cont(Reply::session_closed());
        };
        let messages = &mailbox.messages;
        let reply = match cmd {
            Command::Stat => {
                let (count, octets) = totals(mailbox, deleted);
                Reply::stat(count, octets)
            }
            Command::List(None) => {
                let (count, octets) = totals(mailbox, deleted);
                let entries: Vec<(u32, u64)> = visible(mailbox, deleted)
                    .map(|(n, m)| (n, m.size))
                    .collect();
                Reply::scan_listings(count, octets, &entries)
            }
            Command::Uidl(None) => {
                let entries: Vec<(u32, &str)> = visible(mailbox, deleted)
                    .map(|(n, m)| (n, m.uid.as_str()))
                    .collect();
                Reply::unique_ids(&entries)
            }
            Command::List(Some(n)) => match lookup(messages, deleted, n) {
                Ok((_, m)) => Reply::scan_listing(n, m.size),
                Err(reply) => reply,
            },
            Command::Uidl(Some(n)) => match lookup(messages, deleted, n) {
                Ok((_, m)) => Reply::unique_id(n, &m.uid),
                Err(reply) => reply,
            },
            Command::Retr(n) | Command::Top(n, _) => {
                let top = match cmd {
                    Command::Top(_, lines) => Some(lines),
                    _ => None,
                };
                return match lookup(messages, deleted, n) {
                    Ok((_, m)) => {
                        let reply = if top.is_some() {
                            Reply::top()
                        } else {
                            Reply::retr(m.size)
                        };
                        let path = m.path.clone();
                        Output::new(reply, Action::SendMessage { path, top })
                    }
                    Err(reply) => Output::cont(reply),
                };
            }
            Command::Dele(n) => match lookup(messages, deleted, n) {
                Ok((i, _)) => {
                    deleted.insert(i);
                    Reply::deleted(n)
                }
                Err(reply) => reply,
            },
            Command::Rset => {
                deleted.clear();
                let (count, octets) = totals(mailbox, deleted);
                Reply::maildrop(count, octets)
            }
            Command::Noop => Reply::noop(),
            Command::User(_)
            | Command::Pass(_)
            | Command::Apop { .. }
            | Command::Auth { .. }
            | Command::Stls => Reply::already_authenticated(),
            Command::Capa | Command::Quit => Reply::session_closed(), // handled above
        };
        Output::cont(reply)
    }

    fn quit(&mut self) -> Output {
        let State::Transaction {
            mailbox, deleted, ..
        } = std::mem::replace(&mut self.state, State::Done)
        else {
            return Output::closing(Reply::session_closed());
        };
        let delete: Vec<PathBuf> = (0..mailbox.messages.len())
            .filter(|&i| deleted.contains(i))
            .map(|i| mailbox.messages[i].path.clone())
            .collect();
        let remaining = mailbox.messages.len() - delete.len();
        self.state = State::Updating { remaining };
        Output::new(Reply::empty(), Action::Commit { delete })
    }
}

/// The messages not marked as deleted, with their 1-based numbers.
fn visible<'a>(
    mailbox: &'a Mailbox,
    deleted: &'a Deleted,
) -> impl Iterator<Item = (u32, &'a MessageInfo)> + 'a {
    // Message numbers are u32 on the wire; a maildrop of more than u32::MAX messages shows
    // its first u32::MAX.
    (1..=u32::MAX)
        .zip(mailbox.messages.iter())
        .enumerate()
        .filter(|(i, _)| !deleted.contains(*i))
        .map(|(_, entry)| entry)
}

/// Count and total size of the messages not marked as deleted.
fn totals(mailbox: &Mailbox, deleted: &Deleted) -> (usize, u64) {
    visible(mailbox, deleted).fold((0, 0), |(n, octets), (_, m)| {
        (n + 1, octets.saturating_add(m.size))
    })
}

/// Message `n` (1-based) with its index, unless it is out of range or deleted.
fn lookup<'a>(
    messages: &'a [MessageInfo],
    deleted: &Deleted,
    n: u32,
) -> Result<(usize, &'a MessageInfo), Reply> {
    let i = usize::try_from(n).ok().and_then(|n| n.checked_sub(1));
    let Some((i, m)) = i.and_then(|i| messages.get(i).map(|m| (i, m))) else {
        return Err(Reply::no_such_message());
    };
    if deleted.contains(i) {
        return Err(Reply::already_deleted());
    }
    Ok((i, m))
}

/// The set of message indexes marked with DELE.
#[derive(Debug, Clone)]
struct Deleted {
    words: Vec<u64>,
}

impl Deleted {
    fn new(len: usize) -> Self {
        Self {
            words: vec![0; len.div_ceil(64)],
        }
    }

    fn contains(&self, i: usize) -> bool {
        self.words
            .get(i / 64)
            .is_some_and(|w| w & (1 << (i % 64)) != 0)
    }

    fn insert(&mut self, i: usize) {
        if let Some(w) = self.words.get_mut(i / 64) {
            *w |= 1 << (i % 64);
        }
    }

    fn clear(&mut self) {
        self.words.fill(0);
    }
}

#[cfg(test)]
#[path = "machine_tests.rs"]
mod tests;
