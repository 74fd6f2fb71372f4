//! OAuth 2.0 bearer-token validation for XOAUTH2 and OAUTHBEARER (RFC 7628): the
//! [`Validator`] behind [`sasl::TokenValidator`](crate::sasl::TokenValidator).
//!
//! A token is accepted when
//! 1. it is a JWT (RFC 7519) signed with a configured key (`jwt.rs`), or else the configured
//!    RFC 7662 introspection endpoint calls it active (`introspection.rs`);
//! 2. its claims pass the configured checks: issuer, audience, expiry and not-before with the
//!    clock skew, required scope (`claims.rs`);
//! 3. its user claim names a known user, and any user the client named is that same user.
//!
//! Which path a token takes: a JWT-shaped token is verified offline when keys are configured,
//! and that verdict is final, except that a JWT for which no configured key exists (say, after
//! the issuer rotated keys) goes to introspection when it is configured. Any other token goes
//! to introspection, or is refused. Tokens never appear in errors, logs or `Debug` output.

pub mod claims;
pub mod introspection;
pub mod jwt;

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{Map, Value};

use crate::auth::{Authenticator, Secret};
use crate::clock::{Clock, unix_secs};
use crate::config::OAuthConfig;
use crate::sasl::{TokenError, TokenValidator, Validation};
use claims::{Policy, Source};

/// Largest JWKS or secret file read, in bytes.
pub const MAX_KEY_FILE: u64 = 1024 * 1024;

/// Shortest HS256 secret accepted (RFC 7518 §3.2: at least the hash size, 256 bits).
pub const MIN_HS256_SECRET: usize = 32;

/// Why the validator could not be built from the configuration.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A key or secret file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A key or secret file is larger than [`MAX_KEY_FILE`].
    #[error("{path} is larger than {MAX_KEY_FILE} bytes")]
    TooLarge {
        /// The file.
        path: PathBuf,
    },
    /// The JWKS file is not usable.
    #[error("JWKS file {path}: {reason}")]
    Jwks {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The HS256 secret is shorter than [`MIN_HS256_SECRET`] bytes.
    #[error("HS256 secret in {path} is {len} bytes; at least {MIN_HS256_SECRET} are required")]
    ShortSecret {
        /// The file.
        path: PathBuf,
        /// Its length (after trailing line breaks are removed).
        len: usize,
    },
    /// The introspection settings are not usable.
    #[error("introspection: {0}")]
    Introspection(String),
}

/// Validates bearer tokens as configured in `[auth.oauth]`.
pub struct Validator {
    keys: Option<jwt::Keys>,
    introspection: Option<introspection::Client>,
    policy: Policy,
    auth: Arc<dyn Authenticator>,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for Validator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Validator")
            .field("keys", &self.keys)
            .field("introspection", &self.introspection)
            .field("policy", &self.policy)
            .finish()
    }
}

impl Validator {
    /// Builds the validator, reading the JWKS file, the HS256 secret and the introspection
    /// client secret. Users are looked up through `auth`; time comes from `clock`.
    pub fn from_config(
        cfg: &OAuthConfig,
        auth: Arc<dyn Authenticator>,
        clock: Arc<dyn Clock>,
    ) -> Result<Validator, Error> {
        let jwks = cfg.jwks_file.as_deref().map(read_limited).transpose()?;
        let secret = match &cfg.hs256_secret_file {
            Some(path) => {
                let secret = read_secret(path)?;
                if secret.expose().len() < MIN_HS256_SECRET {
                    return Err(Error::ShortSecret {
                        path: path.clone(),
                        len: secret.expose().len(),
                    });
                }
                Some(secret)
            }
            None => None,
        };
        let keys = jwt::Keys::new(
            &cfg.algorithms,
            jwks.as_deref(),
            secret.as_ref().map(Secret::expose),
        )
        .map_err(|reason| Error::Jwks {
            path: cfg.jwks_file.clone().unwrap_or_default(),
            reason,
        })?;
        let introspection = cfg
            .introspection
            .as_ref()
            .map(introspection::Client::new)
            .transpose()?;
        Ok(Validator {
            keys: (!keys.is_empty()).then_some(keys),
            introspection,
            policy: Policy::from_config(cfg),
            auth,
            clock,
        })
    }

    /// The checks of [`TokenValidator::validate`], without the log line.
    async fn check(&self, token: &[u8], claimed: Option<&str>) -> Result<String, TokenError> {
        let token = std::str::from_utf8(token)
            .map_err(|_| TokenError::Invalid("token is not ASCII".into()))?;
        let now = unix_secs(self.clock.now());
        let (claims, source) = self.claims(token, now).await?;
        let value = self.policy.check(&claims, now, source)?;
        let user = self.map_user(value).ok_or_else(|| {
            TokenError::Invalid(format!("token names unknown user {}", printable(value)))
        })?;
        if let Some(claimed) = claimed.filter(|c| !c.is_empty())
            && self.map_user(claimed).as_deref() != Some(user.as_str())
        {
            return Err(TokenError::Invalid(format!(
                "client named user {} but the token is for {user}",
                printable(claimed)
            )));
        }
        Ok(user)
    }

    /// The token's claims and where they came from (see the module docs for the order).
    async fn claims(
        &self,
        token: &str,
        now: u64,
    ) -> Result<(Map<String, Value>, Source), TokenError> {
        if let Some(keys) = &self.keys
            && jwt::looks_like_jwt(token)
        {
            match keys.verify(token) {
                Ok(claims) => return Ok((claims, Source::Jwt)),
                Err(jwt::Rejection::NoKey { .. }) if self.introspection.is_some() => {}
                Err(rejection) => return Err(TokenError::Invalid(rejection.to_string())),
            }
        }
        match &self.introspection {
            Some(client) => Ok((client.introspect(token, now).await?, Source::Introspection)),
            None => Err(TokenError::Invalid(
                "token is not a JWT signed with a configured key".into(),
            )),
        }
    }

    /// The canonical user a claim value (or a client-named user) stands for: the whole value
    /// if it is a known user, else, for an address, its local part if that is a known user.
    fn map_user(&self, value: &str) -> Option<String> {
        self.auth.lookup(value).or_else(|| {
            let (local, _domain) = value.rsplit_once('@')?;
            (!local.is_empty())
                .then(|| self.auth.lookup(local))
                .flatten()
        })
    }
}

impl TokenValidator for Validator {
    fn validate<'a>(&'a self, token: &'a [u8], claimed: Option<&'a str>) -> Validation<'a> {
        Box::pin(async move {
            let verdict = self.check(token, claimed).await;
            log_verdict(&verdict);
            verdict
        })
    }
}

/// The log line for a token check's result (never the token).
fn log_verdict(verdict: &Result<String, TokenError>) {
    match verdict {
        Ok(user) => tracing::debug!(%user, "bearer token accepted"),
        Err(TokenError::Invalid(why)) => tracing::info!(reason = %why, "bearer token refused"),
        Err(TokenError::InsufficientScope(scope)) => {
            tracing::info!(%scope, "bearer token refused: required scope missing")
        }
        Err(TokenError::Unavailable(why)) => {
            tracing::warn!(reason = %why, "bearer token could not be validated")
        }
    }
}

/// Reads a key file of at most [`MAX_KEY_FILE`] bytes.
fn read_limited(path: &Path) -> Result<Vec<u8>, Error> {
    let read = |source| Error::Read {
        path: path.to_path_buf(),
        source,
    };
    let mut bytes = Vec::new();
    File::open(path)
        .map_err(read)?
        .take(MAX_KEY_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(read)?;
    if bytes.len() as u64 > MAX_KEY_FILE {
        return Err(Error::TooLarge {
            path: path.to_path_buf(),
        });
    }
    Ok(bytes)
}

/// Reads a secret file; trailing line breaks (as editors leave them) are not part of it.
fn read_secret(path: &Path) -> Result<Secret, Error> {
    let mut bytes = read_limited(path)?;
    while bytes.last().is_some_and(|b| matches!(b, b'\n' | b'\r')) {
        bytes.pop();
    }
    Ok(Secret::new(bytes))
}

/// A claim value made safe for a log line: printable, at most 64 characters.
fn printable(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).take(64).collect()
}

#[cfg(test)]
pub(crate) mod testing;

#[cfg(test)]
mod tests;
