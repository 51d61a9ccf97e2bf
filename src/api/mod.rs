//! The Prospeo HTTP API: the wire model shared by the client and the sandbox.

pub mod plan;
pub mod wire;
