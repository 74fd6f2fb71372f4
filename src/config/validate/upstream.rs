//! Value checks for `[auth.upstream]`: the old server's address, protocol and TLS, and the
//! cache and concurrency of the checks made against it.

use std::path::Path;

use super::Checker;
use crate::config::file::AuthUpstreamFile;
use crate::config::{AuthUpstream, OldProtocol, OldServer, UpstreamTls, UpstreamUsers};

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
        let server = self.old_server(key, base, u, protocol);
        let users = match u.users.as_str() {
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
        self.at_least(&format!("{key}.max_concurrent"), u.max_concurrent as u64, 1);
        AuthUpstream {
            server,
            users,
            cache_ttl: self.delay(&format!("{key}.cache_ttl"), &u.cache_ttl),
            negative_cache_ttl: self
                .delay(&format!("{key}.negative_cache_ttl"), &u.negative_cache_ttl),
            max_concurrent: u.max_concurrent.max(1),
            capture: u.capture,
        }
    }

    /// Where the old server is, for `[auth.upstream]` (and the tables that reach the same
    /// server): address, TLS mode, certificate name and CA, timeout.
    fn old_server(
        &mut self,
        key: &str,
        base: &Path,
        u: &AuthUpstreamFile,
        protocol: OldProtocol,
    ) -> OldServer {
        let address = if u.address.is_empty() {
            self.bad(
                key,
                None,
                "address is missing".into(),
                "write the old server's address, e.g. address = \"192.0.2.10:110\"",
            );
            None
        } else {
            self.addr(&format!("{key}.address"), None, &u.address)
        };
        let address = address.unwrap_or_else(|| ([127, 0, 0, 1], 0).into());
        let tls = match u.tls.as_str() {
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
        if u.server_name.as_deref().is_some_and(str::is_empty) {
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
                .server_name
                .clone()
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| address.ip().to_string()),
            protocol,
            tls,
            ca_file: u
                .ca_file
                .as_ref()
                .map(|p| self.path(base, &format!("{key}.ca_file"), p)),
            timeout: self.duration(&format!("{key}.timeout"), None, &u.timeout),
        }
    }
}
