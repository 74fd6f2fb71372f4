//! The AUTHORIZATION state of a POP3 session (RFC 1939 §4, §7): USER/PASS, APOP, AUTH with its
//! SASL exchange (RFC 5034 §4), the credential round trip, and what success or failure does to
//! the session (the policy verdict, the audit record, the failure count, RFC 3206 codes).

use super::*;

/// Base64 for client SASL lines: padding is accepted but not required, as some clients drop it.
const SASL_BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

impl Session {
    pub(super) fn authorization(&mut self, cmd: Command) -> Output {
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
            Verdict::Temporary(why) => {
                self.failed(Reply::auth_unavailable(), Some(why), Some(tried), method)
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
        let class = classify_session(
            mechanism,
            self.settings.tls_active,
            self.settings.tls_legacy,
        );
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
        let class = classify_session(
            mechanism,
            self.settings.tls_active,
            self.settings.tls_legacy,
        );
        let mut record = Record::new(Kind::Auth, mechanism, class, Outcome::Failure);
        record.user_given = user.clone();
        // The canonical user when the name exists, so that "Alice" failing and "alice"
        // succeeding land in one report group.
        record.user = user
            .as_deref()
            .and_then(|u| self.settings.sasl.auth.lookup(u));
        record.reason = Some(note.unwrap_or("invalid credentials").to_string());
        // A temporary failure (nothing was judged wrong) is not the client's.
        if !note.is_some_and(crate::sasl::temporary_note) {
            self.failures = self.failures.saturating_add(1);
        }
        let close = self.failures >= self.settings.max_failures.max(1);
        self.state = if close {
            State::Done
        } else {
            State::AwaitingUser
        };
        let note = note.unwrap_or("invalid credentials");
        Output {
            audit: Some(record),
            ..Output::new(reply, Action::AuthFailed { user, note, close })
        }
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

    pub(super) fn sasl_response(&mut self, line: &[u8]) -> Output {
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
        // "=" is RFC 5034's empty initial response; some clients (curl) send it for an empty
        // response to a challenge too. It is no valid base64, so it can mean nothing else.
        let decoded = match line {
            b"=" => Ok(Vec::new()),
            _ => SASL_BASE64.decode(line),
        };
        let Ok(bytes) = decoded.map(Zeroizing::new) else {
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
                let mut out =
                    self.authenticated(identity.user, given, mech, format!("SASL {mech}"));
                if let Some(record) = &mut out.audit {
                    record.principal = identity.principal;
                }
                out
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
                    Failure::Temporary(why) => {
                        self.failed(Reply::auth_unavailable(), Some(why), user, mech)
                    }
                }
            }
        }
    }
}
