//! JWT parsing and validation (`mailgate::oauth::Validator`): raw tokens, and tokens signed
//! with the fixed fuzz key over fuzzer-chosen header and claims, so that the claim checks
//! (alg, exp, nbf, iss, aud, scope, user mapping, the claimed user) run. Never panics; a
//! success names the one known user (`mailgate_fuzz::validate_token`).

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() > 8192 {
        return;
    }
    let _ = mailgate_fuzz::validate_token(data);
});
