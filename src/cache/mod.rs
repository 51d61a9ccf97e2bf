//! The persistent response cache: every answer the API gave for a record, so that a job spanning
//! days never pays twice for the same request.
//!
//! An answer (matched with its person and company objects, not matched, or invalid datapoints)
//! is stored under a [`CacheKey`]: the record's normalised datapoints plus the flags that change
//! which person the API returns. Failed and deferred records are never stored: they must be sent
//! again.
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
//! # Encoding
//!
//! Keys are byte strings: a version byte, a flags byte, then the nine datapoints in
//! [`Datapoint::ALL`] order, each either absent (`0x00`) or present (`0x01`, a LEB128 length,
//! the UTF-8 bytes). The encoding is injective and decodes back (for `prospeo cache export`);
//! nothing is hashed, so two records never share an entry by accident.
//!
//! Values are a 19-byte header — version, status, bits (mobile requested, free enrichment,
//! mobile revealed), the time the answer arrived in Unix milliseconds, the credits it cost —
//! followed, for a match, by the person and company objects as JSON, LZ4-compressed with a
//! 4-byte length prefix (lz4_flex,
//! pure Rust: about a third of the size, so that most values fit in one 4 KiB page). JSON keeps
//! every field the vendor sent, including the ones this version does not know (`extra`). A
//! value that does not decode (a newer or damaged format) is a cache miss, logged, never an
//! error.
//!
//! # Blocking
//!
//! Every method does file I/O on the calling thread, and [`ResponseCache::put_many`] waits for
//! the disk to confirm the commit: call them from `tokio::task::spawn_blocking` in async code.

use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redb::backends::{FileBackend, InMemoryBackend};
use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition,
};
use serde::{Deserialize, Serialize};

use crate::api::outcome::{Match, RecordOutcome};
use crate::api::wire::{Company, EnrichFlags, Person};
use crate::datapoints::{Datapoint, Datapoints};
use crate::error::{Error, Result};

/// The one table of the cache: encoded [`CacheKey`] → encoded [`CacheEntry`].
const RESPONSES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("responses");

/// Version of the key encoding. A new encoding gets a new number, so old keys simply miss.
const KEY_VERSION: u8 = 1;
/// Key flags byte: `only_verified_email`.
const KEY_ONLY_VERIFIED_EMAIL: u8 = 0x01;
/// Key flags byte: `only_verified_mobile`.
const KEY_ONLY_VERIFIED_MOBILE: u8 = 0x02;
/// Key datapoint tag: absent.
const KEY_ABSENT: u8 = 0x00;
/// Key datapoint tag: present, followed by a LEB128 length and the bytes.
const KEY_PRESENT: u8 = 0x01;

/// Version of the value encoding.
const VALUE_VERSION: u8 = 1;
/// Value header length: version, status, bits, stored_at (i64), cost (i64).
const VALUE_HEADER_LEN: usize = 3 + 8 + 8;
const STATUS_MATCHED: u8 = 1;
const STATUS_NOT_MATCHED: u8 = 2;
const STATUS_INVALID_DATAPOINTS: u8 = 3;
/// Value bits: the request asked for the mobile to be revealed.
const BIT_MOBILE_REQUESTED: u8 = 0x01;
/// Value bits: the vendor said the enrichment was free.
const BIT_FREE_ENRICHMENT: u8 = 0x02;
/// Largest JSON payload a value may claim to decompress to: a corrupt length must not allocate
/// gigabytes.
const MAX_PAYLOAD_BYTES: usize = 64 * 1024 * 1024;
/// Value bits: the stored person carries a revealed mobile (kept in the header so that
/// `stats` need not parse the JSON).
const BIT_MOBILE_REVEALED: u8 = 0x04;

/// Memory redb may use to cache pages. Lookups touch few pages; the default (1 GiB) is meant for
/// a database that is the whole application.
const PAGE_CACHE_BYTES: usize = 64 * 1024 * 1024;

/// What the error says when another process holds the file.
const IN_USE: &str =
    "another prospeo process is using this cache; wait for it, or use --cache PATH / --no-cache";

/// The cache key: the normalised datapoints plus the flags that change which person is returned.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CacheKey(Vec<u8>);

impl CacheKey {
    /// The key of a record. `datapoints` must already be normalised
    /// ([`Datapoints::normalized`]): two spellings of the same person must give the same key.
    ///
    /// Includes `only_verified_email` and `only_verified_mobile` (they change whether a person
    /// is returned), not `enrich_mobile`: a match asked without the mobile is upgraded by asking
    /// again, which [`CacheEntry::serves`] decides.
    pub fn new(datapoints: &Datapoints, flags: EnrichFlags) -> Self {
        let mut bytes = Vec::with_capacity(2 + 9 + 96);
        bytes.push(KEY_VERSION);
        let mut flag_byte = 0;
        if flags.only_verified_email {
            flag_byte |= KEY_ONLY_VERIFIED_EMAIL;
        }
        if flags.only_verified_mobile {
            flag_byte |= KEY_ONLY_VERIFIED_MOBILE;
        }
        bytes.push(flag_byte);
        for datapoint in Datapoint::ALL {
            match datapoints.get(datapoint) {
                None => bytes.push(KEY_ABSENT),
                Some(value) => {
                    bytes.push(KEY_PRESENT);
                    write_leb128(&mut bytes, value.len() as u64);
                    bytes.extend_from_slice(value.as_bytes());
                }
            }
        }
        CacheKey(bytes)
    }

    /// The encoded key, as stored.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The datapoints the key was made from (for export); `None` when the bytes are not a key
    /// of this version.
    pub fn datapoints(&self) -> Option<Datapoints> {
        self.decode().map(|(datapoints, _)| datapoints)
    }

    /// The flags the key was made with; `enrich_mobile` is always false (it is not part of the
    /// key). `None` when the bytes are not a key of this version.
    pub fn flags(&self) -> Option<EnrichFlags> {
        self.decode().map(|(_, flags)| flags)
    }

    fn decode(&self) -> Option<(Datapoints, EnrichFlags)> {
        let (&version, rest) = self.0.split_first()?;
        if version != KEY_VERSION {
            return None;
        }
        let (&flag_byte, mut rest) = rest.split_first()?;
        if flag_byte & !(KEY_ONLY_VERIFIED_EMAIL | KEY_ONLY_VERIFIED_MOBILE) != 0 {
            return None;
        }
        let flags = EnrichFlags {
            only_verified_email: flag_byte & KEY_ONLY_VERIFIED_EMAIL != 0,
            enrich_mobile: false,
            only_verified_mobile: flag_byte & KEY_ONLY_VERIFIED_MOBILE != 0,
        };
        let mut datapoints = Datapoints::default();
        for datapoint in Datapoint::ALL {
            let (&tag, after_tag) = rest.split_first()?;
            rest = after_tag;
            match tag {
                KEY_ABSENT => {}
                KEY_PRESENT => {
                    let (len, after_len) = read_leb128(rest)?;
                    let len = usize::try_from(len).ok()?;
                    if after_len.len() < len {
                        return None;
                    }
                    let (value, after_value) = after_len.split_at(len);
                    let value = std::str::from_utf8(value).ok()?;
                    datapoints.set(datapoint, Some(value.to_string()));
                    rest = after_value;
                }
                _ => return None,
            }
        }
        rest.is_empty().then_some((datapoints, flags))
    }
}

fn write_leb128(out: &mut Vec<u8>, mut value: u64) {
    loop {
        let byte = (value & 0x7F) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// A LEB128 number and the bytes after it. Refuses overlong and overflowing encodings, so that
/// one number has one encoding.
fn read_leb128(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let mut value: u64 = 0;
    for (i, &byte) in bytes.iter().enumerate().take(10) {
        let part = u64::from(byte & 0x7F);
        let shift = 7 * i as u32;
        if shift == 63 && part > 1 {
            return None;
        }
        value |= part << shift;
        if byte & 0x80 == 0 {
            if i > 0 && byte == 0 {
                return None;
            }
            return Some((value, &bytes[i + 1..]));
        }
    }
    None
}

/// What the API answered for one record.
// The match is large and the other answers are empty, but an answer lives only between a
// lookup and its outcome (which boxes it): boxing here would only add an allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum CachedAnswer {
    /// The record matched a person.
    Matched {
        /// The person object, as the vendor sent it.
        person: Option<Person>,
        /// The person's current company, as the vendor sent it.
        company: Option<Company>,
        /// The vendor said the enrichment was free (a re-enrichment).
        free_enrichment: bool,
    },
    /// The record matched nobody.
    NotMatched,
    /// The record is below the vendor's minimum requirement.
    InvalidDatapoints,
}

impl CachedAnswer {
    /// The status as written in the output (`matched`, `not_matched`, `invalid_datapoints`).
    pub fn status_str(&self) -> &'static str {
        match self {
            CachedAnswer::Matched { .. } => "matched",
            CachedAnswer::NotMatched => "not_matched",
            CachedAnswer::InvalidDatapoints => "invalid_datapoints",
        }
    }
}

/// One stored answer and what is known about how it was obtained.
#[derive(Debug, Clone, PartialEq)]
pub struct CacheEntry {
    /// What the API answered.
    pub answer: CachedAnswer,
    /// When the answer arrived (stored to the millisecond).
    pub stored_at: SystemTime,
    /// The request asked for the mobile to be revealed (enrich_mobile or only_verified_mobile).
    pub mobile_requested: bool,
    /// Credits this record cost when it was answered.
    pub cost: i64,
}

impl CacheEntry {
    /// The entry for a record's outcome, answered under `flags` at `stored_at`; `None` for
    /// failed and deferred records (those must be sent again).
    pub fn from_outcome(
        outcome: &RecordOutcome,
        flags: EnrichFlags,
        stored_at: SystemTime,
    ) -> Option<Self> {
        let answer = match outcome {
            RecordOutcome::Matched(m) => CachedAnswer::Matched {
                person: m.person.clone(),
                company: m.company.clone(),
                free_enrichment: m.free_enrichment,
            },
            RecordOutcome::NotMatched => CachedAnswer::NotMatched,
            RecordOutcome::InvalidDatapoints => CachedAnswer::InvalidDatapoints,
            RecordOutcome::Failed { .. } | RecordOutcome::Deferred { .. } => return None,
        };
        Some(CacheEntry {
            answer,
            stored_at,
            mobile_requested: flags.reveals_mobile(),
            cost: outcome.cost(),
        })
    }

    /// The outcome to emit for a cache hit: cost 0 (nothing is paid), `free_enrichment` kept as
    /// stored.
    pub fn to_outcome(&self) -> RecordOutcome {
        self.clone().into_outcome()
    }

    /// [`CacheEntry::to_outcome`], taking the entry (no copy of the person and company).
    pub fn into_outcome(self) -> RecordOutcome {
        match self.answer {
            CachedAnswer::Matched {
                person,
                company,
                free_enrichment,
            } => RecordOutcome::Matched(Box::new(Match {
                person,
                company,
                free_enrichment,
                cost: 0,
            })),
            CachedAnswer::NotMatched => RecordOutcome::NotMatched,
            CachedAnswer::InvalidDatapoints => RecordOutcome::InvalidDatapoints,
        }
    }

    /// Whether this entry answers a request with `flags` at `now`: it is not older than `ttl`
    /// (`None`: never expires), and, when `flags.reveals_mobile()`, a match must have been
    /// answered with the mobile requested — a match asked without `enrich_mobile` lacks the
    /// revealed mobile and must be asked again (the vendor charges for that upgrade). Not
    /// matched and invalid answers serve whatever the mobile flag: revealing the mobile does
    /// not change who matches. An entry stamped in the future (clock change) counts as new.
    pub fn serves(&self, flags: EnrichFlags, ttl: Option<Duration>, now: SystemTime) -> bool {
        if let Some(ttl) = ttl {
            let age = now.duration_since(self.stored_at).unwrap_or(Duration::ZERO);
            if age > ttl {
                return false;
            }
        }
        match self.answer {
            CachedAnswer::Matched { .. } => !flags.reveals_mobile() || self.mobile_requested,
            CachedAnswer::NotMatched | CachedAnswer::InvalidDatapoints => true,
        }
    }

    /// Whether the stored person carries a revealed mobile.
    fn mobile_revealed(&self) -> bool {
        match &self.answer {
            CachedAnswer::Matched {
                person: Some(person),
                ..
            } => person
                .mobile
                .as_ref()
                .and_then(|m| m.revealed)
                .unwrap_or(false),
            _ => false,
        }
    }

    fn encode(&self) -> Vec<u8> {
        let mut bits = 0;
        if self.mobile_requested {
            bits |= BIT_MOBILE_REQUESTED;
        }
        if self.mobile_revealed() {
            bits |= BIT_MOBILE_REVEALED;
        }
        let status = match &self.answer {
            CachedAnswer::Matched {
                free_enrichment, ..
            } => {
                if *free_enrichment {
                    bits |= BIT_FREE_ENRICHMENT;
                }
                STATUS_MATCHED
            }
            CachedAnswer::NotMatched => STATUS_NOT_MATCHED,
            CachedAnswer::InvalidDatapoints => STATUS_INVALID_DATAPOINTS,
        };
        let mut out = Vec::with_capacity(VALUE_HEADER_LEN + 2048);
        out.extend_from_slice(&[VALUE_VERSION, status, bits]);
        out.extend_from_slice(&unix_millis(self.stored_at).to_be_bytes());
        out.extend_from_slice(&self.cost.to_be_bytes());
        if let CachedAnswer::Matched {
            person, company, ..
        } = &self.answer
        {
            let objects = StoredObjectsRef {
                person: person.as_ref(),
                company: company.as_ref(),
            };
            // Person and Company are maps of strings, numbers and booleans: serialising them
            // cannot fail.
            let json =
                serde_json::to_vec(&objects).expect("person and company objects serialise to JSON");
            out.extend_from_slice(&(json.len() as u32).to_le_bytes());
            out.extend_from_slice(&lz4_flex::block::compress(&json));
        }
        out
    }

    fn decode(bytes: &[u8]) -> std::result::Result<Self, String> {
        let header = ValueHeader::decode(bytes)?;
        let payload = &bytes[VALUE_HEADER_LEN..];
        let answer = match header.status {
            STATUS_MATCHED => {
                let json = decompress(payload)?;
                let objects: StoredObjects = serde_json::from_slice(&json)
                    .map_err(|e| format!("the person and company do not decode: {e}"))?;
                CachedAnswer::Matched {
                    person: objects.person,
                    company: objects.company,
                    free_enrichment: header.bits & BIT_FREE_ENRICHMENT != 0,
                }
            }
            STATUS_NOT_MATCHED => CachedAnswer::NotMatched,
            _ => CachedAnswer::InvalidDatapoints,
        };
        Ok(CacheEntry {
            answer,
            stored_at: header.stored_at,
            mobile_requested: header.bits & BIT_MOBILE_REQUESTED != 0,
            cost: header.cost,
        })
    }
}

/// The JSON of a match: a little-endian u32 length, then the LZ4 block.
fn decompress(payload: &[u8]) -> std::result::Result<Vec<u8>, String> {
    let Some((len, block)) = payload.split_first_chunk::<4>() else {
        return Err("the payload has no length".into());
    };
    let len = u32::from_le_bytes(*len) as usize;
    if len > MAX_PAYLOAD_BYTES {
        return Err(format!("the payload claims {len} bytes"));
    }
    let json = lz4_flex::block::decompress(block, len)
        .map_err(|e| format!("the payload does not decompress: {e}"))?;
    if json.len() != len {
        return Err(format!("the payload is {} bytes, not {len}", json.len()));
    }
    Ok(json)
}

/// The person and company of a match, as stored (serialising side).
#[derive(Serialize)]
struct StoredObjectsRef<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    person: Option<&'a Person>,
    #[serde(skip_serializing_if = "Option::is_none")]
    company: Option<&'a Company>,
}

/// The person and company of a match, as stored (deserialising side).
#[derive(Deserialize)]
struct StoredObjects {
    #[serde(default)]
    person: Option<Person>,
    #[serde(default)]
    company: Option<Company>,
}

/// The fixed part of a stored value: enough for `stats` without parsing the JSON.
struct ValueHeader {
    status: u8,
    bits: u8,
    stored_at: SystemTime,
    cost: i64,
}

impl ValueHeader {
    fn decode(bytes: &[u8]) -> std::result::Result<Self, String> {
        if bytes.len() < VALUE_HEADER_LEN {
            return Err(format!("{} bytes is too short for a value", bytes.len()));
        }
        if bytes[0] != VALUE_VERSION {
            return Err(format!("unknown value version {}", bytes[0]));
        }
        let status = bytes[1];
        if !matches!(
            status,
            STATUS_MATCHED | STATUS_NOT_MATCHED | STATUS_INVALID_DATAPOINTS
        ) {
            return Err(format!("unknown status {status}"));
        }
        let word = |at: usize| {
            let mut buf = [0u8; 8];
            buf.copy_from_slice(&bytes[at..at + 8]);
            i64::from_be_bytes(buf)
        };
        Ok(ValueHeader {
            status,
            bits: bytes[2],
            stored_at: from_unix_millis(word(3)),
            cost: word(11),
        })
    }
}

fn unix_millis(time: SystemTime) -> i64 {
    match time.duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_millis()).unwrap_or(i64::MAX),
        Err(before) => i64::try_from(before.duration().as_millis()).map_or(i64::MIN, |ms| -ms),
    }
}

fn from_unix_millis(millis: i64) -> SystemTime {
    let magnitude = Duration::from_millis(millis.unsigned_abs());
    if millis >= 0 {
        UNIX_EPOCH
            .checked_add(magnitude)
            .unwrap_or(UNIX_EPOCH + Duration::from_secs(i64::MAX as u64 / 1000))
    } else {
        UNIX_EPOCH.checked_sub(magnitude).unwrap_or(UNIX_EPOCH)
    }
}

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
    #[serde(serialize_with = "rfc3339")]
    pub oldest: Option<SystemTime>,
    /// When the newest answer arrived.
    #[serde(serialize_with = "rfc3339")]
    pub newest: Option<SystemTime>,
    /// Size of the cache file; `None` in memory.
    pub file_bytes: Option<u64>,
}

fn rfc3339<S: serde::Serializer>(
    time: &Option<SystemTime>,
    serializer: S,
) -> std::result::Result<S::Ok, S::Error> {
    match time {
        Some(time) => serializer.serialize_some(
            &chrono::DateTime::<chrono::Utc>::from(*time)
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        ),
        None => serializer.serialize_none(),
    }
}

/// The persistent store of answers. Clone is cheap (the database is shared); Send + Sync.
///
/// Its methods block on file I/O (see the module documentation).
#[derive(Clone)]
pub struct ResponseCache {
    inner: Arc<Inner>,
}

struct Inner {
    db: Database,
    path: Option<PathBuf>,
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
        let mut options = OpenOptions::new();
        options.read(true).write(true).create(true).truncate(false);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let file = options.open(path).map_err(|e| fail(e.to_string()))?;
        let backend = FileBackend::new(file).map_err(|e| fail(describe(e.into())))?;
        let db = Database::builder()
            .set_cache_size(PAGE_CACHE_BYTES)
            .create_with_backend(backend)
            .map_err(|e| fail(describe(e.into())))?;
        ResponseCache::init(db, Some(path.to_path_buf()))
    }

    /// A cache that lives only as long as this value (and its clones): in-job de-duplication
    /// when the persistent cache is off.
    pub fn in_memory() -> Result<Self> {
        let db = Database::builder()
            .create_with_backend(InMemoryBackend::new())
            .map_err(|e| Error::Cache {
                path: "in-memory".into(),
                reason: describe(e.into()),
            })?;
        ResponseCache::init(db, None)
    }

    /// Creates the table, so that readers can always open it.
    fn init(db: Database, path: Option<PathBuf>) -> Result<Self> {
        let cache = ResponseCache {
            inner: Arc::new(Inner { db, path }),
        };
        let txn = cache.inner.db.begin_write().map_err(|e| cache.fail(e))?;
        txn.open_table(RESPONSES).map_err(|e| cache.fail(e))?;
        txn.commit().map_err(|e| cache.fail(e))?;
        Ok(cache)
    }

    /// The file path, `None` in memory.
    pub fn path(&self) -> Option<&Path> {
        self.inner.path.as_deref()
    }

    fn describe_path(&self) -> String {
        match &self.inner.path {
            Some(path) => path.display().to_string(),
            None => "in-memory".to_string(),
        }
    }

    fn fail(&self, e: impl Into<redb::Error>) -> Error {
        Error::Cache {
            path: self.describe_path(),
            reason: describe(e.into()),
        }
    }

    /// Looks up many keys in one read transaction; one result per key, in order. A value that
    /// does not decode is a miss (and a warning).
    pub fn get_many(&self, keys: &[CacheKey]) -> Result<Vec<Option<CacheEntry>>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let txn = self.inner.db.begin_read().map_err(|e| self.fail(e))?;
        let table = txn.open_table(RESPONSES).map_err(|e| self.fail(e))?;
        keys.iter()
            .map(|key| {
                let Some(value) = table.get(key.as_bytes()).map_err(|e| self.fail(e))? else {
                    return Ok(None);
                };
                Ok(self.decode_or_warn(value.value()))
            })
            .collect()
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

    /// Stores entries in one durable write transaction: committed to disk when this returns, so
    /// a crash right after loses nothing that was paid for. A later put of the same key
    /// overwrites.
    pub fn put_many(&self, entries: &[(CacheKey, CacheEntry)]) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut txn = self.inner.db.begin_write().map_err(|e| self.fail(e))?;
        txn.set_durability(Durability::Immediate)
            .map_err(|e| self.fail(e))?;
        {
            let mut table = txn.open_table(RESPONSES).map_err(|e| self.fail(e))?;
            for (key, entry) in entries {
                table
                    .insert(key.as_bytes(), entry.encode().as_slice())
                    .map_err(|e| self.fail(e))?;
            }
        }
        txn.commit().map_err(|e| self.fail(e))
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
            stats.entries += 1;
            let Ok(header) = ValueHeader::decode(value.value()) else {
                stats.unreadable += 1;
                continue;
            };
            match header.status {
                STATUS_MATCHED => stats.matched += 1,
                STATUS_NOT_MATCHED => stats.not_matched += 1,
                _ => stats.invalid_datapoints += 1,
            }
            if header.bits & BIT_MOBILE_REVEALED != 0 {
                stats.with_revealed_mobile += 1;
            }
            stats.oldest = Some(
                stats
                    .oldest
                    .map_or(header.stored_at, |t| t.min(header.stored_at)),
            );
            stats.newest = Some(
                stats
                    .newest
                    .map_or(header.stored_at, |t| t.max(header.stored_at)),
            );
        }
        Ok(stats)
    }

    /// Removes every entry and keeps the file (which does not shrink); returns how many were
    /// removed. To delete the file itself, see [`remove_file`].
    pub fn clear(&self) -> Result<u64> {
        let mut txn = self.inner.db.begin_write().map_err(|e| self.fail(e))?;
        txn.set_durability(Durability::Immediate)
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

/// Deletes the cache file (the file itself, not only its entries); `Ok(false)` when it did not
/// exist.
///
/// Refuses a file that is not a redb database (a mistyped `--cache` must not delete a lead
/// file) and a cache another process has open.
pub fn remove_file(path: &Path) -> Result<bool> {
    let fail = |reason: String| Error::Cache {
        path: path.display().to_string(),
        reason,
    };
    let metadata = match fs::metadata(path) {
        Ok(metadata) => metadata,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(fail(e.to_string())),
    };
    if !metadata.is_file() {
        return Err(fail("not a file; nothing removed".into()));
    }
    if metadata.len() > 0 {
        if is_redb_file(path).map_err(|e| fail(e.to_string()))? != Some(true) {
            return Err(fail(
                "not a response cache (not a redb database); nothing removed".into(),
            ));
        }
        // Opening takes the lock: a cache in use by another process must not vanish under it.
        // Any other failure (a damaged file) does not stop the removal.
        match Database::builder().set_cache_size(1 << 20).open(path) {
            Err(redb::DatabaseError::DatabaseAlreadyOpen) => return Err(fail(IN_USE.into())),
            Ok(db) => drop(db),
            Err(_) => {}
        }
    }
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(fail(e.to_string())),
    }
}

/// The first bytes of every redb file.
const REDB_MAGIC: [u8; 9] = [b'r', b'e', b'd', b'b', 0x1A, 0x0A, 0xA9, 0x0D, 0x0A];

/// Whether the file at `path` starts like a redb database; `None` when it is missing or empty
/// (redb initialises an empty file).
fn is_redb_file(path: &Path) -> io::Result<Option<bool>> {
    let mut file = match fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut start = Vec::with_capacity(REDB_MAGIC.len());
    (&mut file)
        .take(REDB_MAGIC.len() as u64)
        .read_to_end(&mut start)?;
    if start.is_empty() {
        return Ok(None);
    }
    Ok(Some(start == REDB_MAGIC))
}

/// Creates `dir` and its missing parents; those it creates get mode 0700 on Unix. Existing
/// directories are left as they are.
fn create_private_dirs(dir: &Path) -> io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir)
}

/// A redb error in words, with what to do for the errors a user can act on.
fn describe(e: redb::Error) -> String {
    match e {
        redb::Error::DatabaseAlreadyOpen => IN_USE.to_string(),
        redb::Error::Corrupted(reason) => format!(
            "the file is damaged or is not a response cache ({reason}); move it away or use another --cache PATH"
        ),
        redb::Error::UpgradeRequired(version) => format!(
            "the file was written by a newer format of the cache (redb file format {version}); use a newer prospeo or another --cache PATH"
        ),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::outcome::DeferReason;
    use crate::api::wire::PersonMobile;

    fn at(millis: i64) -> SystemTime {
        from_unix_millis(millis)
    }

    fn person(mobile_revealed: bool) -> Person {
        let mut person: Person = serde_json::from_value(serde_json::json!({
            "person_id": "aa8e8c3b1f6a",
            "first_name": "Eva",
            "last_name": "Kiegler",
            "full_name": "Eva Kiegler",
            "linkedin_url": "https://www.linkedin.com/in/eva-kiegler",
            "skills": ["SaaS", "Growth"],
            "email": {"status": "VERIFIED", "revealed": true, "email": "eva@intercom.com"},
            "location": {"country": "Ireland", "time_zone_offset": 1.0},
            "a_field_added_later": {"nested": [1, 2, 3]}
        }))
        .unwrap();
        person.mobile = Some(PersonMobile {
            status: Some("VERIFIED".into()),
            revealed: Some(mobile_revealed),
            mobile: Some(if mobile_revealed {
                "+353861234567".into()
            } else {
                "+353*********".into()
            }),
            ..PersonMobile::default()
        });
        person
    }

    fn company() -> Company {
        serde_json::from_value(serde_json::json!({
            "company_id": "c-1",
            "name": "Intercom",
            "domain": "intercom.com",
            "employee_count": 1200,
            "keywords": ["support", "chat"],
            "unknown_vendor_field": true
        }))
        .unwrap()
    }

    fn matched(free: bool, cost: i64) -> RecordOutcome {
        RecordOutcome::Matched(Box::new(Match {
            person: Some(person(true)),
            company: Some(company()),
            free_enrichment: free,
            cost,
        }))
    }

    fn datapoints(email: &str) -> Datapoints {
        Datapoints {
            email: Some(email.to_string()),
            ..Datapoints::default()
        }
    }

    fn key(email: &str) -> CacheKey {
        CacheKey::new(&datapoints(email), EnrichFlags::default())
    }

    fn entry(answer: CachedAnswer, mobile_requested: bool, stored_at: SystemTime) -> CacheEntry {
        CacheEntry {
            answer,
            stored_at,
            mobile_requested,
            cost: 0,
        }
    }

    fn matched_answer() -> CachedAnswer {
        CachedAnswer::Matched {
            person: Some(person(false)),
            company: Some(company()),
            free_enrichment: false,
        }
    }

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
        let outcomes = [
            matched(false, 10),
            matched(true, 0),
            RecordOutcome::Matched(Box::new(Match {
                person: None,
                company: None,
                free_enrichment: false,
                cost: 1,
            })),
            RecordOutcome::NotMatched,
            RecordOutcome::InvalidDatapoints,
        ];
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
    fn the_key_encoding_is_injective() {
        let flags = EnrichFlags::default();
        let mut seen = std::collections::HashMap::new();
        let mut add = |label: &str, dp: Datapoints| {
            let key = CacheKey::new(&dp, flags);
            if let Some(previous) = seen.insert(key.clone(), label.to_string()) {
                panic!("{label} and {previous} share a key");
            }
            assert_eq!(key.datapoints(), Some(dp), "{label} does not decode back");
        };
        let with = |pairs: &[(Datapoint, &str)]| {
            let mut dp = Datapoints::default();
            for (d, v) in pairs {
                dp.set(*d, Some(v.to_string()));
            }
            dp
        };
        use Datapoint::*;
        add("nothing", Datapoints::default());
        add("empty first name", with(&[(FirstName, "")]));
        add("empty last name", with(&[(LastName, "")]));
        add("a b", with(&[(FirstName, "a"), (LastName, "b")]));
        add("ab", with(&[(FirstName, "ab")]));
        add("ab in last", with(&[(LastName, "ab")]));
        add("a, empty b", with(&[(FirstName, "a"), (LastName, "")]));
        add("separator in value", with(&[(FirstName, "a\u{1f}b")]));
        add(
            "separator split",
            with(&[(FirstName, "a"), (LastName, "\u{1f}b")]),
        );
        add(
            "nul bytes",
            with(&[(FirstName, "\0\u{1}"), (LastName, "\0")]),
        );
        add(
            "nul split",
            with(&[(FirstName, "\0"), (LastName, "\u{1}\0")]),
        );
        add("tag-like value", with(&[(Email, "\u{1}\u{3}abc")]));
        add("long value", with(&[(CompanyName, &"x".repeat(300))]));
        add("long value + 1", with(&[(CompanyName, &"x".repeat(301))]));
        add(
            "every field",
            with(&Datapoint::ALL.map(|d| (d, d.as_str()))),
        );
        add("unicode", with(&[(FullName, "Zoë Ångström 李")]));
    }

    #[test]
    fn flags_change_the_key_except_enrich_mobile() {
        let dp = datapoints("eva@intercom.com");
        let plain = CacheKey::new(&dp, EnrichFlags::default());
        let mobile = CacheKey::new(
            &dp,
            EnrichFlags {
                enrich_mobile: true,
                ..EnrichFlags::default()
            },
        );
        assert_eq!(plain, mobile);
        let verified_email = EnrichFlags {
            only_verified_email: true,
            ..EnrichFlags::default()
        };
        let verified_mobile = EnrichFlags {
            only_verified_mobile: true,
            ..EnrichFlags::default()
        };
        let both = EnrichFlags {
            only_verified_email: true,
            enrich_mobile: true,
            only_verified_mobile: true,
        };
        let keys = [
            plain.clone(),
            CacheKey::new(&dp, verified_email),
            CacheKey::new(&dp, verified_mobile),
            CacheKey::new(&dp, both),
        ];
        for (i, a) in keys.iter().enumerate() {
            for b in &keys[i + 1..] {
                assert_ne!(a, b);
            }
        }
        assert_eq!(
            keys[3].flags(),
            Some(EnrichFlags {
                enrich_mobile: false,
                ..both
            })
        );
        assert_eq!(keys[1].flags(), Some(verified_email));
        assert_eq!(keys[1].datapoints(), Some(dp));
    }

    #[test]
    fn malformed_keys_do_not_decode() {
        let good = key("a@b.co");
        let bytes = good.as_bytes();
        for bad in [
            &[][..],
            &bytes[..bytes.len() - 1],
            &[bytes, &[0]].concat(),
            &[&[9][..], &bytes[1..]].concat(),
            &[&bytes[..1], &[0x80], &bytes[2..]].concat(),
        ] {
            assert_eq!(CacheKey(bad.to_vec()).datapoints(), None, "{bad:?}");
        }
    }

    #[test]
    fn serves_respects_the_ttl() {
        let stored = at(1_000_000);
        let e = entry(CachedAnswer::NotMatched, false, stored);
        let flags = EnrichFlags::default();
        let day = Duration::from_secs(86_400);
        assert!(e.serves(flags, None, stored + 1000 * day));
        assert!(e.serves(flags, Some(day), stored + day));
        assert!(!e.serves(flags, Some(day), stored + day + Duration::from_millis(1)));
        // Stamped in the future (the clock moved back): counts as new.
        assert!(e.serves(flags, Some(day), stored - day));
        assert!(!e.serves(
            flags,
            Some(Duration::ZERO),
            stored + Duration::from_millis(1)
        ));
    }

    #[test]
    fn serves_asks_again_for_a_mobile_the_match_lacks() {
        let now = at(10);
        let plain = EnrichFlags::default();
        let reveal = EnrichFlags {
            enrich_mobile: true,
            ..EnrichFlags::default()
        };
        let only_mobile = EnrichFlags {
            only_verified_mobile: true,
            ..EnrichFlags::default()
        };
        let without_mobile = entry(matched_answer(), false, now);
        assert!(without_mobile.serves(plain, None, now));
        assert!(!without_mobile.serves(reveal, None, now));
        assert!(!without_mobile.serves(only_mobile, None, now));
        let with_mobile = entry(matched_answer(), true, now);
        assert!(with_mobile.serves(plain, None, now));
        assert!(with_mobile.serves(reveal, None, now));
        assert!(with_mobile.serves(only_mobile, None, now));
        for answer in [CachedAnswer::NotMatched, CachedAnswer::InvalidDatapoints] {
            let e = entry(answer, false, now);
            assert!(e.serves(reveal, None, now));
            assert!(e.serves(only_mobile, None, now));
        }
    }

    #[test]
    fn failed_and_deferred_records_are_not_cached() {
        let flags = EnrichFlags::default();
        let now = SystemTime::now();
        assert_eq!(
            CacheEntry::from_outcome(
                &RecordOutcome::Failed {
                    reason: "500".into()
                },
                flags,
                now
            ),
            None
        );
        let deferred = RecordOutcome::Deferred {
            reason: DeferReason::DailyQuota,
            retry_at: None,
        };
        assert_eq!(CacheEntry::from_outcome(&deferred, flags, now), None);
        let e = CacheEntry::from_outcome(&RecordOutcome::NotMatched, flags, now).unwrap();
        assert!(!e.mobile_requested);
        assert_eq!(e.cost, 0);
        let only_mobile = EnrichFlags {
            only_verified_mobile: true,
            ..EnrichFlags::default()
        };
        let e = CacheEntry::from_outcome(&matched(false, 10), only_mobile, now).unwrap();
        assert!(e.mobile_requested);
        assert_eq!(e.cost, 10);
        assert_eq!(e.to_outcome().cost(), 0);
    }

    #[cfg(unix)]
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
        let mut encoded = good.encode();
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
        let mut huge = encoded[..VALUE_HEADER_LEN].to_vec();
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        huge.extend_from_slice(b"not lz4");
        put_raw(&cache, &key("huge@x.io"), &huge);
        // Valid LZ4 of something that is not the stored JSON.
        let mut not_json = encoded[..VALUE_HEADER_LEN].to_vec();
        not_json.extend_from_slice(&5u32.to_le_bytes());
        not_json.extend_from_slice(&lz4_flex::block::compress(b"hello"));
        put_raw(&cache, &key("not-json@x.io"), &not_json);
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
                key("good@x.io"),
            ])
            .unwrap();
        assert_eq!(
            got,
            vec![None, None, None, None, None, None, None, Some(good)]
        );
        let stats = cache.stats().unwrap();
        assert_eq!(stats.entries, 8);
        assert_eq!(stats.unreadable, 4);
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
    fn remove_file_deletes_the_cache_file_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("responses.redb");
        assert!(!remove_file(&path).unwrap());
        {
            let cache = ResponseCache::open(&path).unwrap();
            cache
                .put_many(&[(key("a@x.io"), entry(CachedAnswer::NotMatched, false, at(0)))])
                .unwrap();
            // In use: refused.
            let err = remove_file(&path).unwrap_err().to_string();
            assert!(err.contains("another prospeo process"), "{err}");
            assert!(path.exists());
        }
        assert!(remove_file(&path).unwrap());
        assert!(!path.exists());
        assert!(!remove_file(&path).unwrap());
        // Not a cache: kept.
        let leads = dir.path().join("leads.csv");
        fs::write(&leads, "First Name,Last Name\nEva,Kiegler\n").unwrap();
        let err = remove_file(&leads).unwrap_err().to_string();
        assert!(err.contains("not a response cache"), "{err}");
        assert!(leads.exists());
        // An empty file (a create interrupted before the header was written) goes.
        let empty = dir.path().join("empty.redb");
        fs::write(&empty, "").unwrap();
        assert!(remove_file(&empty).unwrap());
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
        assert!(matches!(err, Error::Cache { .. }), "{err:?}");
        assert!(message.contains(&path.display().to_string()), "{message}");
        assert!(
            message.contains("another prospeo process is using this cache"),
            "{message}"
        );
        assert!(message.contains("--no-cache"), "{message}");
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
            r#"ResponseCache { path: "in-memory" }"#
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

    #[test]
    fn timestamps_round_trip_to_the_millisecond() {
        for millis in [0, 1, -1, 1_700_000_000_123, -86_400_000] {
            assert_eq!(unix_millis(from_unix_millis(millis)), millis);
        }
    }
}
