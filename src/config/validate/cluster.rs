//! Value checks for `[cluster]`: the Redis URL (its scheme, and no password inside when a
//! password file is named), the key prefix, the per-command timeout, the mailbox lease and
//! the resync interval.

use std::path::Path;
use std::time::Duration;

use super::Checker;
use crate::config::Cluster;
use crate::config::file::File;

/// Longest key prefix: every key carries it, so it is kept short.
const MAX_PREFIX: usize = 64;

impl Checker<'_> {
    /// The `[cluster]` table, if present.
    pub(super) fn cluster(&mut self, base: &Path, f: &File) -> Option<Cluster> {
        let c = f.cluster.as_ref()?;
        let Some(url) = c.redis.as_deref() else {
            self.bad(
                "cluster",
                None,
                "has no redis".into(),
                "write redis = \"redis://127.0.0.1:6379/0\" (or rediss:// for TLS), or remove \
                 [cluster] to keep the state in this process",
            );
            return None;
        };
        let ca_file = c
            .ca_file
            .as_ref()
            .map(|p| self.path(base, "cluster.ca_file", p));
        match redis::parse_redis_url(url) {
            Some(u) if matches!(u.scheme(), "redis" | "rediss") => {
                if u.scheme() == "redis" && ca_file.is_some() {
                    self.bad(
                        "cluster.ca_file",
                        None,
                        "is set but cluster.redis is not a rediss:// URL".into(),
                        "write rediss:// to reach Redis over TLS, or remove ca_file",
                    );
                }
                if u.password().is_some() && c.password_file.is_some() {
                    self.bad(
                        "cluster.redis",
                        None,
                        "holds a password and password_file is set too".into(),
                        "keep the password in password_file only",
                    );
                }
            }
            _ => self.bad(
                "cluster.redis",
                None,
                "is not a redis:// or rediss:// URL".into(),
                "write e.g. \"redis://127.0.0.1:6379/0\"",
            ),
        }
        let password_file = c
            .password_file
            .as_ref()
            .map(|p| self.path(base, "cluster.password_file", p));
        let prefix = &c.key_prefix;
        if prefix.is_empty()
            || prefix.len() > MAX_PREFIX
            || prefix
                .chars()
                .any(|ch| ch.is_whitespace() || ch.is_control())
        {
            self.bad(
                "cluster.key_prefix",
                None,
                format!("\"{prefix}\" is not a key prefix"),
                format!(
                    "write 1 to {MAX_PREFIX} characters without spaces, e.g. \"mailgate:\"; \
                     nodes that share state use the same prefix"
                ),
            );
        }
        let timeout = self.duration("cluster.timeout", None, &c.timeout);
        if timeout > Duration::from_secs(10) {
            self.bad(
                "cluster.timeout",
                None,
                format!("\"{}\" is longer than 10s", c.timeout),
                "a session waits this long before falling back to this node's own view; \
                 write e.g. \"500ms\"",
            );
        }
        let lease = self.duration("cluster.lease", None, &c.lease);
        if lease < Duration::from_secs(3) || lease < timeout * 3 {
            self.bad(
                "cluster.lease",
                None,
                format!("\"{}\" is too short", c.lease),
                "a lease is renewed every third of its life; write at least \"3s\" and three \
                 times cluster.timeout, e.g. \"30s\"",
            );
        }
        let resync = self.duration("cluster.resync", None, &c.resync);
        Some(Cluster {
            redis: url.to_string(),
            password_file,
            ca_file,
            key_prefix: prefix.clone(),
            timeout,
            lease,
            resync,
        })
    }
}
