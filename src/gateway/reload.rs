//! The typed SIGHUP reload: the users file, the TLS certificate, the migration policy, the
//! networks, the local domains and `[notices]` take effect for what comes next; every other
//! section that changed is named as needing a restart. Sections are compared as values.

use std::sync::Arc;

use super::{Error, Gateway, Networks, log_skipped_lines};
use crate::config::Config;

/// A section of the configuration, as a reload reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    /// `hostname` and `state_dir`.
    Identity,
    /// `[listeners]`.
    Listeners,
    /// `[tls]`.
    Tls,
    /// `[auth]` other than its networks.
    Auth,
    /// `[auth] insecure_plaintext_networks`, `[relay] trusted_networks` and `local_domains`.
    Networks,
    /// `[pop_before_smtp]`.
    PopBeforeSmtp,
    /// `[delivery]`.
    Delivery,
    /// `[limits]`.
    Limits,
    /// `[audit]`.
    Audit,
    /// `[notices]`.
    Notices,
    /// `[[policy]]`.
    Policy,
    /// `[log]`.
    Log,
    /// `[cluster]`.
    Cluster,
}

impl Section {
    /// The name in logs.
    pub fn name(self) -> &'static str {
        match self {
            Section::Identity => "hostname/state_dir",
            Section::Listeners => "listeners",
            Section::Tls => "tls",
            Section::Auth => "auth",
            Section::Networks => "networks",
            Section::PopBeforeSmtp => "pop_before_smtp",
            Section::Delivery => "delivery",
            Section::Limits => "limits",
            Section::Audit => "audit",
            Section::Notices => "notices",
            Section::Policy => "policy",
            Section::Log => "log",
            Section::Cluster => "cluster",
        }
    }
}

/// What a reload did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reloaded {
    /// Sections now in force.
    pub applied: Vec<Section>,
    /// Sections that changed but take effect only at the next restart.
    pub restart: Vec<Section>,
}

impl Gateway {
    /// Reads the users file again (SIGHUP, or a change seen by the watcher): valid, it
    /// replaces the users served from now on; invalid, the users loaded before stay and the
    /// error says what is wrong, line by line. Blocking (file I/O).
    pub fn reload_users(&self) -> Result<usize, crate::auth::Error> {
        let path = &self.config.auth.users_file;
        match self.user_store.reload(path) {
            Ok(n) => {
                tracing::info!(users = n, file = %path.display(), "users reloaded");
                log_skipped_lines(path, &self.user_store);
                Ok(n)
            }
            Err(e) => {
                tracing::error!(
                    users = self.user_store.len(),
                    "users file not reloaded, the users loaded before stay: {e}"
                );
                Err(e)
            }
        }
    }

    /// Applies a reloaded configuration (SIGHUP): the users file is read again, the TLS
    /// certificate too, and the migration policy, the networks (`insecure_plaintext_networks`,
    /// `trusted_networks`), the local domains and `[notices]` take effect for what comes next;
    /// open sessions are untouched. Other changed sections are named in a warning: they take
    /// effect at the next restart. Blocking (reads the users file and the certificate).
    pub fn reload(&self, new: &Config) -> Reloaded {
        let mut done = Reloaded::default();
        let old = &self.config;
        let _ = self.reload_users();
        self.set_policy(new.policy.clone());
        done.applied.push(Section::Policy);
        tracing::info!(rules = new.policy.rules.len(), "policy reloaded");
        if old.hostname != new.hostname || old.state_dir != new.state_dir {
            done.restart.push(Section::Identity);
        }
        if old.listeners != new.listeners {
            done.restart.push(Section::Listeners);
        }
        match self.reload_tls(&new.tls) {
            Ok(true) => {
                let cert = new.tls.cert.as_ref().map(|p| p.display().to_string());
                tracing::info!(cert = cert.unwrap_or_default(), "TLS certificate reloaded");
                done.applied.push(Section::Tls);
            }
            Ok(false) if old.tls != new.tls => done.restart.push(Section::Tls),
            Ok(false) => {}
            Err(e) => {
                tracing::error!("TLS certificate not reloaded, the one loaded before stays: {e}");
            }
        }
        // The networks are reloaded; the rest of [auth] needs a restart.
        let mut auth = new.auth.clone();
        auth.insecure_plaintext_networks = old.auth.insecure_plaintext_networks.clone();
        if old.auth != auth {
            done.restart.push(Section::Auth);
        }
        if self.reload_networks(Networks::from_config(new)) {
            done.applied.push(Section::Networks);
        }
        if old.pop_before_smtp != new.pop_before_smtp {
            done.restart.push(Section::PopBeforeSmtp);
        }
        if old.delivery != new.delivery {
            done.restart.push(Section::Delivery);
        }
        if old.limits != new.limits {
            done.restart.push(Section::Limits);
        }
        if old.audit != new.audit {
            done.restart.push(Section::Audit);
        }
        if old.log_format != new.log_format {
            done.restart.push(Section::Log);
        }
        if old.cluster != new.cluster {
            done.restart.push(Section::Cluster);
        }
        if self.notices_config() != new.notices {
            self.set_notices_config(&new.notices);
            tracing::info!("notices settings reloaded");
            done.applied.push(Section::Notices);
        }
        if !done.restart.is_empty() {
            let sections: Vec<&str> = done.restart.iter().map(|s| s.name()).collect();
            tracing::warn!(?sections, "these changes take effect at the next restart");
        }
        done
    }

    /// Puts `nets` in force for the connections that come next (and the throttle's exemption
    /// of the trusted networks); connections already open keep what they started with.
    /// Returns whether anything changed.
    pub fn reload_networks(&self, nets: Networks) -> bool {
        if nets == *self.networks() {
            return false;
        }
        tracing::info!(
            trusted = nets.trusted.len(),
            insecure_plaintext = nets.insecure_plaintext.len(),
            local_domains = nets.local_domains.len(),
            "networks and local domains reloaded"
        );
        self.throttle.set_exempt(nets.trusted.clone());
        *self.networks.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(nets);
        true
    }

    /// Loads `[tls] cert` and `key` again, so that a renewed certificate is served without a
    /// restart; handshakes already done keep theirs. Without cert and key in `cfg` nothing
    /// changes (the self-signed certificate made at start stays). Blocking (file I/O).
    pub fn reload_tls(&self, cfg: &crate::config::TlsConfig) -> Result<bool, Error> {
        if cfg.cert.is_none() || cfg.key.is_none() {
            return Ok(false);
        }
        // [auth.external] as started (it needs a restart), its CA and CRL files read again.
        let external = self.config.auth.external.as_ref();
        let fresh = crate::tls::server(cfg, &self.config.hostname, external)?;
        *self.tls.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(fresh);
        Ok(true)
    }

    /// Puts reloaded `[notices]` settings in force: the notice interval at once, the digest
    /// recipient and period from the next digest (its timer restarts).
    fn set_notices_config(&self, notices: &crate::config::Notices) {
        self.notices.set_interval(notices.interval);
        match self.notices_config.write() {
            Ok(mut n) => *n = notices.clone(),
            Err(poisoned) => *poisoned.into_inner() = notices.clone(),
        }
        self.notices_changed.notify_one();
    }

    /// Replaces the migration policy (SIGHUP reload); sessions pick it up at their next phase.
    pub fn set_policy(&self, policy: Arc<crate::policy::Policy>) {
        match self.policy.write() {
            Ok(mut p) => *p = policy,
            Err(poisoned) => *poisoned.into_inner() = policy,
        }
    }
}
