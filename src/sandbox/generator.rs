//! Deterministic generator of the sandbox directory and of sample lead files.
