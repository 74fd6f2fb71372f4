//! The shape of the exchanges where the client sends one message (PLAIN, EXTERNAL): as the
//! initial response, or after an empty challenge (RFC 4954 §4, RFC 5034 §4); then one
//! credential check, whose answer ends the exchange.

use super::{Failure, Step};

/// Where a one-message exchange stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum OneMessage {
    /// Nothing received yet.
    Start,
    /// The empty challenge was sent; the message comes next.
    AwaitingResponse,
    /// The message asked for a credential check; its answer comes next.
    AwaitingVerdict,
    /// Success or failure was returned.
    Done,
}

impl OneMessage {
    /// Steps the exchange on `input`; `finish` turns the client's message into the next step
    /// (a check to make, or a failure).
    pub(super) fn step(
        &mut self,
        input: Option<&[u8]>,
        finish: impl FnOnce(&[u8]) -> Step,
    ) -> Step {
        match (std::mem::replace(self, OneMessage::Done), input) {
            (OneMessage::Start, None) => {
                *self = OneMessage::AwaitingResponse;
                Step::Challenge(Vec::new())
            }
            (OneMessage::Start | OneMessage::AwaitingResponse, Some(message)) => {
                let step = finish(message);
                if matches!(step, Step::Verify(_)) {
                    *self = OneMessage::AwaitingVerdict;
                }
                step
            }
            (OneMessage::AwaitingResponse, None) => malformed("missing client response"),
            (OneMessage::AwaitingVerdict | OneMessage::Done, _) => {
                malformed("exchange already finished")
            }
        }
    }

    /// Whether a check's answer was awaited (it is consumed either way: the exchange ends).
    pub(super) fn take_verdict(&mut self) -> bool {
        std::mem::replace(self, OneMessage::Done) == OneMessage::AwaitingVerdict
    }
}

/// A malformed client message.
pub(super) fn malformed(why: &'static str) -> Step {
    Step::Failure(Failure::Malformed(why))
}
