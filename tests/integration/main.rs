//! Integration tests: the sandbox, the client and SQL over real HTTP, and the binary's help.

mod cli;
mod client;
mod common;
mod companies;
mod coordinator;
mod layout;
mod object_storage;
mod postgres;
mod resume;
mod s3;
mod sandbox;
mod sql;
mod workers;
