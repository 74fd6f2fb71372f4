//! The relay decision for each RCPT: whether the session may send to this recipient (local
//! domain, SMTP AUTH, POP-before-SMTP via the allowlist round trip, trusted network), and the
//! policy verdict on relaying.

use super::*;

impl Session {
    /// POP-before-SMTP (as the allowlist answered for this transaction) or trusted-network
    /// authorization of the client address; POP-before-SMTP first, as it names a user.
    pub(super) fn ip_authorization(&self) -> Option<Authorization> {
        if let Allowlisted::Known(Some(a)) = &self.allowlisted {
            return Some(a.clone());
        }
        self.settings
            .trusted
            .then_some(Authorization::TrustedNetwork)
    }

    /// Whether this role honours the allowlist and it has not answered in this transaction.
    pub(super) fn allowlist_unknown(&self) -> bool {
        self.settings.pop_before_smtp && matches!(self.allowlisted, Allowlisted::Unknown)
    }

    /// Whether routing `to` needs the client's authorization and the allowlist must be
    /// asked for it first: a relay, or a local address with a source-route trick. Local
    /// delivery, the common inbound case, never asks.
    fn rcpt_needs_allowlist(&self, to: &ForwardPath) -> bool {
        if self.auth.is_some() || !self.allowlist_unknown() {
            return false;
        }
        match to {
            ForwardPath::Postmaster => false,
            ForwardPath::Address(a) => {
                !self.settings.local_domains.contains(&a.domain) || a.relay_trick().is_some()
            }
        }
    }

    /// Parks `pending` until the allowlist answers.
    pub(super) fn ask_allowlist(&self) -> Output {
        Output::new(
            reply::none(),
            Action::CheckAllowlist {
                ip: self.settings.peer.ip(),
            },
        )
    }

    pub(super) fn rcpt(&mut self, now: SystemTime, to: ForwardPath) -> Output {
        let State::AwaitingRcpt(_) = self.state else {
            return match self.state {
                State::AwaitingHelo => self.error(reply::need_helo()),
                _ => self.error(reply::need_mail()),
            };
        };
        if self.rcpt_needs_allowlist(&to) {
            if let State::AwaitingRcpt(txn) = std::mem::replace(&mut self.state, State::Done) {
                self.state = State::AwaitingAllowlist(Pending::Rcpt { txn, to });
            }
            return self.ask_allowlist();
        }
        // Only a refusal spends the copies (an accepted RCPT allocates nothing for them).
        let recipient = |to: &ForwardPath| match to {
            ForwardPath::Postmaster => "postmaster".to_owned(),
            ForwardPath::Address(a) => a.to_string(),
        };
        let (address, local_user, relay) = match self.route(&to) {
            Ok(routed) => routed,
            Err(reply) => {
                let reason = if reply == reply::no_such_user() {
                    "unknown-recipient"
                } else {
                    "relay-denied"
                };
                let sender = match &self.state {
                    State::AwaitingRcpt(t) => t.mail_from.clone(),
                    _ => String::new(),
                };
                return self
                    .error(reply)
                    .refusing(reason, Some(&sender), Some(recipient(&to)));
            }
        };
        let State::AwaitingRcpt(t) = &mut self.state else {
            unreachable!("checked above and route() does not change the state")
        };
        if t.recipients.len() >= self.settings.max_recipients {
            return Output::cont(reply::too_many_recipients()).refusing(
                "too-many-recipients",
                Some(&t.mail_from),
                Some(recipient(&to)),
            );
        }
        if let Some(Authorization::PopBeforeSmtp { user }) = &relay
            && self.settings.restrict_sender
            && !sender_belongs_to(&t.mail_from, user, &self.settings.local_domains)
        {
            return Output::cont(reply::sender_not_allowed()).refusing(
                "sender-not-allowed",
                Some(&t.mail_from),
                Some(recipient(&to)),
            );
        }
        if let Some(a) = &relay
            && t.relay_outcome.is_none()
            && let Some(mechanism) = a.address_mechanism()
        {
            // POP-before-SMTP and trusted networks: the policy decides once per transaction.
            let decision = self.settings.policy.evaluate(&Attempt {
                mechanism,
                class: Class::Insecure,
                user: a.user(),
                ip: crate::canonical_ip(self.settings.peer.ip()),
                listener: self.settings.role.name(),
                now,
                roll: {
                    // A fresh draw for each transaction's relay decision.
                    self.relay_draws = self.relay_draws.wrapping_add(1);
                    self.settings.sasl.policy_roll("relay", self.relay_draws)
                },
            });
            if !decision.allowed() {
                let text = decision.text.as_deref();
                let reply = match decision.action {
                    PolicyAction::Brownout => reply::policy_relay_brownout(text),
                    _ => reply::policy_relay_denied(text),
                };
                let mut record =
                    Record::new(Kind::Relay, mechanism, Class::Insecure, Outcome::Denied)
                        .with_decision(&decision);
                record.user = a.user().map(str::to_owned);
                let mut out = Output::cont(reply).refusing(
                    "policy",
                    Some(&t.mail_from),
                    Some(recipient(&to)),
                );
                out.audit = Some(record);
                return out;
            }
            t.relay_outcome = Some(decision.outcome);
            t.relay_rule = decision.rule.clone();
            if decision.header.is_some() {
                t.warn_header = decision.header.clone();
            }
            t.relay_decision = Some(decision);
        }
        if relay.is_some() && t.relay_authorization.is_none() {
            t.relay_authorization = relay;
        }
        t.recipients.push(Recipient {
            address,
            local_user,
        });
        Output::cont(reply::recipient_ok())
    }

    /// Decides where a recipient goes and whether the client may send there.
    #[allow(clippy::type_complexity)] // (address, local user, relay authorization)
    fn route(
        &self,
        to: &ForwardPath,
    ) -> Result<(String, Option<String>, Option<Authorization>), Reply> {
        let addr = match to {
            ForwardPath::Postmaster => {
                // RFC 5321 §4.5.1: <postmaster> must always be accepted.
                let user = self
                    .settings
                    .sasl
                    .auth
                    .lookup("postmaster")
                    .ok_or_else(reply::no_such_user)?;
                let domain = self
                    .settings
                    .local_domains
                    .first()
                    .cloned()
                    .unwrap_or_default();
                return Ok((format!("postmaster@{domain}"), Some(user), None));
            }
            ForwardPath::Address(a) => a,
        };
        let authorized = self.auth.clone().or_else(|| self.ip_authorization());
        if authorized.is_none()
            && let Some(_why) = addr.relay_trick()
        {
            return Err(reply::relay_denied());
        }
        if self.settings.local_domains.contains(&addr.domain) {
            let local = addr.local_unquoted.to_ascii_lowercase();
            let user = match self.settings.sasl.auth.lookup(&local) {
                Some(user) => user,
                // Not moved yet: the old server knows whether the user exists.
                None if self.settings.route_unmigrated => {
                    crate::auth::user_name(&local).ok_or_else(reply::no_such_user)?
                }
                None => return Err(reply::no_such_user()),
            };
            return Ok((addr.to_string(), Some(user), None));
        }
        match authorized {
            Some(a) => Ok((addr.to_string(), None, Some(a))),
            None => Err(reply::relay_denied()),
        }
    }
}
