//! The session driver's shared parts: what the SMTP and POP3 connection loops do the same
//! way around their sans-IO protocol cores. `verify.rs` answers the credential checks the
//! cores ask for, off the async workers where they are slow.

pub mod verify;

pub use verify::Verifier;
