//! The claim checks every accepted token passes, whether its claims come from a verified JWT
//! (RFC 7519 §4.1) or from an introspection response (RFC 7662 §2.2): expiry and not-before
//! with the configured clock skew, issuer, audience, a required scope, and the claim naming
//! the user. Pure: the time comes in as an argument.

use std::time::Duration;

use serde_json::{Map, Value};

use crate::config::OAuthConfig;
use crate::sasl::TokenError;

/// Where a token's claims came from; decides which claims are mandatory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A JWT verified offline: `exp` is required, or the token would never expire.
    Jwt,
    /// An RFC 7662 response with `active: true`: the server vouches for the token's life, so
    /// `exp` is checked only when present (RFC 7662 §2.2 makes it optional).
    Introspection,
}

/// The configured expectations a token's claims must meet.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Required `iss`, if configured.
    pub issuer: Option<String>,
    /// Accepted `aud` values; the token must name at least one.
    pub audience: Vec<String>,
    /// Allowed clock skew on `exp` and `nbf`.
    pub clock_skew: Duration,
    /// The claim whose string value names the user.
    pub user_claim: String,
    /// A scope the token must carry, if configured.
    pub required_scope: Option<String>,
}

impl Policy {
    /// The policy from `[auth.oauth]`.
    pub fn from_config(cfg: &OAuthConfig) -> Policy {
        Policy {
            issuer: cfg.issuer.clone(),
            audience: cfg.audience.clone(),
            clock_skew: cfg.clock_skew,
            user_claim: cfg.user_claim.clone(),
            required_scope: cfg.required_scope.clone(),
        }
    }

    /// Checks `claims` at `now` (seconds since the Unix epoch) and returns the value of the
    /// user claim. The error texts name claims, never the token.
    pub fn check<'c>(
        &self,
        claims: &'c Map<String, Value>,
        now: u64,
        source: Source,
    ) -> Result<&'c str, TokenError> {
        let now = now as f64;
        let skew = self.clock_skew.as_secs_f64();
        // RFC 7519 §4.1.4: "the current date/time MUST be before the expiration date/time".
        match (numeric_date(claims, "exp")?, source) {
            (Some(exp), _) if now >= exp + skew => return Err(invalid("token expired (exp)")),
            (None, Source::Jwt) => return Err(invalid("token has no exp claim")),
            _ => {}
        }
        // RFC 7519 §4.1.5: not to be accepted before `nbf`.
        if let Some(nbf) = numeric_date(claims, "nbf")?
            && now + skew < nbf
        {
            return Err(invalid("token not valid yet (nbf)"));
        }
        if let Some(issuer) = &self.issuer
            && claims.get("iss").and_then(Value::as_str) != Some(issuer.as_str())
        {
            return Err(invalid("issuer (iss) mismatch"));
        }
        // RFC 7519 §4.1.3: `aud` is one string or an array of strings.
        let accepted = |v: &Value| {
            v.as_str()
                .is_some_and(|a| self.audience.iter().any(|x| x == a))
        };
        let aud_ok = match claims.get("aud") {
            Some(Value::Array(list)) => list.iter().any(accepted),
            Some(one) => accepted(one),
            None => return Err(invalid("token has no aud claim")),
        };
        if !aud_ok {
            return Err(invalid("audience (aud) mismatch"));
        }
        if let Some(scope) = &self.required_scope
            && !has_scope(claims, scope)
        {
            return Err(TokenError::InsufficientScope(scope.clone()));
        }
        match claims.get(&self.user_claim).and_then(Value::as_str) {
            Some(user) if !user.is_empty() => Ok(user),
            _ => Err(TokenError::Invalid(format!(
                "token has no string claim \"{}\"",
                self.user_claim
            ))),
        }
    }
}

/// Whether the token carries `scope`: in the space-separated `scope` string (RFC 8693 §4.2,
/// RFC 7662 §2.2), or in `scp`, an array (or space-separated string) as some issuers send.
pub fn has_scope(claims: &Map<String, Value>, scope: &str) -> bool {
    let in_text = |v: &Value| {
        v.as_str()
            .is_some_and(|s| s.split_ascii_whitespace().any(|x| x == scope))
    };
    claims.get("scope").is_some_and(in_text)
        || match claims.get("scp") {
            Some(Value::Array(list)) => list.iter().any(|v| v.as_str() == Some(scope)),
            Some(text) => in_text(text),
            None => false,
        }
}

/// A NumericDate claim (RFC 7519 §2: seconds, possibly fractional), if present.
fn numeric_date(
    claims: &Map<String, Value>,
    name: &'static str,
) -> Result<Option<f64>, TokenError> {
    match claims.get(name) {
        None => Ok(None),
        Some(v) => v
            .as_f64()
            .filter(|t| t.is_finite())
            .map(Some)
            .ok_or_else(|| TokenError::Invalid(format!("claim {name} is not a NumericDate"))),
    }
}

fn invalid(why: &str) -> TokenError {
    TokenError::Invalid(why.to_string())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const NOW: u64 = 1_700_000_000;

    fn policy() -> Policy {
        Policy {
            issuer: Some("https://idp.example".into()),
            audience: vec!["mailgate".into(), "mail".into()],
            clock_skew: Duration::from_secs(60),
            user_claim: "email".into(),
            required_scope: Some("mail.send".into()),
        }
    }

    fn good() -> Value {
        json!({
            "iss": "https://idp.example", "aud": "mailgate", "exp": NOW + 300, "nbf": NOW - 10,
            "scope": "openid mail.send", "email": "alice@example.test"
        })
    }

    fn with(changes: Value) -> Map<String, Value> {
        let mut claims = good().as_object().cloned().unwrap_or_default();
        for (k, v) in changes.as_object().cloned().unwrap_or_default() {
            if v.is_null() {
                claims.remove(&k);
            } else {
                claims.insert(k, v);
            }
        }
        claims
    }

    #[test]
    fn accepted_claims() {
        let cases = [
            json!({}),
            json!({"aud": ["other", "mail"]}),
            json!({"exp": NOW - 59}),
            json!({"exp": (NOW as f64) + 0.5}),
            json!({"nbf": NOW + 59}),
            json!({"nbf": null}),
            json!({"scope": null, "scp": ["a", "mail.send"]}),
            json!({"scope": null, "scp": "a mail.send"}),
        ];
        for change in cases {
            let claims = with(change.clone());
            assert_eq!(
                policy().check(&claims, NOW, Source::Jwt),
                Ok("alice@example.test"),
                "{change}"
            );
        }
        // Introspection responses may leave `exp` out.
        let claims = with(json!({"exp": null}));
        assert!(policy().check(&claims, NOW, Source::Introspection).is_ok());
    }

    #[test]
    fn refused_claims() {
        let cases = [
            (json!({"exp": NOW - 60}), "expired"),
            (json!({"exp": null}), "no exp"),
            (json!({"exp": "soon"}), "NumericDate"),
            (json!({"nbf": NOW + 61}), "nbf"),
            (json!({"iss": "https://evil.example"}), "issuer"),
            (json!({"iss": null}), "issuer"),
            (json!({"aud": "other"}), "audience"),
            (json!({"aud": ["a", "b"]}), "audience"),
            (json!({"aud": 7}), "audience"),
            (json!({"aud": null}), "no aud"),
            (json!({"email": null}), "\"email\""),
            (json!({"email": ""}), "\"email\""),
            (json!({"email": ["x"]}), "\"email\""),
        ];
        for (change, want) in cases {
            match policy().check(&with(change.clone()), NOW, Source::Jwt) {
                Err(TokenError::Invalid(why)) => assert!(why.contains(want), "{change}: {why}"),
                other => panic!("{change}: {other:?}"),
            }
        }
        for change in [
            json!({"scope": "openid"}),
            json!({"scope": "mail.send.all"}),
            json!({"scope": null}),
            json!({"scope": null, "scp": ["mail"]}),
        ] {
            assert_eq!(
                policy().check(&with(change.clone()), NOW, Source::Jwt),
                Err(TokenError::InsufficientScope("mail.send".into())),
                "{change}"
            );
        }
    }

    #[test]
    fn no_issuer_or_scope_configured() {
        let mut p = policy();
        p.issuer = None;
        p.required_scope = None;
        let claims = with(json!({"iss": null, "scope": null}));
        assert_eq!(p.check(&claims, NOW, Source::Jwt), Ok("alice@example.test"));
    }
}
