//! Policy coverage for `mailgate check-config`: which users and methods each `[[policy]]` rule
//! covers on a given day, with the network and listener restrictions that leave a share to
//! later rules, as text.

use super::*;

impl Policy {
    /// For `mailgate check-config`: what each rule covers at `now`, for the `methods` the
    /// gateway can see (mechanisms as recorded, plus "USER", "APOP", "pop-before-smtp",
    /// "trusted-network") and the known `users`.
    ///
    /// Only rules in force at `now` take part. A rule restricted to networks or listeners
    /// covers its share and leaves the rest to later rules, which are then shown with an
    /// "except" qualifier. A mechanism whose class depends on TLS (PLAIN, LOGIN, USER, the
    /// bearer tokens) is assessed both with and without TLS. Trusted-network relays have no
    /// user. A rule not yet in force shows what it will cover from its start.
    /// `can_use(user, method)` says whether a user's stored credentials serve a method (users
    /// who cannot use a method are not listed under it).
    pub fn coverage(
        &self,
        now: SystemTime,
        methods: &[&str],
        users: &[String],
        can_use: &dyn Fn(&str, &str) -> bool,
    ) -> Vec<Coverage> {
        self.rules
            .iter()
            .enumerate()
            .map(|(index, rule)| {
                let (status, at) = match (rule.from, rule.until) {
                    (Some(f), _) if now < f => (InForce::NotYet(f), Some(f)),
                    (_, Some(u)) if now >= u => (InForce::Expired, None),
                    _ => (InForce::Today, Some(now)),
                };
                let lines = at
                    .map(|at| self.lines_for(index, at, methods, users, can_use))
                    .unwrap_or_default();
                Coverage {
                    name: rule.name.clone(),
                    action: rule.action,
                    dry_run: rule.dry_run,
                    status,
                    lines,
                }
            })
            .collect()
    }

    /// The coverage lines of rule `index` at `at`.
    fn lines_for(
        &self,
        index: usize,
        at: SystemTime,
        methods: &[&str],
        users: &[String],
        can_use: &dyn Fn(&str, &str) -> bool,
    ) -> Vec<CoverageLine> {
        let mut lines: Vec<CoverageLine> = Vec::new();
        for &method in methods {
            let relay = is_relay(method);
            let variants: &[bool] = if classify(method, true) != classify(method, false) {
                &[true, false]
            } else {
                &[true]
            };
            for &tls in variants {
                let class = classify(method, tls);
                let subjects: Vec<Option<&str>> = if method.eq_ignore_ascii_case("trusted-network")
                {
                    vec![None]
                } else {
                    users
                        .iter()
                        .filter(|u| can_use(u, method))
                        .map(|u| Some(u.as_str()))
                        .collect()
                };
                for subject in subjects {
                    let Some(qualifier) = self.share_of(index, at, method, class, subject) else {
                        continue;
                    };
                    let tls_note = match (relay, variants.len()) {
                        (false, 2) if tls => Some("with TLS"),
                        (false, 2) => Some("without TLS"),
                        _ => None,
                    };
                    let existing = lines.iter_mut().find(|l| {
                        l.mechanism == method && l.class == class && l.qualifier == qualifier
                    });
                    match existing {
                        Some(l) => l.users.extend(subject.map(str::to_owned)),
                        None => lines.push(CoverageLine {
                            mechanism: method.to_owned(),
                            class,
                            tls: tls_note,
                            users: subject.map(str::to_owned).into_iter().collect(),
                            qualifier,
                        }),
                    }
                }
            }
        }
        lines
    }

    /// Whether rule `index` decides some attempts with `method` by `user` at `at`, and if so
    /// under which qualifier ("" when it decides all of them).
    fn share_of(
        &self,
        index: usize,
        at: SystemTime,
        method: &str,
        class: Class,
        user: Option<&str>,
    ) -> Option<String> {
        let roles = roles_for(method);
        let mut exceptions: Vec<String> = Vec::new();
        for (i, rule) in self.rules.iter().enumerate() {
            let listeners_apply = rule.listeners.is_empty()
                || rule.listeners.iter().any(|l| roles.contains(&l.as_str()));
            if !(rule.in_force(at)
                && listeners_apply
                && rule.names_user(user)
                && rule.matches_mechanism(method, class))
            {
                continue;
            }
            let restriction = rule.restriction(roles);
            if i == index {
                let mut parts: Vec<String> = restriction
                    .map(|r| format!("{r} only"))
                    .into_iter()
                    .collect();
                parts.extend(exceptions.iter().map(|e| format!("except {e}")));
                return Some(parts.join("; "));
            }
            match restriction {
                Some(r) => exceptions.push(r),
                // An unrestricted earlier rule decides every such attempt.
                None => return None,
            }
        }
        None
    }
}

/// Whether a rule is in force on a given day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InForce {
    /// In force at the time asked about.
    Today,
    /// Starts at this time.
    NotYet(SystemTime),
    /// Its window has ended.
    Expired,
}

/// What one rule covers, for `mailgate check-config`.
#[derive(Debug, Clone, PartialEq)]
pub struct Coverage {
    /// The rule's name.
    pub name: String,
    /// Its action.
    pub action: Action,
    /// Whether it only audits what it would refuse.
    pub dry_run: bool,
    /// Whether it is in force.
    pub status: InForce,
    /// What it decides: today, or from its start if not yet in force.
    pub lines: Vec<CoverageLine>,
}

/// One mechanism (and TLS state) a rule decides, for which users, under which qualifier.
#[derive(Debug, Clone, PartialEq)]
pub struct CoverageLine {
    /// The mechanism or relay kind as recorded.
    pub mechanism: String,
    /// Its class in this line.
    pub class: Class,
    /// "with TLS" / "without TLS" for mechanisms whose class depends on it.
    pub tls: Option<&'static str>,
    /// The users (empty for trusted-network relays, which have none).
    pub users: Vec<String>,
    /// "" when the rule decides every such attempt, else e.g. "from 10.0.0.0/8 only" or
    /// "except from 10.0.0.0/8" (an earlier rule decides those).
    pub qualifier: String,
}

impl std::fmt::Display for Coverage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mode = if self.dry_run { " (dry run)" } else { "" };
        let when = match self.status {
            InForce::Today => "in force today".to_string(),
            InForce::NotYet(t) => format!(
                "not yet in force (from {})",
                humantime::format_rfc3339_seconds(t)
            ),
            InForce::Expired => "expired".to_string(),
        };
        write!(
            f,
            "policy \"{}\": {}{mode}, {when}",
            self.name,
            self.action.as_str()
        )?;
        let prefix = match self.status {
            InForce::NotYet(_) => "from then: ",
            _ => "",
        };
        if self.lines.is_empty() {
            let why = match self.status {
                InForce::Expired => "nothing (expired)",
                _ => "nothing (earlier rules decide everything it names)",
            };
            write!(f, "\n  {why}")?;
        }
        for line in &self.lines {
            write!(f, "\n  {prefix}{line}")?;
        }
        Ok(())
    }
}

impl std::fmt::Display for CoverageLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}", self.mechanism, self.class)?;
        if let Some(tls) = self.tls {
            write!(f, ", {tls}")?;
        }
        let who = if self.users.is_empty() {
            "any relay (no user)".to_string()
        } else {
            self.users.join(", ")
        };
        write!(f, "): {who}")?;
        if !self.qualifier.is_empty() {
            write!(f, " ({})", self.qualifier)?;
        }
        Ok(())
    }
}

/// Whether `method` is an address-based relay authorization.
fn is_relay(method: &str) -> bool {
    method.eq_ignore_ascii_case("pop-before-smtp") || method.eq_ignore_ascii_case("trusted-network")
}

/// The listener roles on which `method` can be used.
fn roles_for(method: &str) -> &'static [&'static str] {
    if is_relay(method) {
        &["smtp", "submission", "submissions"]
    } else if method.eq_ignore_ascii_case("USER") || method.eq_ignore_ascii_case("APOP") {
        &["pop3", "pop3s"]
    } else {
        &["smtp", "submission", "submissions", "pop3", "pop3s"]
    }
}

impl Rule {
    /// The part of the attempts with a method usable on `roles` that this rule's networks
    /// and listeners limit it to, e.g. "from 10.0.0.0/8 on pop3"; `None` if unlimited.
    fn restriction(&self, roles: &[&str]) -> Option<String> {
        let mut parts = Vec::new();
        if !self.networks.is_empty() {
            let nets: Vec<String> = self.networks.iter().map(|n| n.to_string()).collect();
            parts.push(format!("from {}", nets.join(", ")));
        }
        let listeners: Vec<&str> = roles
            .iter()
            .copied()
            .filter(|r| self.listeners.iter().any(|l| l == r))
            .collect();
        if !self.listeners.is_empty() && listeners.len() < roles.len() {
            parts.push(format!("on {}", listeners.join(", ")));
        }
        (!parts.is_empty()).then(|| parts.join(" "))
    }
}
