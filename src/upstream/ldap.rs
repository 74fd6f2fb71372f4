//! `[auth.ldap]`: passwords checked against the directory an old box authenticates against
//! (Active Directory, OpenLDAP): search-then-bind. The gateway connects (`ldaps://`, or
//! `ldap://` with StartTLS), binds as `bind_dn` (or searches anonymously), looks up the one
//! entry `filter` finds for the user (`%u` escaped per RFC 4515, so a name cannot widen the
//! filter), and binds as that entry with the user's password. A fresh connection per check,
//! all of it within `timeout`.
//!
//! Only `invalidCredentials` (49) to the user's bind, or no entry (or more than one) for the
//! name, is a wrong password; anything else (the directory down, slow, or refusing the
//! gateway's own bind) is a temporary failure. An empty password is refused before any bind:
//! RFC 4513 §5.1.2 makes a bind with a DN and no password an unauthenticated bind that
//! succeeds.

use std::sync::Arc;

use ldap3::{LdapConnAsync, LdapConnSettings, Scope, SearchEntry};

use super::{Login, Outcome};
use crate::auth::Secret;
use crate::config::LdapDirectory;

/// LDAP result code `invalidCredentials` (RFC 4511 §4.1.9).
const INVALID_CREDENTIALS: u32 = 49;

/// A directory ready to check passwords.
pub struct Directory {
    config: LdapDirectory,
    tls: Arc<rustls::ClientConfig>,
    bind_password: Option<Secret>,
}

impl Directory {
    /// Loads the TLS settings and the search account's password.
    pub fn new(config: &LdapDirectory) -> Result<Directory, String> {
        let bind_password = match &config.bind_password_file {
            Some(file) => {
                let text = std::fs::read(file).map_err(|e| {
                    format!("[auth.ldap] bind_password_file {}: {e}", file.display())
                })?;
                let end = text
                    .iter()
                    .rposition(|b| !b.is_ascii_whitespace())
                    .map_or(0, |i| i + 1);
                Some(Secret::new(text[..end].to_vec()))
            }
            None => None,
        };
        Ok(Directory {
            tls: super::conn::client_config(config.ca_file.as_deref(), true)
                .map_err(|e| format!("[auth.ldap] {e}"))?,
            config: config.clone(),
            bind_password,
        })
    }

    /// Checks `login` by search-then-bind.
    pub async fn check(&self, login: &Login) -> Outcome {
        let Ok(password) = std::str::from_utf8(login.password.expose()) else {
            return Outcome::Refused("an LDAP password must be UTF-8".into());
        };
        if password.is_empty() {
            return Outcome::Refused("empty password".into());
        }
        match tokio::time::timeout(
            self.config.timeout,
            self.search_then_bind(&login.user, password),
        )
        .await
        {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(e)) => Outcome::Temporary(format!("LDAP {}: {e}", self.config.url)),
            Err(_) => Outcome::Temporary(format!(
                "LDAP {}: no answer within {:?}",
                self.config.url, self.config.timeout
            )),
        }
    }

    async fn search_then_bind(&self, user: &str, password: &str) -> ldap3::result::Result<Outcome> {
        let settings = LdapConnSettings::new()
            .set_conn_timeout(self.config.timeout)
            .set_starttls(self.config.starttls && self.config.url.starts_with("ldap://"))
            .set_config(self.tls.clone());
        let (conn, mut ldap) = LdapConnAsync::with_settings(settings, &self.config.url).await?;
        tokio::spawn(async move {
            if let Err(e) = conn.drive().await {
                tracing::debug!("LDAP connection ended: {e}");
            }
        });
        if let (Some(dn), Some(pw)) = (&self.config.bind_dn, &self.bind_password) {
            let pw = String::from_utf8_lossy(pw.expose()).into_owned();
            let pw = zeroize::Zeroizing::new(pw);
            // The gateway's own account refused: not the user's fault.
            ldap.simple_bind(dn, &pw).await?.success()?;
        }
        let filter = self.config.filter.replace("%u", &ldap3::ldap_escape(user));
        let (entries, _) = ldap
            .search(&self.config.base, Scope::Subtree, &filter, vec!["1.1"])
            .await?
            .success()?;
        let outcome = match entries.len() {
            0 => Outcome::Refused("no entry for the user".into()),
            1 => {
                let dn = SearchEntry::construct(entries.into_iter().next().expect("one")).dn;
                let res = ldap.simple_bind(&dn, password).await?;
                match res.rc {
                    0 => Outcome::LoggedIn,
                    INVALID_CREDENTIALS => Outcome::Refused("invalid credentials".into()),
                    rc => Outcome::Temporary(format!("LDAP bind as the user: result code {rc}")),
                }
            }
            n => Outcome::Refused(format!("the filter finds {n} entries for the user")),
        };
        let _ = ldap.unbind().await;
        Ok(outcome)
    }
}
