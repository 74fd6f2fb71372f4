//! The DIGEST-MD5 mechanism (RFC 2831; historic since RFC 6331), authentication only.
//!
//! The exchange (RFC 2831 §2.1): the server speaks first with a digest-challenge naming the
//! realm (`[auth] digest_md5_realm`), a nonce (the attempt's 32 random bytes in base64: new for
//! every exchange, used by one), `qop="auth"`, `charset=utf-8` and `algorithm=md5-sess`; the
//! client answers with a digest-response ([`directives`]); the server checks it and answers
//! with `rspauth=` (its own proof, §2.1.3) as a challenge; the client's empty response ends the
//! exchange with success. There is no initial response (the server speaks first) and no
//! subsequent authentication (§2.2): every exchange gets a fresh nonce.
//!
//! Rules enforced here, before any credential is looked up (each failure is a well-formed
//! exchange refused, 535 / `-ERR [AUTH]`, with the reason in the log): the nonce must be this
//! exchange's and `nc` must be `00000001` (so a response captured from one exchange is refused
//! in every other); `qop` must be `auth` or absent (the integrity and confidentiality layers
//! `auth-int` and `auth-conf` are not offered); the realm must be the one offered;
//! `digest-uri` must be `<service>/<host>[/<serv-name>]` with this protocol's service name
//! (`smtp`, `pop`) and a host (and serv-name) among `hostname` and `[auth] digest_md5_hosts`,
//! so that a response a client computed for another server does not log in here. Syntax
//! errors and a missing directive are malformed (501 / `-ERR`). `charset`, if given, must be
//! `utf-8`; without it the user name is ISO 8859-1 (§2.1.2). An `authzid`, if given, must name
//! the user (checked with the secret, as for every mechanism).
//!
//! The secret MD5(user:realm:password) comes from the verifier ([`Check::DigestMd5`]), a decoy's
//! for an unknown user so that the response is computed either way; the response is compared
//! in constant time.

pub mod directives;
#[cfg(test)]
mod tests;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_NO_PAD as B64_NO_PAD;
use md5::{Digest, Md5};
use subtle::ConstantTimeEq;

use super::plain::verdict_step;
use super::{Answer, Check, Context, Failure, Identity, Mechanism, Step};
use crate::auth::Secret;

/// The `nc` of the only response an exchange takes.
const NONCE_COUNT: &[u8] = b"00000001";

/// Starts an exchange whose nonce is the attempt's 32 random bytes in base64.
pub fn start(ctx: &Context) -> Box<dyn Mechanism> {
    Box::new(DigestMd5::new(ctx, B64_NO_PAD.encode(ctx.random)))
}

struct DigestMd5 {
    ctx: Context,
    nonce: String,
    state: State,
    user: Option<String>,
}

enum State {
    /// Nothing sent yet.
    Start,
    /// The digest-challenge was sent.
    AwaitingResponse,
    /// The user's secret was asked for; the response is checked with it.
    AwaitingSecret(Box<Pending>),
    /// `rspauth` was sent; an empty response completes the exchange.
    AwaitingAck(Identity),
    /// Success or failure was returned.
    Done,
}

/// What the response is checked with once the secret is known.
struct Pending {
    /// The client's `response`, lower-case hex.
    response: Vec<u8>,
    cnonce: Vec<u8>,
    authzid: Option<Vec<u8>>,
    qop: Vec<u8>,
    digest_uri: Vec<u8>,
}

impl Mechanism for DigestMd5 {
    fn step(&mut self, input: Option<&[u8]>) -> Step {
        match (std::mem::replace(&mut self.state, State::Done), input) {
            (State::Start, None) => {
                self.state = State::AwaitingResponse;
                Step::Challenge(self.challenge().into_bytes())
            }
            (State::Start, Some(_)) => malformed("DIGEST-MD5 takes no initial response"),
            (State::AwaitingResponse, Some(message)) => self.response(message),
            (State::AwaitingAck(identity), Some(b"")) => Step::Success(identity),
            (State::AwaitingAck(_), Some(_)) => malformed("expected an empty response to rspauth"),
            (State::AwaitingResponse | State::AwaitingAck(_), None) => {
                malformed("missing client response")
            }
            (State::AwaitingSecret(_) | State::Done, _) => malformed("exchange already finished"),
        }
    }

    fn resume(&mut self, answer: Answer) -> Step {
        match (std::mem::replace(&mut self.state, State::Done), answer) {
            (State::AwaitingSecret(pending), Answer::DigestMd5 { secret, outcome }) => {
                self.verify(&pending, &secret, outcome)
            }
            (State::AwaitingSecret(_), _) => Step::Failure(Failure::Unavailable(
                "DIGEST-MD5 secret lookup answered with the wrong kind",
            )),
            _ => malformed("no credential check was pending"),
        }
    }

    fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    fn verifies_next(&self) -> bool {
        // The digest-response is checked; the final empty response checks nothing.
        matches!(self.state, State::AwaitingResponse)
    }
}

impl DigestMd5 {
    fn new(ctx: &Context, nonce: String) -> DigestMd5 {
        DigestMd5 {
            ctx: ctx.clone(),
            nonce,
            state: State::Start,
            user: None,
        }
    }

    /// The digest-challenge (RFC 2831 §2.1.1).
    fn challenge(&self) -> String {
        format!(
            "realm={},nonce=\"{}\",qop=\"auth\",charset=utf-8,algorithm=md5-sess",
            quote(&self.ctx.options.digest_md5_realm),
            self.nonce
        )
    }

    /// Checks the digest-response and asks for the user's secret.
    fn response(&mut self, message: &[u8]) -> Step {
        let r = match directives::parse(message) {
            Ok(r) => r,
            Err(why) => return malformed(why),
        };
        let utf8 = match r.charset.as_deref() {
            None => false,
            Some(c) if c.eq_ignore_ascii_case(b"utf-8") => true,
            Some(_) => return malformed("charset is not utf-8"),
        };
        let Some(username) = r.username else {
            return malformed("no username");
        };
        let user = match text(&username, utf8) {
            Some(user) if !user.is_empty() => user,
            _ => return malformed("username is empty or not in its charset"),
        };
        self.user = Some(user.chars().take(crate::auth::MAX_USER_LEN).collect());
        let (Some(nonce), Some(cnonce), Some(response), Some(digest_uri)) =
            (r.nonce, r.cnonce, r.response, r.digest_uri)
        else {
            return malformed("nonce, cnonce, response and digest-uri are required");
        };
        if cnonce.is_empty() {
            return malformed("empty cnonce");
        }
        if response.len() != 32 || !response.iter().all(u8::is_ascii_hexdigit) {
            return malformed("response is not 32 hex digits");
        }
        let qop = r.qop.unwrap_or_else(|| b"auth".to_vec());
        if qop.eq_ignore_ascii_case(b"auth-int") || qop.eq_ignore_ascii_case(b"auth-conf") {
            return refused("qop asks for a security layer; only qop=auth is offered");
        }
        if qop != b"auth" {
            return refused("qop is not auth");
        }
        // The realm, nonce and nc are echoed: compared exactly.
        let realm = self.ctx.options.digest_md5_realm.clone();
        if r.realm.as_deref().unwrap_or_default() != realm.as_bytes() {
            return refused("realm is not the one offered");
        }
        if nonce != self.nonce.as_bytes() {
            return refused("nonce is not this exchange's (replayed or forged response)");
        }
        if r.nc.as_deref() != Some(NONCE_COUNT) {
            return refused("nc is not 00000001");
        }
        if !self.uri_names_us(&digest_uri) {
            return refused("digest-uri names another service or host");
        }
        let authzid = r.authzid.filter(|a| !a.is_empty());
        let authzid_text = match authzid.as_deref().map(std::str::from_utf8) {
            None => None,
            Some(Ok(a)) => Some(a.to_owned()),
            Some(Err(_)) => return malformed("authzid is not UTF-8"),
        };
        self.state = State::AwaitingSecret(Box::new(Pending {
            response: response.to_ascii_lowercase(),
            cnonce,
            authzid,
            qop,
            digest_uri,
        }));
        Step::Verify(Check::DigestMd5 {
            user,
            realm,
            authzid: authzid_text,
        })
    }

    /// Whether `digest-uri` is `<service>/<host>[/<serv-name>]` for this protocol and a host
    /// name of ours.
    fn uri_names_us(&self, uri: &[u8]) -> bool {
        let Ok(uri) = std::str::from_utf8(uri) else {
            return false;
        };
        let mut parts = uri.split('/');
        let (Some(service), Some(host)) = (parts.next(), parts.next()) else {
            return false;
        };
        let serv_name = parts.next();
        let ours = |name: &str| match self.ctx.options.digest_md5_hosts.as_slice() {
            [] => name.eq_ignore_ascii_case(&self.ctx.hostname),
            hosts => hosts.iter().any(|h| name.eq_ignore_ascii_case(h)),
        };
        service.eq_ignore_ascii_case(self.ctx.service)
            && ours(host)
            && serv_name.is_none_or(|s| ours(s) || s == self.ctx.options.digest_md5_realm)
            && parts.next().is_none()
    }

    /// Checks the response with the secret; on success answers with `rspauth`.
    fn verify(
        &mut self,
        p: &Pending,
        secret: &Secret,
        outcome: Result<String, crate::auth::Verdict>,
    ) -> Step {
        let nonce = self.nonce.as_bytes();
        let a1 = session_key(secret, nonce, &p.cnonce, p.authzid.as_deref());
        let want = response_value(
            &a1,
            nonce,
            &p.cnonce,
            &p.qop,
            b"AUTHENTICATE",
            &p.digest_uri,
        );
        let matches = bool::from(want.as_slice().ct_eq(&p.response));
        let user = match outcome {
            Ok(user) => user,
            Err(verdict) => return verdict_step(verdict),
        };
        if !matches {
            return Step::Failure(Failure::BadCredentials);
        }
        let rspauth = response_value(&a1, nonce, &p.cnonce, &p.qop, b"", &p.digest_uri);
        self.state = State::AwaitingAck(Identity::new(user));
        let mut challenge = b"rspauth=".to_vec();
        challenge.extend_from_slice(&rspauth);
        Step::Challenge(challenge)
    }
}

/// H(A1) of RFC 2831 §2.1.2.1: MD5 of the secret, `:nonce:cnonce` and `:authzid` if given.
fn session_key(secret: &Secret, nonce: &[u8], cnonce: &[u8], authzid: Option<&[u8]>) -> Secret {
    let mut md5 = Md5::new();
    md5.update(secret.expose());
    md5.update(b":");
    md5.update(nonce);
    md5.update(b":");
    md5.update(cnonce);
    if let Some(authzid) = authzid {
        md5.update(b":");
        md5.update(authzid);
    }
    Secret::new(md5.finalize().to_vec())
}

/// The lower-case hex response-value of RFC 2831 §2.1.2.1 (with `method` `AUTHENTICATE`) or
/// the `rspauth` value of §2.1.3 (with `method` empty), for `nc=00000001`.
fn response_value(
    a1: &Secret,
    nonce: &[u8],
    cnonce: &[u8],
    qop: &[u8],
    method: &[u8],
    digest_uri: &[u8],
) -> [u8; 32] {
    let ha1 = hex32(a1.expose());
    let mut a2 = Md5::new();
    a2.update(method);
    a2.update(b":");
    a2.update(digest_uri);
    let ha2 = hex32(&a2.finalize());
    let mut kd = Md5::new();
    for part in [&ha1[..], nonce, NONCE_COUNT, cnonce, qop] {
        kd.update(part);
        kd.update(b":");
    }
    kd.update(ha2);
    hex32(&kd.finalize())
}

/// 16 bytes as 32 lower-case hex digits.
fn hex32(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    // Never fails: the buffer is twice the length of an MD5 digest.
    let _ = hex::encode_to_slice(bytes, &mut out);
    out
}

/// A directive value as text: UTF-8 with `charset=utf-8`, ISO 8859-1 without (§2.1.2).
fn text(bytes: &[u8], utf8: bool) -> Option<String> {
    if utf8 {
        String::from_utf8(bytes.to_vec()).ok()
    } else {
        Some(bytes.iter().map(|&b| char::from(b)).collect())
    }
}

/// `s` as a quoted string (RFC 2616 §2.2).
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

fn malformed(why: &'static str) -> Step {
    Step::Failure(Failure::Malformed(why))
}

fn refused(why: &'static str) -> Step {
    Step::Failure(Failure::Refused(why))
}
