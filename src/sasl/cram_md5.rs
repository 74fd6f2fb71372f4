//! SKELETON placeholder: replaced by the real mechanism.

use super::{Context, Mechanism};

/// Starts an exchange.
pub fn start(_ctx: &Context) -> Box<dyn Mechanism> {
    unimplemented!("skeleton")
}
