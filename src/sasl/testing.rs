//! Test support for the mechanism tests: a [`TestContext`] that carries the users (and
//! optionally a token validator) beside the [`Context`], and [`Driven`], a mechanism whose
//! [`Step::Verify`] round trips are answered at once from them, as the session driver would.

use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use super::{Answer, Check, Context, Environment, Mechanism, Step, TokenError, TokenValidator};
use crate::auth::{Authenticator, UserStore};

/// A [`Context`] with the users and validator that answer its checks.
#[derive(Clone)]
pub(crate) struct TestContext {
    /// The mechanism context.
    pub ctx: Context,
    /// The users.
    pub auth: Arc<dyn Authenticator>,
    /// The bearer-token validator, if any.
    pub tokens: Option<Arc<dyn TokenValidator>>,
}

impl Deref for TestContext {
    type Target = Context;

    fn deref(&self) -> &Context {
        &self.ctx
    }
}

impl DerefMut for TestContext {
    fn deref_mut(&mut self) -> &mut Context {
        &mut self.ctx
    }
}

/// A context over a users file's text, with a fixed seed and `nonce`.
pub(crate) fn test_context(users: &str, nonce: &str, hostname: &str) -> TestContext {
    let store = UserStore::parse(users, "test").expect("test users parse");
    with_auth(Arc::new(store), nonce, hostname)
}

/// A context over `auth`, with a fixed seed and `nonce`.
pub(crate) fn with_auth(auth: Arc<dyn Authenticator>, nonce: &str, hostname: &str) -> TestContext {
    let mut ctx = Environment::basic(auth.clone(), hostname, "s", [7; 32]).context(1);
    ctx.nonce = nonce.to_owned();
    TestContext {
        ctx,
        auth,
        tokens: None,
    }
}

/// A mechanism driven as the session driver drives it: every check answered at once.
pub(crate) struct Driven {
    mechanism: Box<dyn Mechanism>,
    auth: Arc<dyn Authenticator>,
    tokens: Option<Arc<dyn TokenValidator>>,
    /// The checks asked for so far.
    pub checks: Vec<Check>,
}

impl Driven {
    /// Drives `mechanism` with the users and validator of `ctx`.
    pub fn new(mechanism: Box<dyn Mechanism>, ctx: &TestContext) -> Driven {
        Driven {
            mechanism,
            auth: ctx.auth.clone(),
            tokens: ctx.tokens.clone(),
            checks: Vec::new(),
        }
    }

    /// Drives `mechanism` with the users and validator of `ctx`, boxed as a mechanism.
    pub fn boxed(mechanism: Box<dyn Mechanism>, ctx: &TestContext) -> Box<dyn Mechanism> {
        Box::new(Driven::new(mechanism, ctx))
    }
}

impl Mechanism for Driven {
    /// One client message in; the next step that is not a check out.
    fn step(&mut self, input: Option<&[u8]>) -> Step {
        let mut step = self.mechanism.step(input);
        while let Step::Verify(check) = step {
            self.checks.push(check.clone());
            let answer = answer(&*self.auth, self.tokens.as_deref(), check);
            step = self.mechanism.resume(answer);
        }
        step
    }

    fn user(&self) -> Option<&str> {
        self.mechanism.user()
    }

    fn detail(&self) -> Option<&'static str> {
        self.mechanism.detail()
    }

    fn verifies_next(&self) -> bool {
        self.mechanism.verifies_next()
    }
}

/// Answers `check` as the session driver does (tokens on a runtime of their own).
pub(crate) fn answer(
    auth: &dyn Authenticator,
    tokens: Option<&dyn TokenValidator>,
    check: Check,
) -> Answer {
    match check {
        Check::Token { token, claimed } => Answer::Token(match tokens {
            Some(v) => tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime")
                .block_on(v.validate(token.expose(), claimed.as_deref())),
            None => Err(TokenError::Unavailable("no validator".into())),
        }),
        check => crate::sasl::answer(auth, check),
    }
}
