//! SMTP: the sans-IO parsers, replies and session machine, and SMTP's part of the session
//! driver.
//!
//! # Where each RFC lives
//! - [`command`]: command syntax, RFC 5321 §4.1.1-4.1.2; `SIZE=` (RFC 1870 §3), `BODY=`
//!   (RFC 6152 §2), `AUTH` and `AUTH=` (RFC 4954 §4-5), `STARTTLS` (RFC 3207 §4). Each parse
//!   error carries its reply.
//! - [`address`]: paths and mailboxes, RFC 5321 §4.1.2-4.1.3, `<postmaster>` (§4.1.1.3), size
//!   bounds (§4.5.3.1.1-3), and the relay tricks a gateway must refuse.
//! - [`reply`]: reply syntax and codes, RFC 5321 §4.2; enhanced status codes, RFC 2034 §4 and
//!   RFC 3463; AUTH reply codes, RFC 4954 §6; STARTTLS replies, RFC 3207 §4. Also the parser
//!   for upstream replies used by the relay client.
//! - [`data`]: the DATA body, RFC 5321 §4.1.1.4 and §4.5.2 (end of data, dot-stuffing), the
//!   size cap of RFC 1870 §6, and the bare CR/LF rules that stop SMTP smuggling.
//! - Pipelining (RFC 2920) needs no module of its own: [`data::Feed::Done`] and
//!   [`reply::Parsed::Reply`] report how much input they used, so the rest is the next command.
//! - [`machine`]: the session state machine, RFC 5321 §4.1.4 command order, §3.3 mail
//!   transactions, RFC 4954 §4 AUTH exchange, RFC 3207 §4.2 reset after STARTTLS, RFC 6409
//!   §4.3 submission; credential checks and allowlist lookups as round trips.
//! - [`headers`]: the client software a message's headers name, for the audit.
//! - [`conn`]: SMTP on the session driver (`crate::session`): DATA into the spool with the
//!   Received header (RFC 5321 §4.4), the delay after a failed AUTH, the session's audit.

pub mod address;
pub mod command;
pub mod conn;
pub mod data;
pub mod headers;
pub mod machine;
pub mod reply;
