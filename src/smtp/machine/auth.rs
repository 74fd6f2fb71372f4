//! AUTH on the SMTP session: starting a mechanism, the `334` challenge and base64 framing of
//! RFC 4954 §4 (with `*` to cancel), the credential round trip ([`Action::Verify`] answered by
//! [`Session::handle_verified`]), and what success or failure does to the session (the policy
//! verdict, the audit record, the failure count).

use super::*;

impl Session {
    pub(super) fn auth(&mut self, name: &str, initial: Option<&str>) -> Output {
        if self.auth.is_some() {
            return self.error(reply::already_authenticated());
        }
        match self.state {
            // RFC 4954 §3: AUTH is an ESMTP extension, available only after EHLO.
            State::AwaitingMail if self.esmtp => {}
            State::AwaitingHelo | State::AwaitingMail => return self.error(reply::need_helo()),
            _ => return self.error(reply::bad_sequence()),
        }
        let Some(desc) = self
            .settings
            .mechanisms
            .iter()
            .copied()
            .find(|d| d.name.eq_ignore_ascii_case(name))
        else {
            return self.error(reply::auth_unrecognized_mechanism());
        };
        if !self.settings.sasl.can_offer(desc) {
            return self.error(reply::auth_unrecognized_mechanism());
        }
        if (desc.plaintext || desc.bearer_token) && !self.settings.plaintext_allowed {
            // RFC 4954 §6: 538 when no TLS can be had; before STARTTLS, ask for it (530).
            let r = if self.settings.starttls_available && !self.settings.tls_active {
                reply::starttls_required()
            } else {
                reply::auth_encryption_required()
            };
            return Output::cont(r).refusing("tls-required", None, None);
        }
        let input = match initial {
            None => None,
            Some("=") => Some(Zeroizing::new(Vec::new())),
            Some("*") => return Output::cont(reply::auth_cancelled()),
            Some(text) => match B64.decode(text) {
                Ok(bytes) => Some(Zeroizing::new(bytes)),
                Err(_) => return self.error(reply::auth_malformed()),
            },
        };
        self.sasl_attempts += 1;
        let ctx = self.settings.sasl.context(self.sasl_attempts);
        self.sasl_roll = self.settings.sasl.policy_roll("auth", self.sasl_attempts);
        let mut mechanism = (desc.start)(&ctx);
        let step = mechanism.step(input.as_ref().map(|b| b.as_slice()));
        let user = mechanism.user().map(str::to_owned);
        let detail = mechanism.detail();
        let after = Box::new(std::mem::replace(&mut self.state, State::Done));
        self.state = State::InSasl {
            mechanism,
            name: desc.name,
            after,
        };
        self.sasl_step(step, user, detail)
    }

    pub(super) fn sasl_line(&mut self, line: &[u8]) -> Output {
        if line == b"*" {
            // RFC 4954 §4: the client cancelled.
            self.leave_sasl();
            return Output::cont(reply::auth_cancelled());
        }
        // "=" is RFC 4954's empty initial response; some clients (curl) send it for an empty
        // response to a challenge too. It is no valid base64, so it can mean nothing else.
        let decoded = match line {
            b"=" => Ok(Vec::new()),
            _ => B64.decode(line),
        };
        let decoded = match decoded {
            Ok(bytes) => Zeroizing::new(bytes),
            Err(_) => {
                self.leave_sasl();
                return self.error(reply::auth_malformed());
            }
        };
        let (step, user, detail) = match &mut self.state {
            State::InSasl { mechanism, .. } => {
                let step = mechanism.step(Some(&decoded));
                (
                    step,
                    mechanism.user().map(str::to_owned),
                    mechanism.detail(),
                )
            }
            _ => unreachable!("sasl_line is only called in the InSasl state"),
        };
        self.sasl_step(step, user, detail)
    }

    fn sasl_step(
        &mut self,
        step: Step,
        hint: Option<String>,
        detail: Option<&'static str>,
    ) -> Output {
        match step {
            Step::Challenge(bytes) => Output::cont(reply::auth_challenge(B64.encode(bytes))),
            Step::Verify(check) => Output::new(reply::none(), Action::Verify(check)),
            Step::Success(identity) => {
                let name = self.leave_sasl();
                let mut out = self.authenticated(identity.user, hint, detail.unwrap_or(name));
                if let Some(record) = &mut out.audit {
                    record.principal = identity.principal;
                }
                out
            }
            Step::Failure(Failure::Malformed(why)) => {
                let name = self.leave_sasl();
                let mech = detail.unwrap_or(name);
                self.auth_failed(
                    reply::auth_malformed(),
                    hint,
                    mech,
                    format!("{mech}: {why}"),
                )
            }
            Step::Failure(f @ Failure::Temporary(_)) => {
                let name = self.leave_sasl();
                let mech = detail.unwrap_or(name);
                let out = self.auth_failed(
                    reply::auth_temp_failure(),
                    hint,
                    mech,
                    format!("{f} ({mech})"),
                );
                // Not the client's fault: not counted towards max_auth_failures.
                self.auth_failures -= 1;
                out
            }
            Step::Failure(f) => {
                let name = self.leave_sasl();
                let mech = detail.unwrap_or(name);
                self.auth_failed(reply::auth_invalid(), hint, mech, format!("{mech}: {f}"))
            }
        }
    }

    /// Takes the answer to the check of an [`Action::Verify`] and goes on with the exchange.
    pub fn handle_verified(&mut self, answer: sasl::Answer) -> Output {
        let (step, user, detail) = match &mut self.state {
            State::InSasl { mechanism, .. } => {
                let step = mechanism.resume(answer);
                (
                    step,
                    mechanism.user().map(str::to_owned),
                    mechanism.detail(),
                )
            }
            _ => return self.error(reply::bad_sequence()),
        };
        self.sasl_step(step, user, detail)
    }

    /// Credentials verified: the policy decides whether the client gets through.
    fn authenticated(
        &mut self,
        user: String,
        given: Option<String>,
        mechanism: &'static str,
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
            ip: crate::canonical_ip(self.settings.peer.ip()),
            listener: self.settings.role.name(),
            now: self.now,
            roll: self.sasl_roll,
        });
        let mut record =
            Record::new(Kind::Auth, mechanism, class, Outcome::Success).with_decision(&decision);
        record.user_given = given;
        record.user = Some(user.clone());
        if !decision.allowed() {
            let text = decision.text.as_deref();
            let reply = match decision.action {
                PolicyAction::Transition => reply::policy_transition(text),
                PolicyAction::Brownout => reply::policy_brownout(text),
                _ => reply::policy_too_weak(text),
            };
            let mut out = Output::cont(reply);
            out.audit = Some(record);
            return out;
        }
        self.auth = Some(Authorization::Sasl {
            user: user.clone(),
            mechanism,
        });
        self.warn_header = decision.header;
        Output {
            reply: reply::auth_ok(),
            action: Action::Authenticated { user, mechanism },
            audit: Some(record),
            refusal: None,
        }
    }

    fn auth_failed(
        &mut self,
        reply: Reply,
        user: Option<String>,
        mechanism: &str,
        note: String,
    ) -> Output {
        self.auth_failures += 1;
        let close = self.auth_failures >= self.settings.max_auth_failures
            && !crate::sasl::temporary_note(&note);
        if close {
            self.state = State::Done;
        }
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
        record.reason = Some(note.clone());
        // Even the last failure gets its delay and is recorded before the session closes.
        Output {
            reply,
            action: Action::AuthFailed { user, note, close },
            audit: Some(record),
            refusal: None,
        }
    }

    /// Ends the SASL exchange, restoring the state before AUTH; returns the mechanism name.
    pub(super) fn leave_sasl(&mut self) -> &'static str {
        match std::mem::replace(&mut self.state, State::Done) {
            State::InSasl { name, after, .. } => {
                self.state = *after;
                name
            }
            other => {
                self.state = other;
                ""
            }
        }
    }
}
