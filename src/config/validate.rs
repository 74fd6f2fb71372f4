//! Turns the text of `mailgate.toml` into a [`Config`], collecting every problem with its line.
//!
//! Three passes: TOML syntax (all recoverable errors), the serde mirror (every unknown key
//! and wrong type, see `file.rs`), then value checks (addresses, networks, durations, names, cross-key rules).
//! Lines come from the spans of the parsed document: each check looks its key up again in
//! the tree, so the mirror can keep plain types. Risky-but-valid settings are `warnings.rs`.

use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use toml::de::{DeTable, DeValue};

use super::file::{self, File, SectionError};
use super::{
    AuditConfig, AuthConfig, Config, ConfigErrors, DeliveryConfig, Grant, Introspection, Limits,
    Listeners, Notices, OAuthConfig, PopBeforeSmtp, Problem, RelayConfig, SmtpRole, Throttle,
    TlsConfig, Upstream, UpstreamAuth, UpstreamOAuth, UpstreamTls,
};

/// Longest accepted duration text; durations are short, this only bounds the parser.
const MAX_DURATION_TEXT: usize = 64;

/// Longest `[delivery.upstream] keep_idle`: RFC 5321 §4.5.3.2.7 lets a server drop a client
/// after 5 minutes of silence.
const MAX_KEEP_IDLE: Duration = Duration::from_secs(300);

/// Longest `[delivery] commit_window`: every message under load may wait this long before
/// its fsync starts, so more than a few milliseconds only adds latency.
const MAX_COMMIT_WINDOW: Duration = Duration::from_millis(10);

/// Parses, mirrors and checks `text`; see [`Config::from_toml`].
pub(super) fn build(text: &str, path: &Path) -> Result<Config, ConfigErrors> {
    let mut ck = Checker {
        file: path.to_path_buf(),
        text,
        root: None,
        problems: Vec::new(),
    };
    let (root, syntax) = DeTable::parse_recoverable(text);
    if !syntax.is_empty() {
        for e in syntax {
            let span = e.span();
            ck.push(
                span,
                "",
                e.message().trim().to_string(),
                "fix the TOML syntax".to_string(),
            );
        }
        return Err(ck.finish());
    }
    ck.root = Some(root.get_ref());
    let (mirror, errors) = File::from_table(root.get_ref());
    for e in errors {
        ck.section_error(e);
    }
    let config = ck.config(&mirror, path);
    if ck.problems.is_empty() {
        Ok(config)
    } else {
        Err(ck.finish())
    }
}

/// Collects problems while building the typed config.
struct Checker<'a> {
    file: PathBuf,
    text: &'a str,
    root: Option<&'a DeTable<'a>>,
    problems: Vec<Problem>,
}

impl<'a> Checker<'a> {
    fn finish(mut self) -> ConfigErrors {
        // Problems with a line first, in line order; the sort is stable.
        self.problems.sort_by_key(|p| p.line.unwrap_or(usize::MAX));
        ConfigErrors {
            problems: self.problems,
        }
    }

    fn push(&mut self, span: Option<Range<usize>>, key: &str, message: String, hint: String) {
        let line = span.map(|s| line_of(self.text, s.start));
        let key = key.to_string();
        self.problems.push(Problem {
            file: self.file.clone(),
            line,
            key,
            message,
            hint,
        });
    }

    /// Reports a problem at the value of `key` (dotted), or at element `index` of it.
    fn bad(&mut self, key: &str, index: Option<usize>, message: String, hint: impl Into<String>) {
        let span = match index {
            Some(i) => self.elem_span(key, i).or_else(|| self.span(key)),
            None => self.span(key),
        };
        self.push(span, key, message, hint.into());
    }

    /// The span of the value of a dotted key, if the file has it.
    fn span(&self, key: &str) -> Option<Range<usize>> {
        lookup(self.root?, key).map(|v| v.span())
    }

    fn elem_span(&self, key: &str, index: usize) -> Option<Range<usize>> {
        let value = lookup(self.root?, key)?;
        Some(value.get_ref().as_array()?.get(index)?.span())
    }

    fn section_error(&mut self, e: SectionError) {
        match e {
            SectionError::UnknownKey { key, span } => {
                let known = file::TOP_LEVEL_KEYS.join(", ");
                let message = format!("unknown key `{key}`");
                self.push(
                    Some(span),
                    &key,
                    message,
                    format!("known top-level keys: {known}"),
                );
            }
            SectionError::Invalid { section, error } => {
                let span = error.span();
                let key = match (&span, self.root) {
                    (Some(s), Some(root)) => key_at(root, s.start).unwrap_or(section.into()),
                    _ => section.to_string(),
                };
                let message = error.message().trim().to_string();
                let hint = serde_hint(&key, &message);
                self.push(span, &key, message, hint);
            }
        }
    }

    /// Builds the typed config from the mirror, recording every bad value.
    fn config(&mut self, f: &File, path: &Path) -> Config {
        let source = match std::path::absolute(path) {
            Ok(p) => p,
            Err(e) => {
                let message = format!("cannot make the path absolute: {e}");
                self.push(None, "", message, String::new());
                path.to_path_buf()
            }
        };
        let base = source.parent().map(Path::to_path_buf).unwrap_or_default();
        let hostname = self
            .domain("hostname", None, &f.hostname)
            .unwrap_or_default();
        let state_dir = self.path(&base, "state_dir", &f.state_dir);
        let tls = self.tls(&base, f);
        let listeners = self.listeners(f);
        let auth = self.auth(&base, f);
        let pop_before_smtp = self.pop_before_smtp(&base, &state_dir, f);
        let relay = self.relay(f);
        let delivery = self.delivery(&base, &state_dir, f);
        let limits = self.limits(f);
        let audit = f.audit.enabled.then(|| {
            self.at_least("audit.max_size", f.audit.max_size, 4096);
            AuditConfig {
                path: match &f.audit.path {
                    Some(p) => self.path(&base, "audit.path", p),
                    None => state_dir.join("audit.log"),
                },
                max_size: f.audit.max_size,
                keep: f.audit.keep,
            }
        });
        let admin_token_file = f
            .admin
            .token_file
            .as_ref()
            .map(|p| self.path(&base, "admin.token_file", p));
        if let Some(a) = listeners.admin
            && !crate::canonical_ip(a.ip()).is_loopback()
            && admin_token_file.is_none()
        {
            self.bad(
                "listeners.admin",
                None,
                format!("{a} is not a loopback address and [admin] token_file is not set"),
                "listen on 127.0.0.1, or set [admin] token_file to require a bearer token",
            );
        }
        let policy = std::sync::Arc::new(self.policy(f));
        let notices = Notices {
            interval: self.duration("notices.interval", None, &f.notices.interval),
            digest_to: f.notices.digest_to.as_ref().map(|u| u.to_lowercase()),
            digest_interval: self.duration(
                "notices.digest_interval",
                None,
                &f.notices.digest_interval,
            ),
        };
        Config {
            policy,
            notices,
            source: Some(source),
            hostname,
            state_dir,
            tls,
            listeners,
            auth,
            pop_before_smtp,
            relay,
            delivery,
            limits,
            audit,
            admin_token_file,
            admin_tls: f.admin.tls,
        }
    }

    fn tls(&mut self, base: &Path, f: &File) -> TlsConfig {
        let cert = f.tls.cert.as_ref().map(|p| self.path(base, "tls.cert", p));
        let key = f.tls.key.as_ref().map(|p| self.path(base, "tls.key", p));
        if cert.is_some() != key.is_some() {
            let (have, missing) = if cert.is_some() {
                ("cert", "key")
            } else {
                ("key", "cert")
            };
            self.bad(
                &format!("tls.{have}"),
                None,
                format!("is set but tls.{missing} is not"),
                "set both, or neither for a self-signed certificate".to_string(),
            );
        }
        TlsConfig { cert, key }
    }

    fn listeners(&mut self, f: &File) -> Listeners {
        let l = &f.listeners;
        let out = Listeners {
            pop3: self.addrs("listeners.pop3", &l.pop3),
            pop3s: self.addrs("listeners.pop3s", &l.pop3s),
            smtp: self.addrs("listeners.smtp", &l.smtp),
            submission: self.addrs("listeners.submission", &l.submission),
            submissions: self.addrs("listeners.submissions", &l.submissions),
            control: l
                .control
                .as_ref()
                .and_then(|a| self.addr("listeners.control", None, a)),
            admin: l
                .admin
                .as_ref()
                .and_then(|a| self.addr("listeners.admin", None, a)),
        };
        if let Some(c) = out.control
            && !c.ip().is_loopback()
        {
            self.bad(
                "listeners.control",
                None,
                format!("{c} is not a loopback address; the control socket has no login"),
                "write e.g. \"127.0.0.1:2526\"",
            );
        }
        let all = [&l.pop3, &l.pop3s, &l.smtp, &l.submission, &l.submissions];
        if all.iter().all(|v| v.is_empty()) {
            self.bad(
                "listeners",
                None,
                "no listener is configured".into(),
                "set at least one of pop3, pop3s, smtp, submission, submissions, e.g. \
                 pop3 = [\"127.0.0.1:1110\"]",
            );
        }
        let mut seen: Vec<SocketAddr> = Vec::new();
        let roles = [
            ("listeners.pop3", &out.pop3),
            ("listeners.pop3s", &out.pop3s),
            ("listeners.smtp", &out.smtp),
            ("listeners.submission", &out.submission),
            ("listeners.submissions", &out.submissions),
        ];
        for (key, addrs) in roles {
            for (i, a) in addrs.iter().enumerate() {
                // Port 0 asks the system for a free port, so it may repeat.
                if a.port() != 0 && seen.contains(a) {
                    self.bad(
                        key,
                        Some(i),
                        format!("{a} is used twice"),
                        "give each a port",
                    );
                }
                seen.push(*a);
            }
        }
        out
    }

    fn auth(&mut self, base: &Path, f: &File) -> AuthConfig {
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
        }
        let t = &a.throttle;
        let throttle = Throttle {
            free_failures: t.free_failures,
            base_delay: self.delay("auth.throttle.base_delay", &t.base_delay),
            max_delay: self.delay("auth.throttle.max_delay", &t.max_delay),
            window: self.duration("auth.throttle.window", None, &t.window),
            ipv6_prefix: self.prefix("auth.throttle.ipv6_prefix", t.ipv6_prefix),
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
            derive_on_login: a.derive_on_login,
            oauth: a.oauth.as_ref().map(|o| self.oauth(base, o)),
        }
    }

    fn pop_before_smtp(&mut self, base: &Path, state: &Path, f: &File) -> PopBeforeSmtp {
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

    fn relay(&mut self, f: &File) -> RelayConfig {
        let mut local_domains: Vec<String> = Vec::new();
        for (i, d) in f.relay.local_domains.iter().enumerate() {
            if let Some(d) = self.domain("relay.local_domains", Some(i), d)
                && !local_domains.contains(&d)
            {
                local_domains.push(d);
            }
        }
        RelayConfig {
            local_domains,
            trusted_networks: self.nets("relay.trusted_networks", &f.relay.trusted_networks),
        }
    }

    fn delivery(&mut self, base: &Path, state: &Path, f: &File) -> DeliveryConfig {
        let d = &f.delivery;
        let mut under = |key: &str, given: &Option<PathBuf>, name: &str| match given {
            Some(p) => self.path(base, key, p),
            None => state.join(name),
        };
        DeliveryConfig {
            maildir: under("delivery.maildir", &d.maildir, "maildir"),
            spool: under("delivery.spool", &d.spool, "spool"),
            dead_letter: under("delivery.dead_letter", &d.dead_letter, "dead-letter"),
            commit_window: self.commit_window(d.commit_window.as_deref()),
            upstream: d.upstream.as_ref().and_then(|u| self.upstream(base, u)),
        }
    }

    /// `[delivery] commit_window`: "0s" turns the wait off.
    fn commit_window(&mut self, text: Option<&str>) -> Duration {
        const KEY: &str = "delivery.commit_window";
        let window = match text.map(str::trim) {
            None => crate::spool::DEFAULT_COMMIT_WINDOW,
            Some("0" | "0s") => Duration::ZERO,
            Some(text) => self.duration(KEY, None, text),
        };
        if window > MAX_COMMIT_WINDOW {
            self.bad(
                KEY,
                None,
                format!(
                    "is longer than {}",
                    humantime::format_duration(MAX_COMMIT_WINDOW)
                ),
                "every message may wait this long for its fsync; write e.g. commit_window = \"500us\"",
            );
        }
        window
    }

    fn upstream(&mut self, base: &Path, u: &file::UpstreamFile) -> Option<Upstream> {
        let address = if u.address.is_empty() {
            self.bad(
                "delivery.upstream",
                None,
                "address is missing".into(),
                "write e.g. address = \"192.0.2.25:587\", or remove [delivery.upstream]",
            );
            None
        } else {
            self.addr("delivery.upstream.address", None, &u.address)
        };
        let tls = match u.tls.as_str() {
            "none" => UpstreamTls::None,
            "starttls" => UpstreamTls::Starttls,
            "tls" => UpstreamTls::Tls,
            other => {
                self.bad(
                    "delivery.upstream.tls",
                    None,
                    format!("\"{other}\" is not a TLS mode"),
                    "write \"starttls\" (port 587), \"tls\" (port 465) or \"none\"",
                );
                UpstreamTls::Starttls
            }
        };
        // With XOAUTH2/OAUTHBEARER the username stands alone (checked below).
        let token_auth = matches!(u.auth.as_str(), "xoauth2" | "oauthbearer");
        if !token_auth && u.username.is_some() != u.password.is_some() {
            self.bad(
                "delivery.upstream",
                None,
                "username and password must be set together".into(),
                "set both, or neither for no AUTH",
            );
        }
        if u.server_name.as_deref().is_some_and(str::is_empty) {
            self.bad(
                "delivery.upstream.server_name",
                None,
                "is empty".into(),
                "write the smarthost's certificate name, or remove the key to use its IP",
            );
        }
        let retry = u
            .retry
            .iter()
            .enumerate()
            .map(|(i, r)| self.duration("delivery.upstream.retry", Some(i), r))
            .collect();
        let command_timeout = self.duration(
            "delivery.upstream.command_timeout",
            None,
            &u.command_timeout,
        );
        // "0s" turns reuse off; any other value must be a positive duration.
        let keep_idle = match u.keep_idle.trim() {
            "0" | "0s" => Duration::ZERO,
            text => self.duration("delivery.upstream.keep_idle", None, text),
        };
        if keep_idle > MAX_KEEP_IDLE {
            self.bad(
                "delivery.upstream.keep_idle",
                None,
                format!(
                    "is longer than {}",
                    humantime::format_duration(MAX_KEEP_IDLE)
                ),
                "servers drop idle clients after a few minutes; write e.g. keep_idle = \"5s\"",
            );
        }
        let auth = match u.auth.as_str() {
            "auto" => UpstreamAuth::Auto,
            "plain" => UpstreamAuth::Plain,
            "login" => UpstreamAuth::Login,
            "xoauth2" => UpstreamAuth::Xoauth2,
            "oauthbearer" => UpstreamAuth::Oauthbearer,
            other => {
                self.bad(
                    "delivery.upstream.auth",
                    None,
                    format!("\"{other}\" is not an upstream AUTH mechanism"),
                    "write \"auto\", \"plain\", \"login\", \"xoauth2\" or \"oauthbearer\"",
                );
                UpstreamAuth::Auto
            }
        };
        let oauth = u.oauth.as_ref().map(|o| self.upstream_oauth(base, o));
        if matches!(auth, UpstreamAuth::Plain | UpstreamAuth::Login) && u.username.is_none() {
            self.bad(
                "delivery.upstream.auth",
                None,
                format!("\"{}\" needs username and password", u.auth),
                "set username and password, or auth = \"auto\" for no AUTH without them",
            );
        }
        let wants_token = matches!(auth, UpstreamAuth::Xoauth2 | UpstreamAuth::Oauthbearer);
        if wants_token && oauth.is_none() {
            self.bad(
                "delivery.upstream.auth",
                None,
                format!("\"{}\" needs a token endpoint", u.auth),
                "add a [delivery.upstream.oauth] table with token_url, client_id and a grant",
            );
        }
        if wants_token && u.username.is_none() {
            self.bad(
                "delivery.upstream.username",
                None,
                "is required with an OAuth mechanism".into(),
                "write the mailbox the token belongs to, e.g. username = \"relay@example.com\"",
            );
        }
        if wants_token && u.password.is_some() {
            self.bad(
                "delivery.upstream.password",
                None,
                "is not used with an OAuth mechanism".into(),
                "remove password; the access token comes from [delivery.upstream.oauth]",
            );
        }
        if !wants_token && oauth.is_some() {
            self.bad(
                "delivery.upstream.oauth",
                None,
                "is set but auth is not \"xoauth2\" or \"oauthbearer\"".into(),
                "set auth = \"xoauth2\" (or \"oauthbearer\"), or remove the table",
            );
        }
        let address = address?;
        Some(Upstream {
            address,
            server_name: u
                .server_name
                .clone()
                .unwrap_or_else(|| address.ip().to_string()),
            tls,
            danger_accept_invalid_certs: u.danger_accept_invalid_certs,
            username: u.username.clone(),
            password: u.password.clone(),
            retry,
            command_timeout,
            keep_idle,
            auth,
            oauth,
        })
    }

    fn upstream_oauth(&mut self, base: &Path, o: &file::UpstreamOAuthFile) -> UpstreamOAuth {
        let key = "delivery.upstream.oauth";
        self.url(&format!("{key}.token_url"), &o.token_url);
        if o.client_id.is_empty() {
            self.bad(
                &format!("{key}.client_id"),
                None,
                "is missing".into(),
                "write the OAuth client id registered with the provider",
            );
        }
        let grant = match o.grant.as_str() {
            "refresh_token" => Grant::RefreshToken,
            "client_credentials" => Grant::ClientCredentials,
            other => {
                self.bad(
                    &format!("{key}.grant"),
                    None,
                    format!("\"{other}\" is not a supported grant"),
                    "write \"refresh_token\" or \"client_credentials\"",
                );
                Grant::RefreshToken
            }
        };
        if grant == Grant::RefreshToken && o.refresh_token_file.is_none() {
            self.bad(
                &format!("{key}.refresh_token_file"),
                None,
                "is required with grant = \"refresh_token\"".into(),
                "write the path of a file holding the refresh token",
            );
        }
        if grant == Grant::ClientCredentials && o.client_secret_file.is_none() {
            self.bad(
                &format!("{key}.client_secret_file"),
                None,
                "is required with grant = \"client_credentials\"".into(),
                "write the path of a file holding the client secret",
            );
        }
        let file = |ck: &mut Self, name: &str, p: &Option<PathBuf>| {
            p.as_ref()
                .map(|p| ck.path(base, &format!("{key}.{name}"), p))
        };
        UpstreamOAuth {
            token_url: o.token_url.clone(),
            grant,
            client_id: o.client_id.clone(),
            client_secret_file: file(self, "client_secret_file", &o.client_secret_file),
            refresh_token_file: file(self, "refresh_token_file", &o.refresh_token_file),
            scope: o.scope.clone(),
            refresh_margin: self.delay(&format!("{key}.refresh_margin"), &o.refresh_margin),
            danger_accept_invalid_certs: o.danger_accept_invalid_certs,
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

    fn policy(&mut self, f: &File) -> crate::policy::Policy {
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

    /// An endpoint URL: HTTPS, or HTTP to a loopback host (tests, local sidecars).
    fn url(&mut self, key: &str, url: &str) {
        let loopback_http = url
            .strip_prefix("http://")
            .map(|rest| {
                let host = rest.split(['/', '?']).next().unwrap_or_default();
                let host = host.rsplit_once(':').map_or(host, |(h, _)| h);
                matches!(host, "127.0.0.1" | "localhost" | "[::1]") || host.starts_with("127.")
            })
            .unwrap_or(false);
        let https = url.starts_with("https://") && url.len() > "https://".len();
        if !https && !loopback_http {
            self.bad(
                key,
                None,
                format!("\"{url}\" is not an https:// URL"),
                "write an https:// URL (http:// is accepted only for loopback hosts)",
            );
        }
    }

    fn limits(&mut self, f: &File) -> Limits {
        let l = &f.limits;
        self.at_least("limits.max_connections", l.max_connections as u64, 1);
        self.at_least(
            "limits.max_connections_per_ip",
            l.max_connections_per_ip as u64,
            1,
        );
        self.at_least("limits.max_message_size", l.max_message_size, 1);
        self.at_least("limits.max_recipients", l.max_recipients as u64, 1);
        // RFC 5321 §4.5.3.1.6: text lines of 1000 octets must pass; the same cap serves the
        // 512-octet command lines of §4.5.3.1.4.
        self.at_least("limits.max_line_length", l.max_line_length as u64, 1000);
        self.at_least("limits.max_errors", l.max_errors.into(), 1);
        let mut dur = |key: &str, text: &str| self.duration(key, None, text);
        Limits {
            max_connections: l.max_connections,
            max_connections_per_ip: l.max_connections_per_ip,
            smtp_idle_timeout: dur("limits.smtp_idle_timeout", &l.smtp_idle_timeout),
            pop3_idle_timeout: dur("limits.pop3_idle_timeout", &l.pop3_idle_timeout),
            preauth_idle_timeout: dur("limits.preauth_idle_timeout", &l.preauth_idle_timeout),
            tls_handshake_timeout: dur("limits.tls_handshake_timeout", &l.tls_handshake_timeout),
            data_timeout: dur("limits.data_timeout", &l.data_timeout),
            max_message_size: l.max_message_size,
            max_recipients: l.max_recipients,
            max_line_length: l.max_line_length,
            max_errors: l.max_errors,
            shutdown_grace: dur("limits.shutdown_grace", &l.shutdown_grace),
        }
    }

    // ---- value checks; each returns a placeholder after reporting, never used on error ----

    fn at_least(&mut self, key: &str, value: u64, min: u64) {
        if value < min {
            self.bad(
                key,
                None,
                format!("{value} is too small"),
                format!("write at least {min}"),
            );
        }
    }

    fn prefix(&mut self, key: &str, len: u8) -> u8 {
        // Shorter than /32 would group whole providers (one login opening the relay, or one
        // failure throttling, for millions of addresses).
        if !(32..=128).contains(&len) {
            let hint = "write a prefix length from 32 to 128, e.g. 64";
            self.bad(
                key,
                None,
                format!("{len} is not an IPv6 prefix length"),
                hint,
            );
        }
        len
    }

    fn path(&mut self, base: &Path, key: &str, p: &Path) -> PathBuf {
        if p.as_os_str().is_empty() {
            self.bad(key, None, "is empty".into(), "write a path, e.g. \"state\"");
        }
        base.join(p)
    }

    /// A delay, where `"0s"` means none (test setups want failures answered at once).
    fn delay(&mut self, key: &str, text: &str) -> Duration {
        match parse_duration(text) {
            Ok(d) => d,
            Err(()) => {
                let message = format!("\"{text}\" is not a duration");
                self.bad(key, None, message, duration_hint(text));
                Duration::ZERO
            }
        }
    }

    /// A timeout, TTL or interval: zero is refused.
    fn duration(&mut self, key: &str, index: Option<usize>, text: &str) -> Duration {
        match parse_duration(text) {
            Ok(d) if d.is_zero() => {
                self.bad(
                    key,
                    index,
                    format!("\"{text}\" is zero"),
                    "write e.g. \"1s\"",
                );
                d
            }
            Ok(d) => d,
            Err(()) => {
                self.bad(
                    key,
                    index,
                    format!("\"{text}\" is not a duration"),
                    duration_hint(text),
                );
                Duration::ZERO
            }
        }
    }

    fn addrs(&mut self, key: &str, list: &[String]) -> Vec<SocketAddr> {
        let mut out = Vec::new();
        for (i, a) in list.iter().enumerate() {
            out.extend(self.addr(key, Some(i), a));
        }
        out
    }

    fn addr(&mut self, key: &str, index: Option<usize>, text: &str) -> Option<SocketAddr> {
        match text.parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                let split = text.rsplit_once(':').and_then(|(ip, port)| {
                    Some((
                        ip.parse::<std::net::Ipv6Addr>().ok()?,
                        port.parse::<u16>().ok()?,
                    ))
                });
                let hint = if let Some((ip, port)) = split {
                    format!("put IPv6 addresses in brackets: \"[{ip}]:{port}\"")
                } else if text.parse::<IpAddr>().is_ok_and(|ip| ip.is_ipv6()) {
                    format!("add a port, with the address in brackets: e.g. \"[{text}]:25\"")
                } else if let Ok(ip) = text.parse::<IpAddr>() {
                    format!("add a port: e.g. \"{ip}:25\"")
                } else if text.matches(':').count() > 1 {
                    "put IPv6 addresses in brackets: e.g. \"[::1]:25\"".to_string()
                } else {
                    "write an IP address and port, e.g. \"127.0.0.1:25\" (host names are not \
                     looked up)"
                        .to_string()
                };
                self.bad(key, index, format!("\"{text}\" is not an address"), hint);
                None
            }
        }
    }

    fn nets(&mut self, key: &str, list: &[String]) -> Vec<IpNet> {
        let mut out = Vec::new();
        for (i, text) in list.iter().enumerate() {
            // A bare address means just that host.
            let parsed = text
                .parse::<IpNet>()
                .or_else(|_| text.parse::<IpAddr>().map(IpNet::from));
            match parsed {
                Ok(net) if net.trunc() != net => {
                    let msg = format!("\"{text}\" has bits set after the prefix");
                    self.bad(key, Some(i), msg, format!("write \"{}\"", net.trunc()));
                }
                Ok(net) => out.push(net),
                Err(_) => {
                    let msg = format!("\"{text}\" is not a network");
                    let hint = "write CIDR notation, e.g. \"192.168.0.0/16\" or \"fd00::/8\"";
                    self.bad(key, Some(i), msg, hint);
                }
            }
        }
        out
    }

    /// Checks a domain name (RFC 1035 §2.3.1 letters, digits, hyphens; RFC 1123 §2.1 allows
    /// a leading digit) and returns it in lower case.
    fn domain(&mut self, key: &str, index: Option<usize>, text: &str) -> Option<String> {
        let name = text.strip_suffix('.').unwrap_or(text).to_ascii_lowercase();
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        };
        if !name.is_empty() && name.len() <= 253 && name.split('.').all(label_ok) {
            return Some(name);
        }
        let message = if text.is_empty() {
            "is empty".to_string()
        } else {
            format!("\"{text}\" is not a domain name")
        };
        let hint = "write letters, digits, hyphens and dots, e.g. \"mail.example.com\"";
        self.bad(key, index, message, hint);
        None
    }
}

/// Parses `"90s"`, `"30m"`, `"1h30m"`, `"5d"`: one or more `<digits><unit>` with no spaces;
/// units `us`, `ms`, `s`, `m`, `h`, `d`, `w`.
pub(super) fn parse_duration(text: &str) -> Result<Duration, ()> {
    if text.is_empty() || text.len() > MAX_DURATION_TEXT {
        return Err(());
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        let letters = rest[digits..]
            .bytes()
            .take_while(u8::is_ascii_alphabetic)
            .count();
        let n: u64 = rest[..digits].parse().map_err(|_| ())?;
        let unit = match &rest[digits..digits + letters] {
            "us" => Duration::from_micros(1),
            "ms" => Duration::from_millis(1),
            "s" => Duration::from_secs(1),
            "m" => Duration::from_secs(60),
            "h" => Duration::from_secs(3600),
            "d" => Duration::from_secs(86_400),
            "w" => Duration::from_secs(7 * 86_400),
            _ => return Err(()),
        };
        let part = unit
            .checked_mul(u32::try_from(n).map_err(|_| ())?)
            .ok_or(())?;
        total = total.checked_add(part).ok_or(())?;
        rest = &rest[digits + letters..];
    }
    Ok(total)
}

/// What to write instead of a bad duration: the same length in our syntax when the text is
/// understandable (`"5 minutes"` → `"5m"`), else a generic example.
fn duration_hint(text: &str) -> String {
    let compact = humantime::parse_duration(text)
        .ok()
        .filter(|d| !d.is_zero() && d.subsec_nanos() % 1_000_000 == 0)
        .map(|d| humantime::format_duration(d).to_string().replace(' ', ""))
        .filter(|c| parse_duration(c).is_ok());
    match compact {
        Some(c) => format!("write e.g. \"{c}\""),
        None => "write e.g. \"30s\", \"5m\", \"1h30m\" or \"2d\"".to_string(),
    }
}

/// A hint for a serde error (unknown key, wrong type).
fn serde_hint(key: &str, message: &str) -> String {
    let key = key.rsplit('.').next().unwrap_or(key);
    if message.starts_with("unknown field") {
        "remove it or correct the spelling; docs/configuration.md lists every key".to_string()
    } else if message.contains("expected a string") {
        format!("quote the value: {key} = \"...\"")
    } else if message.contains("expected a boolean") {
        "write true or false, without quotes".to_string()
    } else if message.contains("expected u") || message.contains("expected i") {
        "write a whole number, without quotes".to_string()
    } else if message.contains("expected a sequence") {
        format!("write a list: {key} = [\"...\"]")
    } else {
        "see docs/configuration.md for the type of this key".to_string()
    }
}

/// The 1-based line holding byte `offset`.
fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// The value of a dotted key, e.g. `auth.throttle.window`.
fn lookup<'t, 'i>(root: &'t DeTable<'i>, key: &str) -> Option<&'t toml::Spanned<DeValue<'i>>> {
    let mut parts = key.split('.');
    let mut value = root.get(parts.next()?)?;
    for part in parts {
        value = value.get_ref().as_table()?.get(part)?;
    }
    Some(value)
}

/// The dotted key whose name or value holds byte `offset`, the deepest one if nested.
fn key_at(root: &DeTable<'_>, offset: usize) -> Option<String> {
    fn walk(table: &DeTable<'_>, prefix: &str, offset: usize, best: &mut Option<(usize, String)>) {
        for (k, v) in table.iter() {
            let path = if prefix.is_empty() {
                k.get_ref().to_string()
            } else {
                format!("{prefix}.{}", k.get_ref())
            };
            let depth = path.matches('.').count() + 1;
            let hit = k.span().contains(&offset) || v.span().contains(&offset);
            if hit && best.as_ref().is_none_or(|(d, _)| depth >= *d) {
                *best = Some((depth, path.clone()));
            }
            if let Some(t) = v.get_ref().as_table() {
                walk(t, &path, offset, best);
            }
        }
    }
    let mut best = None;
    walk(root, "", offset, &mut best);
    best.map(|(_, k)| k)
}
