//! The session driver: one connection loop for SMTP and POP3 around their sans-IO protocol
//! cores (`driver.rs`), the session's audit events (`audit.rs`), and the verification path
//! that answers the credential checks those cores ask for, off the async workers where they
//! are slow (`verify.rs`; the Kerberos acceptor behind GSSAPI in `gssapi.rs`).

pub mod audit;
pub mod counted;
pub mod driver;
#[cfg(feature = "gssapi")]
pub mod gssapi;
pub mod load;
pub mod verify;

pub use driver::{Conn, Flow, Io, Protocol, serve};
pub use load::Load;
pub use verify::Verifier;
