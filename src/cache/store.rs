//! The store: a redb database of encoded keys and values, in the user's cache file or in a
//! temporary file.

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::SystemTime;

use redb::backends::FileBackend;
use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition,
};
use serde::Serialize;

use super::codec::{
    BIT_MOBILE_REVEALED, CacheEntry, EncodedEntry, STATUS_MATCHED, STATUS_NOT_MATCHED,
    VALUE_HEADER_LEN, ValueHeader,
};
use super::file::{
    TemporaryFile, create_private_dirs, describe, is_redb_file, open_private, redb_error,
};
use super::key::CacheKey;
use crate::error::{Error, Result};

/// The one table of the cache: encoded [`CacheKey`] → encoded [`CacheEntry`].
pub(super) const RESPONSES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("responses");

/// Memory redb may use for a store's pages: read cache and write buffer together (redb 4 keeps
/// both within this bound). A job's lookups land on random pages of a file far bigger than any
/// cache, so a big one buys little: it only made the process's memory grow with the file (the
/// default, 1 GiB, is meant for a database that is the whole application; 64 MiB was the bound
/// before). The operating system's page cache holds the rest of the file.
const PAGE_CACHE_BYTES: usize = 16 * 1024 * 1024;

/// A temporary store commits without waiting for the disk (nothing in it must survive a
/// crash), but redb keeps the pages of commits made since the last durable one in memory, and
/// frees no page until then: every this many commits, one is durable.
const TEMPORARY_DURABLE_EVERY: u32 = 64;

/// How errors and `Debug` name a temporary store.
const TEMPORARY: &str = "temporary";

/// Counts for `prospeo cache stats`. Times serialise as RFC 3339.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CacheStats {
    /// Every stored entry, readable or not.
    pub entries: u64,
    /// Entries that matched a person.
    pub matched: u64,
    /// Entries that matched nobody.
    pub not_matched: u64,
    /// Entries below the vendor's minimum requirement.
    pub invalid_datapoints: u64,
    /// Entries this version cannot read (they count as misses).
    pub unreadable: u64,
    /// Matches whose person carries a revealed mobile.
    pub with_revealed_mobile: u64,
    /// When the oldest answer arrived.
    #[serde(serialize_with = "crate::time::serialize_rfc3339_millis")]
    pub oldest: Option<SystemTime>,
    /// When the newest answer arrived.
    #[serde(serialize_with = "crate::time::serialize_rfc3339_millis")]
    pub newest: Option<SystemTime>,
    /// Size of the cache file; `None` for a temporary store.
    pub file_bytes: Option<u64>,
}

impl CacheStats {
    /// How much of a value [`CacheStats::count`] reads: its header and a match's fingerprint (a
    /// value cut to this length counts the same as the whole of it).
    pub(crate) const HEADER_BYTES: usize = VALUE_HEADER_LEN + 4;

    /// Counts one stored value (its header only, and a match's field-list fingerprint, not its
    /// person and company); a value whose header does not decode, or a match written under
    /// field lists this version does not read, counts as unreadable.
    pub(crate) fn count(&mut self, value: &[u8]) {
        self.entries += 1;
        let Ok(header) = ValueHeader::decode(value) else {
            self.unreadable += 1;
            return;
        };
        if !header.fingerprint_reads(value) {
            self.unreadable += 1;
            return;
        }
        match header.status {
            STATUS_MATCHED => self.matched += 1,
            STATUS_NOT_MATCHED => self.not_matched += 1,
            _ => self.invalid_datapoints += 1,
        }
        if header.bits & BIT_MOBILE_REVEALED != 0 {
            self.with_revealed_mobile += 1;
        }
        self.oldest = Some(
            self.oldest
                .map_or(header.stored_at, |t| t.min(header.stored_at)),
        );
        self.newest = Some(
            self.newest
                .map_or(header.stored_at, |t| t.max(header.stored_at)),
        );
    }
}

/// The persistent store of answers. Clone is cheap (the database is shared); Send + Sync.
///
/// Its methods block on file I/O (see the module documentation).
#[derive(Clone)]
pub struct ResponseCache {
    inner: Arc<Inner>,
}

/// A [`ResponseCache`] that does not keep its file open.
pub(crate) struct WeakCache(std::sync::Weak<Inner>);

impl WeakCache {
    /// The cache, while some handle still holds it open.
    pub(crate) fn upgrade(&self) -> Option<ResponseCache> {
        self.0.upgrade().map(|inner| ResponseCache { inner })
    }
}

// Fields drop in order: the database closes before its temporary file goes.
struct Inner {
    db: Database,
    path: Option<PathBuf>,
    /// Set for a temporary store: its file, while it has a name.
    temporary: Option<TemporaryFile>,
    /// Commits to a temporary store since its last durable one.
    puts_since_durable: AtomicU32,
    /// Puts waiting for a commit (see [`ResponseCache::put`]).
    commits: Commits,
}

/// The group commit's state: puts not yet in a transaction, and whether one is under way.
#[derive(Default)]
struct Commits {
    state: Mutex<CommitState>,
    /// Signalled when a commit ends.
    done: Condvar,
}

#[derive(Default)]
struct CommitState {
    queued: Vec<Arc<QueuedPut>>,
    committing: bool,
}

/// A put's encoded entries, and the result of the commit that holds them once it is done.
struct QueuedPut {
    entries: Vec<(Vec<u8>, Vec<u8>)>,
    result: OnceLock<std::result::Result<(), String>>,
}

/// The puts a thread commits. Dropped, even by a panic, it ends the commit: the puts it did not
/// answer get an error, and waiting puts can commit next.
struct Leading<'a> {
    cache: &'a ResponseCache,
    puts: Vec<Arc<QueuedPut>>,
}

impl Drop for Leading<'_> {
    fn drop(&mut self) {
        for put in &self.puts {
            let _ = put
                .result
                .set(Err("the commit ended abnormally".to_string()));
        }
        let commits = &self.cache.inner.commits;
        commits
            .state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .committing = false;
        commits.done.notify_all();
    }
}

impl fmt::Debug for ResponseCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseCache")
            .field("path", &self.describe_path())
            .finish()
    }
}

impl ResponseCache {
    /// `<platform cache dir>/prospeo/responses.redb` (e.g. `~/.cache/prospeo/responses.redb` on
    /// Linux), `None` when the platform has no cache directory.
    pub fn default_path() -> Option<PathBuf> {
        dirs::cache_dir().map(|dir| dir.join("prospeo").join("responses.redb"))
    }

    /// Opens the cache at `path`, creating it when missing.
    ///
    /// Missing parent directories are created (mode 0700 on Unix) and a new file gets mode 0600
    /// before anything is written to it: the cache holds personal data. A file held by another
    /// process is refused with an error that says so.
    pub fn open(path: &Path) -> Result<Self> {
        let fail = |reason: String| Error::Cache {
            path: path.display().to_string(),
            reason,
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            create_private_dirs(parent)
                .map_err(|e| fail(format!("cannot create {}: {e}", parent.display())))?;
        }
        // redb would refuse such a file too, but with a message about magic numbers.
        if let Some(false) = is_redb_file(path).map_err(|e| fail(e.to_string()))? {
            return Err(fail(
                "not a response cache (not a redb database); use another --cache PATH".into(),
            ));
        }
        let file = open_private(path, false).map_err(|e| fail(e.to_string()))?;
        let backend =
            FileBackend::new(file).map_err(|e| redb_error(path.display().to_string(), e.into()))?;
        let db = Database::builder()
            .set_cache_size(PAGE_CACHE_BYTES)
            .create_with_backend(backend)
            .map_err(|e| redb_error(path.display().to_string(), e.into()))?;
        ResponseCache::init(db, Some(path.to_path_buf()), None)
    }

    /// A store that lives only as long as this value (and its clones): in-job de-duplication
    /// when the persistent cache is off.
    ///
    /// Its answers are in a file, not in memory, so that a job of millions of records keeps a
    /// flat memory footprint: a redb database in a new private directory (0700) under the
    /// system's temporary directory (`TMPDIR` on Unix), file mode 0600, with the same bounded
    /// page cache as a cache file. On Unix its name is removed as soon as it is open, so nothing is left behind even
    /// when the process is killed; elsewhere it is deleted when the store is dropped. Its
    /// commits do not wait for the disk: nothing in it must survive a crash.
    pub fn temporary() -> Result<Self> {
        let fail = |reason: String| Error::Cache {
            path: TEMPORARY.into(),
            reason,
        };
        let (file, temporary) = TemporaryFile::create().map_err(|e| fail(e.to_string()))?;
        let backend = FileBackend::new(file).map_err(|e| redb_error(TEMPORARY.into(), e.into()))?;
        let db = Database::builder()
            .set_cache_size(PAGE_CACHE_BYTES)
            .create_with_backend(backend)
            .map_err(|e| redb_error(TEMPORARY.into(), e.into()))?;
        ResponseCache::init(db, None, Some(temporary))
    }

    /// The store of a job without a cache file: [`ResponseCache::temporary`]. It once held
    /// every answer in memory, hence the name (616 MB at 100,000 rows); the answers now go to
    /// a temporary file, and the name stays so that callers need not change. Where no
    /// temporary file can be made (a read-only `TMPDIR`), the answers are kept in memory, with
    /// a warning, rather than refusing the job.
    pub fn in_memory() -> Result<Self> {
        ResponseCache::temporary().or_else(|error| {
            tracing::warn!(
                "{error}; answers kept for later duplicates stay in memory instead (set TMPDIR to a writable folder to keep memory flat)"
            );
            let db = Database::builder()
                .set_cache_size(PAGE_CACHE_BYTES)
                .create_with_backend(redb::backends::InMemoryBackend::new())
                .map_err(|e| redb_error("memory".into(), e.into()))?;
            ResponseCache::init(db, None, None)
        })
    }

    /// Creates the table, so that readers can always open it.
    fn init(db: Database, path: Option<PathBuf>, temporary: Option<TemporaryFile>) -> Result<Self> {
        let cache = ResponseCache {
            inner: Arc::new(Inner {
                db,
                path,
                temporary,
                puts_since_durable: AtomicU32::new(0),
                commits: Commits::default(),
            }),
        };
        let txn = cache.inner.db.begin_write().map_err(|e| cache.fail(e))?;
        txn.open_table(RESPONSES).map_err(|e| cache.fail(e))?;
        txn.commit().map_err(|e| cache.fail(e))?;
        Ok(cache)
    }

    /// The cache file's path; `None` for a temporary store.
    pub fn path(&self) -> Option<&Path> {
        self.inner.path.as_deref()
    }

    /// A handle that does not keep the file open: [`WeakCache::upgrade`] gives the cache back
    /// while another handle holds it.
    pub(crate) fn downgrade(&self) -> WeakCache {
        WeakCache(Arc::downgrade(&self.inner))
    }

    fn describe_path(&self) -> String {
        match &self.inner.path {
            Some(path) => path.display().to_string(),
            None => TEMPORARY.to_string(),
        }
    }

    fn fail(&self, e: impl Into<redb::Error>) -> Error {
        redb_error(self.describe_path(), e.into())
    }

    /// Looks up many keys in one read transaction; one result per key, in order. A value that
    /// does not decode is a miss (and a warning).
    pub fn get_many(&self, keys: &[CacheKey]) -> Result<Vec<Option<CacheEntry>>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let txn = self.inner.db.begin_read().map_err(|e| self.fail(e))?;
        let table = txn.open_table(RESPONSES).map_err(|e| self.fail(e))?;
        // Filled in place: collecting through `Result` gives no size hint, and an entry is
        // over 2 KB (the person and company inline), so growing the vector copied each one
        // several times.
        let mut entries = Vec::with_capacity(keys.len());
        for key in keys {
            let value = table.get(key.as_bytes()).map_err(|e| self.fail(e))?;
            entries.push(value.and_then(|value| self.decode_or_warn(value.value())));
        }
        Ok(entries)
    }

    fn decode_or_warn(&self, bytes: &[u8]) -> Option<CacheEntry> {
        match CacheEntry::decode(bytes) {
            Ok(entry) => Some(entry),
            Err(reason) => {
                tracing::warn!(
                    cache = %self.describe_path(),
                    "ignoring a cache entry that does not decode ({reason}); the record is sent again"
                );
                None
            }
        }
    }

    /// Stores entries in one write transaction. A later put of the same key overwrites.
    ///
    /// To a cache file the commit is durable: on disk when this returns, so a crash right after
    /// loses nothing that was paid for. A temporary store does not wait for the disk.
    pub fn put_many(&self, entries: &[(CacheKey, CacheEntry)]) -> Result<()> {
        self.put(entries.iter().map(|(key, entry)| (key, entry.encode())))
    }

    /// [`ResponseCache::put_many`] for entries already encoded, e.g. straight from the
    /// outcomes with [`EncodedEntry::from_outcome`] (no copy of the person and company).
    pub fn put_encoded(&self, entries: &[(CacheKey, EncodedEntry)]) -> Result<()> {
        self.put(entries.iter().map(|(key, value)| (key, value)))
    }

    /// Writes `entries` in a transaction, with the entries of the puts other threads make
    /// meanwhile: a group commit. The first put to find no commit under way commits
    /// everything queued by then, its own entries included; the puts that arrive while it
    /// commits wait, and the first of them commits them all together next. Each put returns
    /// once a commit that holds its entries is done (on disk, for a cache file), with that
    /// commit's result. A put alone commits at once, as before; eight requests answered at
    /// the same time share a commit (and its `fsync`) instead of queueing for eight.
    fn put<'a, V: std::borrow::Borrow<EncodedEntry>>(
        &self,
        entries: impl ExactSizeIterator<Item = (&'a CacheKey, V)>,
    ) -> Result<()> {
        if entries.len() == 0 {
            return Ok(());
        }
        let put = Arc::new(QueuedPut {
            entries: entries
                .map(|(key, value)| (key.as_bytes().to_vec(), value.borrow().as_bytes().to_vec()))
                .collect(),
            result: OnceLock::new(),
        });
        let commits = &self.inner.commits;
        let mut state = commits.state.lock().unwrap_or_else(|e| e.into_inner());
        state.queued.push(put.clone());
        loop {
            if let Some(result) = put.result.get() {
                return result.clone().map_err(|reason| Error::Cache {
                    path: self.describe_path(),
                    reason,
                });
            }
            if state.committing {
                state = commits.done.wait(state).unwrap_or_else(|e| e.into_inner());
                continue;
            }
            state.committing = true;
            let group = Leading {
                cache: self,
                puts: std::mem::take(&mut state.queued),
            };
            drop(state);
            let result = self.commit_group(&group.puts);
            for queued in &group.puts {
                let _ = queued.result.set(result.clone());
            }
            drop(group);
            state = commits.state.lock().unwrap_or_else(|e| e.into_inner());
        }
    }

    /// One transaction of every entry of `puts`, in order (a later put of a key overwrites).
    fn commit_group(&self, puts: &[Arc<QueuedPut>]) -> std::result::Result<(), String> {
        let fail = |e: redb::Error| describe(e);
        let mut txn = self.inner.db.begin_write().map_err(|e| fail(e.into()))?;
        txn.set_durability(self.durability())
            .map_err(|e| fail(e.into()))?;
        {
            let mut table = txn.open_table(RESPONSES).map_err(|e| fail(e.into()))?;
            for (key, value) in puts.iter().flat_map(|put| &put.entries) {
                table
                    .insert(key.as_slice(), value.as_slice())
                    .map_err(|e| fail(e.into()))?;
            }
        }
        txn.commit().map_err(|e| fail(e.into()))
    }

    /// Immediate for a cache file; for a temporary store, immediate one commit in
    /// [`TEMPORARY_DURABLE_EVERY`] (see there).
    fn durability(&self) -> Durability {
        if self.inner.temporary.is_none() {
            return Durability::Immediate;
        }
        let n = self
            .inner
            .puts_since_durable
            .fetch_add(1, Ordering::Relaxed)
            + 1;
        if n.is_multiple_of(TEMPORARY_DURABLE_EVERY) {
            Durability::Immediate
        } else {
            Durability::None
        }
    }

    /// Counts the entries by status, and the oldest and newest answer. Reads every value's
    /// header (not its JSON).
    pub fn stats(&self) -> Result<CacheStats> {
        let mut stats = CacheStats {
            file_bytes: match self.path() {
                Some(path) => Some(
                    fs::metadata(path)
                        .map_err(|e| Error::Cache {
                            path: path.display().to_string(),
                            reason: e.to_string(),
                        })?
                        .len(),
                ),
                None => None,
            },
            ..CacheStats::default()
        };
        let txn = self.inner.db.begin_read().map_err(|e| self.fail(e))?;
        let table = txn.open_table(RESPONSES).map_err(|e| self.fail(e))?;
        for item in table.iter().map_err(|e| self.fail(e))? {
            let (_, value) = item.map_err(|e| self.fail(e))?;
            stats.count(value.value());
        }
        Ok(stats)
    }

    /// Removes every entry and keeps the file (which does not shrink); returns how many were
    /// removed. To delete the file itself, see [`super::remove_file`].
    pub fn clear(&self) -> Result<u64> {
        let mut txn = self.inner.db.begin_write().map_err(|e| self.fail(e))?;
        txn.set_durability(self.durability())
            .map_err(|e| self.fail(e))?;
        let removed = {
            let table = txn.open_table(RESPONSES).map_err(|e| self.fail(e))?;
            table.len().map_err(|e| self.fail(e))?
        };
        txn.delete_table(RESPONSES).map_err(|e| self.fail(e))?;
        txn.open_table(RESPONSES).map_err(|e| self.fail(e))?;
        txn.commit().map_err(|e| self.fail(e))?;
        Ok(removed)
    }

    /// Visits every readable entry in key order, `page` entries at a time (at least one), so
    /// that exporting a big cache holds at most one page in memory. Reads one snapshot: puts
    /// made meanwhile are not seen. Entries that do not decode are skipped (with a warning).
    /// Stops at the first error `f` returns.
    pub fn for_each_page(
        &self,
        page: usize,
        mut f: impl FnMut(&[(CacheKey, CacheEntry)]) -> Result<()>,
    ) -> Result<()> {
        let page = page.max(1);
        let txn = self.inner.db.begin_read().map_err(|e| self.fail(e))?;
        let table = txn.open_table(RESPONSES).map_err(|e| self.fail(e))?;
        let mut buffer = Vec::with_capacity(page.min(65_536));
        for item in table.iter().map_err(|e| self.fail(e))? {
            let (key, value) = item.map_err(|e| self.fail(e))?;
            if let Some(entry) = self.decode_or_warn(value.value()) {
                buffer.push((CacheKey(key.value().to_vec()), entry));
            }
            if buffer.len() == page {
                f(&buffer)?;
                buffer.clear();
            }
        }
        if !buffer.is_empty() {
            f(&buffer)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::cache::codec::{VALUE_HEADER_LEN, VALUE_VERSION};
    use crate::cache::fixtures::*;
    use crate::cache::{CacheStats, CachedAnswer, Endpoint};
    use crate::vendor::wire::EnrichFlags;

    /// Writes a raw value under a key, bypassing the encoder.
    fn put_raw(cache: &ResponseCache, key: &CacheKey, value: &[u8]) {
        let txn = cache.inner.db.begin_write().unwrap();
        {
            let mut table = txn.open_table(RESPONSES).unwrap();
            table.insert(key.as_bytes(), value).unwrap();
        }
        txn.commit().unwrap();
    }

    #[test]
    fn every_answer_kind_round_trips_through_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ResponseCache::open(&dir.path().join("responses.redb")).unwrap();
        let flags = EnrichFlags {
            enrich_mobile: true,
            ..EnrichFlags::default()
        };
        let outcomes = every_answer_kind();
        let entries: Vec<(CacheKey, CacheEntry)> = outcomes
            .iter()
            .enumerate()
            .map(|(i, outcome)| {
                let entry =
                    CacheEntry::from_outcome(outcome, flags, at(1_700_000_000_123 + i as i64))
                        .unwrap();
                (key(&format!("p{i}@example.com")), entry)
            })
            .collect();
        cache.put_many(&entries).unwrap();
        let keys: Vec<CacheKey> = entries.iter().map(|(k, _)| k.clone()).collect();
        let got = cache.get_many(&keys).unwrap();
        for ((_, want), got) in entries.iter().zip(&got) {
            assert_eq!(got.as_ref(), Some(want));
        }
        assert!(got[0].as_ref().unwrap().mobile_requested);
        assert_eq!(got[0].as_ref().unwrap().cost, 10);
        // A hit costs nothing and keeps the vendor's free flag.
        for (outcome, entry) in outcomes.iter().zip(&got) {
            assert_eq!(entry.as_ref().unwrap().to_outcome(), outcome.without_cost());
        }
    }

    #[test]
    fn unknown_vendor_fields_survive_the_cache() {
        let cache = ResponseCache::in_memory().unwrap();
        let entry =
            CacheEntry::from_outcome(&matched(false, 1), EnrichFlags::default(), at(0)).unwrap();
        cache.put_many(&[(key("a@b.co"), entry)]).unwrap();
        let got = cache.get_many(&[key("a@b.co")]).unwrap().remove(0).unwrap();
        let CachedAnswer::Matched {
            person: Some(person),
            company: Some(company),
            ..
        } = got.answer
        else {
            panic!("not a match: {got:?}");
        };
        assert_eq!(
            person.extra["a_field_added_later"],
            serde_json::json!({"nested": [1, 2, 3]})
        );
        assert_eq!(
            company.extra["unknown_vendor_field"],
            serde_json::json!(true)
        );
    }

    #[test]
    fn get_many_answers_in_key_order_with_misses() {
        let cache = ResponseCache::in_memory().unwrap();
        assert_eq!(cache.path(), None);
        cache
            .put_many(&[
                (key("b@x.io"), entry(CachedAnswer::NotMatched, false, at(5))),
                (
                    key("a@x.io"),
                    entry(CachedAnswer::InvalidDatapoints, false, at(6)),
                ),
            ])
            .unwrap();
        let got = cache
            .get_many(&[key("a@x.io"), key("missing@x.io"), key("b@x.io")])
            .unwrap();
        assert_eq!(got.len(), 3);
        assert_eq!(
            got[0].as_ref().unwrap().answer,
            CachedAnswer::InvalidDatapoints
        );
        assert!(got[1].is_none());
        assert_eq!(got[2].as_ref().unwrap().answer, CachedAnswer::NotMatched);
        assert!(cache.get_many(&[]).unwrap().is_empty());
        cache.put_many(&[]).unwrap();
    }

    #[test]
    fn a_later_put_overwrites() {
        let cache = ResponseCache::in_memory().unwrap();
        cache
            .put_many(&[(key("a@x.io"), entry(CachedAnswer::NotMatched, false, at(1)))])
            .unwrap();
        cache
            .put_many(&[(key("a@x.io"), entry(matched_answer(), true, at(2)))])
            .unwrap();
        let got = cache.get_many(&[key("a@x.io")]).unwrap().remove(0).unwrap();
        assert_eq!(got, entry(matched_answer(), true, at(2)));
        assert_eq!(cache.stats().unwrap().entries, 1);
    }

    #[test]
    fn entries_persist_after_the_cache_is_dropped_and_reopened() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("responses.redb");
        let stored = entry(matched_answer(), true, at(1_700_000_000_000));
        {
            let cache = ResponseCache::open(&path).unwrap();
            let clone = cache.clone();
            clone.put_many(&[(key("a@x.io"), stored.clone())]).unwrap();
        }
        let cache = ResponseCache::open(&path).unwrap();
        assert_eq!(cache.path(), Some(path.as_path()));
        assert_eq!(
            cache.get_many(&[key("a@x.io")]).unwrap(),
            vec![Some(stored)]
        );
    }

    #[test]
    fn the_file_and_the_directories_it_creates_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a").join("prospeo").join("responses.redb");
        let cache = ResponseCache::open(&path).unwrap();
        cache
            .put_many(&[(key("a@x.io"), entry(CachedAnswer::NotMatched, false, at(0)))])
            .unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);
        assert_eq!(mode(&dir.path().join("a")), 0o700);
    }

    #[test]
    fn a_value_that_does_not_decode_is_a_miss() {
        let cache = ResponseCache::in_memory().unwrap();
        let good = entry(matched_answer(), false, at(1));
        let mut encoded = good.encode().as_bytes().to_vec();
        put_raw(
            &cache,
            &key("truncated@x.io"),
            &encoded[..VALUE_HEADER_LEN - 1],
        );
        put_raw(
            &cache,
            &key("future@x.io"),
            &[&[99u8][..], &encoded[1..]].concat(),
        );
        put_raw(
            &cache,
            &key("status@x.io"),
            &[&[VALUE_VERSION, 42][..], &encoded[2..]].concat(),
        );
        encoded.truncate(encoded.len() - 3);
        put_raw(&cache, &key("json@x.io"), &encoded);
        put_raw(&cache, &key("empty@x.io"), &[]);
        let fingerprint = crate::vendor::wire::compact::schema_fingerprint().to_le_bytes();
        let mut huge = encoded[..VALUE_HEADER_LEN].to_vec();
        huge.extend_from_slice(&fingerprint);
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        huge.extend_from_slice(b"not lz4");
        put_raw(&cache, &key("huge@x.io"), &huge);
        // Valid LZ4 of something that is not a stored person and company.
        let mut not_json = encoded[..VALUE_HEADER_LEN].to_vec();
        not_json.extend_from_slice(&fingerprint);
        not_json.extend_from_slice(&5u32.to_le_bytes());
        not_json.extend_from_slice(&lz4_flex::block::compress(b"hello"));
        put_raw(&cache, &key("not-json@x.io"), &not_json);
        // A match written under field lists this version does not read.
        let mut other_lists = good.encode().into_bytes();
        other_lists[VALUE_HEADER_LEN] ^= 0xff;
        put_raw(&cache, &key("other-lists@x.io"), &other_lists);
        cache.put_many(&[(key("good@x.io"), good.clone())]).unwrap();
        let got = cache
            .get_many(&[
                key("truncated@x.io"),
                key("future@x.io"),
                key("status@x.io"),
                key("json@x.io"),
                key("empty@x.io"),
                key("huge@x.io"),
                key("not-json@x.io"),
                key("other-lists@x.io"),
                key("good@x.io"),
            ])
            .unwrap();
        assert_eq!(
            got,
            vec![None, None, None, None, None, None, None, None, Some(good)]
        );
        let stats = cache.stats().unwrap();
        assert_eq!(stats.entries, 9);
        assert_eq!(stats.unreadable, 5);
        // Their headers read fine; only the payload is damaged.
        assert_eq!(stats.matched, 4);
        let mut exported = 0;
        cache
            .for_each_page(10, |page| {
                exported += page.len();
                Ok(())
            })
            .unwrap();
        assert_eq!(exported, 1);
    }

    #[test]
    fn clear_removes_every_entry_and_keeps_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("responses.redb");
        let cache = ResponseCache::open(&path).unwrap();
        let entries: Vec<_> = (0..5)
            .map(|i| {
                (
                    key(&format!("{i}@x.io")),
                    entry(CachedAnswer::NotMatched, false, at(i)),
                )
            })
            .collect();
        cache.put_many(&entries).unwrap();
        assert_eq!(cache.clear().unwrap(), 5);
        assert!(path.exists());
        assert_eq!(cache.stats().unwrap().entries, 0);
        assert_eq!(cache.get_many(&[key("0@x.io")]).unwrap(), vec![None]);
        assert_eq!(cache.clear().unwrap(), 0);
        cache.put_many(&entries[..1]).unwrap();
        assert_eq!(cache.stats().unwrap().entries, 1);
    }

    #[test]
    fn stats_count_entries_by_status() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ResponseCache::open(&dir.path().join("responses.redb")).unwrap();
        let empty = cache.stats().unwrap();
        assert_eq!(empty.entries, 0);
        assert_eq!(empty.oldest, None);
        assert!(empty.file_bytes.unwrap() > 0);
        let revealed = CacheEntry::from_outcome(
            &matched(false, 10),
            EnrichFlags {
                enrich_mobile: true,
                ..EnrichFlags::default()
            },
            at(3_000),
        )
        .unwrap();
        cache
            .put_many(&[
                (key("1@x.io"), revealed),
                (key("2@x.io"), entry(matched_answer(), false, at(2_000))),
                (
                    key("3@x.io"),
                    entry(CachedAnswer::NotMatched, false, at(-5_000)),
                ),
                (
                    key("4@x.io"),
                    entry(CachedAnswer::NotMatched, false, at(4_000)),
                ),
                (
                    key("5@x.io"),
                    entry(CachedAnswer::InvalidDatapoints, false, at(1_000)),
                ),
            ])
            .unwrap();
        let stats = cache.stats().unwrap();
        assert_eq!(
            stats,
            CacheStats {
                entries: 5,
                matched: 2,
                not_matched: 2,
                invalid_datapoints: 1,
                unreadable: 0,
                with_revealed_mobile: 1,
                oldest: Some(at(-5_000)),
                newest: Some(at(4_000)),
                file_bytes: stats.file_bytes,
            }
        );
        let json = serde_json::to_value(&stats).unwrap();
        assert_eq!(json["newest"], "1970-01-01T00:00:04.000Z");
        assert_eq!(
            ResponseCache::in_memory()
                .unwrap()
                .stats()
                .unwrap()
                .file_bytes,
            None
        );
    }

    #[test]
    fn for_each_page_visits_every_entry_in_key_order() {
        let cache = ResponseCache::in_memory().unwrap();
        let mut entries: Vec<_> = (0..23)
            .map(|i| {
                (
                    key(&format!("p{:02}@x.io", (i * 7) % 23)),
                    entry(CachedAnswer::NotMatched, false, at(i)),
                )
            })
            .collect();
        cache.put_many(&entries).unwrap();
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        let mut pages = Vec::new();
        cache
            .for_each_page(10, |page| {
                pages.push(page.to_vec());
                Ok(())
            })
            .unwrap();
        assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), [10, 10, 3]);
        assert_eq!(pages.concat(), entries);
        // An error from the callback stops the walk.
        let mut calls = 0;
        let err = cache.for_each_page(5, |_| {
            calls += 1;
            Err(Error::Config("stop".into()))
        });
        assert!(err.is_err());
        assert_eq!(calls, 1);
        // An empty cache calls nothing.
        ResponseCache::in_memory()
            .unwrap()
            .for_each_page(0, |_| panic!("no page expected"))
            .unwrap();
    }

    #[test]
    fn a_second_open_while_the_first_is_alive_says_who_holds_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("responses.redb");
        let first = ResponseCache::open(&path).unwrap();
        let err = ResponseCache::open(&path).unwrap_err();
        let message = err.to_string();
        assert!(matches!(err, Error::CacheInUse { .. }), "{err:?}");
        assert!(err.is_cache_in_use() && err.is_bad_input(), "{err:?}");
        assert!(message.contains(&path.display().to_string()), "{message}");
        assert!(
            message.contains("another prospeo process is using this cache"),
            "{message}"
        );
        assert!(message.contains("--no-cache"), "{message}");
        // Nor is the file deleted under the process using it.
        let err = crate::cache::remove_file(&path).unwrap_err();
        assert!(err.is_cache_in_use(), "{err:?}");
        assert!(path.exists());
        drop(first);
        ResponseCache::open(&path).unwrap();
    }

    #[test]
    fn a_file_that_is_not_a_cache_is_refused_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("leads.csv");
        let text = "First Name,Last Name\n".repeat(400);
        fs::write(&path, &text).unwrap();
        let err = ResponseCache::open(&path).unwrap_err().to_string();
        assert!(err.contains("not a response cache"), "{err}");
        assert_eq!(fs::read_to_string(&path).unwrap(), text);
    }

    #[test]
    fn debug_shows_the_path_only() {
        let cache = ResponseCache::in_memory().unwrap();
        assert_eq!(
            format!("{cache:?}"),
            r#"ResponseCache { path: "temporary" }"#
        );
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<ResponseCache>();
    }

    #[test]
    fn default_path_is_under_the_platform_cache_dir() {
        if let Some(path) = ResponseCache::default_path() {
            assert!(
                path.ends_with("prospeo/responses.redb"),
                "{}",
                path.display()
            );
        }
    }

    /// A cache written before keys named their endpoint: the table `responses`, keys of
    /// "version 1" (the byte 1, the flags, the datapoints), values of version 1. Its answers
    /// serve person lookups as they are.
    #[test]
    fn a_cache_file_of_version_1_keys_still_serves_person_answers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("responses.redb");
        let mut v1_key = vec![1u8, 0x00, 0, 0, 0, 0, 0x01, 6];
        v1_key.extend_from_slice(b"a@x.io");
        v1_key.extend_from_slice(&[0, 0, 0, 0]);
        // Not matched, no bits, stored at 1,700,000,000,000 ms, cost 0.
        let mut not_matched = vec![1u8, 2, 0];
        not_matched.extend_from_slice(&1_700_000_000_000i64.to_be_bytes());
        not_matched.extend_from_slice(&0i64.to_be_bytes());
        let stored_match = entry(matched_answer(), true, at(1_700_000_000_001));
        let mut v1_match_key = v1_key.clone();
        v1_match_key[8] = b'b';
        {
            let db = Database::create(&path).unwrap();
            let txn = db.begin_write().unwrap();
            {
                let mut table = txn.open_table(RESPONSES).unwrap();
                table
                    .insert(v1_key.as_slice(), not_matched.as_slice())
                    .unwrap();
                table
                    .insert(
                        v1_match_key.as_slice(),
                        version_1_value(&stored_match).as_slice(),
                    )
                    .unwrap();
            }
            txn.commit().unwrap();
        }
        let cache = ResponseCache::open(&path).unwrap();
        let flags = EnrichFlags::default();
        let got = cache
            .get_many(&[key("a@x.io"), key("b@x.io"), key("c@x.io")])
            .unwrap();
        assert_eq!(
            got,
            vec![
                Some(entry(
                    CachedAnswer::NotMatched,
                    false,
                    at(1_700_000_000_000)
                )),
                Some(stored_match.clone()),
                None,
            ]
        );
        assert!(
            got[1]
                .as_ref()
                .unwrap()
                .serves(flags, None, at(1_700_000_000_002))
        );
        let mut exported = Vec::new();
        cache
            .for_each_page(10, |page| {
                exported.extend(page.iter().map(|(k, _)| (k.endpoint(), k.datapoints())));
                Ok(())
            })
            .unwrap();
        assert_eq!(
            exported,
            vec![
                (Some(Endpoint::BulkEnrichPerson), Some(datapoints("a@x.io"))),
                (Some(Endpoint::BulkEnrichPerson), Some(datapoints("b@x.io"))),
            ]
        );
    }

    #[test]
    fn puts_from_many_threads_all_land_in_shared_commits() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ResponseCache::open(&dir.path().join("responses.redb")).unwrap();
        let outcome = matched(false, 1);
        std::thread::scope(|scope| {
            for thread in 0..8 {
                let (cache, outcome) = (cache.clone(), &outcome);
                scope.spawn(move || {
                    for round in 0..20 {
                        let entries: Vec<(CacheKey, EncodedEntry)> = (0..5)
                            .map(|i| {
                                let value = EncodedEntry::from_outcome(
                                    outcome,
                                    EnrichFlags::default(),
                                    at(round),
                                )
                                .unwrap();
                                (key(&format!("{thread}-{round}-{i}@x.io")), value)
                            })
                            .collect();
                        cache.put_encoded(&entries).unwrap();
                        // Once a put returns, its entries are readable.
                        let got = cache.get_many(&[entries[4].0.clone()]).unwrap();
                        assert_eq!(got[0].as_ref().unwrap().stored_at, at(round));
                    }
                });
            }
        });
        assert_eq!(cache.stats().unwrap().entries, 8 * 20 * 5);
        // The same key put twice in a row: the later put wins.
        cache
            .put_many(&[(key("a@x.io"), entry(CachedAnswer::NotMatched, false, at(1)))])
            .unwrap();
        cache
            .put_many(&[(
                key("a@x.io"),
                entry(CachedAnswer::InvalidDatapoints, false, at(2)),
            )])
            .unwrap();
        assert_eq!(
            cache.get_many(&[key("a@x.io")]).unwrap()[0]
                .as_ref()
                .unwrap()
                .answer,
            CachedAnswer::InvalidDatapoints
        );
    }

    #[test]
    fn a_temporary_store_serves_what_it_stored_across_many_writes() {
        let cache = ResponseCache::temporary().unwrap();
        assert_eq!(cache.path(), None);
        let outcome = matched(false, 1);
        for round in 0..(2 * TEMPORARY_DURABLE_EVERY as usize + 3) {
            let entries: Vec<(CacheKey, EncodedEntry)> = (0..5)
                .map(|i| {
                    let value = EncodedEntry::from_outcome(&outcome, EnrichFlags::default(), at(7))
                        .unwrap();
                    (key(&format!("{round}-{i}@x.io")), value)
                })
                .collect();
            cache.put_encoded(&entries).unwrap();
        }
        let got = cache
            .get_many(&[key("0-0@x.io"), key("130-4@x.io"), key("nobody@x.io")])
            .unwrap();
        assert_eq!(
            got[0].clone().unwrap().into_outcome(),
            outcome.without_cost()
        );
        assert!(got[1].is_some());
        assert!(got[2].is_none());
        assert_eq!(cache.stats().unwrap().entries, 5 * 131);
        cache.put_encoded(&[]).unwrap();
    }
}
