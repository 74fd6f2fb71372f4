//! Migration policy: `[[policy]]` rules that allow, warn about, brown out, or deny an
//! authentication or an address-authorized relay, by mechanism or class, user, client
//! network, listener role and date window. Rules are evaluated in order; the first whose
//! criteria all match decides; no match means allow.
//!
//! Sans-IO: the caller passes the time and a random roll (for brownouts); nothing here reads
//! the clock or logs.
//!
//! This file holds the rules and their matching; `policy/coverage.rs` the coverage report of
//! `mailgate check-config`.

use std::net::IpAddr;
use std::time::SystemTime;

use ipnet::IpNet;

use crate::audit::{Class, Outcome, classify};

mod coverage;

pub use coverage::{Coverage, CoverageLine, InForce};

/// What a rule does when it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Let the client through (stops evaluation: an exception before broader rules).
    Allow,
    /// Let the client through, audit it as warned, optionally add a header to its mail and
    /// send the user a notice.
    Warn,
    /// Refuse a share of attempts with a temporary failure (SMTP AUTH 454 4.7.0, relay
    /// 450 4.7.0, POP3 -ERR [SYS/TEMP]), so clients retry and users notice.
    Brownout,
    /// Refuse with "password transition needed" (SMTP 432 4.7.12, RFC 4954 §6).
    Transition,
    /// Refuse (SMTP 534 5.7.9 "mechanism too weak"; POP3 `-ERR [AUTH]`; relay 550 5.7.1).
    Deny,
}

impl Action {
    /// Parses the config name.
    pub fn parse(s: &str) -> Option<Action> {
        Some(match s {
            "allow" => Action::Allow,
            "warn" => Action::Warn,
            "brownout" => Action::Brownout,
            "transition" => Action::Transition,
            "deny" => Action::Deny,
            _ => return None,
        })
    }

    /// The config name.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Allow => "allow",
            Action::Warn => "warn",
            Action::Brownout => "brownout",
            Action::Transition => "transition",
            Action::Deny => "deny",
        }
    }
}

/// One validated `[[policy]]` rule. Empty criteria match everything.
#[derive(Debug, Clone)]
pub struct Rule {
    /// The rule's name (audit field `rule`); defaults to `policy[<index>]`.
    pub name: String,
    /// Mechanisms as recorded ("PLAIN", "CRAM-MD5", "NTLM" (any NTLM variant), "NTLMv1",
    /// "USER", "APOP", "pop-before-smtp", "trusted-network", ...), upper case.
    pub mechanisms: Vec<String>,
    /// Classes.
    pub classes: Vec<Class>,
    /// Users (lower case).
    pub users: Vec<String>,
    /// Client networks.
    pub networks: Vec<IpNet>,
    /// Listener roles ("smtp", "submission", "submissions", "pop3", "pop3s").
    pub listeners: Vec<String>,
    /// Start of the window (inclusive).
    pub from: Option<SystemTime>,
    /// End of the window (exclusive).
    pub until: Option<SystemTime>,
    /// What to do.
    pub action: Action,
    /// For `brownout`: the share of attempts refused, 0.0 to 1.0.
    pub share: f64,
    /// Audit "would_deny" instead of refusing.
    pub dry_run: bool,
    /// Text shown to the user with a refusal or warning.
    pub message: Option<String>,
    /// A URL shown with the message.
    pub url: Option<String>,
    /// A header line (`Name: value`) added to messages relayed under a `warn` rule.
    pub header: Option<String>,
    /// For `warn` and `brownout`: drop a notice into the user's mailbox.
    pub notify: bool,
    /// The date from which the mechanism will be refused, named in notices.
    pub refuse_from: Option<String>,
}

/// What is being decided.
#[derive(Debug, Clone, Copy)]
pub struct Attempt<'a> {
    /// The mechanism as recorded (e.g. "NTLMv2", "USER", "pop-before-smtp").
    pub mechanism: &'a str,
    /// Its class.
    pub class: Class,
    /// The canonical user, if known.
    pub user: Option<&'a str>,
    /// The client address (canonical form).
    pub ip: IpAddr,
    /// The listener role.
    pub listener: &'a str,
    /// The time of the attempt.
    pub now: SystemTime,
    /// A uniform random number in [0, 1), for brownouts.
    pub roll: f64,
}

/// The decision for an attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// The audit outcome (`Success`, `Warned`, `WouldDeny`, `Brownout`, `Denied`).
    pub outcome: Outcome,
    /// The action that decided (`Allow` when no rule matched).
    pub action: Action,
    /// The matching rule's name.
    pub rule: Option<String>,
    /// The text to show the client (message and URL), if any.
    pub text: Option<String>,
    /// A header to add to the message (warn rules).
    pub header: Option<String>,
    /// Whether to notify the user (warn/brownout rules with `notify`).
    pub notify: bool,
    /// The refusal date named in notices.
    pub refuse_from: Option<String>,
}

impl Decision {
    /// Whether the client gets through.
    pub fn allowed(&self) -> bool {
        self.outcome.allowed()
    }

    fn allow() -> Decision {
        Decision {
            outcome: Outcome::Success,
            action: Action::Allow,
            rule: None,
            text: None,
            header: None,
            notify: false,
            refuse_from: None,
        }
    }
}

/// The ordered rules.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// Rules in evaluation order.
    pub rules: Vec<Rule>,
}

impl Policy {
    /// Decides `attempt`: the first matching rule's action, or allow.
    pub fn evaluate(&self, attempt: &Attempt<'_>) -> Decision {
        let Some(rule) = self.rules.iter().find(|r| r.matches(attempt)) else {
            return Decision::allow();
        };
        let text = match (&rule.message, &rule.url) {
            (Some(m), Some(u)) => Some(format!("{m} ({u})")),
            (Some(m), None) => Some(m.clone()),
            (None, Some(u)) => Some(u.clone()),
            (None, None) => None,
        };
        let refuses = match rule.action {
            Action::Allow | Action::Warn => false,
            Action::Brownout => attempt.roll < rule.share,
            Action::Transition | Action::Deny => true,
        };
        let outcome = match rule.action {
            Action::Allow => Outcome::Success,
            Action::Warn => Outcome::Warned,
            _ if !refuses => Outcome::Warned,
            _ if rule.dry_run => Outcome::WouldDeny,
            Action::Brownout => Outcome::Brownout,
            Action::Transition | Action::Deny => Outcome::Denied,
        };
        let action = if rule.dry_run && refuses {
            Action::Warn
        } else {
            rule.action
        };
        Decision {
            outcome,
            action,
            rule: Some(rule.name.clone()),
            text,
            header: matches!(outcome, Outcome::Warned | Outcome::WouldDeny)
                .then(|| rule.header.clone())
                .flatten(),
            notify: rule.notify && matches!(rule.action, Action::Warn | Action::Brownout),
            refuse_from: rule.refuse_from.clone(),
        }
    }
}

impl Rule {
    fn matches(&self, a: &Attempt<'_>) -> bool {
        self.matches_mechanism(a.mechanism, a.class)
            && self.names_user(a.user)
            && (self.networks.is_empty() || self.networks.iter().any(|n| n.contains(&a.ip)))
            && (self.listeners.is_empty() || self.listeners.iter().any(|l| l == a.listener))
            && self.in_force(a.now)
    }

    /// Whether `at` lies in the rule's date window (`from` inclusive, `until` exclusive).
    fn in_force(&self, at: SystemTime) -> bool {
        self.from.is_none_or(|from| at >= from) && self.until.is_none_or(|until| at < until)
    }

    /// Whether the rule's `users` (any user when empty) include `user`.
    fn names_user(&self, user: Option<&str>) -> bool {
        self.users.is_empty()
            || user.is_some_and(|u| self.users.iter().any(|r| r.eq_ignore_ascii_case(u)))
    }

    fn matches_mechanism(&self, mechanism: &str, class: Class) -> bool {
        let mech_ok = self.mechanisms.is_empty()
            || self.mechanisms.iter().any(|m| {
                m.eq_ignore_ascii_case(mechanism)
                    // "NTLM" names the mechanism; the audit records its variant.
                    || (m == "NTLM" && mechanism.to_ascii_uppercase().starts_with("NTLM"))
            });
        let class_ok = self.classes.is_empty() || self.classes.contains(&class);
        mech_ok && class_ok
    }
}

/// Names a rule's `mechanisms` may hold besides the SASL registry's: the POP3 methods, the
/// NTLM variants the audit records, and the relay kinds.
const OTHER_METHODS: [&str; 9] = [
    "USER",
    "APOP",
    "NTLMv1",
    "NTLMv1-ESS",
    "NTLM2-SESSION",
    "NTLMv2",
    "LMv2",
    "pop-before-smtp",
    "trusted-network",
];

/// Mechanisms of optional build features that this build lacks: a rule may still name them,
/// so that one policy serves binaries built with and without them.
#[cfg(not(feature = "gssapi"))]
const NOT_BUILT: &[&str] = &["GSSAPI"];
#[cfg(feature = "gssapi")]
const NOT_BUILT: &[&str] = &[];

/// Every name a rule's `mechanisms` may hold, for messages.
pub fn known_mechanisms() -> Vec<&'static str> {
    crate::sasl::MECHANISMS
        .iter()
        .map(|d| d.name)
        .chain(OTHER_METHODS)
        .chain(NOT_BUILT.iter().copied())
        .collect()
}

/// Whether `name` (any case) is a mechanism or relay kind a rule can match.
pub fn known_mechanism(name: &str) -> bool {
    known_mechanisms()
        .iter()
        .any(|k| k.eq_ignore_ascii_case(name))
}

/// What a policy decision adds to the audit record of the attempt it decided.
impl crate::audit::Record {
    /// Fills in what a policy decision adds.
    pub fn with_decision(mut self, d: &Decision) -> crate::audit::Record {
        self.outcome = d.outcome;
        self.rule = d.rule.clone();
        if d.text.is_some() {
            self.reason = d.text.clone();
        }
        self.notify = d.notify;
        self.refuse_from = d.refuse_from.clone();
        self
    }
}

#[cfg(test)]
mod tests {
    /// GSSAPI is a name rules may use in every build, with or without the feature.
    #[test]
    fn gssapi_is_known_in_every_build() {
        assert!(super::known_mechanism("gssapi"));
        let all = super::known_mechanisms();
        assert_eq!(all.iter().filter(|m| **m == "GSSAPI").count(), 1, "{all:?}");
    }

    use std::time::Duration;

    use super::*;

    const DAY: u64 = 86_400;

    fn at(days: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(days * DAY)
    }

    fn rule(name: &str, action: Action) -> Rule {
        Rule {
            name: name.into(),
            mechanisms: vec![],
            classes: vec![],
            users: vec![],
            networks: vec![],
            listeners: vec![],
            from: None,
            until: None,
            action,
            share: 0.0,
            dry_run: false,
            message: None,
            url: None,
            header: None,
            notify: false,
            refuse_from: None,
        }
    }

    fn attempt<'a>(mechanism: &'a str, user: &'a str, now: SystemTime) -> Attempt<'a> {
        Attempt {
            mechanism,
            class: crate::audit::classify(mechanism, false),
            user: Some(user),
            ip: "192.0.2.7".parse().unwrap(),
            listener: "submission",
            now,
            roll: 0.5,
        }
    }

    #[test]
    fn first_match_wins_and_no_match_allows() {
        let mut exempt = rule("exempt-printer", Action::Allow);
        exempt.users = vec!["printer".into()];
        let mut deny = rule("no-cram", Action::Deny);
        deny.mechanisms = vec!["CRAM-MD5".into()];
        deny.message = Some("CRAM-MD5 is retired".into());
        deny.url = Some("https://example.test/migrate".into());
        let p = Policy {
            rules: vec![exempt, deny],
        };
        let d = p.evaluate(&attempt("CRAM-MD5", "alice", at(0)));
        assert_eq!(d.outcome, Outcome::Denied);
        assert_eq!(d.rule.as_deref(), Some("no-cram"));
        assert_eq!(
            d.text.as_deref(),
            Some("CRAM-MD5 is retired (https://example.test/migrate)")
        );
        assert!(p.evaluate(&attempt("CRAM-MD5", "printer", at(0))).allowed());
        let other = p.evaluate(&attempt("PLAIN", "alice", at(0)));
        assert_eq!(other, Decision::allow());
    }

    #[test]
    fn every_criterion_narrows() {
        let mut r = rule("r", Action::Deny);
        r.classes = vec![Class::Weak];
        r.networks = vec!["192.0.2.0/24".parse().unwrap()];
        r.listeners = vec!["submission".into()];
        r.from = Some(at(10));
        r.until = Some(at(20));
        let p = Policy { rules: vec![r] };
        assert!(!p.evaluate(&attempt("APOP", "u", at(10))).allowed());
        assert!(
            p.evaluate(&attempt("APOP", "u", at(9))).allowed(),
            "before from"
        );
        assert!(
            p.evaluate(&attempt("APOP", "u", at(20))).allowed(),
            "until is exclusive"
        );
        assert!(
            p.evaluate(&attempt("SCRAM-SHA-256", "u", at(10))).allowed(),
            "class"
        );
        let mut elsewhere = attempt("APOP", "u", at(10));
        elsewhere.ip = "198.51.100.1".parse().unwrap();
        assert!(p.evaluate(&elsewhere).allowed(), "network");
        let mut pop = attempt("APOP", "u", at(10));
        pop.listener = "pop3";
        assert!(p.evaluate(&pop).allowed(), "listener");
    }

    #[test]
    fn ntlm_names_every_variant() {
        let mut r = rule("r", Action::Deny);
        r.mechanisms = vec!["NTLM".into()];
        let p = Policy { rules: vec![r] };
        for m in ["NTLMv1", "NTLMv2", "NTLM"] {
            assert!(!p.evaluate(&attempt(m, "u", at(0))).allowed(), "{m}");
        }
    }

    #[test]
    fn warn_brownout_transition_and_dry_run() {
        let mut warn = rule("w", Action::Warn);
        warn.header = Some("X-Legacy-Auth: CRAM-MD5".into());
        let d = Policy { rules: vec![warn] }.evaluate(&attempt("CRAM-MD5", "u", at(0)));
        assert_eq!(
            (d.outcome, d.header.as_deref()),
            (Outcome::Warned, Some("X-Legacy-Auth: CRAM-MD5"))
        );

        let mut brown = rule("b", Action::Brownout);
        brown.share = 0.25;
        let p = Policy { rules: vec![brown] };
        let mut a = attempt("PLAIN", "u", at(0));
        a.roll = 0.1;
        assert_eq!(p.evaluate(&a).outcome, Outcome::Brownout);
        a.roll = 0.9;
        assert_eq!(p.evaluate(&a).outcome, Outcome::Warned);

        let d = Policy {
            rules: vec![rule("t", Action::Transition)],
        }
        .evaluate(&attempt("PLAIN", "u", at(0)));
        assert_eq!((d.outcome, d.action), (Outcome::Denied, Action::Transition));

        let mut dry = rule("d", Action::Deny);
        dry.dry_run = true;
        dry.header = Some("X-Would-Deny: yes".into());
        let d = Policy { rules: vec![dry] }.evaluate(&attempt("PLAIN", "u", at(0)));
        assert_eq!(d.outcome, Outcome::WouldDeny);
        assert!(d.allowed());
        assert_eq!(d.header.as_deref(), Some("X-Would-Deny: yes"));
    }

    fn coverage_text(p: &Policy, now: SystemTime, methods: &[&str]) -> Vec<String> {
        let users: Vec<String> = ["alice", "bob"].map(String::from).into();
        p.coverage(now, methods, &users, &|_, _| true)
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn coverage_skips_rules_not_in_force_today() {
        // A deny that starts later must not hide the warn that is in force now.
        let mut later = rule("later", Action::Deny);
        later.mechanisms = vec!["CRAM-MD5".into()];
        later.from = Some(at(100));
        let mut warn = rule("warn-now", Action::Warn);
        warn.mechanisms = vec!["CRAM-MD5".into()];
        warn.until = Some(at(100));
        let mut old = rule("old", Action::Deny);
        old.until = Some(at(5));
        let p = Policy {
            rules: vec![old, later, warn],
        };
        let text = coverage_text(&p, at(10), &["CRAM-MD5"]);
        assert_eq!(
            text,
            [
                "policy \"old\": deny, expired\n  nothing (expired)",
                "policy \"later\": deny, not yet in force (from 1970-04-11T00:00:00Z)\n  \
                 from then: CRAM-MD5 (weak): alice, bob",
                "policy \"warn-now\": warn, in force today\n  CRAM-MD5 (weak): alice, bob",
            ]
        );
    }

    #[test]
    fn coverage_shows_network_and_listener_restrictions_as_partial() {
        let mut corp = rule("corp", Action::Allow);
        corp.networks = vec!["10.0.0.0/8".parse().unwrap()];
        let mut pop = rule("pop-only", Action::Warn);
        pop.mechanisms = vec!["CRAM-MD5".into()];
        pop.listeners = vec!["pop3".into(), "pop3s".into()];
        let mut deny = rule("no-cram", Action::Deny);
        deny.mechanisms = vec!["CRAM-MD5".into(), "APOP".into()];
        let p = Policy {
            rules: vec![corp, pop, deny],
        };
        let text = coverage_text(&p, at(0), &["CRAM-MD5", "APOP"]);
        assert_eq!(
            text[0],
            "policy \"corp\": allow, in force today\n  \
             CRAM-MD5 (weak): alice, bob (from 10.0.0.0/8 only)\n  \
             APOP (weak): alice, bob (from 10.0.0.0/8 only)"
        );
        assert_eq!(
            text[1],
            "policy \"pop-only\": warn, in force today\n  \
             CRAM-MD5 (weak): alice, bob (on pop3, pop3s only; except from 10.0.0.0/8)"
        );
        // The listener list covers every role APOP can use, so it is no restriction there;
        // the deny still gets what the earlier rules leave.
        assert_eq!(
            text[2],
            "policy \"no-cram\": deny, in force today\n  \
             CRAM-MD5 (weak): alice, bob (except from 10.0.0.0/8; except on pop3, pop3s)\n  \
             APOP (weak): alice, bob (except from 10.0.0.0/8)"
        );
    }

    #[test]
    fn coverage_assesses_plaintext_with_and_without_tls_and_relays_without_users() {
        let mut insecure = rule("no-insecure", Action::Deny);
        insecure.classes = vec![Class::Insecure];
        let mut bob = rule("bob-basic", Action::Warn);
        bob.users = vec!["bob".into()];
        let p = Policy {
            rules: vec![insecure, bob],
        };
        let text = coverage_text(
            &p,
            at(0),
            &[
                "PLAIN",
                "SCRAM-SHA-256",
                "pop-before-smtp",
                "trusted-network",
            ],
        );
        assert_eq!(
            text[0],
            "policy \"no-insecure\": deny, in force today\n  \
             PLAIN (insecure, without TLS): alice, bob\n  \
             pop-before-smtp (insecure): alice, bob\n  \
             trusted-network (insecure): any relay (no user)"
        );
        assert_eq!(
            text[1],
            "policy \"bob-basic\": warn, in force today\n  \
             PLAIN (basic, with TLS): bob\n  \
             SCRAM-SHA-256 (modern): bob"
        );
    }

    #[test]
    fn coverage_of_a_fully_shadowed_rule_says_so() {
        let p = Policy {
            rules: vec![rule("all", Action::Allow), rule("never", Action::Deny)],
        };
        let text = coverage_text(&p, at(0), &["PLAIN"]);
        assert_eq!(
            text[1],
            "policy \"never\": deny, in force today\n  \
             nothing (earlier rules decide everything it names)"
        );
    }
}
