//! The gateway's end-to-end tests, one module per area, in one test binary: the crate and the
//! test kit (`mailgate-testkit`: the in-process gateway, the line client, the SASL clients,
//! the scripted smarthost) are linked once, not once per file.
//!
//! `cargo test --test e2e smtp::` runs one module's tests.

/// The built gateway binary, for the tests that run `mailgate` as a process.
pub const MAILGATE: &str = env!("CARGO_BIN_EXE_mailgate");

mod admin;
mod audit;
mod audit_report;
mod clients;
mod dovecot_import;
mod durability;
mod ntlm;
mod oauth;
mod policy;
mod pop3;
mod relay;
mod relay_e2e;
mod reload;
mod robustness;
mod scram;
mod smtp;
mod upstream_oauth;
