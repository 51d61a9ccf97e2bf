//! Integration tests: the sandbox over real HTTP, and the binary's help.

mod common;
mod sandbox;
