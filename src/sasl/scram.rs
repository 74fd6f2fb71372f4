//! The SCRAM mechanisms (RFC 5802): SCRAM-SHA-1, SCRAM-SHA-256 (RFC 7677) and their `-PLUS`
//! variants with TLS channel binding, `tls-exporter` (RFC 9266) or `tls-server-end-point`
//! (RFC 5929 §4).
//!
//! The exchange (RFC 5802 §5): the client-first message names the user and a client nonce; the
//! server answers with the combined nonce, the salt and the iteration count (server-first);
//! the client-final message repeats the gs2 header and channel-binding data (`c=`) and carries
//! the ClientProof; the server checks it against the StoredKey in constant time and answers with
//! its ServerSignature (`v=`). That server-final message goes out as a challenge, and success
//! follows the client's empty response (RFC 4954 §4), which every SMTP and POP3 client handles.
//!
//! Rules enforced here: the user name and password are SASLprep'd (RFC 5802 §5.1); the
//! authzid, if any, must name the user; the final nonce must be the server-first one; a client
//! that says `y` (it could bind but thinks the server cannot) is refused when the server offers
//! a `-PLUS` mechanism on this connection (RFC 5802 §6, downgrade protection); a `-PLUS`
//! exchange requires `p=` with a binding type this TLS session has, and non-`-PLUS` refuses
//! `p=`. An unknown user (or one whose stored forms cannot serve SCRAM) gets a mock exchange
//! with a stable fake salt ([`Authenticator::scram_decoy`](crate::auth::Authenticator)) and
//! fails only after the proof (RFC 5802 §5.1). A failure is returned as [`Step::Failure`] at
//! once, counted and delayed like any failed login: a message that cannot be parsed (or a
//! channel-binding flag this mechanism cannot take) is `Malformed` (501 / `-ERR`); a
//! well-formed exchange that fails a check (a `y` downgrade, channel-binding data that do not
//! match, a wrong nonce, a bad proof) is an authentication failure (535 5.7.8 / `-ERR [AUTH]`).
//! The reason, which begins with the RFC 5802 `server-error` value (e.g.
//! `channel-bindings-dont-match`), goes to the log only. `message.rs` parses and encodes the messages.

pub mod message;
#[cfg(test)]
mod tests;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_NO_PAD as B64_NO_PAD;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use self::message::CbFlag;
use super::plain::verdict_step;
use super::{Answer, Check, Context, Failure, Identity, Mechanism, Step};
use crate::auth::{ScramCredentials, ScramHash, Verdict};

/// Starts a SCRAM-SHA-1 exchange.
pub fn start_sha1(ctx: &Context) -> Box<dyn Mechanism> {
    start(ctx, ScramHash::Sha1, false)
}

/// Starts a SCRAM-SHA-1-PLUS exchange.
pub fn start_sha1_plus(ctx: &Context) -> Box<dyn Mechanism> {
    start(ctx, ScramHash::Sha1, true)
}

/// Starts a SCRAM-SHA-256 exchange.
pub fn start_sha256(ctx: &Context) -> Box<dyn Mechanism> {
    start(ctx, ScramHash::Sha256, false)
}

/// Starts a SCRAM-SHA-256-PLUS exchange.
pub fn start_sha256_plus(ctx: &Context) -> Box<dyn Mechanism> {
    start(ctx, ScramHash::Sha256, true)
}

/// Starts an exchange whose server nonce is the attempt's 32 random bytes in base64 (43
/// printable characters, none of them `,`).
fn start(ctx: &Context, hash: ScramHash, plus: bool) -> Box<dyn Mechanism> {
    Box::new(Scram::new(ctx, hash, plus, B64_NO_PAD.encode(ctx.random)))
}

struct Scram {
    ctx: Context,
    hash: ScramHash,
    plus: bool,
    server_nonce: String,
    state: State,
    user: Option<String>,
}

enum State {
    /// Nothing received yet.
    Start,
    /// The empty challenge was sent; the client-first message comes next.
    AwaitingClientFirst,
    /// The user's keys were asked for; the server-first message is made with them.
    AwaitingKeys(Box<First>),
    /// The server-first message was sent.
    AwaitingClientFinal(Box<Exchange>),
    /// The server-final message was sent; an empty response completes the exchange.
    AwaitingAck(Identity),
    /// Success or failure was returned.
    Done,
}

/// What the client-first message fixed, kept while the user's keys are looked up.
struct First {
    /// The exact `c=` value expected (gs2 header, then channel-binding data if `p=`).
    channel_binding: Vec<u8>,
    /// Client nonce followed by server nonce.
    nonce: String,
    /// client-first-message-bare.
    bare: String,
}

/// What the client-final message is checked against.
struct Exchange {
    /// The exact `c=` value expected: gs2 header, then the channel-binding data if `p=`.
    channel_binding: Vec<u8>,
    /// Client nonce followed by server nonce.
    nonce: String,
    /// client-first-message-bare "," server-first-message (the head of the AuthMessage).
    auth_head: String,
    credentials: ScramCredentials,
    /// The canonical user, or the verdict a mock exchange ends with (the verifier has held a
    /// requested authzid to the same user already).
    outcome: Result<String, Verdict>,
}

impl Mechanism for Scram {
    fn verifies_next(&self) -> bool {
        // The proof comes in the client-final message; the client-first message and the
        // final empty response check nothing (the user's credentials are looked up at
        // client-first, where the per-user limit applies).
        matches!(self.state, State::AwaitingClientFinal(_))
    }

    fn step(&mut self, input: Option<&[u8]>) -> Step {
        match (std::mem::replace(&mut self.state, State::Done), input) {
            (State::Start, None) => {
                self.state = State::AwaitingClientFirst;
                Step::Challenge(Vec::new())
            }
            (State::Start | State::AwaitingClientFirst, Some(message)) => {
                self.client_first(message)
            }
            (State::AwaitingClientFinal(exchange), Some(message)) => {
                self.client_final(&exchange, message)
            }
            (State::AwaitingAck(identity), Some(b"")) => Step::Success(identity),
            (State::AwaitingAck(_), Some(_)) => {
                malformed("expected an empty response to the server-final message")
            }
            (
                State::AwaitingClientFirst | State::AwaitingClientFinal(_) | State::AwaitingAck(_),
                None,
            ) => malformed("missing client response"),
            (State::AwaitingKeys(_) | State::Done, _) => malformed("exchange already finished"),
        }
    }

    fn resume(&mut self, answer: Answer) -> Step {
        match (std::mem::replace(&mut self.state, State::Done), answer) {
            (
                State::AwaitingKeys(first),
                Answer::Scram {
                    credentials,
                    outcome,
                },
            ) => self.server_first(*first, credentials, outcome),
            (State::AwaitingKeys(_), _) => Step::Failure(Failure::Unavailable(
                "SCRAM key lookup answered with the wrong kind",
            )),
            _ => malformed("no credential check was pending"),
        }
    }

    fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }
}

impl Scram {
    fn new(ctx: &Context, hash: ScramHash, plus: bool, server_nonce: String) -> Scram {
        Scram {
            ctx: ctx.clone(),
            hash,
            plus,
            server_nonce,
            state: State::Start,
            user: None,
        }
    }

    fn client_first(&mut self, message: &[u8]) -> Step {
        let first = match message::parse_client_first(message) {
            Ok(first) => first,
            Err(why) => return malformed(why),
        };
        self.user = Some(first.user.chars().take(crate::auth::MAX_USER_LEN).collect());
        let cbind_data = match self.binding(&first.cb_flag) {
            Ok(data) => data,
            Err(failure) => return Step::Failure(failure),
        };
        let Ok(user) = stringprep::saslprep(&first.user) else {
            return malformed("invalid-username-encoding: rejected by SASLprep");
        };
        if user.is_empty() {
            return malformed("invalid-username-encoding: empty after SASLprep");
        }
        let mut channel_binding = first.gs2_header.as_bytes().to_vec();
        channel_binding.extend_from_slice(&cbind_data);
        self.state = State::AwaitingKeys(Box::new(First {
            channel_binding,
            nonce: format!("{}{}", first.nonce, self.server_nonce),
            bare: first.bare.to_string(),
        }));
        Step::Verify(Check::Scram {
            user: user.into_owned(),
            hash: self.hash,
            authzid: first.authzid,
        })
    }

    /// Answers the client-first message with the keys the verifier found (or a decoy's).
    fn server_first(
        &mut self,
        first: First,
        credentials: ScramCredentials,
        outcome: Result<String, Verdict>,
    ) -> Step {
        let server_first =
            message::server_first(&first.nonce, &credentials.salt, credentials.iterations);
        self.state = State::AwaitingClientFinal(Box::new(Exchange {
            channel_binding: first.channel_binding,
            nonce: first.nonce,
            auth_head: format!("{},{server_first}", first.bare),
            credentials,
            outcome,
        }));
        Step::Challenge(server_first.into_bytes())
    }

    /// The channel-binding data the client's flag commits to (empty without `p=`), or why the
    /// flag is refused for this mechanism on this connection: a detected downgrade is an
    /// authentication failure (535), a flag this mechanism cannot take a malformed request.
    fn binding(&self, flag: &CbFlag<'_>) -> Result<Vec<u8>, Failure> {
        let tls = self.ctx.channel_binding.as_deref();
        match flag {
            CbFlag::None | CbFlag::Unused if self.plus => Err(Failure::Malformed(
                "channel-binding-not-supported: a -PLUS mechanism needs p=",
            )),
            CbFlag::None => Ok(Vec::new()),
            CbFlag::Unused if self.ctx.options.channel_binding_offered && tls.is_some() => {
                Err(Failure::Refused(
                    "server-does-support-channel-binding: the client said y although -PLUS is \
                     offered (possible downgrade)",
                ))
            }
            CbFlag::Unused => Ok(Vec::new()),
            CbFlag::Binding(_) if !self.plus => Err(Failure::Malformed(
                "channel-binding-not-supported: p= needs a -PLUS mechanism",
            )),
            CbFlag::Binding(name) => {
                let data = match *name {
                    "tls-exporter" => tls.and_then(|t| t.tls_exporter.clone()),
                    "tls-server-end-point" => tls.and_then(|t| t.tls_server_end_point.clone()),
                    _ => None,
                };
                data.ok_or(Failure::Malformed(
                    "unsupported-channel-binding-type: not available on this connection",
                ))
            }
        }
    }

    fn client_final(&mut self, exchange: &Exchange, message: &[u8]) -> Step {
        let last = match message::parse_client_final(message) {
            Ok(last) => last,
            Err(why) => return malformed(why),
        };
        // Well-formed but wrong: authentication failures (535), not syntax errors (501).
        if !bool::from(last.channel_binding.ct_eq(&exchange.channel_binding)) {
            return refused("channel-bindings-dont-match: c= differs from this session's");
        }
        if last.nonce != exchange.nonce {
            return refused("other-error: the nonce is not the server-first nonce");
        }
        if last.proof.len() != self.hash.output_len() {
            return refused("invalid-proof: the proof has the wrong length");
        }
        let auth_message = format!("{},{}", exchange.auth_head, last.without_proof);
        let keys = &exchange.credentials;
        let signature = self
            .hash
            .hmac(keys.stored_key.expose(), &[auth_message.as_bytes()]);
        let client_key: Zeroizing<Vec<u8>> = Zeroizing::new(
            last.proof
                .iter()
                .zip(&signature)
                .map(|(p, s)| p ^ s)
                .collect(),
        );
        let proven = bool::from(
            self.hash
                .digest(&client_key)
                .ct_eq(keys.stored_key.expose()),
        );
        let user = match &exchange.outcome {
            Ok(user) => user,
            Err(verdict) => return verdict_step(verdict.clone()),
        };
        if !proven {
            return Step::Failure(Failure::BadCredentials);
        }
        let server_signature = self
            .hash
            .hmac(keys.server_key.expose(), &[auth_message.as_bytes()]);
        self.state = State::AwaitingAck(Identity::new(user.clone()));
        Step::Challenge(message::server_final(&server_signature).into_bytes())
    }
}

fn malformed(why: &'static str) -> Step {
    Step::Failure(Failure::Malformed(why))
}

fn refused(why: &'static str) -> Step {
    Step::Failure(Failure::Refused(why))
}
