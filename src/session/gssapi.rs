//! The Kerberos acceptor behind GSSAPI logins (`[auth.gssapi]`): the service credentials
//! acquired from the keytab at start-up, and one step of a client's security context, run on
//! the blocking pool by the verification path.
//!
//! # The keytab
//! MIT Kerberos finds an acceptor's keys in its default keytab, named by the `KRB5_KTNAME`
//! environment variable; the GSSAPI calls the safe binding exposes take no keytab argument,
//! and this crate forbids the unsafe code that changing its own environment would take. So
//! `mailgate serve` sets the variable the one safe way: when `[auth.gssapi]` is configured and
//! `KRB5_KTNAME` does not already name its keytab, it replaces itself (`exec`, same process
//! id, same arguments, before any socket is bound) with a copy of itself whose environment
//! has it ([`reexec_with_keytab`]). This keeps the keytab in one place (the configuration),
//! works the same under systemd, a shell or a test, and lets a key rotation in the file take
//! effect without a restart (the library reads the keytab on each context).
//!
//! Credentials are acquired once at start-up for `smtp@<hostname>` and `pop@<hostname>`
//! (host-based service names, the principals `smtp/<hostname>` and `pop/<hostname>`),
//! Kerberos V5 only: a keytab without them stops the start with the library's reason.

use std::ffi::OsString;
use std::sync::Arc;
use std::time::Duration;

use libgssapi::context::{SecurityContext, ServerCtx};
use libgssapi::credential::{Cred, CredUsage};
use libgssapi::error::{Error as GssError, MajorFlags};
use libgssapi::name::Name;
use libgssapi::oid::{GSS_MECH_KRB5, GSS_NT_HOSTBASED_SERVICE, OidSet};

use crate::auth::Authenticator;
use crate::config::GssapiConfig;
use crate::sasl::Failure;
use crate::sasl::gssapi::{GssAnswer, GssContext};

/// How long one context step may take (reading the keytab and the replay cache) before the
/// login fails temporarily.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(10);

/// The GSSAPI service names: SMTP (RFC 4954 §4) and POP3 (RFC 5034 §4).
pub const SERVICES: [&str; 2] = ["smtp", "pop"];

/// The acceptor credentials and the principal mapping.
pub struct Acceptor {
    creds: Vec<(&'static str, Cred)>,
    realms: Vec<String>,
    user_map: std::collections::BTreeMap<String, String>,
}

impl std::fmt::Debug for Acceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Acceptor")
            .field("realms", &self.realms)
            .finish_non_exhaustive()
    }
}

impl Acceptor {
    /// Acquires the acceptor credentials of both services on `hostname` from the default
    /// keytab (which `serve` has pointed at the configured one). Blocking.
    pub fn new(cfg: &GssapiConfig, hostname: &str) -> Result<Acceptor, String> {
        let mechs = OidSet::singleton(GSS_MECH_KRB5)
            .map_err(|e| format!("no Kerberos V5 mechanism: {e}"))?;
        let mut creds = Vec::new();
        for service in SERVICES {
            let text = format!("{service}@{hostname}");
            let name = Name::new(text.as_bytes(), Some(GSS_NT_HOSTBASED_SERVICE))
                .map_err(|e| format!("service name {text}: {e}"))?;
            let cred =
                Cred::acquire(Some(&name), None, CredUsage::Accept, Some(&mechs)).map_err(|e| {
                    format!(
                        "no key for {service}/{hostname} in the keytab {}: {e}",
                        cfg.keytab.display()
                    )
                })?;
            creds.push((service, cred));
        }
        Ok(Acceptor {
            creds,
            realms: cfg.realms.clone(),
            user_map: cfg.user_map.clone(),
        })
    }

    /// Feeds `token` to `context` for `service`, on the blocking pool within
    /// [`STEP_TIMEOUT`]; once the context is established, maps the client's principal to a
    /// user of `users`.
    pub async fn step(
        self: &Arc<Self>,
        users: Arc<dyn Authenticator>,
        service: &'static str,
        token: Vec<u8>,
        context: GssContext,
    ) -> GssAnswer {
        let Some(cred) = self.creds.iter().find(|(s, _)| *s == service) else {
            return GssAnswer::Failed(Failure::Refused("no credential for this service"));
        };
        let cred = cred.1.clone();
        let this = self.clone();
        let run = tokio::task::spawn_blocking(move || {
            this.accept(&*users, cred, service, &token, &context)
        });
        match tokio::time::timeout(STEP_TIMEOUT, run).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(e)) => {
                tracing::error!("GSSAPI step failed to run: {e}");
                GssAnswer::Failed(Failure::Temporary(
                    "temporary failure: the Kerberos check failed to run",
                ))
            }
            Err(_) => {
                tracing::warn!("GSSAPI step took longer than {STEP_TIMEOUT:?}");
                GssAnswer::Failed(Failure::Temporary(
                    "temporary failure: the Kerberos check timed out",
                ))
            }
        }
    }

    /// One blocking step (see [`Acceptor::step`]).
    fn accept(
        &self,
        users: &dyn Authenticator,
        cred: Cred,
        service: &str,
        token: &[u8],
        context: &GssContext,
    ) -> GssAnswer {
        let mut guard = context.lock();
        let ctx = guard.get_or_insert_with(|| ServerCtx::new(Some(cred)));
        let output = match ctx.step(token, None) {
            Ok(out) => out.map(|b| b.to_vec()).unwrap_or_default(),
            Err(e) => {
                let failure = refusal(&e);
                tracing::info!(service, "GSSAPI context refused ({failure}): {e}");
                return GssAnswer::Failed(failure);
            }
        };
        if !ctx.is_complete() {
            return GssAnswer::Continue(output);
        }
        if ctx.mechanism().map_or(true, |m| m != GSS_MECH_KRB5) {
            return GssAnswer::Failed(Failure::Refused("the context is not Kerberos V5"));
        }
        let principal = match ctx.source_name().and_then(|n| n.display_name()) {
            Ok(buf) => match std::str::from_utf8(&buf) {
                Ok(p) => p.to_owned(),
                Err(_) => {
                    return GssAnswer::Failed(Failure::Refused("the principal is not UTF-8"));
                }
            },
            Err(e) => {
                tracing::info!(service, "GSSAPI: no client principal: {e}");
                return GssAnswer::Failed(Failure::Refused("the client principal is unknown"));
            }
        };
        let user = self.user_of(users, &principal);
        if let Err(why) = &user {
            tracing::info!(service, principal = %principal, "GSSAPI: {why}");
        }
        GssAnswer::Complete {
            output,
            principal,
            user,
        }
    }

    /// The users-file user `principal` logs in as: mapped by `[auth.gssapi]`, and present in
    /// the users file (a principal cannot make a mailbox appear).
    fn user_of(&self, users: &dyn Authenticator, principal: &str) -> Result<String, &'static str> {
        let user = crate::auth::principal::map(principal, &self.realms, &self.user_map)?;
        users.lookup(&user).ok_or(NOT_A_USER)
    }
}

/// The principal maps to a name the users file does not hold.
pub const NOT_A_USER: &str = "the principal's user is not in the users file";

/// How a refused context step fails the login: a defective token is malformed (501),
/// a missing acceptor key is the server's problem (temporary), anything else is a refused
/// ticket (535) whose details go to the log.
fn refusal(e: &GssError) -> Failure {
    // The routine error is a number in bits 16-23 (RFC 2744 §3.9.1), not a set of flags:
    // GSS_S_FAILURE (13) has every bit of GSS_S_DEFECTIVE_TOKEN (9), so compare the field.
    let routine = e.major.bits() & ROUTINE_ERROR_MASK;
    let is = |f: MajorFlags| routine == f.bits();
    if is(MajorFlags::GSS_S_DEFECTIVE_TOKEN) {
        Failure::Malformed("defective GSSAPI token")
    } else if is(MajorFlags::GSS_S_CREDENTIALS_EXPIRED) || is(MajorFlags::GSS_S_CONTEXT_EXPIRED) {
        Failure::Refused("Kerberos ticket expired")
    } else if is(MajorFlags::GSS_S_NO_CRED) {
        Failure::Temporary("temporary failure: no acceptor credential for the ticket")
    } else {
        Failure::Refused("Kerberos ticket refused")
    }
}

/// The routine-error field of a GSS major status (RFC 2744 §3.9.1).
const ROUTINE_ERROR_MASK: u32 = 0x00ff_0000;

/// The `KRB5_KTNAME` value that names `keytab`.
pub fn ktname(cfg: &GssapiConfig) -> OsString {
    let mut name = OsString::from("FILE:");
    name.push(cfg.keytab.as_os_str());
    name
}

/// When `KRB5_KTNAME` does not already name the configured keytab, replaces this process
/// with the same program and arguments with it set (see the module docs). Returns only if
/// that is not needed (`Ok`) or the `exec` failed (`Err`).
pub fn reexec_with_keytab(cfg: &GssapiConfig) -> Result<(), String> {
    use std::os::unix::process::CommandExt;
    let want = ktname(cfg);
    if std::env::var_os("KRB5_KTNAME").as_ref() == Some(&want) {
        return Ok(());
    }
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this program: {e}"))?;
    let err = std::process::Command::new(&exe)
        .args(std::env::args_os().skip(1))
        .env("KRB5_KTNAME", &want)
        .exec();
    Err(format!(
        "cannot restart {} with KRB5_KTNAME set: {err}",
        exe.display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(major: MajorFlags) -> Failure {
        refusal(&GssError { major, minor: 0 })
    }

    #[test]
    fn refusals_compare_the_routine_error() {
        assert_eq!(
            failure(MajorFlags::GSS_S_DEFECTIVE_TOKEN),
            Failure::Malformed("defective GSSAPI token")
        );
        // A wrong service principal is a plain failure, which shares bits with the above.
        assert_eq!(
            failure(MajorFlags::GSS_S_FAILURE),
            Failure::Refused("Kerberos ticket refused")
        );
        assert_eq!(
            failure(MajorFlags::GSS_S_BAD_SIG),
            Failure::Refused("Kerberos ticket refused")
        );
        assert_eq!(
            failure(MajorFlags::GSS_S_CREDENTIALS_EXPIRED),
            Failure::Refused("Kerberos ticket expired")
        );
        assert!(matches!(
            failure(MajorFlags::GSS_S_NO_CRED),
            Failure::Temporary(_)
        ));
    }
}
