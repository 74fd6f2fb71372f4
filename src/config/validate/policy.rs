//! Value checks for the `[[policy]]` rules: matchers, actions and their dates.

use super::Checker;
use crate::config::file::File;

impl Checker<'_> {
    pub(super) fn policy(&mut self, f: &File) -> crate::policy::Policy {
        let mut rules = Vec::new();
        for (i, p) in f.policy.iter().enumerate() {
            let key = format!("policy[{i}]");
            let action = match crate::policy::Action::parse(&p.action) {
                Some(a) => a,
                None => {
                    self.bad(
                        &format!("{key}.action"),
                        None,
                        if p.action.is_empty() {
                            "is missing".to_string()
                        } else {
                            format!("\"{}\" is not a policy action", p.action)
                        },
                        "write \"allow\", \"warn\", \"brownout\", \"transition\" or \"deny\"",
                    );
                    continue;
                }
            };
            let mut classes = Vec::new();
            for (j, c) in p.classes.iter().enumerate() {
                match crate::audit::Class::parse(c) {
                    Some(c) => classes.push(c),
                    None => self.bad(
                        &format!("{key}.classes"),
                        Some(j),
                        format!("\"{c}\" is not a class"),
                        "write \"insecure\", \"weak\", \"basic\" or \"modern\"",
                    ),
                }
            }
            let known_listeners = ["smtp", "submission", "submissions", "pop3", "pop3s"];
            for (j, l) in p.listeners.iter().enumerate() {
                if !known_listeners.contains(&l.as_str()) {
                    self.bad(
                        &format!("{key}.listeners"),
                        Some(j),
                        format!("\"{l}\" is not a listener role"),
                        "write smtp, submission, submissions, pop3 or pop3s",
                    );
                }
            }
            for (j, m) in p.mechanisms.iter().enumerate() {
                if !crate::policy::known_mechanism(m) {
                    let fixed = m.replace('_', "-");
                    let hint = if crate::policy::known_mechanism(&fixed) {
                        format!("write \"{}\"", fixed.to_ascii_uppercase())
                    } else {
                        format!(
                            "write one of {}",
                            crate::policy::known_mechanisms().join(", ")
                        )
                    };
                    self.bad(
                        &format!("{key}.mechanisms"),
                        Some(j),
                        format!("\"{m}\" is not a mechanism or relay kind (the rule would never match it)"),
                        hint,
                    );
                }
            }
            if p.notify
                && !matches!(
                    action,
                    crate::policy::Action::Warn | crate::policy::Action::Brownout
                )
            {
                self.bad(
                    &format!("{key}.notify"),
                    None,
                    format!(
                        "only applies to action = \"warn\" or \"brownout\", not \"{}\"",
                        action.as_str()
                    ),
                    "remove notify, or warn first (a warn rule with notify before the deny)",
                );
            }
            let share = match (action, p.share) {
                (crate::policy::Action::Brownout, Some(s)) if (0.0..=1.0).contains(&s) => s,
                (crate::policy::Action::Brownout, Some(s)) => {
                    self.bad(
                        &format!("{key}.share"),
                        None,
                        format!("{s} is not between 0 and 1"),
                        "write the share refused, e.g. 0.25 for one attempt in four",
                    );
                    0.0
                }
                (crate::policy::Action::Brownout, None) => {
                    self.bad(
                        &format!("{key}.share"),
                        None,
                        "is required for a brownout".into(),
                        "write the share refused, e.g. share = 0.25",
                    );
                    0.0
                }
                (_, Some(_)) => {
                    self.bad(
                        &format!("{key}.share"),
                        None,
                        "only applies to action = \"brownout\"".into(),
                        "remove share, or set action = \"brownout\"",
                    );
                    0.0
                }
                (_, None) => 0.0,
            };
            let from = p
                .from
                .as_ref()
                .and_then(|d| self.date(&format!("{key}.from"), d));
            let until = p
                .until
                .as_ref()
                .and_then(|d| self.date(&format!("{key}.until"), d));
            if let (Some(a), Some(b)) = (from, until)
                && b <= a
            {
                self.bad(
                    &format!("{key}.until"),
                    None,
                    "is not after from".into(),
                    "make the window end after it starts",
                );
            }
            if let Some(h) = &p.header {
                let ok = h.split_once(':').is_some_and(|(name, value)| {
                    !name.is_empty()
                        && name.bytes().all(|b| b.is_ascii_graphic() && b != b':')
                        && !value.trim().is_empty()
                        && value
                            .bytes()
                            .all(|b| b == b' ' || b == b'\t' || b.is_ascii_graphic())
                });
                if !ok {
                    self.bad(
                        &format!("{key}.header"),
                        None,
                        "is not a single header line".into(),
                        "write e.g. \"X-Auth-Warning: CRAM-MD5 will be refused from 2027-01-01\"",
                    );
                }
            }
            rules.push(crate::policy::Rule {
                name: p.name.clone().unwrap_or_else(|| key.clone()),
                mechanisms: p
                    .mechanisms
                    .iter()
                    .map(|m| m.to_ascii_uppercase())
                    .collect(),
                classes,
                users: p.users.iter().map(|u| u.to_lowercase()).collect(),
                networks: self.nets(&format!("{key}.networks"), &p.networks),
                listeners: p.listeners.clone(),
                from,
                until,
                action,
                share,
                dry_run: p.dry_run,
                message: p.message.clone(),
                url: p.url.clone(),
                header: p.header.clone(),
                notify: p.notify,
                refuse_from: p.refuse_from.clone(),
            });
        }
        crate::policy::Policy { rules }
    }

    /// A date ("2027-01-01", midnight UTC) or an RFC 3339 time.
    fn date(&mut self, key: &str, text: &str) -> Option<std::time::SystemTime> {
        let full = if text.len() == 10 {
            format!("{text}T00:00:00Z")
        } else {
            text.to_string()
        };
        match humantime::parse_rfc3339_weak(full.trim_end_matches('Z')) {
            Ok(t) if full.ends_with('Z') || !full.contains('+') => Some(t),
            _ => {
                self.bad(
                    key,
                    None,
                    format!("\"{text}\" is not a date"),
                    "write a date such as \"2027-01-01\" or \"2027-01-01T08:00:00Z\" (UTC)",
                );
                None
            }
        }
    }
}
