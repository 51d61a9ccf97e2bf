//! The response cache: every answer the API gave for a record, so that a job spanning days
//! never pays twice for the same request.
//!
//! An answer (matched with its person and company objects, not matched, or invalid datapoints)
//! is stored under a [`CacheKey`]: the endpoint, the record's normalised datapoints, and the
//! flags that change which person the API returns. Failed and deferred records are never
//! stored: they must be sent again.
//!
//! - [`key`](CacheKey): the key encoding. Its first byte names the endpoint; the person
//!   endpoint's byte is the "key version 1" of caches written before keys named their
//!   endpoint, so those files keep serving their paid answers as person answers, unchanged.
//! - [`codec`](CacheEntry): the value encoding (a fixed header, then the person and company as
//!   LZ4-compressed JSON), encoded straight from a record's outcome on write
//!   ([`EncodedEntry::from_outcome`]).
//! - the store ([`ResponseCache`]): a redb database, in the user's cache file
//!   ([`ResponseCache::open`]) or in a temporary file ([`ResponseCache::temporary`]) when a job
//!   runs without one.
//! - file handling: private files and directories, [`remove_file`].
//!
//! # Why redb
//!
//! The store is [redb](https://www.redb.org): an embedded key-value store written in pure Rust,
//! ACID, with copy-on-write B-trees and checksummed commits, in one file. A commit with
//! [`redb::Durability::Immediate`] is on disk when it returns, and a crash at any point leaves
//! the last committed state, so an answer that was paid for is never lost once stored. SQLite
//! (rusqlite) would do the same job but needs a bundled C build (a C toolchain on every machine
//! that builds this crate, and a slower, platform-dependent build); redb needs nothing beyond
//! cargo. The file is locked while open: a second process that opens the same cache gets a
//! clear error instead of corrupting it.
//!
//! # Memory
//!
//! Memory does not grow with the number of answers: they live in a file (the cache file, or a
//! temporary one), and redb holds at most a bounded page cache of it in memory (16 MiB; the
//! operating system's page cache does the rest).
//!
//! # Blocking
//!
//! Every method does file I/O on the calling thread, and [`ResponseCache::put_many`] waits for
//! the disk to confirm the commit: in async code, call writes from
//! `tokio::task::spawn_blocking`. The client reads in place, a bounded number at once (a
//! lookup is short, and its answers are decoded on the worker that uses them next).

mod codec;
pub(crate) mod file;
mod key;
mod store;
pub(crate) use store::WeakCache;

#[cfg(test)]
mod fixtures;

pub use codec::{CacheEntry, CachedAnswer, EncodedEntry};
pub use file::remove_file;
pub use key::{CacheKey, Endpoint};
pub use store::{CacheStats, ResponseCache};
