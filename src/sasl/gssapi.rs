//! The GSSAPI mechanism (RFC 4752) with Kerberos V5: the client's tokens establish a security
//! context with our service principal (`smtp/<hostname>` or `pop/<hostname>`), then the two
//! sides agree on a security layer (§3.1) in wrapped 4-octet messages.
//!
//! Context establishment reads the keytab and the replay cache, so it is not done here: each
//! client token goes out as a [`Check::Gssapi`] with the context's [`GssContext`] handle, and
//! the session driver's verification path runs `accept_sec_context` on the blocking pool with
//! its own timeout, maps the client's principal to a user (`[auth.gssapi]`) and answers with
//! a [`GssAnswer`]. Once the context is complete, wrapping and unwrapping the two short
//! security-layer messages is local cryptography on that context and happens here.
//!
//! The server offers only "no security layer" (bit 1) with a maximum buffer size of 0: TLS is
//! this gateway's confidentiality layer. The client must choose exactly that layer; its
//! authorization identity must be empty or name the user its principal maps to (no proxy
//! authorization).

use std::fmt;
use std::sync::{Arc, Mutex, TryLockError};

use libgssapi::context::{SecurityContext, ServerCtx};

use super::{Answer, Check, Context, Failure, Identity, MAX_TOKEN_LEN, Mechanism, Step};

/// RFC 4752 §3.3: the "no security layer" bit of the security-layer bitmask.
pub const NO_SECURITY_LAYER: u8 = 1;

/// The security context of one exchange, shared between the mechanism and the verification
/// path that steps it (the context is neither `Clone` nor comparable, so checks carry this
/// handle). Two handles are equal when they are the same context.
#[derive(Clone, Default)]
pub struct GssContext(Arc<Mutex<Option<ServerCtx>>>);

impl GssContext {
    /// The context, created on first use (the verification path supplies the credential);
    /// poisoning is ignored since a failed step leaves the context failed, not inconsistent.
    pub fn lock(&self) -> std::sync::MutexGuard<'_, Option<ServerCtx>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The context if no step is running on it now (never waits: the session's worker must
    /// not block behind a verification that overran its timeout).
    fn try_lock(&self) -> Option<std::sync::MutexGuard<'_, Option<ServerCtx>>> {
        match self.0.try_lock() {
            Ok(g) => Some(g),
            Err(TryLockError::Poisoned(e)) => Some(e.into_inner()),
            Err(TryLockError::WouldBlock) => None,
        }
    }
}

impl fmt::Debug for GssContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("GssContext")
    }
}

impl PartialEq for GssContext {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for GssContext {}

/// The answer to a [`Check::Gssapi`].
#[derive(Debug, Clone)]
pub enum GssAnswer {
    /// The context needs another client token: send this one.
    Continue(Vec<u8>),
    /// The context is established with the client as `principal`.
    Complete {
        /// The last token for the client (empty when there is none).
        output: Vec<u8>,
        /// The client's principal (`name@REALM`).
        principal: String,
        /// The canonical user the principal maps to, or why it maps to none.
        user: Result<String, &'static str>,
    },
    /// The token was refused (or could not be judged: [`Failure::Temporary`]).
    Failed(Failure),
}

/// Starts an exchange for the connection's service (`smtp` or `pop`).
pub fn start(ctx: &Context) -> Box<dyn Mechanism> {
    Box::new(Gssapi {
        service: ctx.service,
        context: GssContext::default(),
        state: State::Start,
        user: None,
        principal: None,
    })
}

struct Gssapi {
    service: &'static str,
    context: GssContext,
    state: State,
    /// The mapped user, once the context is established.
    user: Option<String>,
    principal: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Nothing received yet.
    Start,
    /// The empty challenge was sent; the first token is due.
    AwaitingFirst,
    /// A token is being checked.
    Accepting,
    /// Another context token is due.
    AwaitingToken,
    /// The last context token was sent; an empty response is due.
    AwaitingEmpty,
    /// The security-layer offer was sent; the client's wrapped choice is due.
    AwaitingChoice,
    /// Success or failure was returned.
    Done,
}

impl Gssapi {
    fn token(&mut self, token: &[u8]) -> Step {
        if token.is_empty() {
            return malformed("empty GSSAPI token");
        }
        if token.len() > MAX_TOKEN_LEN {
            return malformed("GSSAPI token too long");
        }
        self.state = State::Accepting;
        Step::Verify(Check::Gssapi {
            service: self.service,
            token: token.to_vec(),
            context: self.context.clone(),
        })
    }

    /// Sends the wrapped security-layer offer (RFC 4752 §3.1).
    fn offer(&mut self) -> Step {
        let Some(mut guard) = self.context.try_lock() else {
            return Step::Failure(Failure::Temporary(BUSY));
        };
        let Some(ctx) = guard.as_mut() else {
            return malformed("no security context");
        };
        match ctx.wrap(false, &offer()) {
            Ok(wrapped) => {
                self.state = State::AwaitingChoice;
                Step::Challenge(wrapped.to_vec())
            }
            Err(e) => {
                tracing::info!("GSSAPI: wrapping the security-layer offer failed: {e}");
                Step::Failure(Failure::Refused("the security context cannot wrap"))
            }
        }
    }

    /// Checks the client's wrapped choice and ends the exchange.
    fn choice(&mut self, wrapped: &[u8]) -> Step {
        let Some(mut guard) = self.context.try_lock() else {
            return Step::Failure(Failure::Temporary(BUSY));
        };
        let Some(ctx) = guard.as_mut() else {
            return malformed("no security context");
        };
        let message = match ctx.unwrap(wrapped) {
            Ok(m) => m,
            Err(e) => {
                tracing::info!("GSSAPI: the security-layer choice does not unwrap: {e}");
                return malformed("the security-layer message does not unwrap");
            }
        };
        let Some(user) = self.user.clone() else {
            return Step::Failure(Failure::BadCredentials);
        };
        match check_choice(&message, &user) {
            Ok(()) => Step::Success(Identity {
                user,
                principal: self.principal.clone(),
            }),
            Err(f) => Step::Failure(f),
        }
    }
}

/// Waiting for a context that a timed-out step still holds.
const BUSY: &str = "temporary failure: the Kerberos check is still running";

/// The server's security-layer message before wrapping: "no security layer" only, maximum
/// buffer size 0 (RFC 4752 §3.1: the size must be 0 when no layer is offered).
pub fn offer() -> [u8; 4] {
    [NO_SECURITY_LAYER, 0, 0, 0]
}

/// Checks the client's unwrapped security-layer message for `user`: the chosen layer must be
/// "no security layer", then 3 octets of maximum buffer size (meaningless without a layer,
/// ignored), then the authorization identity, empty or naming `user`.
pub fn check_choice(message: &[u8], user: &str) -> Result<(), Failure> {
    if message.len() < 4 {
        return Err(Failure::Malformed(
            "security-layer message shorter than 4 octets",
        ));
    }
    if message[0] != NO_SECURITY_LAYER {
        return Err(Failure::Refused(
            "the client chose a security layer not offered",
        ));
    }
    let Ok(authzid) = std::str::from_utf8(&message[4..]) else {
        return Err(Failure::Malformed("authorization identity is not UTF-8"));
    };
    if authzid.is_empty() || authzid == user || authzid.to_lowercase() == user {
        Ok(())
    } else {
        Err(Failure::Refused(
            "the authorization identity is not the principal's user",
        ))
    }
}

fn malformed(why: &'static str) -> Step {
    Step::Failure(Failure::Malformed(why))
}

impl Mechanism for Gssapi {
    fn step(&mut self, input: Option<&[u8]>) -> Step {
        match (std::mem::replace(&mut self.state, State::Done), input) {
            (State::Start, None) => {
                self.state = State::AwaitingFirst;
                Step::Challenge(Vec::new())
            }
            (State::Start | State::AwaitingFirst | State::AwaitingToken, Some(token)) => {
                self.token(token)
            }
            (State::AwaitingEmpty, Some(b"")) => self.offer(),
            (State::AwaitingEmpty, Some(_)) => malformed("expected an empty response"),
            (State::AwaitingChoice, Some(wrapped)) if wrapped.len() > MAX_TOKEN_LEN => {
                malformed("security-layer message too long")
            }
            (State::AwaitingChoice, Some(wrapped)) => self.choice(wrapped),
            (_, None) => malformed("missing client response"),
            (State::Accepting | State::Done, Some(_)) => malformed("exchange already finished"),
        }
    }

    fn resume(&mut self, answer: Answer) -> Step {
        if self.state != State::Accepting {
            return malformed("no credential check was pending");
        }
        self.state = State::Done;
        let Answer::Gssapi(answer) = answer else {
            return Step::Failure(Failure::Unavailable(
                "credential check answered with the wrong kind",
            ));
        };
        match answer {
            GssAnswer::Continue(token) => {
                self.state = State::AwaitingToken;
                Step::Challenge(token)
            }
            GssAnswer::Complete {
                output,
                principal,
                user,
            } => {
                self.principal = Some(principal);
                match user {
                    Ok(user) => self.user = Some(user),
                    Err(why) => return Step::Failure(Failure::Refused(why)),
                }
                if output.is_empty() {
                    self.offer()
                } else {
                    // RFC 4752 §3.1: the last context token first, answered with no data.
                    self.state = State::AwaitingEmpty;
                    Step::Challenge(output)
                }
            }
            GssAnswer::Failed(f) => Step::Failure(f),
        }
    }

    fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    fn verifies_next(&self) -> bool {
        // Only the first token is checked against the keytab with a fresh throttle slot; the
        // rest of the exchange belongs to that check.
        matches!(self.state, State::Start | State::AwaitingFirst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sasl::Environment;
    use crate::sasl::testing::test_context;

    fn mechanism() -> Box<dyn Mechanism> {
        let mut ctx = test_context("alice:{PLAIN}x\n", "n", "mx.example").ctx;
        ctx.service = "pop";
        start(&ctx)
    }

    fn first_check(m: &mut dyn Mechanism, token: &[u8]) -> Check {
        match m.step(Some(token)) {
            Step::Verify(check) => check,
            other => panic!("expected a check, got {other:?}"),
        }
    }

    #[test]
    fn the_first_token_goes_to_the_verifier_for_the_service() {
        let mut m = mechanism();
        assert!(m.verifies_next());
        assert_eq!(m.step(None), Step::Challenge(Vec::new()));
        assert!(m.verifies_next());
        let Check::Gssapi { service, token, .. } = first_check(&mut *m, b"\x60\x01") else {
            panic!("not a GSSAPI check");
        };
        assert_eq!((service, token.as_slice()), ("pop", &b"\x60\x01"[..]));
        assert!(!m.verifies_next());
        // Another round of context establishment: the token goes out, the next one is checked
        // without a new throttle slot.
        assert_eq!(
            m.resume(Answer::Gssapi(GssAnswer::Continue(b"more".to_vec()))),
            Step::Challenge(b"more".to_vec())
        );
        assert!(!m.verifies_next());
        assert!(matches!(first_check(&mut *m, b"t2"), Check::Gssapi { .. }));
    }

    #[test]
    fn refusals_and_malformed_tokens() {
        let mut m = mechanism();
        assert_eq!(
            m.step(Some(b"")),
            Step::Failure(Failure::Malformed("empty GSSAPI token"))
        );
        let mut m = mechanism();
        let long = vec![0x60; MAX_TOKEN_LEN + 1];
        assert_eq!(
            m.step(Some(&long)),
            Step::Failure(Failure::Malformed("GSSAPI token too long"))
        );
        let mut m = mechanism();
        first_check(&mut *m, b"tok");
        let refused = Failure::Refused("Kerberos ticket expired");
        assert_eq!(
            m.resume(Answer::Gssapi(GssAnswer::Failed(refused.clone()))),
            Step::Failure(refused)
        );
        // An established context whose principal maps to no user is refused with the reason.
        let mut m = mechanism();
        first_check(&mut *m, b"tok");
        let step = m.resume(Answer::Gssapi(GssAnswer::Complete {
            output: Vec::new(),
            principal: "mallory@ELSEWHERE".into(),
            user: Err(crate::auth::principal::UNMAPPED_REALM),
        }));
        assert_eq!(
            step,
            Step::Failure(Failure::Refused(crate::auth::principal::UNMAPPED_REALM))
        );
        assert_eq!(m.user(), None);
        // A final context token is sent first; anything but an empty answer to it is malformed.
        let mut m = mechanism();
        first_check(&mut *m, b"tok");
        let step = m.resume(Answer::Gssapi(GssAnswer::Complete {
            output: b"ap-rep".to_vec(),
            principal: "alice@EXAMPLE.ORG".into(),
            user: Ok("alice".into()),
        }));
        assert_eq!(step, Step::Challenge(b"ap-rep".to_vec()));
        assert_eq!(m.user(), Some("alice"));
        assert_eq!(
            m.step(Some(b"x")),
            Step::Failure(Failure::Malformed("expected an empty response"))
        );
        // A wrong kind of answer fails closed.
        let mut m = mechanism();
        first_check(&mut *m, b"tok");
        assert!(matches!(
            m.resume(Answer::Verdict(crate::auth::Verdict::Ok("alice".into()))),
            Step::Failure(Failure::Unavailable(_))
        ));
    }

    #[test]
    fn the_security_layer_choice() {
        assert_eq!(offer(), [1, 0, 0, 0]);
        assert_eq!(check_choice(&[1, 0, 0, 0], "alice"), Ok(()));
        assert_eq!(
            check_choice(&[1, 0, 0x10, 0, b'a', b'l', b'i', b'c', b'e'], "alice"),
            Ok(())
        );
        assert_eq!(check_choice(b"\x01\0\0\0Alice", "alice"), Ok(()));
        assert_eq!(
            check_choice(b"\x01\0\0\0bob", "alice"),
            Err(Failure::Refused(
                "the authorization identity is not the principal's user"
            ))
        );
        for layer in [0u8, 2, 3, 4, 7] {
            assert_eq!(
                check_choice(&[layer, 0, 0, 0], "alice"),
                Err(Failure::Refused(
                    "the client chose a security layer not offered"
                ))
            );
        }
        assert!(matches!(
            check_choice(&[1, 0, 0], "alice"),
            Err(Failure::Malformed(_))
        ));
        assert!(matches!(
            check_choice(b"\x01\0\0\0\xff", "alice"),
            Err(Failure::Malformed(_))
        ));
    }

    #[test]
    fn handles_are_equal_only_to_themselves() {
        let a = GssContext::default();
        assert_eq!(a, a.clone());
        assert_ne!(a, GssContext::default());
        let env = Environment::basic(
            std::sync::Arc::new(crate::auth::UserStore::parse("", "t").expect("users")),
            "mx.example",
            "s",
            [1; 32],
        );
        assert_eq!(env.context(1).service, "smtp");
    }
}
