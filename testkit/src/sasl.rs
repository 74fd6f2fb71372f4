//! Client halves of the SASL mechanisms and POP3 login methods the gateway serves, one encoder
//! each, for the end-to-end tests, the fuzz targets, the micro-benchmarks and the load
//! generator: PLAIN (RFC 4616), LOGIN, CRAM-MD5 (RFC 2195), APOP (RFC 1939 §7), NTLM (MS-NLMP,
//! through the `ntlmclient` crate, an implementation independent of the gateway's), SCRAM-SHA-1
//! and SCRAM-SHA-256 (RFC 5802, RFC 7677; computed here, not with the gateway's SCRAM code),
//! DIGEST-MD5 (RFC 2831, likewise), and the XOAUTH2 and OAUTHBEARER (RFC 7628) initial responses.
//!
//! Functions ending in `_b64` return the base64 text sent on the wire; the others the decoded
//! message. Encoders that read a server challenge return `Err` with a reason when it is
//! malformed (the load generator counts that as an error; tests `expect` it).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, KeyInit, Mac};
use ntlmclient::{ChallengeResponse, Credentials, Flags, Message, NegotiateMessage};

/// The PLAIN message (RFC 4616 §2): `authzid NUL user NUL password`.
pub fn plain(authzid: &str, user: &str, password: &str) -> String {
    format!("{authzid}\0{user}\0{password}")
}

/// The PLAIN message without an authorization identity, base64.
pub fn plain_b64(user: &str, password: &str) -> String {
    B64.encode(plain("", user, password))
}

/// The two LOGIN answers, base64: the user name and the password, each sent after its prompt.
pub fn login_b64(user: &str, password: &str) -> [String; 2] {
    [B64.encode(user), B64.encode(password)]
}

/// The CRAM-MD5 response (RFC 2195 §2) to the decoded `challenge`: `user`, a space, and the
/// lowercase hex HMAC-MD5 of the challenge keyed with the password.
pub fn cram_md5(user: &str, password: &[u8], challenge: &[u8]) -> String {
    let mut mac = match Hmac::<md5::Md5>::new_from_slice(password) {
        Ok(mac) => mac,
        Err(e) => panic!("HMAC takes a key of any length: {e}"),
    };
    mac.update(challenge);
    format!("{user} {}", hex::encode(mac.finalize().into_bytes()))
}

/// The CRAM-MD5 response, base64, to the base64 `challenge` (the text after `334 ` or `+ `).
pub fn cram_md5_b64(user: &str, password: &[u8], challenge_b64: &str) -> Result<String, String> {
    let challenge = B64
        .decode(challenge_b64.trim())
        .map_err(|e| format!("CRAM-MD5 challenge is not base64: {e}"))?;
    Ok(B64.encode(cram_md5(user, password, &challenge)))
}

/// The APOP digest (RFC 1939 §7): lowercase hex MD5 of the greeting's timestamp (`<...>`,
/// brackets included) followed by the password.
pub fn apop(timestamp: &str, password: &str) -> String {
    hex::encode(<md5::Md5 as md5::Digest>::digest(format!(
        "{timestamp}{password}"
    )))
}

/// The DIGEST-MD5 digest-response (RFC 2831 §2.1.2) to the decoded `challenge`, with
/// `qop=auth`, `nc=00000001`, the given `cnonce` and `digest_uri`, and `charset=utf-8`
/// (ASCII names and passwords only: no ISO 8859-1 conversion is made). Written from the RFC's
/// formulas, not with the gateway's code. `Err` if the challenge lacks a nonce.
pub fn digest_md5(
    user: &str,
    password: &str,
    challenge: &[u8],
    digest_uri: &str,
    cnonce: &str,
    authzid: Option<&str>,
) -> Result<String, String> {
    use md5::{Digest, Md5};
    let text = String::from_utf8_lossy(challenge);
    // Only the quoted realm and nonce are read (the gateway sends no escapes in either).
    let quoted = |name: &str| {
        text.split(',')
            .find_map(|d| d.trim().strip_prefix(&format!("{name}=\"")))
            .and_then(|v| v.strip_suffix('"'))
            .map(str::to_owned)
    };
    let nonce = quoted("nonce").ok_or("DIGEST-MD5 challenge has no nonce")?;
    let realm = quoted("realm").unwrap_or_default();
    let h = |data: &[u8]| Md5::digest(data).to_vec();
    let mut a1 = h(format!("{user}:{realm}:{password}").as_bytes());
    a1.extend_from_slice(format!(":{nonce}:{cnonce}").as_bytes());
    if let Some(a) = authzid {
        a1.extend_from_slice(format!(":{a}").as_bytes());
    }
    let ha1 = hex::encode(h(&a1));
    let ha2 = hex::encode(h(format!("AUTHENTICATE:{digest_uri}").as_bytes()));
    let response = hex::encode(h(
        format!("{ha1}:{nonce}:00000001:{cnonce}:auth:{ha2}").as_bytes()
    ));
    let authzid = authzid.map_or(String::new(), |a| format!(",authzid=\"{a}\""));
    Ok(format!(
        "charset=utf-8,username=\"{user}\",realm=\"{realm}\",nonce=\"{nonce}\",nc=00000001,\
         cnonce=\"{cnonce}\",digest-uri=\"{digest_uri}\",response={response},qop=auth{authzid}"
    ))
}

/// NTLM credentials for `user` in `domain` (empty for none).
pub fn ntlm_credentials(user: &str, domain: &str, password: &str) -> Credentials {
    Credentials {
        username: user.into(),
        password: password.into(),
        domain: domain.into(),
    }
}

/// The NTLM NEGOTIATE message, base64: Unicode, NTLM, extended session security, target
/// information requested.
pub fn ntlm_negotiate_b64() -> String {
    let msg = Message::Negotiate(NegotiateMessage {
        flags: Flags::NEGOTIATE_UNICODE
            | Flags::REQUEST_TARGET
            | Flags::NEGOTIATE_NTLM
            | Flags::NEGOTIATE_NTLM2_KEY
            | Flags::NEGOTIATE_ALWAYS_SIGN,
        supplied_domain: String::new(),
        supplied_workstation: String::new(),
        os_version: Default::default(),
    });
    match msg.to_bytes() {
        Ok(bytes) => B64.encode(bytes),
        Err(e) => panic!("the NEGOTIATE message encodes: {e:?}"),
    }
}

/// The NTLMv2 AUTHENTICATE message (MS-NLMP §3.3.2), base64, answering the base64 CHALLENGE.
pub fn ntlm_authenticate_b64(challenge_b64: &str, creds: &Credentials) -> Result<String, String> {
    ntlm_authenticate_b64_with(challenge_b64, creds, |server_challenge, target_info| {
        ntlmclient::respond_challenge_ntlm_v2(
            server_challenge,
            target_info,
            ntlmclient::get_ntlm_time(),
            creds,
        )
    })
}

/// The AUTHENTICATE message, base64, answering the base64 CHALLENGE with the response that
/// `respond` computes from the server challenge and the target information (for NTLMv1 and
/// other variants a test builds itself).
pub fn ntlm_authenticate_b64_with(
    challenge_b64: &str,
    creds: &Credentials,
    respond: impl FnOnce([u8; 8], &[u8]) -> ChallengeResponse,
) -> Result<String, String> {
    let bytes = B64
        .decode(challenge_b64.trim())
        .map_err(|e| format!("NTLM challenge is not base64: {e}"))?;
    let Ok(Message::Challenge(c)) = Message::try_from(bytes.as_slice()) else {
        return Err(format!("not an NTLM CHALLENGE: {bytes:02x?}"));
    };
    let info: Vec<u8> = c
        .target_information
        .iter()
        .flat_map(|e| e.to_bytes())
        .collect();
    let response = respond(c.challenge, &info);
    let msg = response.to_message(
        creds,
        "WORKSTATION",
        Flags::NEGOTIATE_UNICODE | Flags::NEGOTIATE_NTLM,
    );
    msg.to_bytes()
        .map(|bytes| B64.encode(bytes))
        .map_err(|e| format!("AUTHENTICATE does not encode: {e:?}"))
}

/// The hash function of a SCRAM mechanism.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScramHash {
    /// SCRAM-SHA-1 (RFC 5802).
    Sha1,
    /// SCRAM-SHA-256 (RFC 7677).
    Sha256,
}

impl ScramHash {
    /// The mechanism name, with `-PLUS` when `plus`.
    pub fn mechanism(self, plus: bool) -> &'static str {
        match (self, plus) {
            (ScramHash::Sha1, false) => "SCRAM-SHA-1",
            (ScramHash::Sha1, true) => "SCRAM-SHA-1-PLUS",
            (ScramHash::Sha256, false) => "SCRAM-SHA-256",
            (ScramHash::Sha256, true) => "SCRAM-SHA-256-PLUS",
        }
    }

    /// HMAC(key, data).
    pub fn hmac(self, key: &[u8], data: &[u8]) -> Vec<u8> {
        fn run<M: Mac + KeyInit>(key: &[u8], data: &[u8]) -> Vec<u8> {
            let mut mac = match <M as KeyInit>::new_from_slice(key) {
                Ok(mac) => mac,
                Err(e) => panic!("HMAC takes a key of any length: {e}"),
            };
            mac.update(data);
            mac.finalize().into_bytes().to_vec()
        }
        match self {
            ScramHash::Sha1 => run::<Hmac<sha1::Sha1>>(key, data),
            ScramHash::Sha256 => run::<Hmac<sha2::Sha256>>(key, data),
        }
    }

    /// H(data).
    pub fn digest(self, data: &[u8]) -> Vec<u8> {
        match self {
            ScramHash::Sha1 => <sha1::Sha1 as sha1::Digest>::digest(data).to_vec(),
            ScramHash::Sha256 => <sha2::Sha256 as sha2::Digest>::digest(data).to_vec(),
        }
    }

    /// `Hi` (RFC 5802 §2.2): PBKDF2 with this HMAC and one output block.
    pub fn hi(self, password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
        let mut u = self.hmac(password, &[salt, &1u32.to_be_bytes()].concat());
        let mut out = u.clone();
        for _ in 1..iterations {
            u = self.hmac(password, &u);
            out.iter_mut().zip(&u).for_each(|(o, b)| *o ^= b);
        }
        out
    }
}

/// The SCRAM client-first message (RFC 5802 §7): the GS2 header (`n,,`, `y,,` or
/// `p=<cb-name>,,`) followed by the bare part `n=<user>,r=<nonce>`; returns both the whole
/// message and the bare part (which goes into the AuthMessage).
pub fn scram_client_first(gs2_header: &str, user: &str, nonce: &str) -> (String, String) {
    // saslname (RFC 5802 §5.1): "=" and "," escaped.
    let name = user.replace('=', "=3D").replace(',', "=2C");
    let bare = format!("n={name},r={nonce}");
    (format!("{gs2_header}{bare}"), bare)
}

/// The client's answer to a SCRAM server-first message.
#[derive(Debug, Clone)]
pub struct ScramFinal {
    /// The client-final message `c=...,r=...,p=...`.
    pub message: String,
    /// The proof alone, base64 (the `p=` value).
    pub proof: String,
    /// The server-final message the server must send: `v=<ServerSignature>`.
    pub server_final: String,
}

/// The SCRAM client-final message (RFC 5802 §3) answering `server_first` (decoded), for the
/// client-first bare part `bare`. `cbind_input` is what `c=` carries, base64-encoded here: the
/// GS2 header, followed by the channel-binding data for `-PLUS`. The password is prepared with
/// SASLprep (RFC 4013) where it can be, as the server does.
pub fn scram_client_final(
    hash: ScramHash,
    password: &str,
    bare: &str,
    server_first: &str,
    cbind_input: &[u8],
) -> Result<ScramFinal, String> {
    let attr = |name: &str| {
        server_first
            .split(',')
            .find_map(|a| a.strip_prefix(name))
            .ok_or_else(|| format!("no {name} in server-first {server_first:?}"))
    };
    let salt = B64
        .decode(attr("s=")?)
        .map_err(|e| format!("salt is not base64: {e}"))?;
    let iterations: u32 = attr("i=")?
        .parse()
        .map_err(|e| format!("iteration count: {e}"))?;
    let prepared = stringprep::saslprep(password)
        .map(|p| p.into_owned())
        .unwrap_or_else(|_| password.to_owned());
    let salted = hash.hi(prepared.as_bytes(), &salt, iterations);
    let client_key = hash.hmac(&salted, b"Client Key");
    let stored_key = hash.digest(&client_key);
    let without_proof = format!("c={},r={}", B64.encode(cbind_input), attr("r=")?);
    let auth_message = format!("{bare},{server_first},{without_proof}");
    let signature = hash.hmac(&stored_key, auth_message.as_bytes());
    let proof: Vec<u8> = client_key
        .iter()
        .zip(&signature)
        .map(|(k, s)| k ^ s)
        .collect();
    let server_key = hash.hmac(&salted, b"Server Key");
    let server_signature = hash.hmac(&server_key, auth_message.as_bytes());
    let proof = B64.encode(proof);
    Ok(ScramFinal {
        message: format!("{without_proof},p={proof}"),
        proof,
        server_final: format!("v={}", B64.encode(server_signature)),
    })
}

/// The XOAUTH2 initial response: `user=<user>^Aauth=Bearer <token>^A^A`.
pub fn xoauth2(user: &str, token: &str) -> String {
    format!("user={user}\x01auth=Bearer {token}\x01\x01")
}

/// The XOAUTH2 initial response, base64.
pub fn xoauth2_b64(user: &str, token: &str) -> String {
    B64.encode(xoauth2(user, token))
}

/// The OAUTHBEARER initial response (RFC 7628 §3.1): GS2 header `n,a=<authzid>,`, then
/// `host` and `port` when given, then `auth=Bearer <token>`, each ended by ^A, and a final ^A.
pub fn oauthbearer(authzid: &str, host_port: Option<(&str, u16)>, token: &str) -> String {
    let host = host_port
        .map(|(host, port)| format!("\x01host={host}\x01port={port}"))
        .unwrap_or_default();
    format!("n,a={authzid},{host}\x01auth=Bearer {token}\x01\x01")
}

/// The OAUTHBEARER initial response, base64.
pub fn oauthbearer_b64(authzid: &str, host_port: Option<(&str, u16)>, token: &str) -> String {
    B64.encode(oauthbearer(authzid, host_port, token))
}

#[cfg(test)]
mod tests {
    use super::*;
    use mailgate::sasl::ntlm::{crypto, message};

    #[test]
    fn cram_md5_matches_rfc_2195() {
        // RFC 2195 §2: user tim, password tanstaaftanstaaf.
        let challenge = B64.encode("<1896.697170952@postoffice.reston.mci.net>");
        let answer = cram_md5_b64("tim", b"tanstaaftanstaaf", &challenge).unwrap();
        assert_eq!(
            B64.decode(answer).unwrap(),
            b"tim b913a602c7eda7a495b4e6e7334d3890"
        );
        assert!(cram_md5_b64("tim", b"x", "not base64!").is_err());
    }

    #[test]
    fn apop_matches_rfc_1939() {
        // RFC 1939 §7.
        assert_eq!(
            apop("<1896.697170952@dbc.mtview.ca.us>", "tanstaaf"),
            "c4c9334bac560ecc979e58001b3e22fb"
        );
    }

    #[test]
    fn scram_sha1_and_sha256_match_the_rfc_examples() {
        // RFC 5802 §5 (SCRAM-SHA-1) and RFC 7677 §3 (SCRAM-SHA-256): user "user", password
        // "pencil".
        let cases = [
            (
                ScramHash::Sha1,
                "fyko+d2lbbFgONRv9qkxdawL",
                "r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096",
                "c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=",
                "v=rmF9pqV8S7suAoZWja4dJRkFsKQ=",
            ),
            (
                ScramHash::Sha256,
                "rOprNGfwEbeRWgbNEkqO",
                "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
                "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
                "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=",
            ),
        ];
        for (hash, nonce, server_first, client_final, server_final) in cases {
            let (first, bare) = scram_client_first("n,,", "user", nonce);
            assert_eq!(first, format!("n,,n=user,r={nonce}"));
            let last = scram_client_final(hash, "pencil", &bare, server_first, b"n,,").unwrap();
            assert_eq!(last.message, client_final, "{hash:?}");
            assert_eq!(last.server_final, server_final, "{hash:?}");
            assert!(client_final.ends_with(&format!("p={}", last.proof)));
        }
        assert!(scram_client_final(ScramHash::Sha1, "x", "n=u,r=a", "r=ab", b"n,,").is_err());
    }

    #[test]
    fn bearer_initial_responses() {
        assert_eq!(xoauth2("a", "t"), "user=a\x01auth=Bearer t\x01\x01");
        assert_eq!(
            oauthbearer("a", None, "t"),
            "n,a=a,\x01auth=Bearer t\x01\x01"
        );
        assert_eq!(
            oauthbearer("a", Some(("mail.example.test", 465)), "t"),
            "n,a=a,\x01host=mail.example.test\x01port=465\x01auth=Bearer t\x01\x01"
        );
        assert_eq!(B64.decode(plain_b64("a", "p")).unwrap(), b"\0a\0p");
    }

    #[test]
    fn ntlm_messages_verify_against_the_server_side() {
        // The NEGOTIATE parses, and the AUTHENTICATE built for a CHALLENGE verifies with the
        // gateway's NTLMv2 check under the same password, and not under another.
        let negotiate = B64.decode(ntlm_negotiate_b64()).unwrap();
        assert!(message::Negotiate::parse(&negotiate).is_ok());
        let challenge = message::Challenge {
            flags: message::flags::UNICODE | message::flags::NTLM | message::flags::TARGET_INFO,
            target_name: crypto::utf16le("EXAMPLE"),
            server_challenge: [1, 2, 3, 4, 5, 6, 7, 8],
            target_info: message::target_info(&[(message::av::NB_DOMAIN_NAME, b"E\0X\0")]),
            version: [0; 8],
        };
        let answer = ntlm_authenticate_b64(
            &B64.encode(challenge.encode()),
            &ntlm_credentials("user0007", "", "secret"),
        )
        .unwrap();
        let auth = message::Authenticate::parse(&B64.decode(answer).unwrap()).unwrap();
        let hash = |p: &str| {
            use md4::Digest;
            md4::Md4::digest(crypto::utf16le(p))
        };
        let good = crypto::nt_owf_v2(&hash("secret"), "user0007", "");
        let bad = crypto::nt_owf_v2(&hash("wrong"), "user0007", "");
        assert!(crypto::verify_ntlmv2(
            &good,
            &challenge.server_challenge,
            &auth.nt_response
        ));
        assert!(!crypto::verify_ntlmv2(
            &bad,
            &challenge.server_challenge,
            &auth.nt_response
        ));
        assert!(ntlm_authenticate_b64("not base64!", &ntlm_credentials("u", "", "p")).is_err());
    }
}
