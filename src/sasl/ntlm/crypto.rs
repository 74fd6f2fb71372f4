//! The NTLM response computations of MS-NLMP §3.3, server side: NTOWFv2 (§3.3.2), the NTLMv2
//! and LMv2 responses (§3.3.2), the NTLMv1 response and the NTLMv1 response with extended
//! session security, also called the NTLM2 session response (§3.3.1), and the Windows FILETIME
//! timestamp of the challenge's target information (§2.2.2.1, `MsvAvTimestamp`).
//!
//! Every function starts from the user's NT hash (NTOWFv1, MD4 of the UTF-16LE password), which
//! the authenticator supplies; the LM hash (LMOWFv1) is never computed, so an LM response can
//! never verify. The `verify_*` functions compare in constant time.

use std::time::{SystemTime, UNIX_EPOCH};

use des::Des;
use des::cipher::{BlockCipherEncrypt, KeyInit};
use hmac::{Hmac, Mac};
use md5::{Digest, Md5};
use subtle::ConstantTimeEq;

/// Length of the NTProofStr that opens an NTLMv2 response.
pub const NT_PROOF_LEN: usize = 16;
/// Length of an NTLMv1 or LM-style response.
pub const V1_RESPONSE_LEN: usize = 24;

/// 100-nanosecond intervals between 1601-01-01 and 1970-01-01.
const FILETIME_UNIX_EPOCH: u64 = 116_444_736_000_000_000;

/// `t` as a Windows FILETIME: 100-nanosecond intervals since 1601-01-01 UTC. Times before 1970
/// count as 1970.
pub fn filetime(t: SystemTime) -> u64 {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let ticks = since
        .as_secs()
        .saturating_mul(10_000_000)
        .saturating_add(u64::from(since.subsec_nanos() / 100));
    FILETIME_UNIX_EPOCH.saturating_add(ticks)
}

/// UTF-16LE bytes of `s` (MS-NLMP's "UNICODE" strings).
pub fn utf16le(s: &str) -> Vec<u8> {
    s.encode_utf16().flat_map(u16::to_le_bytes).collect()
}

/// Upper-cases `s` one character at a time, keeping characters whose upper case is not a single
/// character (as Windows' per-character RtlUpcaseUnicodeChar does: "ß" stays "ß").
pub fn upcase(s: &str) -> String {
    s.chars()
        .map(|c| {
            let mut up = c.to_uppercase();
            match (up.next(), up.next()) {
                (Some(u), None) => u,
                _ => c,
            }
        })
        .collect()
}

fn hmac_md5(key: &[u8], parts: &[&[u8]]) -> [u8; 16] {
    // HMAC (RFC 2104) accepts keys of every length, so this cannot fail.
    let mut mac = <Hmac<Md5> as KeyInit>::new_from_slice(key).expect("HMAC takes any key length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// NTOWFv2 (MS-NLMP §3.3.2): HMAC-MD5 keyed with the NT hash over
/// UNICODE(Uppercase(user) ‖ domain). The user and domain are the strings the client sent.
pub fn nt_owf_v2(nt_hash: &[u8], user: &str, domain: &str) -> [u8; 16] {
    let mut text = utf16le(&upcase(user));
    text.extend(utf16le(domain));
    hmac_md5(nt_hash, &[&text])
}

/// The NTProofStr of an NTLMv2 response (MS-NLMP §3.3.2): HMAC-MD5 keyed with NTOWFv2 over the
/// server challenge and the client's blob (`temp`, the response after its first 16 bytes).
pub fn nt_proof(key: &[u8; 16], server_challenge: &[u8; 8], blob: &[u8]) -> [u8; 16] {
    hmac_md5(key, &[server_challenge, blob])
}

/// The LMv2 response (MS-NLMP §3.3.2): HMAC-MD5 keyed with NTOWFv2 over the server and client
/// challenges, followed by the 8-byte client challenge.
pub fn lmv2_response(
    key: &[u8; 16],
    server_challenge: &[u8; 8],
    client_challenge: &[u8; 8],
) -> [u8; 24] {
    let mac = hmac_md5(key, &[server_challenge, client_challenge]);
    let mut out = [0u8; 24];
    out[..16].copy_from_slice(&mac);
    out[16..].copy_from_slice(client_challenge);
    out
}

/// Spreads 56 key bits over the high 7 bits of 8 bytes (the DES parity bits are ignored).
fn des_key(seven: &[u8; 7]) -> [u8; 8] {
    let bits = seven.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b));
    let mut key = [0u8; 8];
    for (i, k) in key.iter_mut().enumerate() {
        // Bits 55..49 for the first byte, and so on; shifted into the top 7 bits.
        *k = (((bits >> (49 - 7 * i)) & 0x7f) as u8) << 1;
    }
    key
}

fn des_encrypt(seven: &[u8; 7], data: &[u8; 8]) -> [u8; 8] {
    let cipher = Des::new(&des_key(seven).into());
    let mut block = (*data).into();
    cipher.encrypt_block(&mut block);
    block.into()
}

/// DESL (MS-NLMP §6): three DES encryptions of `data` under the 16-byte key padded with zeros to
/// 21 bytes and cut into 7-byte keys.
pub fn desl(key: &[u8; 16], data: &[u8; 8]) -> [u8; 24] {
    let mut k = [0u8; 21];
    k[..16].copy_from_slice(key);
    let mut out = [0u8; 24];
    for (i, chunk) in out.chunks_exact_mut(8).enumerate() {
        let mut seven = [0u8; 7];
        seven.copy_from_slice(&k[7 * i..7 * i + 7]);
        chunk.copy_from_slice(&des_encrypt(&seven, data));
    }
    out
}

/// The NTLMv1 response (MS-NLMP §3.3.1, no extended session security): DESL(NT hash, server
/// challenge).
pub fn ntlmv1_response(nt_hash: &[u8; 16], server_challenge: &[u8; 8]) -> [u8; 24] {
    desl(nt_hash, server_challenge)
}

/// The NTLMv1 response with extended session security (MS-NLMP §3.3.1, the NTLM2 session
/// response): DESL(NT hash, MD5(server challenge ‖ client challenge)[0..8]).
pub fn ntlm2_session_response(
    nt_hash: &[u8; 16],
    server_challenge: &[u8; 8],
    client_challenge: &[u8; 8],
) -> [u8; 24] {
    let mut md5 = Md5::new();
    md5.update(server_challenge);
    md5.update(client_challenge);
    let digest = md5.finalize();
    let mut session = [0u8; 8];
    session.copy_from_slice(&digest[..8]);
    desl(nt_hash, &session)
}

/// Whether `response` (NTProofStr ‖ blob, longer than 16 bytes) is the NTLMv2 response of `key`.
pub fn verify_ntlmv2(key: &[u8; 16], server_challenge: &[u8; 8], response: &[u8]) -> bool {
    let Some((proof, blob)) = response.split_at_checked(NT_PROOF_LEN) else {
        return false;
    };
    nt_proof(key, server_challenge, blob).ct_eq(proof).into()
}

/// Whether the 24-byte `response` is the LMv2 response of `key`; the client challenge is its
/// last 8 bytes.
pub fn verify_lmv2(key: &[u8; 16], server_challenge: &[u8; 8], response: &[u8]) -> bool {
    let Ok(response) = <&[u8; 24]>::try_from(response) else {
        return false;
    };
    let mut client = [0u8; 8];
    client.copy_from_slice(&response[16..]);
    lmv2_response(key, server_challenge, &client)
        .ct_eq(response)
        .into()
}

/// Whether the 24-byte `response` is the NTLMv1 response of `nt_hash`.
pub fn verify_ntlmv1(nt_hash: &[u8; 16], server_challenge: &[u8; 8], response: &[u8]) -> bool {
    ntlmv1_response(nt_hash, server_challenge)
        .ct_eq(response)
        .into()
}

/// Whether the 24-byte `response` is the NTLM2 session response of `nt_hash` for the client
/// challenge `client_challenge` (the first 8 bytes of the LM response field).
pub fn verify_ntlm2_session(
    nt_hash: &[u8; 16],
    server_challenge: &[u8; 8],
    client_challenge: &[u8; 8],
    response: &[u8],
) -> bool {
    ntlm2_session_response(nt_hash, server_challenge, client_challenge)
        .ct_eq(response)
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    // MS-NLMP §4.2.1: the common values of the examples.
    const SERVER_CHALLENGE: [u8; 8] = [0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef];
    const CLIENT_CHALLENGE: [u8; 8] = [0xaa; 8];

    fn h(text: &str) -> Vec<u8> {
        hex::decode(text.replace(' ', "")).expect("test hex")
    }

    fn nt_hash() -> [u8; 16] {
        crate::auth::UserStore::parse("user:{PLAIN}Password\n", "test")
            .expect("users")
            .nt_hash("user")
            .expect("nt hash")
            .expose()
            .try_into()
            .expect("16 bytes")
    }

    #[test]
    fn ms_nlmp_4_2_2_ntlmv1() {
        // §4.2.2.1.2 NTOWFv1, §4.2.2.2.1 NTLMv1 response.
        assert_eq!(
            nt_hash().to_vec(),
            h("a4 f4 9c 40 65 10 bd ca b6 82 4e e7 c3 0f d8 52")
        );
        let want = h("67 c4 30 11 f3 02 98 a2 ad 35 ec e6 4f 16 33 1c 44 bd be d9 27 84 1f 94");
        assert_eq!(
            ntlmv1_response(&nt_hash(), &SERVER_CHALLENGE).to_vec(),
            want
        );
        assert!(verify_ntlmv1(&nt_hash(), &SERVER_CHALLENGE, &want));
        let mut wrong = want.clone();
        wrong[23] ^= 1;
        assert!(!verify_ntlmv1(&nt_hash(), &SERVER_CHALLENGE, &wrong));
        assert!(!verify_ntlmv1(&nt_hash(), &SERVER_CHALLENGE, &want[..23]));
    }

    #[test]
    fn ms_nlmp_4_2_3_ntlmv1_extended_session_security() {
        // §4.2.3.2.2 NTLMv1 response with extended session security.
        let want = h("75 37 f8 03 ae 36 71 28 ca 45 82 04 bd e7 ca f8 1e 97 ed 26 83 26 72 32");
        let got = ntlm2_session_response(&nt_hash(), &SERVER_CHALLENGE, &CLIENT_CHALLENGE);
        assert_eq!(got.to_vec(), want);
        assert!(verify_ntlm2_session(
            &nt_hash(),
            &SERVER_CHALLENGE,
            &CLIENT_CHALLENGE,
            &want
        ));
        assert!(!verify_ntlm2_session(
            &nt_hash(),
            &SERVER_CHALLENGE,
            &[0xab; 8],
            &want
        ));
    }

    #[test]
    fn ms_nlmp_4_2_4_ntlmv2_and_lmv2() {
        // §4.2.4.1.1 NTOWFv2 of User / Domain / Password.
        let key = nt_owf_v2(&nt_hash(), "User", "Domain");
        assert_eq!(
            key.to_vec(),
            h("0c 86 8a 40 3b fd 7a 93 a3 00 1e f2 2e f0 2e 3f")
        );
        // The user is upper-cased, the domain is not.
        assert_eq!(nt_owf_v2(&nt_hash(), "USER", "Domain"), key);
        assert_ne!(nt_owf_v2(&nt_hash(), "User", "DOMAIN"), key);
        // §4.2.4.2.1 LMv2 response.
        let lmv2 = h("86 c3 50 97 ac 9c ec 10 25 54 76 4a 57 cc cc 19 aa aa aa aa aa aa aa aa");
        assert_eq!(
            lmv2_response(&key, &SERVER_CHALLENGE, &CLIENT_CHALLENGE).to_vec(),
            lmv2
        );
        assert!(verify_lmv2(&key, &SERVER_CHALLENGE, &lmv2));
        assert!(!verify_lmv2(&key, &SERVER_CHALLENGE, &lmv2[..23]));
        // §4.2.4.1.3 temp (the blob: time 0, target info Domain / Server) and §4.2.4.2.2
        // NTProofStr.
        let blob = h("01 01 00 00 00 00 00 00 00 00 00 00 00 00 00 00 \
                      aa aa aa aa aa aa aa aa 00 00 00 00 \
                      02 00 0c 00 44 00 6f 00 6d 00 61 00 69 00 6e 00 \
                      01 00 0c 00 53 00 65 00 72 00 76 00 65 00 72 00 \
                      00 00 00 00 00 00 00 00");
        let proof = h("68 cd 0a b8 51 e5 1c 96 aa bc 92 7b eb ef 6a 1c");
        assert_eq!(nt_proof(&key, &SERVER_CHALLENGE, &blob).to_vec(), proof);
        let response = [proof.clone(), blob.clone()].concat();
        assert!(verify_ntlmv2(&key, &SERVER_CHALLENGE, &response));
        let mut tampered = response.clone();
        tampered[40] ^= 1;
        assert!(!verify_ntlmv2(&key, &SERVER_CHALLENGE, &tampered));
        assert!(!verify_ntlmv2(&key, &[0; 8], &response));
        assert!(!verify_ntlmv2(&key, &SERVER_CHALLENGE, &proof[..10]));
    }

    #[test]
    fn des_key_spreads_seven_bit_groups() {
        let cases: &[([u8; 7], [u8; 8])] = &[
            ([0; 7], [0; 8]),
            ([0xff; 7], [0xfe; 8]),
            ([0x80, 0, 0, 0, 0, 0, 0], [0x80, 0, 0, 0, 0, 0, 0, 0]),
            ([0, 0, 0, 0, 0, 0, 0x01], [0, 0, 0, 0, 0, 0, 0, 0x02]),
            ([0x01, 0, 0, 0, 0, 0, 0], [0, 0x80, 0, 0, 0, 0, 0, 0]),
        ];
        for (seven, eight) in cases {
            assert_eq!(des_key(seven), *eight, "{seven:?}");
        }
    }

    #[test]
    fn filetime_and_upcase() {
        assert_eq!(filetime(UNIX_EPOCH), FILETIME_UNIX_EPOCH);
        let t = UNIX_EPOCH + std::time::Duration::new(1, 250);
        assert_eq!(filetime(t), FILETIME_UNIX_EPOCH + 10_000_002);
        assert_eq!(
            filetime(UNIX_EPOCH - std::time::Duration::from_secs(5)),
            FILETIME_UNIX_EPOCH
        );
        let cases = [
            ("user", "USER"),
            ("Jürgen", "JÜRGEN"),
            ("straße", "STRAßE"),
            ("", ""),
        ];
        for (s, want) in cases {
            assert_eq!(upcase(s), want);
        }
        assert_eq!(utf16le("Ab"), vec![0x41, 0, 0x62, 0]);
    }
}
