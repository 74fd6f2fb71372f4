//! Value checks for `[auth.upstream]`: the old server's address, protocol and TLS, and the
//! cache and concurrency of the checks made against it.

use std::path::Path;

use super::Checker;
use crate::config::file::{AuthLdapFile, AuthUpstreamFile, OldServerFile, Pop3ProxyFile};
use crate::config::{
    AuthUpstream, CheckSource, LdapDirectory, MasterLogin, OldProtocol, OldServer, Pop3Proxy,
    UpstreamTls, UpstreamUsers,
};

impl Checker<'_> {
    pub(super) fn auth_upstream(&mut self, base: &Path, u: &AuthUpstreamFile) -> AuthUpstream {
        let key = "auth.upstream";
        let protocol = match u.protocol.as_str() {
            "pop3" => OldProtocol::Pop3,
            "imap" => OldProtocol::Imap,
            "smtp" => OldProtocol::Smtp,
            other => {
                self.bad(
                    &format!("{key}.protocol"),
                    None,
                    format!("\"{other}\" is not a protocol the old server can be asked in"),
                    "write \"pop3\", \"imap\" or \"smtp\"",
                );
                OldProtocol::Pop3
            }
        };
        let server = CheckSource::Server(self.old_server(key, base, u, protocol));
        self.check_rules(
            key,
            server,
            &u.users,
            &u.cache_ttl,
            &u.negative_cache_ttl,
            u.max_concurrent,
            u.capture,
        )
    }

    pub(super) fn auth_ldap(&mut self, base: &Path, l: &AuthLdapFile) -> AuthUpstream {
        let key = "auth.ldap";
        let url_ok = ["ldap://", "ldaps://"].iter().any(|s| {
            l.url
                .strip_prefix(s)
                .is_some_and(|rest| !rest.is_empty() && !rest.starts_with('/'))
        });
        if !url_ok {
            self.bad(
                &format!("{key}.url"),
                None,
                format!("\"{}\" is not an LDAP URL", l.url),
                "write \"ldaps://dc1.example.org\" or \"ldap://dc1.example.org:389\" (StartTLS)",
            );
        }
        if l.base.is_empty() {
            self.bad(
                &format!("{key}.base"),
                None,
                "is missing".into(),
                "write the search base, e.g. base = \"ou=people,dc=example,dc=org\"",
            );
        }
        if !l.filter.contains("%u") || !l.filter.starts_with('(') || !l.filter.ends_with(')') {
            self.bad(
                &format!("{key}.filter"),
                None,
                format!("\"{}\" is not a filter naming the user", l.filter),
                "write a parenthesized filter with %u, e.g. \"(uid=%u)\" or \"(sAMAccountName=%u)\"",
            );
        }
        if l.bind_dn.is_some() != l.bind_password_file.is_some() {
            self.bad(
                key,
                None,
                "bind_dn and bind_password_file must be set together".into(),
                "set both for a search account, or neither for an anonymous search",
            );
        }
        let source = CheckSource::Ldap(LdapDirectory {
            url: l.url.clone(),
            starttls: l.starttls,
            ca_file: l
                .ca_file
                .as_ref()
                .map(|p| self.path(base, &format!("{key}.ca_file"), p)),
            bind_dn: l.bind_dn.clone(),
            bind_password_file: l
                .bind_password_file
                .as_ref()
                .map(|p| self.path(base, &format!("{key}.bind_password_file"), p)),
            base: l.base.clone(),
            filter: l.filter.clone(),
            timeout: self.duration(&format!("{key}.timeout"), None, &l.timeout),
        });
        self.check_rules(
            key,
            source,
            &l.users,
            &l.cache_ttl,
            &l.negative_cache_ttl,
            l.max_concurrent,
            l.capture,
        )
    }

    /// The rules shared by `[auth.upstream]` and `[auth.ldap]`.
    #[allow(clippy::too_many_arguments)]
    fn check_rules(
        &mut self,
        key: &str,
        source: CheckSource,
        users: &str,
        cache_ttl: &str,
        negative_cache_ttl: &str,
        max_concurrent: usize,
        capture: bool,
    ) -> AuthUpstream {
        let users = match users {
            "unknown" => UpstreamUsers::Unknown,
            "all" => UpstreamUsers::All,
            other => {
                self.bad(
                    &format!("{key}.users"),
                    None,
                    format!("\"{other}\" is not a choice of users"),
                    "write \"unknown\" (users not in the users file) or \"all\"",
                );
                UpstreamUsers::Unknown
            }
        };
        self.at_least(&format!("{key}.max_concurrent"), max_concurrent as u64, 1);
        AuthUpstream {
            source,
            users,
            cache_ttl: self.delay(&format!("{key}.cache_ttl"), cache_ttl),
            negative_cache_ttl: self
                .delay(&format!("{key}.negative_cache_ttl"), negative_cache_ttl),
            max_concurrent: max_concurrent.max(1),
            capture,
        }
    }

    /// Where the old server is, for `[auth.upstream]` (and the tables that reach the same
    /// server): address, TLS mode, certificate name and CA, timeout.
    fn old_server(
        &mut self,
        key: &str,
        base: &Path,
        u: &dyn OldServerFile,
        protocol: OldProtocol,
    ) -> OldServer {
        let address = if u.address().is_empty() {
            self.bad(
                key,
                None,
                "address is missing".into(),
                "write the old server's address, e.g. address = \"192.0.2.10:110\"",
            );
            None
        } else {
            self.addr(&format!("{key}.address"), None, u.address())
        };
        let address = address.unwrap_or_else(|| ([127, 0, 0, 1], 0).into());
        let tls = match u.tls() {
            "none" => UpstreamTls::None,
            "starttls" => UpstreamTls::Starttls,
            "implicit" | "tls" => UpstreamTls::Tls,
            other => {
                self.bad(
                    &format!("{key}.tls"),
                    None,
                    format!("\"{other}\" is not a TLS mode"),
                    "write \"starttls\" (STLS / STARTTLS on ports 110, 143, 587), \"implicit\" \
                     (ports 995, 993, 465) or \"none\"",
                );
                UpstreamTls::Starttls
            }
        };
        if u.server_name().is_some_and(str::is_empty) {
            self.bad(
                &format!("{key}.server_name"),
                None,
                "is empty".into(),
                "write the name on the old server's certificate, or remove the key to use its IP",
            );
        }
        OldServer {
            address,
            server_name: u
                .server_name()
                .filter(|n| !n.is_empty())
                .map_or_else(|| address.ip().to_string(), str::to_owned),
            protocol,
            tls,
            ca_file: u
                .ca_file()
                .map(|p| self.path(base, &format!("{key}.ca_file"), p)),
            timeout: self.duration(&format!("{key}.timeout"), None, u.timeout()),
        }
    }

    pub(super) fn pop3_proxy(&mut self, base: &Path, p: &Pop3ProxyFile) -> Pop3Proxy {
        let key = "pop3.proxy";
        let server = self.old_server(key, base, p, OldProtocol::Pop3);
        let master_login = match p.master_login.as_str() {
            "dovecot-star" => MasterLogin::DovecotStar,
            "authzid" => MasterLogin::Authzid,
            other => {
                self.bad(
                    &format!("{key}.master_login"),
                    None,
                    format!("\"{other}\" is not a master login style"),
                    "write \"dovecot-star\" (user*master) or \"authzid\" (SASL PLAIN)",
                );
                MasterLogin::DovecotStar
            }
        };
        let master = match (&p.master_user, &p.master_password_file) {
            (Some(user), Some(file)) if !user.is_empty() => Some((
                user.clone(),
                self.path(base, &format!("{key}.master_password_file"), file),
            )),
            (None, None) => None,
            _ => {
                self.bad(
                    key,
                    None,
                    "master_user and master_password_file must be set together".into(),
                    "set both (logins without a password are then proxied as the master \
                     user), or neither",
                );
                None
            }
        };
        Pop3Proxy {
            server,
            master,
            master_login,
        }
    }
}
