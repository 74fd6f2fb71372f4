//! The NTLM mechanism (MS-NLMP, with the SMTP and POP3 framing of MS-SMTPNTLM and MS-POP3):
//! the client sends NEGOTIATE, the server answers a CHALLENGE with a fresh server challenge and
//! target information, the client proves knowledge of the user's NT hash in AUTHENTICATE.
//! Messages are in `message.rs`, the response computations in `crypto.rs`.
//!
//! `AUTH NTLM` without an initial response gets an empty challenge (`334 ` / `+ `), after which
//! the client sends NEGOTIATE (clients do not read this first continuation);
//! `AUTH NTLM <NEGOTIATE>` gets the CHALLENGE at once.
//!
//! Which responses verify (MS-NLMP §3.3, checked against the stored NT hash only):
//! - NTLMv2 (NT response longer than 24 bytes) is the normal case; LMv2 in the LM field is
//!   the fallback when the NTLMv2 response does not verify or is absent. NTOWFv2 is computed
//!   from the user and domain as sent, then with the domain upper-cased, then with no domain.
//! - NTLMv1 (24-byte NT response) and NTLMv1 with extended session security (an LM field of
//!   client challenge and 16 zero bytes) only with `[auth] ntlm_v1 = true`; otherwise the
//!   attempt fails (535) with a log line saying why. [`Mechanism::detail`] names the variant
//!   that succeeded, so that v1 logins can be recorded as the weakest legacy class.
//! - LM (LMOWFv1) responses never verify: the LM hash is never computed. Anonymous
//!   AUTHENTICATE messages (empty user) fail.
//!
//! No session security is negotiated (no SIGN, SEAL or LM_KEY); the MIC is not checked: the
//! exchange only authenticates, and integrity comes from TLS.
//!
//! User names map to mailboxes as follows; the NTLM names of this server are the NetBIOS domain
//! (`[auth] ntlm_domain`), the NetBIOS computer name (the host name's first label, upper case),
//! the DNS domain (the host name without its first label) and the host name.
//! - `user` with an empty domain field, or a domain that is one of those names
//!   (case-insensitive), is the mailbox `user`. Any other domain fails.
//! - `DOMAIN\user` in the user field (with an empty domain field) is read the same way.
//! - `user@domain` is that mailbox if such a user exists; otherwise, if `domain` is the DNS
//!   domain or the host name, the local part; otherwise it fails. (The mechanism asks for the
//!   NT hash with [`Check::NtHash`], naming the local part as the fallback; the verifier
//!   decides which name exists.)
//!
//! Strings are Unicode (UTF-16LE) when the client offers NTLMSSP_NEGOTIATE_UNICODE, else OEM
//! (see [`message::decode_string`]).

pub mod crypto;
pub mod message;

use zeroize::Zeroizing;

use self::message::{Authenticate, Challenge, Negotiate, av, flags};
use super::plain::verdict_step;
use super::{Answer, Check, Context, Failure, Identity, Mechanism, Step};
use crate::auth::{MAX_USER_LEN, Verdict};

/// Why a v1 response was refused, for the log.
pub const V1_REFUSED: &str = "NTLMv1 response refused: [auth] ntlm_v1 is off";

/// Starts an exchange.
pub fn start(ctx: &Context) -> Box<dyn Mechanism> {
    Box::new(Ntlm::new(ctx))
}

/// Which NTLM response verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// NTLMv2 (MS-NLMP §3.3.2).
    NtlmV2,
    /// LMv2 (MS-NLMP §3.3.2), the fallback of NTLMv2 clients.
    LmV2,
    /// NTLMv1 (MS-NLMP §3.3.1): the weakest legacy class.
    NtlmV1,
    /// NTLMv1 with extended session security (the NTLM2 session response): the weakest legacy
    /// class.
    NtlmV1Ess,
}

impl Variant {
    /// The name used in logs: `NTLMv2`, `LMv2`, `NTLMv1` or `NTLMv1-ESS`.
    pub fn name(self) -> &'static str {
        match self {
            Variant::NtlmV2 => "NTLMv2",
            Variant::LmV2 => "LMv2",
            Variant::NtlmV1 => "NTLMv1",
            Variant::NtlmV1Ess => "NTLMv1-ESS",
        }
    }

    /// Whether this is an NTLMv1 variant (accepted only with `[auth] ntlm_v1 = true`).
    pub fn is_v1(self) -> bool {
        matches!(self, Variant::NtlmV1 | Variant::NtlmV1Ess)
    }
}

/// An NTLM exchange in progress.
pub struct Ntlm {
    ctx: Context,
    names: Names,
    state: State,
    user: Option<String>,
    variant: Option<Variant>,
    /// The variant the AUTHENTICATE message carries, verified or not: what a failure is
    /// recorded as (an NTLMv1 attempt refused by `[auth] ntlm_v1 = false` is still NTLMv1).
    attempted: Option<Variant>,
}

enum State {
    /// Nothing received yet.
    Start,
    /// The empty challenge was sent; NEGOTIATE comes next.
    AwaitingNegotiate,
    /// CHALLENGE was sent with this server challenge and string encoding.
    AwaitingAuthenticate {
        server_challenge: [u8; 8],
        unicode: bool,
    },
    /// The user's NT hash was asked for; the response is checked with it.
    AwaitingHash(Box<Pending>),
    /// Success or failure was returned.
    Done,
}

/// An AUTHENTICATE message waiting for the user's NT hash.
struct Pending {
    auth: Authenticate,
    user: String,
    domain: String,
    server_challenge: [u8; 8],
}

/// The server's NTLM names.
struct Names {
    nb_domain: String,
    nb_computer: String,
    dns_domain: String,
    dns_computer: String,
}

impl Names {
    fn new(ctx: &Context) -> Names {
        let host = ctx.hostname.trim_end_matches('.');
        let (first, rest) = host.split_once('.').unwrap_or((host, ""));
        let nb_computer: String = first.chars().take(15).collect::<String>().to_uppercase();
        let nb_domain = if ctx.options.ntlm_domain.is_empty() {
            nb_computer.clone()
        } else {
            ctx.options.ntlm_domain.to_uppercase()
        };
        Names {
            nb_domain,
            nb_computer,
            dns_domain: if rest.is_empty() { host } else { rest }.to_ascii_lowercase(),
            dns_computer: host.to_ascii_lowercase(),
        }
    }

    /// Whether `domain` (from the domain field or a `DOMAIN\` prefix) names this server.
    fn is_ours(&self, domain: &str) -> bool {
        [
            &self.nb_domain,
            &self.nb_computer,
            &self.dns_domain,
            &self.dns_computer,
        ]
        .iter()
        .any(|n| n.eq_ignore_ascii_case(domain))
    }

    /// Whether the domain of a `user@domain` name is this server's DNS domain or host name.
    fn is_ours_dns(&self, domain: &str) -> bool {
        self.dns_domain.eq_ignore_ascii_case(domain)
            || self.dns_computer.eq_ignore_ascii_case(domain)
    }
}

impl Ntlm {
    /// A new exchange for `ctx` (its random bytes give the server challenge).
    pub fn new(ctx: &Context) -> Ntlm {
        Ntlm {
            ctx: ctx.clone(),
            names: Names::new(ctx),
            state: State::Start,
            user: None,
            variant: None,
            attempted: None,
        }
    }

    /// The response variant that verified, once the exchange succeeded.
    pub fn variant(&self) -> Option<Variant> {
        self.variant
    }

    /// Answers NEGOTIATE with CHALLENGE.
    fn negotiate(&mut self, msg: &[u8]) -> Step {
        let negotiate = match Negotiate::parse(msg) {
            Ok(n) => n,
            Err(e) => return malformed(e.reason()),
        };
        let asked = negotiate.flags;
        let unicode = asked & flags::UNICODE != 0 || asked & flags::OEM == 0;
        let granted = flags::NTLM
            | flags::REQUEST_TARGET
            | flags::TARGET_TYPE_DOMAIN
            | flags::TARGET_INFO
            | if unicode { flags::UNICODE } else { flags::OEM }
            | asked
                & (flags::ALWAYS_SIGN
                    | flags::EXTENDED_SESSIONSECURITY
                    | flags::N128
                    | flags::N56
                    | flags::KEY_EXCH);
        let mut server_challenge = [0u8; 8];
        server_challenge.copy_from_slice(&self.ctx.random[..8]);
        let n = &self.names;
        let u = crypto::utf16le;
        let timestamp = crypto::filetime(self.ctx.now).to_le_bytes();
        let target_info = message::target_info(&[
            (av::NB_DOMAIN_NAME, &u(&n.nb_domain)),
            (av::NB_COMPUTER_NAME, &u(&n.nb_computer)),
            (av::DNS_DOMAIN_NAME, &u(&n.dns_domain)),
            (av::DNS_COMPUTER_NAME, &u(&n.dns_computer)),
            (av::TIMESTAMP, &timestamp),
        ]);
        let challenge = Challenge {
            flags: granted,
            target_name: message::encode_string(&n.nb_domain, unicode),
            server_challenge,
            target_info,
            version: [0; 8],
        };
        self.state = State::AwaitingAuthenticate {
            server_challenge,
            unicode,
        };
        Step::Challenge(challenge.encode())
    }

    /// Verifies AUTHENTICATE.
    fn authenticate(&mut self, msg: &[u8], server_challenge: &[u8; 8], unicode: bool) -> Step {
        let auth = match Authenticate::parse(msg) {
            Ok(a) => a,
            Err(e) => return malformed(e.reason()),
        };
        let class = match classify(&auth) {
            Ok(c) => c,
            Err(why) => return malformed(why),
        };
        self.attempted = Some(match class {
            Class::V2 => Variant::NtlmV2,
            Class::LmOnly => Variant::LmV2,
            Class::V1 => v1_variant(&auth.lm_response),
        });
        let decoded = message::decode_string(&auth.user, unicode)
            .and_then(|u| Ok((u, message::decode_string(&auth.domain, unicode)?)));
        let (user, domain) = match decoded {
            Ok(names) => names,
            Err(e) => return malformed(e.reason()),
        };
        if user.len() > MAX_USER_LEN || domain.len() > MAX_USER_LEN {
            return malformed("NTLM user or domain name too long");
        }
        let mailbox = self.mailbox(&user, &domain);
        if !user.is_empty() {
            // For the log and the per-user throttle until the verifier names the user: the
            // local part of `user@our-domain` (the usual case), else the name as given.
            self.user = Some(match &mailbox {
                Some((_, Some(local))) => local.clone(),
                Some((name, None)) => name.clone(),
                None => user.clone(),
            });
        }
        if user.is_empty() {
            // Anonymous NTLM (MS-NLMP §3.2.5.1.2) is never a login.
            return Step::Failure(Failure::BadCredentials);
        }
        if class == Class::V1 && !self.ctx.options.ntlm_v1 {
            return Step::Failure(Failure::Unavailable(V1_REFUSED));
        }
        let pending = Box::new(Pending {
            auth,
            user,
            domain,
            server_challenge: *server_challenge,
        });
        match mailbox {
            Some((name, fallback)) => {
                self.state = State::AwaitingHash(pending);
                Step::Verify(Check::NtHash {
                    user: name,
                    fallback,
                })
            }
            None => {
                // A name that is no mailbox here costs what a known one does.
                let _ = self.verify(&[0; 16], &pending);
                Step::Failure(Failure::BadCredentials)
            }
        }
    }

    /// Checks the pending response with the NT hash the verifier answered.
    fn finish(&mut self, pending: &Pending, answer: Answer) -> Step {
        let looked_up = match answer {
            Answer::NtHash(found) => found,
            _ => Err(Verdict::Unavailable(
                "NT hash check answered with the wrong kind",
            )),
        };
        let (canonical, nt_hash) = match looked_up {
            Ok((canonical, secret)) => match <[u8; 16]>::try_from(secret.expose()) {
                Ok(nt) => (canonical, Zeroizing::new(nt)),
                Err(_) => {
                    return Step::Failure(Failure::Unavailable("stored NT hash is not 16 bytes"));
                }
            },
            Err(verdict) => {
                // An unknown user costs what a known one does.
                let _ = self.verify(&[0; 16], pending);
                return verdict_step(verdict);
            }
        };
        match self.verify(&nt_hash, pending) {
            Some(variant) => {
                self.variant = Some(variant);
                Step::Success(Identity::new(canonical))
            }
            None => Step::Failure(Failure::BadCredentials),
        }
    }

    /// The mailbox `user` (with `domain`) names, per the module docs, with the name to try
    /// when it is unknown (the local part of `user@our-domain`); `None` if it names none.
    fn mailbox(&self, user: &str, domain: &str) -> Option<(String, Option<String>)> {
        let (domain, user) = match user.split_once('\\') {
            Some((prefix, rest)) if domain.is_empty() => (prefix, rest),
            Some(_) => return None,
            None => (domain, user),
        };
        if user.is_empty() || (!domain.is_empty() && !self.names.is_ours(domain)) {
            return None;
        }
        if let Some((local, host)) = user.rsplit_once('@') {
            let fallback =
                (!local.is_empty() && self.names.is_ours_dns(host)).then(|| local.to_owned());
            return Some((user.to_owned(), fallback));
        }
        Some((user.to_owned(), None))
    }

    /// Which response of `auth` the NT hash verifies, if any.
    fn verify(&self, nt_hash: &[u8; 16], pending: &Pending) -> Option<Variant> {
        let Pending {
            auth,
            user,
            domain,
            server_challenge,
        } = pending;
        let (user, domain) = (user.as_str(), domain.as_str());
        let (nt, lm) = (&auth.nt_response, &auth.lm_response);
        match classify(auth).ok()? {
            Class::V2 | Class::LmOnly => {
                let upper = crypto::upcase(domain);
                let mut domains = vec![domain, upper.as_str(), ""];
                domains.dedup();
                let keys: Vec<Zeroizing<[u8; 16]>> = domains
                    .iter()
                    .map(|d| Zeroizing::new(crypto::nt_owf_v2(nt_hash, user, d)))
                    .collect();
                if !nt.is_empty()
                    && keys
                        .iter()
                        .any(|k| crypto::verify_ntlmv2(k, server_challenge, nt))
                {
                    return Some(Variant::NtlmV2);
                }
                keys.iter()
                    .any(|k| crypto::verify_lmv2(k, server_challenge, lm))
                    .then_some(Variant::LmV2)
            }
            Class::V1 => {
                if !self.ctx.options.ntlm_v1 {
                    return None;
                }
                match v1_variant(lm) {
                    Variant::NtlmV1Ess => {
                        let mut cc = [0u8; 8];
                        cc.copy_from_slice(&lm[..8]);
                        crypto::verify_ntlm2_session(nt_hash, server_challenge, &cc, nt)
                            .then_some(Variant::NtlmV1Ess)
                    }
                    _ => crypto::verify_ntlmv1(nt_hash, server_challenge, nt)
                        .then_some(Variant::NtlmV1),
                }
            }
        }
    }
}

/// Which NTLMv1 response a 24-byte NT response comes with: extended session security (the
/// NTLM2 session response) puts the 8-byte client challenge in an LM field padded with zeros
/// (MS-NLMP §3.3.1).
fn v1_variant(lm: &[u8]) -> Variant {
    if lm.len() == 24 && lm[8..].iter().all(|&b| b == 0) {
        Variant::NtlmV1Ess
    } else {
        Variant::NtlmV1
    }
}

/// The kind of an AUTHENTICATE message, from its response lengths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    /// An NTLMv2 response (NTProofStr and a blob of at least 28 bytes).
    V2,
    /// No NT response: only an LMv2 response can verify.
    LmOnly,
    /// A 24-byte NTLMv1 response.
    V1,
}

/// Shortest NTLMv2 response: the NTProofStr and the blob's fixed part (MS-NLMP §2.2.2.7).
const MIN_V2_RESPONSE: usize = crypto::NT_PROOF_LEN + 28;

fn classify(auth: &Authenticate) -> Result<Class, &'static str> {
    let lm_len = auth.lm_response.len();
    if !matches!(lm_len, 0 | 1 | crypto::V1_RESPONSE_LEN) {
        return Err("NTLM LM response has an invalid length");
    }
    match auth.nt_response.len() {
        0 => Ok(Class::LmOnly),
        crypto::V1_RESPONSE_LEN => Ok(Class::V1),
        n if n >= MIN_V2_RESPONSE => Ok(Class::V2),
        _ => Err("NTLM NT response has an invalid length"),
    }
}

impl Mechanism for Ntlm {
    fn verifies_next(&self) -> bool {
        // NEGOTIATE checks nothing; AUTHENTICATE does.
        matches!(self.state, State::AwaitingAuthenticate { .. })
    }

    fn step(&mut self, input: Option<&[u8]>) -> Step {
        match (std::mem::replace(&mut self.state, State::Done), input) {
            (State::Start, None) => {
                self.state = State::AwaitingNegotiate;
                Step::Challenge(Vec::new())
            }
            (State::Start | State::AwaitingNegotiate, Some(msg)) => self.negotiate(msg),
            (
                State::AwaitingAuthenticate {
                    server_challenge,
                    unicode,
                },
                Some(msg),
            ) => self.authenticate(msg, &server_challenge, unicode),
            (State::AwaitingNegotiate | State::AwaitingAuthenticate { .. }, None) => {
                malformed("missing client response")
            }
            (State::AwaitingHash(_) | State::Done, _) => malformed("exchange already finished"),
        }
    }

    fn resume(&mut self, answer: Answer) -> Step {
        match std::mem::replace(&mut self.state, State::Done) {
            State::AwaitingHash(pending) => self.finish(&pending, answer),
            _ => malformed("no credential check was pending"),
        }
    }

    fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    fn detail(&self) -> Option<&'static str> {
        self.variant.or(self.attempted).map(Variant::name)
    }
}

fn malformed(why: &'static str) -> Step {
    Step::Failure(Failure::Malformed(why))
}

#[cfg(test)]
mod tests;
