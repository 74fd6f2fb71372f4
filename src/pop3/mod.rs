//! POP3 (RFC 1939) with CAPA and response codes (RFC 2449), STLS (RFC 2595), AUTH (RFC 5034)
//! and the response codes of RFC 3206.
//!
//! # Layout
//! - `command`: parsing one command line into a [`command::Command`].
//! - `reply`: every reply the server writes, and the RETR/TOP [`reply::MessageEncoder`].
//! - `machine`: the sans-IO [`Session`]: lines in, [`Output`] (reply and [`Action`]) out.
//! - `conn`: the tokio loop that drives the machine over a socket.
//! - `proxy`: `[pop3.proxy]`, a mailbox not moved yet relayed from the old server.

pub mod command;
pub mod conn;
pub mod machine;
mod proxy;
pub mod reply;

pub use machine::{Action, Output, Session, Settings};
