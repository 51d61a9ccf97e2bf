//! Integration tests: the sandbox and the client over real HTTP, and the binary's help.

mod client;
mod common;
mod sandbox;
