//! Value checks for the `[auth]`, `[pop_before_smtp]`, `[auth.oauth]` and `[auth.external]`
//! sections: mechanisms, the users file, plaintext networks, the relay window, the token
//! issuers, and the client-certificate CA.

use std::path::{Path, PathBuf};

use super::Checker;
use crate::config::file::{self, File};
use crate::config::{
    AuthConfig, CertIdentity, ExternalConfig, Introspection, OAuthConfig, PopBeforeSmtp, SmtpRole,
    Throttle,
};

/// Whether `s` can go into a DIGEST-MD5 quoted string without escapes, and into a log line:
/// up to 255 visible ASCII characters other than `"` and `\`.
fn digest_token(s: &str) -> bool {
    s.len() <= 255
        && s.bytes()
            .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
}

impl Checker<'_> {
    /// `[auth] digest_md5_realm`, or `hostname` when unset.
    fn digest_realm(&mut self, realm: Option<&str>, hostname: &str) -> String {
        match realm {
            Some(r) if !digest_token(r) => {
                self.bad(
                    "auth.digest_md5_realm",
                    None,
                    format!("\"{r}\" is not a usable realm"),
                    "write up to 255 visible ASCII characters other than '\"' and '\\', \
                     e.g. \"example.org\"",
                );
                r.to_owned()
            }
            Some(r) => r.to_owned(),
            None => hostname.to_owned(),
        }
    }

    /// `hostname` and `[auth] digest_md5_hosts`, lower case, each once.
    fn digest_hosts(&mut self, hosts: &[String], hostname: &str) -> Vec<String> {
        let mut out = vec![hostname.to_ascii_lowercase()];
        for (i, host) in hosts.iter().enumerate() {
            if host.is_empty() || !digest_token(host) || host.contains('/') {
                self.bad(
                    "auth.digest_md5_hosts",
                    Some(i),
                    format!("\"{host}\" is not a host name"),
                    "write the name clients connect to, e.g. \"mail.example.org\" or \
                     \"192.0.2.25\"",
                );
            }
            let host = host.to_ascii_lowercase();
            if !out.contains(&host) {
                out.push(host);
            }
        }
        out
    }

    pub(super) fn auth(&mut self, base: &Path, f: &File) -> AuthConfig {
        let a = &f.auth;
        let mut mechanisms: Vec<String> = Vec::new();
        for (i, name) in a.mechanisms.iter().enumerate() {
            match crate::sasl::find(name) {
                Some(d) if mechanisms.iter().any(|m| m == d.name) => self.bad(
                    "auth.mechanisms",
                    Some(i),
                    format!("{} is listed twice", d.name),
                    "list each mechanism once",
                ),
                Some(d) => mechanisms.push(d.name.to_string()),
                None if name.eq_ignore_ascii_case("GSSAPI") => self.bad(
                    "auth.mechanisms",
                    Some(i),
                    "GSSAPI is not in this build of mailgate".into(),
                    super::gssapi::REBUILD,
                ),
                None => {
                    let known: Vec<&str> = crate::sasl::MECHANISMS.iter().map(|d| d.name).collect();
                    self.bad(
                        "auth.mechanisms",
                        Some(i),
                        format!("\"{name}\" is not a known SASL mechanism"),
                        format!("known: {}", known.join(", ")),
                    );
                }
            }
        }
        for (i, name) in mechanisms.iter().enumerate() {
            let bearer = crate::sasl::find(name).is_some_and(|d| d.bearer_token);
            if bearer && a.oauth.is_none() {
                self.bad(
                    "auth.mechanisms",
                    Some(i),
                    format!("{name} needs token validation, and [auth.oauth] is not set"),
                    "add an [auth.oauth] table (jwks_file, issuer, audience), or remove it",
                );
            }
            if name == "EXTERNAL" && a.external.is_none() {
                self.bad(
                    "auth.mechanisms",
                    Some(i),
                    "EXTERNAL needs client certificates, and [auth.external] is not set".into(),
                    "add an [auth.external] table with the devices' CA in ca_file, or remove it",
                );
            }
        }
        let gssapi = self.gssapi(base, f, &mechanisms);
        let t = &a.throttle;
        let throttle = Throttle {
            free_failures: t.free_failures,
            base_delay: self.delay("auth.throttle.base_delay", &t.base_delay),
            max_delay: self.delay("auth.throttle.max_delay", &t.max_delay),
            window: self.duration("auth.throttle.window", None, &t.window),
            ipv6_prefix: self.prefix("auth.throttle.ipv6_prefix", t.ipv6_prefix),
            known_address_window: self.duration(
                "auth.throttle.known_address_window",
                None,
                &t.known_address_window,
            ),
        };
        if throttle.base_delay > throttle.max_delay {
            self.bad(
                "auth.throttle.base_delay",
                None,
                "is longer than auth.throttle.max_delay".into(),
                "make max_delay at least base_delay",
            );
        }
        self.at_least("auth.max_failures", a.max_failures.into(), 1);
        AuthConfig {
            users_file: self.path(base, "auth.users_file", &a.users_file),
            mechanisms,
            insecure_plaintext_networks: self.nets(
                "auth.insecure_plaintext_networks",
                &a.insecure_plaintext_networks,
            ),
            apop: a.apop,
            failure_delay: self.delay("auth.failure_delay", &a.failure_delay),
            max_failures: a.max_failures,
            throttle,
            ntlm_domain: match &a.ntlm_domain {
                Some(d)
                    if d.is_empty()
                        || d.len() > 15
                        || !d.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') =>
                {
                    self.bad(
                        "auth.ntlm_domain",
                        None,
                        format!("\"{d}\" is not a NetBIOS domain name"),
                        "write 1 to 15 letters, digits or '-', e.g. \"EXAMPLE\"",
                    );
                    d.to_ascii_uppercase()
                }
                Some(d) => d.to_ascii_uppercase(),
                None => f
                    .hostname
                    .split('.')
                    .next()
                    .unwrap_or_default()
                    .chars()
                    .take(15)
                    .collect::<String>()
                    .to_ascii_uppercase(),
            },
            ntlm_v1: a.ntlm_v1,
            digest_md5_realm: self.digest_realm(a.digest_md5_realm.as_deref(), &f.hostname),
            digest_md5_hosts: self.digest_hosts(&a.digest_md5_hosts, &f.hostname),
            derive_on_login: a.derive_on_login,
            oauth: a.oauth.as_ref().map(|o| self.oauth(base, o)),
            external: a.external.as_ref().map(|e| self.external(base, e)),
            upstream: match (&a.upstream, &a.ldap) {
                (Some(_), Some(_)) => {
                    self.bad(
                        "auth.ldap",
                        None,
                        "and [auth.upstream] are both set".into(),
                        "keep one: the old server's login, or its directory",
                    );
                    None
                }
                (Some(u), None) => Some(self.auth_upstream(base, u)),
                (None, Some(l)) => Some(self.auth_ldap(base, l)),
                (None, None) => None,
            },
            gssapi,
        }
    }

    pub(super) fn pop_before_smtp(&mut self, base: &Path, state: &Path, f: &File) -> PopBeforeSmtp {
        let p = &f.pop_before_smtp;
        let mut listeners = Vec::new();
        for (i, name) in p.listeners.iter().enumerate() {
            let role = match name.as_str() {
                "smtp" => SmtpRole::Smtp,
                "submission" => SmtpRole::Submission,
                "submissions" => SmtpRole::Submissions,
                _ => {
                    self.bad(
                        "pop_before_smtp.listeners",
                        Some(i),
                        format!("\"{name}\" is not an SMTP listener role"),
                        "write \"smtp\", \"submission\" or \"submissions\"",
                    );
                    continue;
                }
            };
            if !listeners.contains(&role) {
                listeners.push(role);
            }
        }
        self.at_least("pop_before_smtp.max_entries", p.max_entries as u64, 1);
        let warn = p.shared_address_warn_users as u64;
        self.at_least("pop_before_smtp.shared_address_warn_users", warn, 1);
        PopBeforeSmtp {
            enabled: p.enabled,
            ttl: self.duration("pop_before_smtp.ttl", None, &p.ttl),
            ipv6_prefix: self.prefix("pop_before_smtp.ipv6_prefix", p.ipv6_prefix),
            listeners,
            max_entries: p.max_entries,
            restrict_sender: p.restrict_sender,
            shared_address_warn_users: p.shared_address_warn_users,
            snapshot: match &p.snapshot {
                Some(s) => self.path(base, "pop_before_smtp.snapshot", s),
                None => state.join("allowlist.json"),
            },
        }
    }

    fn oauth(&mut self, base: &Path, o: &file::OAuthFile) -> OAuthConfig {
        let key = "auth.oauth";
        let path = |ck: &mut Self, name: &str, p: &Option<PathBuf>| {
            p.as_ref()
                .map(|p| ck.path(base, &format!("{key}.{name}"), p))
        };
        let jwks_file = path(self, "jwks_file", &o.jwks_file);
        let hs256_secret_file = path(self, "hs256_secret_file", &o.hs256_secret_file);
        let mut algorithms = Vec::new();
        for (i, a) in o.algorithms.iter().enumerate() {
            let upper = a.to_ascii_uppercase();
            if !["RS256", "ES256", "HS256"].contains(&upper.as_str()) {
                self.bad(
                    &format!("{key}.algorithms"),
                    Some(i),
                    format!("\"{a}\" is not a supported algorithm"),
                    "write \"RS256\", \"ES256\" or \"HS256\"",
                );
            } else if !algorithms.contains(&upper) {
                algorithms.push(upper);
            }
        }
        if algorithms.iter().any(|a| a == "HS256") && hs256_secret_file.is_none() {
            self.bad(
                &format!("{key}.hs256_secret_file"),
                None,
                "is required when HS256 is accepted".into(),
                "write the path of a file holding the shared secret",
            );
        }
        if algorithms.iter().any(|a| a != "HS256")
            && jwks_file.is_none()
            && o.introspection_url.is_none()
        {
            self.bad(
                &format!("{key}.jwks_file"),
                None,
                "is required for RS256/ES256 tokens".into(),
                "write the path of the issuer's JWKS file, or list only \"HS256\"",
            );
        }
        if o.audience.is_empty() {
            self.bad(
                &format!("{key}.audience"),
                None,
                "is empty: tokens issued for any other service would be accepted".into(),
                "write the audience your tokens carry, e.g. audience = [\"mailgate\"]",
            );
        }
        if o.user_claim.is_empty() {
            self.bad(
                &format!("{key}.user_claim"),
                None,
                "is empty".into(),
                "write the claim naming the user, e.g. \"sub\" or \"email\"",
            );
        }
        let introspection = o.introspection_url.as_ref().map(|url| {
            self.url(&format!("{key}.introspection_url"), url);
            Introspection {
                url: url.clone(),
                client_id: o.introspection_client_id.clone(),
                secret_file: path(
                    self,
                    "introspection_secret_file",
                    &o.introspection_secret_file,
                ),
                ca_file: path(self, "introspection_ca_file", &o.introspection_ca_file),
                danger_accept_invalid_certs: o.danger_accept_invalid_certs,
            }
        });
        OAuthConfig {
            jwks_file,
            hs256_secret_file,
            issuer: o.issuer.clone(),
            audience: o.audience.clone(),
            algorithms,
            clock_skew: self.delay(&format!("{key}.clock_skew"), &o.clock_skew),
            user_claim: o.user_claim.clone(),
            required_scope: o.required_scope.clone(),
            introspection,
        }
    }

    fn external(&mut self, base: &Path, e: &file::ExternalFile) -> ExternalConfig {
        let key = "auth.external";
        let ca_file = match &e.ca_file {
            Some(p) => self.path(base, &format!("{key}.ca_file"), p),
            None => {
                self.bad(
                    key,
                    None,
                    "has no ca_file".into(),
                    "write the PEM file of the CA that issues the devices' certificates, \
                     e.g. ca_file = \"devices-ca.pem\"",
                );
                PathBuf::new()
            }
        };
        let identity = match e.identity.as_str() {
            "cn" => CertIdentity::Cn,
            "san-email" => CertIdentity::SanEmail,
            "san-dns" => CertIdentity::SanDns,
            other => {
                self.bad(
                    &format!("{key}.identity"),
                    None,
                    format!("\"{other}\" is not a certificate identity"),
                    "write \"cn\", \"san-email\" or \"san-dns\"",
                );
                CertIdentity::Cn
            }
        };
        let mut map = std::collections::BTreeMap::new();
        for (from, to) in &e.map {
            let lower = from.to_lowercase();
            if from.is_empty() || to.is_empty() {
                self.bad(
                    &format!("{key}.map"),
                    None,
                    format!("\"{from}\" = \"{to}\" has an empty side"),
                    "map a certificate identity to a user name, e.g. \"scanner-2\" = \"office\"",
                );
            } else if map.insert(lower, to.clone()).is_some() {
                self.bad(
                    &format!("{key}.map"),
                    None,
                    format!("\"{from}\" is mapped twice (identities are compared ignoring case)"),
                    "keep one entry per identity",
                );
            }
        }
        ExternalConfig {
            ca_file,
            identity,
            map,
            crl_file: e
                .crl_file
                .as_ref()
                .map(|p| self.path(base, &format!("{key}.crl_file"), p)),
        }
    }
}
