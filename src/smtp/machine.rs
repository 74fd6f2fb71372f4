//! The SMTP session state machine (sans-IO): RFC 5321 §4.1 command sequencing, the relay
//! decision per recipient, SASL framing for AUTH (RFC 4954 §4), the STARTTLS transition
//! (RFC 3207 §4.2) and the submission rule that MAIL needs authorization (RFC 6409 §4.3).
//!
//! The connection loop (`conn.rs`) feeds it lines and the end of DATA, and acts on the
//! [`Action`] that comes back with each reply. The machine never reads the clock (callers
//! pass `now`), never touches sockets or files, and never logs. Whether the client address is
//! on the POP-before-SMTP allowlist is a round trip too: [`Action::CheckAllowlist`], answered
//! with [`Session::handle_allowlist`], once per mail transaction.
//!
//! This file holds the states and the command sequencing; the SASL framing of AUTH is in
//! `machine/auth.rs` and the per-recipient relay decision in `machine/relay.rs`.

use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::SystemTime;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use zeroize::Zeroizing;

use crate::audit::{Class, Kind, Outcome, Record, classify_session};
use crate::config::SmtpRole;
use crate::policy::{Action as PolicyAction, Attempt, Policy};
use crate::sasl::{self, Failure, Mechanism, Step};
use crate::smtp::address::{ForwardPath, ReversePath};
use crate::smtp::command::{self, Command};
use crate::smtp::reply::{self, Reply};
use crate::store::Entry;

mod auth;
mod relay;

/// Everything a session needs to decide, fixed for the life of one (plaintext or TLS) phase.
#[derive(Clone)]
pub struct Settings {
    /// Which listener role accepted the connection.
    pub role: SmtpRole,
    /// Our host name.
    pub hostname: String,
    /// The client's address.
    pub peer: SocketAddr,
    /// TLS is active on this connection.
    pub tls_active: bool,
    /// A description of the TLS session (version and cipher), for the Received header.
    pub tls_info: Option<String>,
    /// The TLS session is below TLS 1.2: every login on it is audited as class `insecure`.
    pub tls_legacy: bool,
    /// STARTTLS may be offered.
    pub starttls_available: bool,
    /// Plaintext mechanisms may be used (TLS active, or the client is in
    /// `insecure_plaintext_networks`).
    pub plaintext_allowed: bool,
    /// The client is in `trusted_networks`.
    pub trusted: bool,
    /// This role honours POP-before-SMTP: an address on the allowlist may relay (the
    /// session asks with [`Action::CheckAllowlist`]).
    pub pop_before_smtp: bool,
    /// Limit MAIL FROM on a POP-before-SMTP relay to the user's own addresses.
    pub restrict_sender: bool,
    /// The SASL environment (credentials, token validator, channel binding, randomness).
    pub sasl: sasl::Environment,
    /// The migration policy.
    pub policy: Arc<Policy>,
    /// Enabled SASL mechanisms in order.
    pub mechanisms: Vec<&'static sasl::Descriptor>,
    /// Domains delivered locally (lower case).
    pub local_domains: Arc<Vec<String>>,
    /// Local recipients the users file does not hold are accepted (for the old server,
    /// `[delivery] route_unmigrated_to`, which knows whether they exist).
    pub route_unmigrated: bool,
    /// SIZE limit.
    pub max_message_size: u64,
    /// Recipients per message.
    pub max_recipients: usize,
    /// Failed AUTH attempts before disconnect.
    pub max_auth_failures: u32,
    /// Bad commands before disconnect.
    pub max_errors: u32,
    /// The spool's depth: while it is full, MAIL is answered 452 4.3.1.
    pub queue: Arc<crate::spool::QueueGauge>,
}

/// What the connection loop must do after sending the reply.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    /// Read the next line.
    Continue,
    /// Close the connection after the reply.
    Close,
    /// Run the TLS handshake, then build a new machine with [`Session::after_tls`].
    StartTls,
    /// Receive the message body (the reply is 354); then call [`Session::handle_data_end`].
    ReceiveData,
    /// An authentication failed: delay (and throttle) before sending the reply.
    AuthFailed {
        /// The user name the client gave, if known.
        user: Option<String>,
        /// Why, for the log (never a secret).
        note: String,
        /// Too many failures: after the reply, answer 421 and close.
        close: bool,
    },
    /// Have this credential checked (nothing is sent yet), then pass the answer to
    /// [`Session::handle_verified`].
    Verify(sasl::Check),
    /// Authentication succeeded.
    Authenticated {
        /// The canonical user.
        user: String,
        /// The mechanism.
        mechanism: &'static str,
    },
    /// Ask the allowlist for the live entry covering `ip`, then call
    /// [`Session::handle_allowlist`] with it and act on that output instead. The reply that
    /// comes with this action is empty ([`reply::none`]) and is not sent: the command
    /// (MAIL on a submission role without AUTH, or the transaction's first RCPT that needs
    /// authorization) is answered once the allowlist has.
    CheckAllowlist {
        /// The client's address.
        ip: IpAddr,
    },
}

/// One reply plus the action to take.
#[derive(Debug)]
pub struct Output {
    /// The reply to send.
    pub reply: Reply,
    /// What to do next.
    pub action: Action,
    /// An audit fact to record (authentication decisions, policy refusals of relays).
    pub audit: Option<Record>,
    /// The reply refuses what the client asked for: the driver logs why and counts it.
    pub refusal: Option<Refusal>,
}

/// What a refusal refused, and why: one log line and one count per refusal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Why, as a fixed word for logs and the `reason` label: one of [`REFUSAL_REASONS`].
    pub reason: &'static str,
    /// The envelope sender, when a transaction is open.
    pub sender: Option<String>,
    /// The recipient refused, for RCPT.
    pub recipient: Option<String>,
}

/// Every refusal reason, for the metric's series (present at zero from the start).
pub const REFUSAL_REASONS: &[&str] = &[
    "relay-denied",
    "unknown-recipient",
    "sender-not-allowed",
    "too-many-recipients",
    "size",
    "queue-full",
    "tls-required",
    "policy",
];

impl Output {
    fn new(reply: Reply, action: Action) -> Self {
        Output {
            reply,
            action,
            audit: None,
            refusal: None,
        }
    }

    fn cont(reply: Reply) -> Self {
        Output::new(reply, Action::Continue)
    }

    /// This output, marked as refusing for `reason` (sender and recipient where known).
    fn refusing(
        mut self,
        reason: &'static str,
        sender: Option<&str>,
        recipient: Option<String>,
    ) -> Self {
        self.refusal = Some(Refusal {
            reason,
            sender: sender.map(str::to_owned),
            recipient,
        });
        self
    }
}

/// How a relay (or a whole session) was authorized.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Authorization {
    /// SMTP AUTH.
    Sasl {
        /// The user.
        user: String,
        /// The mechanism.
        mechanism: &'static str,
    },
    /// A POP3 login from this address within the TTL.
    PopBeforeSmtp {
        /// The user who logged in over POP3.
        user: String,
    },
    /// The client is in `trusted_networks`.
    TrustedNetwork,
}

impl Authorization {
    /// For address-based authorizations, the mechanism name the audit and policy use.
    pub fn address_mechanism(&self) -> Option<&'static str> {
        match self {
            Authorization::Sasl { .. } => None,
            Authorization::PopBeforeSmtp { .. } => Some("pop-before-smtp"),
            Authorization::TrustedNetwork => Some("trusted-network"),
        }
    }

    /// The user behind the authorization, if any.
    pub fn user(&self) -> Option<&str> {
        match self {
            Authorization::Sasl { user, .. } | Authorization::PopBeforeSmtp { user } => Some(user),
            Authorization::TrustedNetwork => None,
        }
    }

    /// Short text for the Received header and logs.
    pub fn describe(&self) -> String {
        match self {
            Authorization::Sasl { user, mechanism } => {
                format!("authenticated as {user} with {mechanism}")
            }
            Authorization::PopBeforeSmtp { user } => format!("pop-before-smtp for {user}"),
            Authorization::TrustedNetwork => "trusted network".to_string(),
        }
    }
}

/// An accepted recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient {
    /// The address as it will be delivered (`local@domain`).
    pub address: String,
    /// The local user for local delivery; `None` means relay upstream.
    pub local_user: Option<String>,
}

/// The mail transaction being built (RFC 5321 §3.3).
#[derive(Debug, Clone, Default)]
pub struct Transaction {
    /// The reverse-path (`""` for the null sender).
    pub mail_from: String,
    /// Accepted recipients.
    pub recipients: Vec<Recipient>,
    /// What authorized relaying in this transaction (the strongest seen).
    pub relay_authorization: Option<Authorization>,
    /// The body was declared 8BITMIME.
    pub eight_bit: bool,
    /// The policy outcome for an address-authorized relay (decided at its first recipient).
    pub relay_outcome: Option<Outcome>,
    /// The policy rule that decided it.
    pub relay_rule: Option<String>,
    /// A header a `warn` rule adds to the message.
    pub warn_header: Option<String>,
    /// The whole policy decision for an address-authorized relay (notices need its
    /// `notify`, `refuse_from` and text when the message is accepted).
    pub relay_decision: Option<crate::policy::Decision>,
}

/// The outcome of receiving DATA, reported by the connection loop.
#[derive(Debug)]
pub enum DataOutcome {
    /// Durably spooled under this queue id.
    Queued(String),
    /// The message exceeded the size limit.
    TooBig,
    /// The spool failed; nothing was accepted.
    LocalError,
}

enum State {
    /// Before EHLO/HELO.
    AwaitingHelo,
    /// Greeted; no transaction open.
    AwaitingMail,
    /// MAIL accepted; collecting recipients.
    AwaitingRcpt(Transaction),
    /// 354 sent; the loop is receiving the body.
    ReceivingData(Transaction),
    /// An AUTH exchange is running.
    InSasl {
        mechanism: Box<dyn Mechanism>,
        name: &'static str,
        after: Box<State>,
    },
    /// A command waits for the allowlist's answer ([`Action::CheckAllowlist`]).
    AwaitingAllowlist(Pending),
    /// QUIT or a fatal error.
    Done,
}

/// The command a session finishes once the allowlist has answered.
enum Pending {
    /// MAIL on a submission role without AUTH: accepted only if the address may relay.
    Mail {
        from: ReversePath,
        params: command::MailParams,
    },
    /// The first RCPT of `txn` whose routing needs the client's authorization.
    Rcpt { txn: Transaction, to: ForwardPath },
}

/// What the allowlist said about the client address in the current mail transaction.
enum Allowlisted {
    /// Not asked yet in this transaction (or the role does not honour POP-before-SMTP).
    Unknown,
    /// Asked: the authorization it gives, if any.
    Known(Option<Authorization>),
}

/// One SMTP session.
pub struct Session {
    settings: Settings,
    state: State,
    helo: Option<String>,
    esmtp: bool,
    auth: Option<Authorization>,
    auth_failures: u32,
    errors: u32,
    sasl_attempts: u32,
    /// The brownout roll of the current AUTH attempt.
    sasl_roll: f64,
    /// Relay decisions drawn so far (each gets its own brownout draw).
    relay_draws: u32,
    /// The time of the command being handled.
    now: SystemTime,
    /// A header a `warn` rule asks to add to this session's messages.
    warn_header: Option<String>,
    /// The allowlist's answer for this transaction: asked afresh at each MAIL.
    allowlisted: Allowlisted,
}

impl Session {
    /// A new session (send [`Session::greeting`] first).
    pub fn new(settings: Settings) -> Self {
        Session {
            settings,
            state: State::AwaitingHelo,
            helo: None,
            esmtp: false,
            auth: None,
            auth_failures: 0,
            errors: 0,
            sasl_attempts: 0,
            sasl_roll: 0.0,
            relay_draws: 0,
            now: SystemTime::UNIX_EPOCH,
            warn_header: None,
            allowlisted: Allowlisted::Unknown,
        }
    }

    /// The session after a STARTTLS handshake: RFC 3207 §4.2 discards all knowledge from
    /// before (the client must EHLO again); only the failure counters carry over.
    pub fn after_tls(self, settings: Settings) -> Self {
        let mut next = Session::new(settings);
        next.auth_failures = self.auth_failures;
        next.errors = self.errors;
        next
    }

    /// The 220 greeting.
    pub fn greeting(&self) -> Reply {
        reply::greeting(&self.settings.hostname)
    }

    /// The settings this session runs with.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The EHLO/HELO name, if given.
    pub fn helo(&self) -> Option<&str> {
        self.helo.as_deref()
    }

    /// The SMTP AUTH identity, if any.
    pub fn authorization(&self) -> Option<&Authorization> {
        self.auth.as_ref()
    }

    /// The transaction whose body is being received.
    pub fn data_transaction(&self) -> Option<&Transaction> {
        match &self.state {
            State::ReceivingData(t) => Some(t),
            _ => None,
        }
    }

    /// Whether an AUTH exchange is waiting for a client line (lines may be longer then).
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

    /// The protocol name for the Received header (RFC 3848).
    pub fn protocol_name(&self) -> &'static str {
        match (
            self.esmtp,
            self.settings.tls_active,
            matches!(self.auth, Some(Authorization::Sasl { .. })),
        ) {
            (false, _, _) => "SMTP",
            (true, false, false) => "ESMTP",
            (true, true, false) => "ESMTPS",
            (true, false, true) => "ESMTPA",
            (true, true, true) => "ESMTPSA",
        }
    }

    /// Handles a line that exceeded the line limit (RFC 5321 §4.5.3.1.4).
    pub fn handle_overlong(&mut self) -> Output {
        if self.in_sasl() {
            // RFC 4954 §4: an over-long exchange line ends the exchange.
            self.leave_sasl();
            return Output::cont(reply::auth_line_too_long());
        }
        self.error(reply::line_too_long())
    }

    /// Handles one command line (without CRLF).
    pub fn handle_line(&mut self, now: SystemTime, line: &[u8]) -> Output {
        self.now = now;
        if self.in_sasl() {
            return self.sasl_line(line);
        }
        if matches!(self.state, State::AwaitingAllowlist(_)) {
            // The loop answers the allowlist before it feeds another line.
            return self.error(reply::bad_sequence());
        }
        let cmd = match command::parse(line) {
            Ok(cmd) => cmd,
            Err(e) => return self.error(e.reply()),
        };
        match cmd {
            Command::Ehlo(name) => self.hello(name, true),
            Command::Helo(name) => self.hello(name, false),
            Command::Mail { from, params } => self.mail(from, params),
            Command::Rcpt { to } => self.rcpt(now, to),
            Command::Data => self.data(),
            Command::Rset => {
                if !matches!(self.state, State::AwaitingHelo) {
                    self.state = State::AwaitingMail;
                }
                Output::cont(reply::ok())
            }
            Command::Noop => Output::cont(reply::ok()),
            Command::Quit => {
                self.state = State::Done;
                Output::new(reply::closing(&self.settings.hostname), Action::Close)
            }
            Command::Vrfy(_) => Output::cont(reply::vrfy()),
            Command::Expn(_) => Output::cont(reply::not_implemented()),
            Command::Help => Output::cont(reply::help()),
            Command::Starttls => self.starttls(),
            Command::Auth { mechanism, initial } => self.auth(&mechanism, initial.as_deref()),
        }
    }

    /// Handles the allowlist's answer to [`Action::CheckAllowlist`] (`entry` is the live
    /// entry covering the client address at `now`, if any) and finishes the command that
    /// asked. The answer holds for the rest of the mail transaction.
    pub fn handle_allowlist(&mut self, now: SystemTime, entry: Option<Entry>) -> Output {
        self.now = now;
        self.allowlisted = Allowlisted::Known(entry.map(|e| Authorization::PopBeforeSmtp {
            user: e.user.into(),
        }));
        match std::mem::replace(&mut self.state, State::Done) {
            State::AwaitingAllowlist(Pending::Mail { from, params }) => {
                self.state = State::AwaitingMail;
                self.open_transaction(from, params)
            }
            State::AwaitingAllowlist(Pending::Rcpt { txn, to }) => {
                self.state = State::AwaitingRcpt(txn);
                self.rcpt(now, to)
            }
            other => {
                self.state = other;
                self.error(reply::bad_sequence())
            }
        }
    }

    /// Handles the end of the message body.
    pub fn handle_data_end(&mut self, outcome: DataOutcome) -> Output {
        self.state = State::AwaitingMail;
        match outcome {
            DataOutcome::Queued(id) => Output::cont(reply::queued(&id)),
            DataOutcome::TooBig => {
                Output::cont(reply::message_too_big()).refusing("size", None, None)
            }
            DataOutcome::LocalError => Output::cont(reply::local_error()),
        }
    }

    /// Counts a protocol error and answers `reply`, or closes after too many.
    fn error(&mut self, reply: Reply) -> Output {
        self.errors += 1;
        if self.errors > self.settings.max_errors {
            self.state = State::Done;
            return Output::new(
                reply::too_many_errors(&self.settings.hostname),
                Action::Close,
            );
        }
        Output::cont(reply)
    }

    fn hello(&mut self, name: String, esmtp: bool) -> Output {
        if matches!(
            self.state,
            State::ReceivingData(_) | State::InSasl { .. } | State::Done
        ) {
            return self.error(reply::bad_sequence());
        }
        // RFC 5321 §4.1.4: EHLO/HELO resets any transaction.
        self.state = State::AwaitingMail;
        self.helo = Some(name);
        self.esmtp = esmtp;
        if !esmtp {
            return Output::cont(reply::helo(&self.settings.hostname));
        }
        let s = &self.settings;
        let mut lines: Vec<Cow<'static, str>> = vec![
            "PIPELINING".into(),
            format!("SIZE {}", s.max_message_size).into(),
            "8BITMIME".into(),
            "ENHANCEDSTATUSCODES".into(),
        ];
        if s.starttls_available && !s.tls_active {
            lines.push("STARTTLS".into());
        }
        if self.auth.is_none() {
            let offered = self.offered_mechanisms();
            if !offered.is_empty() {
                lines.push(format!("AUTH {}", offered.join(" ")).into());
                // Outlook Express and old Outlook only parse the pre-RFC 2554 form.
                if offered.contains(&"LOGIN") {
                    lines.push(format!("AUTH={}", offered.join(" ")).into());
                }
            }
        }
        Output::cont(reply::ehlo(&s.hostname, lines))
    }

    /// The mechanisms this connection may use now.
    pub fn offered_mechanisms(&self) -> Vec<&'static str> {
        self.settings
            .mechanisms
            .iter()
            .filter(|d| {
                let cleartext = d.plaintext || d.bearer_token;
                (!cleartext || self.settings.plaintext_allowed) && self.settings.sasl.can_offer(d)
            })
            .map(|d| d.name)
            .collect()
    }

    fn starttls(&mut self) -> Output {
        if self.settings.tls_active {
            return self.error(reply::bad_sequence());
        }
        if !self.settings.starttls_available {
            return Output::cont(reply::tls_unavailable());
        }
        if matches!(self.state, State::AwaitingRcpt(_)) {
            return self.error(reply::bad_sequence());
        }
        self.state = State::Done;
        Output::new(reply::ready_to_start_tls(), Action::StartTls)
    }

    fn mail(&mut self, from: ReversePath, params: command::MailParams) -> Output {
        match self.state {
            State::AwaitingMail => {}
            State::AwaitingHelo => return self.error(reply::need_helo()),
            _ => return self.error(reply::bad_sequence()),
        }
        if let Some(size) = params.size
            && size > self.settings.max_message_size
        {
            let sender = from.to_string();
            return Output::cont(reply::message_too_big()).refusing("size", Some(&sender), None);
        }
        if self.settings.queue.is_full() {
            let sender = from.to_string();
            return Output::cont(reply::queue_full()).refusing("queue-full", Some(&sender), None);
        }
        // A new transaction asks the allowlist afresh (an entry may have come or gone).
        self.allowlisted = Allowlisted::Unknown;
        self.open_transaction(from, params)
    }

    /// MAIL after its checks: on a submission role without AUTH the client address must be
    /// authorized (asking the allowlist first where this role honours it).
    fn open_transaction(&mut self, from: ReversePath, params: command::MailParams) -> Output {
        let needs_auth = matches!(
            self.settings.role,
            SmtpRole::Submission | SmtpRole::Submissions
        );
        if needs_auth && self.auth.is_none() {
            if self.allowlist_unknown() {
                self.state = State::AwaitingAllowlist(Pending::Mail { from, params });
                return self.ask_allowlist();
            }
            if self.ip_authorization().is_none() {
                return Output::cont(reply::auth_required());
            }
        }
        let mail_from = match &from {
            ReversePath::Null => String::new(),
            ReversePath::Address(a) => a.to_string(),
        };
        let eight_bit = matches!(params.body, Some(command::Body::EightBitMime));
        self.state = State::AwaitingRcpt(Transaction {
            mail_from,
            recipients: Vec::new(),
            relay_authorization: None,
            eight_bit,
            relay_outcome: None,
            relay_rule: None,
            warn_header: self.warn_header.clone(),
            relay_decision: None,
        });
        Output::cont(reply::sender_ok())
    }

    fn data(&mut self) -> Output {
        match std::mem::replace(&mut self.state, State::Done) {
            State::AwaitingRcpt(t) if !t.recipients.is_empty() => {
                self.state = State::ReceivingData(t);
                Output::new(reply::start_data(), Action::ReceiveData)
            }
            State::AwaitingRcpt(t) => {
                self.state = State::AwaitingRcpt(t);
                self.error(reply::no_valid_recipients())
            }
            other => {
                let helo = matches!(other, State::AwaitingHelo);
                self.state = other;
                if helo {
                    self.error(reply::need_helo())
                } else {
                    self.error(reply::need_mail())
                }
            }
        }
    }
}

/// Whether `mail_from` is one of `user`'s own addresses (`user@<local domain>`).
pub fn sender_belongs_to(mail_from: &str, user: &str, local_domains: &[String]) -> bool {
    local_part(mail_from, local_domains).is_some_and(|local| local.eq_ignore_ascii_case(user))
}

/// The local part of `address` when its domain is one of `local_domains`.
pub fn local_part<'a>(address: &'a str, local_domains: &[String]) -> Option<&'a str> {
    let (local, domain) = address.rsplit_once('@')?;
    local_domains
        .iter()
        .any(|d| d.eq_ignore_ascii_case(domain))
        .then_some(local)
}

#[cfg(test)]
#[path = "machine_tests.rs"]
mod tests;
