//! The EXTERNAL mechanism (RFC 4422 appendix A) over a TLS client certificate.
//!
//! The credential is the certificate the client presented in the TLS handshake, checked by the
//! session driver against `[auth.external]` (it chains to the CA, is in its validity period
//! and not revoked) and handed here in [`Context::client_cert`], with the user its identity
//! names. Nothing the client sends in SASL can change who that is: its one message is the
//! authorization identity (RFC 4422 A.1), empty for "the certificate's own user", and a
//! non-empty one must name that same user (no proxy authorization). Without an initial response
//! the server sends an empty challenge. The user must exist in the users file, which the
//! verifier checks ([`Check::Certificate`]).

use std::sync::Arc;

use super::one_message::{OneMessage, malformed};
use super::{
    Answer, Check, ClientCertificate, Context, Failure, Identity, MAX_TOKEN_LEN, Mechanism, Step,
};
use crate::auth::Verdict;

/// Why EXTERNAL was refused on a session with no usable certificate (it is not offered there,
/// so only a client that ignores the offer meets it).
pub const NO_CERTIFICATE: &str = "no client certificate from the [auth.external] CA";
/// Why EXTERNAL was refused when the authorization identity names another user.
pub const OTHER_AUTHZID: &str = "authorization identity is not the certificate's user";

/// Starts an exchange.
pub fn start(ctx: &Context) -> Box<dyn Mechanism> {
    Box::new(External {
        cert: ctx.client_cert.clone(),
        state: OneMessage::Start,
    })
}

struct External {
    cert: Option<Arc<ClientCertificate>>,
    state: OneMessage,
}

impl Mechanism for External {
    fn step(&mut self, input: Option<&[u8]>) -> Step {
        let mut state = self.state;
        let step = state.step(input, |message| self.finish(message));
        self.state = state;
        step
    }

    fn resume(&mut self, answer: Answer) -> Step {
        if !self.state.take_verdict() {
            return malformed("no credential check was pending");
        }
        match answer.into_verdict() {
            Verdict::Ok(user) => Step::Success(Identity::new(user)),
            Verdict::BadCredentials => refused(OTHER_AUTHZID),
            Verdict::Unavailable(why) => refused(why),
            Verdict::Temporary(why) => Step::Failure(Failure::Temporary(why)),
        }
    }

    /// The user the certificate names: the client gave no name of its own.
    fn user(&self) -> Option<&str> {
        self.cert.as_ref()?.user.as_deref().ok()
    }
}

impl External {
    fn finish(&mut self, message: &[u8]) -> Step {
        if message.len() > MAX_TOKEN_LEN {
            return malformed("message too long");
        }
        let Ok(authzid) = std::str::from_utf8(message) else {
            return malformed("authorization identity is not UTF-8");
        };
        if authzid.contains('\0') {
            return malformed("authorization identity contains NUL");
        }
        let Some(cert) = &self.cert else {
            return refused(NO_CERTIFICATE);
        };
        let user = match &cert.user {
            Ok(user) => user.clone(),
            Err(why) => return refused(why),
        };
        Step::Verify(Check::Certificate {
            user,
            authzid: (!authzid.is_empty()).then(|| authzid.to_owned()),
        })
    }
}

fn refused(why: &'static str) -> Step {
    Step::Failure(Failure::Refused(why))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sasl::testing::{Driven, TestContext, test_context};

    const USERS: &str = "printer:{PLAIN}unused\nscanner:{PLAIN}unused\n";

    /// The user a session's certificate names, or why it cannot be used; `None`: no
    /// certificate.
    type Cert<'a> = Option<Result<&'a str, &'static str>>;

    fn context(user: Cert<'_>) -> TestContext {
        let mut ctx = test_context(USERS, "n", "h");
        ctx.client_cert = user.map(|user| {
            Arc::new(ClientCertificate {
                subject: "CN=device".into(),
                sha256: "00".repeat(32),
                identity: Some("device".into()),
                user: user.map(str::to_owned),
            })
        });
        ctx
    }

    fn run(user: Cert<'_>, message: Option<&[u8]>) -> Step {
        let ctx = context(user);
        let mut m = Driven::new(super::start(&ctx), &ctx);
        match m.step(message) {
            Step::Challenge(c) => {
                assert!(c.is_empty());
                m.step(Some(message.unwrap_or_default()))
            }
            other => other,
        }
    }

    fn ok(user: &str) -> Step {
        Step::Success(Identity::new(user))
    }

    #[test]
    fn the_certificate_names_the_user() {
        let cases: Vec<(Cert<'_>, Option<&[u8]>, Step)> = vec![
            (Some(Ok("printer")), Some(b""), ok("printer")),
            (Some(Ok("printer")), None, ok("printer")),
            // The users file's spelling wins, as for every mechanism.
            (Some(Ok("Printer")), Some(b""), ok("printer")),
            (Some(Ok("printer")), Some(b"printer"), ok("printer")),
            (Some(Ok("printer")), Some(b"PRINTER"), ok("printer")),
            // No proxy authorization.
            (
                Some(Ok("printer")),
                Some(b"scanner"),
                refused(OTHER_AUTHZID),
            ),
            // A certificate whose identity is no user.
            (
                Some(Ok("fax")),
                Some(b""),
                refused(crate::sasl::NO_SUCH_USER),
            ),
            (
                Some(Err("client certificate revoked")),
                Some(b""),
                refused("client certificate revoked"),
            ),
            (None, Some(b""), refused(NO_CERTIFICATE)),
            (None, Some(b"printer"), refused(NO_CERTIFICATE)),
        ];
        for (user, message, want) in cases {
            assert_eq!(run(user, message), want, "{user:?} {message:?}");
        }
    }

    #[test]
    fn malformed_messages() {
        let long = vec![b'a'; MAX_TOKEN_LEN + 1];
        let cases: Vec<(&[u8], &str)> = vec![
            (b"\xff", "not UTF-8"),
            (b"printer\0", "NUL"),
            (&long, "too long"),
        ];
        for (message, want) in cases {
            match run(Some(Ok("printer")), Some(message)) {
                Step::Failure(Failure::Malformed(why)) => assert!(why.contains(want), "{why}"),
                other => panic!("{message:?}: {other:?}"),
            }
        }
        let ctx = context(Some(Ok("printer")));
        let mut m = super::start(&ctx);
        assert_eq!(m.step(None), Step::Challenge(Vec::new()));
        assert!(matches!(m.step(None), Step::Failure(Failure::Malformed(_))));
        assert_eq!(m.user(), Some("printer"));
    }

    #[test]
    fn the_lookup_goes_through_the_verifier() {
        let ctx = context(Some(Ok("printer")));
        let mut m = super::start(&ctx);
        assert_eq!(
            m.step(Some(b"printer")),
            Step::Verify(Check::Certificate {
                user: "printer".into(),
                authzid: Some("printer".into()),
            })
        );
        assert_eq!(
            m.resume(Answer::Verdict(Verdict::Temporary("temporary failure: x"))),
            Step::Failure(Failure::Temporary("temporary failure: x"))
        );
    }
}
