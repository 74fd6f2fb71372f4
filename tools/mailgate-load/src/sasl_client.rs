//! Client halves of the SASL mechanisms the load generator and the micro-benchmarks drive:
//! CRAM-MD5 (RFC 2195 §2) and NTLM with an NTLMv2 and LMv2 response (MS-NLMP §3.3.2), built on
//! the gateway's own NTLM message and crypto code. Postfix with Cyrus SASL accepts the same
//! messages, which checks them against an independent implementation.

use std::time::SystemTime;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{KeyInit, Mac};
use mailgate::sasl::ntlm::{crypto, message};

/// The CRAM-MD5 answer (RFC 2195 §2): base64 of `user`, a space, and the lowercase hex
/// HMAC-MD5 of the decoded challenge keyed with the password.
pub fn cram_md5_answer(user: &str, password: &[u8], challenge_b64: &str) -> Result<String, String> {
    let challenge = B64
        .decode(challenge_b64)
        .map_err(|e| format!("CRAM-MD5 challenge is not base64: {e}"))?;
    let mut mac =
        hmac::Hmac::<md5::Md5>::new_from_slice(password).map_err(|e| format!("HMAC key: {e}"))?;
    mac.update(&challenge);
    let digest = hex::encode(mac.finalize().into_bytes());
    Ok(B64.encode(format!("{user} {digest}")))
}

/// A base64 NEGOTIATE message asking for Unicode, NTLM and target information.
pub fn ntlm_negotiate() -> String {
    let msg = message::Negotiate {
        flags: message::flags::UNICODE
            | message::flags::REQUEST_TARGET
            | message::flags::NTLM
            | message::flags::ALWAYS_SIGN
            | message::flags::EXTENDED_SESSIONSECURITY,
        domain: Vec::new(),
        workstation: Vec::new(),
    };
    B64.encode(msg.encode())
}

/// The base64 AUTHENTICATE message answering a base64 CHALLENGE with an NTLMv2 and an LMv2
/// response (MS-NLMP §3.3.2), for `user` with an empty domain; `now` goes into the blob.
pub fn ntlm_authenticate(
    user: &str,
    password: &str,
    challenge_b64: &str,
    now: SystemTime,
) -> Result<String, String> {
    let bytes = B64
        .decode(challenge_b64)
        .map_err(|e| format!("NTLM challenge is not base64: {e}"))?;
    let challenge =
        message::Challenge::parse(&bytes).map_err(|e| format!("NTLM challenge: {}", e.reason()))?;
    let nt_hash = {
        use md4::Digest;
        md4::Md4::digest(crypto::utf16le(password))
    };
    let key = crypto::nt_owf_v2(&nt_hash, user, "");
    let client_challenge: [u8; 8] = rand::random();
    // The blob ("temp", MS-NLMP §3.3.2): version 1.1, reserved, time, client challenge,
    // reserved, the server's target information, reserved.
    let mut blob = vec![1, 1, 0, 0, 0, 0, 0, 0];
    blob.extend_from_slice(&crypto::filetime(now).to_le_bytes());
    blob.extend_from_slice(&client_challenge);
    blob.extend_from_slice(&[0; 4]);
    blob.extend_from_slice(&challenge.target_info);
    blob.extend_from_slice(&[0; 4]);
    let proof = crypto::nt_proof(&key, &challenge.server_challenge, &blob);
    let mut nt_response = proof.to_vec();
    nt_response.extend_from_slice(&blob);
    let lm_response = crypto::lmv2_response(&key, &challenge.server_challenge, &client_challenge);
    let msg = message::Authenticate {
        lm_response: lm_response.to_vec(),
        nt_response,
        domain: Vec::new(),
        user: crypto::utf16le(user),
        workstation: crypto::utf16le("LOADGEN"),
        session_key: Vec::new(),
        flags: Some(message::flags::UNICODE | message::flags::NTLM),
    };
    Ok(B64.encode(msg.encode()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cram_md5_matches_rfc_2195() {
        // RFC 2195 §2: user tim, password tanstaaftanstaaf.
        let challenge = B64.encode("<1896.697170952@postoffice.reston.mci.net>");
        let answer = cram_md5_answer("tim", b"tanstaaftanstaaf", &challenge).unwrap();
        assert_eq!(
            B64.decode(answer).unwrap(),
            b"tim b913a602c7eda7a495b4e6e7334d3890"
        );
        assert!(cram_md5_answer("tim", b"x", "not base64!").is_err());
    }

    #[test]
    fn ntlm_messages_verify_against_the_server_side() {
        // The NEGOTIATE parses, and the AUTHENTICATE built for a CHALLENGE verifies with the
        // server's NTLMv2 check under the same password, and not under another.
        let negotiate = B64.decode(ntlm_negotiate()).unwrap();
        assert!(message::Negotiate::parse(&negotiate).is_ok());
        let challenge = message::Challenge {
            flags: message::flags::UNICODE | message::flags::NTLM | message::flags::TARGET_INFO,
            target_name: crypto::utf16le("EXAMPLE"),
            server_challenge: [1, 2, 3, 4, 5, 6, 7, 8],
            target_info: message::target_info(&[(message::av::NB_DOMAIN_NAME, b"E\0X\0")]),
            version: [0; 8],
        };
        let answer = ntlm_authenticate(
            "user0007",
            "secret",
            &B64.encode(challenge.encode()),
            SystemTime::UNIX_EPOCH,
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
        assert!(crypto::verify_lmv2(
            &good,
            &challenge.server_challenge,
            &auth.lm_response
        ));
    }
}
