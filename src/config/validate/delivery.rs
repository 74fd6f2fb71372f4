//! Value checks for the `[relay]` and `[delivery]` sections: the spool, the commit window and
//! the upstream smarthost (address, TLS, credentials, its OAuth token source).

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::Checker;
use crate::config::file::{self, File};
use crate::config::{
    DeliveryConfig, Grant, RelayConfig, Upstream, UpstreamAuth, UpstreamOAuth, UpstreamTls,
};

/// Longest `[delivery.upstream] keep_idle`: RFC 5321 §4.5.3.2.7 lets a server drop a client
/// after 5 minutes of silence.
const MAX_KEEP_IDLE: Duration = Duration::from_secs(300);

/// Longest `[delivery] commit_window`: every message under load may wait this long before
/// its fsync starts, so more than a few milliseconds only adds latency.
const MAX_COMMIT_WINDOW: Duration = Duration::from_millis(10);

impl Checker<'_> {
    pub(super) fn relay(&mut self, f: &File) -> RelayConfig {
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

    pub(super) fn delivery(&mut self, base: &Path, state: &Path, f: &File) -> DeliveryConfig {
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
            route_unmigrated_to: d
                .route_unmigrated_to
                .as_ref()
                .and_then(|a| self.addr("delivery.route_unmigrated_to", None, a)),
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
}
