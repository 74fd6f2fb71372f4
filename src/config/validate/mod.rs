//! Turns the text of `mailgate.toml` into a [`Config`], collecting every problem with its line.
//!
//! Three passes: TOML syntax (all recoverable errors), the serde mirror (every unknown key
//! and wrong type, see `file/`), then value checks (addresses, networks, durations, names, cross-key rules).
//! Lines come from the spans of the parsed document: each check looks its key up again in
//! the tree, so the mirror can keep plain types. Risky-but-valid settings are `warnings.rs`.
//!
//! This file holds the passes, the sections that fit in a few lines (TLS, listeners, limits)
//! and the value checks every section shares (durations, addresses, networks, domains, URLs).
//! The larger sections have a file each: `auth.rs` (`[auth]`, `[pop_before_smtp]`, OAuth
//! issuers), `delivery.rs` (`[relay]`, `[delivery]`, the upstream) and `policy.rs`.

use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use toml::de::{DeTable, DeValue};

use super::file::{self, File, SectionError};
use super::{
    AuditConfig, Config, ConfigErrors, Limits, Listeners, LogFormat, Notices, Problem, TlsConfig,
};

mod auth;
mod cluster;
mod delivery;
mod gssapi;
mod policy;
mod upstream;

/// Longest accepted duration text; durations are short, this only bounds the parser.
const MAX_DURATION_TEXT: usize = 64;

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
        let pop3_proxy = f.pop3.proxy.as_ref().map(|p| self.pop3_proxy(&base, p));
        let log_format = LogFormat::parse(&f.log.format).unwrap_or_else(|| {
            self.bad(
                "log.format",
                None,
                format!("\"{}\" is not a log format", f.log.format),
                "write \"text\" or \"json\"",
            );
            LogFormat::Text
        });
        let cluster = self.cluster(&base, f);
        Config {
            cluster,
            log_format,
            policy,
            notices,
            pop3_proxy,
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
        let legacy = self.legacy_tls(f);
        TlsConfig { cert, key, legacy }
    }

    /// `[tls] legacy_networks`, `legacy_min_version` and `legacy_ciphers`.
    fn legacy_tls(&mut self, f: &File) -> Option<crate::config::LegacyTls> {
        let t = &f.tls;
        let networks = self.nets("tls.legacy_networks", &t.legacy_networks);
        let min_version = match t.legacy_min_version.as_deref() {
            None | Some("1.0") => 10,
            Some("1.1") => 11,
            Some(other) => {
                self.bad(
                    "tls.legacy_min_version",
                    None,
                    format!("\"{other}\" is not a legacy TLS version"),
                    "write \"1.0\" or \"1.1\" (TLS 1.2 and 1.3 are always allowed)",
                );
                10
            }
        };
        let ciphers = t
            .legacy_ciphers
            .clone()
            .unwrap_or_else(|| crate::config::DEFAULT_LEGACY_CIPHERS.to_string());
        if ciphers.is_empty() || ciphers.len() > 1024 || ciphers.chars().any(char::is_control) {
            self.bad(
                "tls.legacy_ciphers",
                None,
                "is not an OpenSSL cipher string".to_string(),
                format!(
                    "leave it out for the default, \"{}\"",
                    crate::config::DEFAULT_LEGACY_CIPHERS
                ),
            );
        }
        if networks.is_empty() {
            return None;
        }
        if !crate::config::LEGACY_TLS_BUILT {
            self.bad(
                "tls.legacy_networks",
                None,
                "this mailgate was built without the legacy-tls feature (the OpenSSL acceptor \
                 for TLS 1.0 and 1.1)"
                    .to_string(),
                "install the Debian package, or build with `cargo build --release --features \
                 legacy-tls` (needs libssl-dev and pkg-config); or remove legacy_networks",
            );
            return None;
        }
        Some(crate::config::LegacyTls {
            networks,
            min_version,
            ciphers,
        })
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
            proxy_protocol_from: self.nets("listeners.proxy_protocol_from", &l.proxy_protocol_from),
            proxy_header_timeout: match &l.proxy_header_timeout {
                Some(t) => self.duration("listeners.proxy_header_timeout", None, t),
                None => crate::server::HEADER_TIMEOUT,
            },
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
        self.at_least(
            "limits.max_connections_per_network",
            l.max_connections_per_network as u64,
            1,
        );
        self.at_least("limits.max_message_size", l.max_message_size, 1);
        self.at_least("limits.max_recipients", l.max_recipients as u64, 1);
        // RFC 5321 §4.5.3.1.6: text lines of 1000 octets must pass; the same cap serves the
        // 512-octet command lines of §4.5.3.1.4.
        self.at_least("limits.max_line_length", l.max_line_length as u64, 1000);
        self.at_least("limits.max_errors", l.max_errors.into(), 1);
        self.at_least("limits.max_queue", l.max_queue as u64, 1);
        let mut dur = |key: &str, text: &str| self.duration(key, None, text);
        Limits {
            max_connections: l.max_connections,
            max_connections_per_ip: l.max_connections_per_ip,
            max_connections_per_network: l.max_connections_per_network,
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
            max_queue: l.max_queue,
            min_free_disk: self.percent("limits.min_free_disk", &l.min_free_disk),
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

    /// A share written as a percentage, `"1%"` or `"0.5%"`, as a fraction.
    fn percent(&mut self, key: &str, text: &str) -> f64 {
        let value = text
            .trim()
            .strip_suffix('%')
            .and_then(|n| n.trim().parse::<f64>().ok())
            .filter(|p| (0.0..=100.0).contains(p));
        match value {
            Some(p) => p / 100.0,
            None => {
                self.bad(
                    key,
                    None,
                    format!("\"{text}\" is not a percentage"),
                    "write e.g. \"1%\" (0% turns the check off)",
                );
                0.0
            }
        }
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

/// The 1-based line of the value of dotted `key` (see [`lookup`]) in the TOML `text`, for
/// problems found after validation (a listener address in use, a certificate that does not
/// match its key).
pub(crate) fn key_line(text: &str, key: &str) -> Option<usize> {
    let (root, _) = DeTable::parse_recoverable(text);
    let value = lookup(root.get_ref(), key)?;
    Some(line_of(text, value.span().start))
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

/// The value of a dotted key, e.g. `auth.throttle.window`, where a part may index an array of
/// tables, e.g. `policy[2].networks` (the third `[[policy]]`).
fn lookup<'t, 'i>(root: &'t DeTable<'i>, key: &str) -> Option<&'t toml::Spanned<DeValue<'i>>> {
    let mut value: Option<&toml::Spanned<DeValue<'i>>> = None;
    for part in key.split('.') {
        let (name, index) = match part.strip_suffix(']').and_then(|p| p.split_once('[')) {
            Some((name, i)) => (name, Some(i.parse::<usize>().ok()?)),
            None => (part, None),
        };
        let table = match value {
            None => root,
            Some(v) => v.get_ref().as_table()?,
        };
        let mut found = table.get(name)?;
        if let Some(i) = index {
            found = found.get_ref().as_array()?.get(i)?;
        }
        value = Some(found);
    }
    value
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
