//! The value codec: a [`CacheEntry`] as stored, and back.
//!
//! # Encoding
//!
//! Values are a 19-byte header — version, status, bits (mobile requested, free enrichment,
//! mobile revealed), the time the answer arrived in Unix milliseconds, the credits it cost —
//! followed, for a match, by the person and company objects.
//!
//! Version 2 (written now) keeps the objects in the wire model's compact binary form
//! ([`crate::vendor::wire::compact`]): the form's 4-byte schema fingerprint, then the objects'
//! length as 4 bytes and the objects LZ4-compressed (lz4_flex, pure Rust). Version 1 (still
//! read) kept them as JSON, LZ4-compressed behind a 4-byte length. Either way every field the
//! vendor sent is kept, including the ones this version does not know (`extra`). A value that
//! does not decode (a newer or damaged format, another schema) is a cache miss, logged, never
//! an error.
//!
//! A write encodes straight from the record's outcome ([`EncodedEntry::from_outcome`]): the
//! person and company are serialised by reference, never copied first.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::vendor::outcome::{Match, RecordOutcome};
use crate::vendor::wire::compact::{self, Compact, Reader, Writer};
use crate::vendor::wire::{Company, EnrichFlags, Person};

/// Version of the value encoding written for a match: the objects in the compact binary form
/// (a value without objects is written as version 1, which reads the same).
pub(super) const VALUE_VERSION: u8 = 2;
/// The first version: the objects as JSON (still read).
pub(super) const VALUE_VERSION_JSON: u8 = 1;
/// Value header length: version, status, bits, stored_at (i64), cost (i64).
pub(super) const VALUE_HEADER_LEN: usize = 3 + 8 + 8;
pub(super) const STATUS_MATCHED: u8 = 1;
pub(super) const STATUS_NOT_MATCHED: u8 = 2;
pub(super) const STATUS_INVALID_DATAPOINTS: u8 = 3;
/// Value bits: the request asked for the mobile to be revealed.
const BIT_MOBILE_REQUESTED: u8 = 0x01;
/// Value bits: the vendor said the enrichment was free.
const BIT_FREE_ENRICHMENT: u8 = 0x02;
/// Value bits: the stored person carries a revealed mobile (kept in the header so that
/// `stats` need not parse the JSON).
pub(super) const BIT_MOBILE_REVEALED: u8 = 0x04;
/// Largest payload a value may claim to decompress to: a corrupt length must not allocate
/// gigabytes.
/// (A match is 3 to 7 KB.)
const MAX_PAYLOAD_BYTES: usize = 1024 * 1024;

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
    ///
    /// This copies the person and company; to store an outcome, encode it in place with
    /// [`EncodedEntry::from_outcome`] instead.
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

    /// The entry as stored.
    pub fn encode(&self) -> EncodedEntry {
        let (status, free_enrichment, objects) = match &self.answer {
            CachedAnswer::Matched {
                person,
                company,
                free_enrichment,
            } => (
                STATUS_MATCHED,
                *free_enrichment,
                Some((person.as_ref(), company.as_ref())),
            ),
            CachedAnswer::NotMatched => (STATUS_NOT_MATCHED, false, None),
            CachedAnswer::InvalidDatapoints => (STATUS_INVALID_DATAPOINTS, false, None),
        };
        encode(
            status,
            free_enrichment,
            self.mobile_requested,
            self.stored_at,
            self.cost,
            objects,
        )
    }

    pub(super) fn decode(bytes: &[u8]) -> std::result::Result<Self, String> {
        let header = ValueHeader::decode(bytes)?;
        let payload = &bytes[VALUE_HEADER_LEN..];
        let answer = match header.status {
            STATUS_MATCHED => {
                let (person, company) = if header.version == VALUE_VERSION_JSON {
                    let json = decompress(payload)?;
                    let objects: StoredObjects = serde_json::from_slice(&json)
                        .map_err(|e| format!("the person and company do not decode: {e}"))?;
                    (objects.person, objects.company)
                } else {
                    decode_compact(payload)?
                };
                CachedAnswer::Matched {
                    person,
                    company,
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

/// A [`CacheEntry`] as stored: what [`super::ResponseCache::put_encoded`] writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedEntry(Vec<u8>);

impl EncodedEntry {
    /// The stored form of a record's outcome, answered under `flags` at `stored_at`, encoded
    /// from the outcome by reference (the person and company are not copied); `None` for
    /// failed and deferred records (those must be sent again). Decodes to what
    /// [`CacheEntry::from_outcome`] gives.
    pub fn from_outcome(
        outcome: &RecordOutcome,
        flags: EnrichFlags,
        stored_at: SystemTime,
    ) -> Option<Self> {
        let (status, free_enrichment, objects) = match outcome {
            RecordOutcome::Matched(m) => (
                STATUS_MATCHED,
                m.free_enrichment,
                Some((m.person.as_ref(), m.company.as_ref())),
            ),
            RecordOutcome::NotMatched => (STATUS_NOT_MATCHED, false, None),
            RecordOutcome::InvalidDatapoints => (STATUS_INVALID_DATAPOINTS, false, None),
            RecordOutcome::Failed { .. } | RecordOutcome::Deferred { .. } => return None,
        };
        Some(encode(
            status,
            free_enrichment,
            flags.reveals_mobile(),
            stored_at,
            outcome.cost(),
            objects,
        ))
    }

    /// The stored bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Bytes as stored (e.g. read from the coordinator's `answers` table); [`EncodedEntry::decode`]
    /// checks them.
    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        EncodedEntry(bytes)
    }

    /// The stored bytes, taken.
    pub fn into_bytes(self) -> Vec<u8> {
        self.0
    }

    /// The entry these bytes hold; `Err` says why they do not decode.
    pub fn decode(&self) -> std::result::Result<CacheEntry, String> {
        CacheEntry::decode(&self.0)
    }
}

impl From<&CacheEntry> for EncodedEntry {
    fn from(entry: &CacheEntry) -> Self {
        entry.encode()
    }
}

/// Encodes a value; `objects` is the person and company of a match.
fn encode(
    status: u8,
    free_enrichment: bool,
    mobile_requested: bool,
    stored_at: SystemTime,
    cost: i64,
    objects: Option<(Option<&Person>, Option<&Company>)>,
) -> EncodedEntry {
    let mut bits = 0;
    if mobile_requested {
        bits |= BIT_MOBILE_REQUESTED;
    }
    if free_enrichment {
        bits |= BIT_FREE_ENRICHMENT;
    }
    let mobile_revealed = objects
        .and_then(|(person, _)| person)
        .and_then(|person| person.mobile.as_ref())
        .and_then(|mobile| mobile.revealed)
        .unwrap_or(false);
    if mobile_revealed {
        bits |= BIT_MOBILE_REVEALED;
    }
    let Some((person, company)) = objects else {
        let mut out = Vec::with_capacity(VALUE_HEADER_LEN);
        // A header alone reads the same in both versions: version 1 keeps it readable by
        // earlier builds (workers of two versions sharing a coordinator, a downgrade).
        write_header(&mut out, VALUE_VERSION_JSON, status, bits, stored_at, cost);
        return EncodedEntry(out);
    };
    let mut objects = Writer::with_capacity(OBJECTS_CAPACITY);
    compact::put_option(&mut objects, person);
    compact::put_option(&mut objects, company);
    let objects = objects.finish();
    // Compressed straight into the value (no intermediate block), then cut to its size.
    let start = VALUE_HEADER_LEN + 8;
    let mut out = vec![0; start + lz4_flex::block::get_maximum_output_size(objects.len())];
    let mut header = Vec::with_capacity(start);
    write_header(&mut header, VALUE_VERSION, status, bits, stored_at, cost);
    header.extend_from_slice(&compact::schema_fingerprint().to_le_bytes());
    header.extend_from_slice(&(objects.len() as u32).to_le_bytes());
    out[..start].copy_from_slice(&header);
    let compressed = lz4_flex::block::compress_into(&objects, &mut out[start..])
        .expect("the buffer holds the largest LZ4 block of the objects");
    out.truncate(start + compressed);
    EncodedEntry(out)
}

/// The fixed part of a value.
fn write_header(
    out: &mut Vec<u8>,
    version: u8,
    status: u8,
    bits: u8,
    stored_at: SystemTime,
    cost: i64,
) {
    out.extend_from_slice(&[version, status, bits]);
    out.extend_from_slice(&unix_millis(stored_at).to_be_bytes());
    out.extend_from_slice(&cost.to_be_bytes());
}

/// Room for the compact form of a usual match (person and company: about 3 KB of text and
/// less of structure), so that writing it does not grow the buffers again and again.
const OBJECTS_CAPACITY: usize = 4 * 1024;

/// The person and company of a version 2 value's payload: the fingerprint of the field lists
/// it was written under, then what [`decompress`] reads.
fn decode_compact(
    payload: &[u8],
) -> std::result::Result<(Option<Person>, Option<Company>), String> {
    let layout = payload_layout(payload)
        .ok_or("the value has no fingerprint of field lists this version reads")?;
    let objects = decompress(&payload[4..])?;
    let mut input = Reader::new(&objects, layout)?;
    let person = <Option<Person> as Compact>::take(&mut input)?;
    let company = <Option<Company> as Compact>::take(&mut input)?;
    if !input.is_empty() {
        return Err("bytes are left after the company".into());
    }
    Ok((person, company))
}

/// The layout of a version 2 match's objects, by the fingerprint in front of its payload;
/// `None` when this version does not read them.
fn payload_layout(payload: &[u8]) -> Option<compact::Layout> {
    payload
        .first_chunk::<4>()
        .and_then(|f| compact::layout_of(u32::from_le_bytes(*f)))
}

/// A little-endian u32 length, then the LZ4 block of that many bytes.
fn decompress(payload: &[u8]) -> std::result::Result<Vec<u8>, String> {
    let Some((len, block)) = payload.split_first_chunk::<4>() else {
        return Err("the payload has no length".into());
    };
    let len = u32::from_le_bytes(*len) as usize;
    if len > MAX_PAYLOAD_BYTES {
        return Err(format!("the payload claims {len} bytes"));
    }
    let bytes = lz4_flex::block::decompress(block, len)
        .map_err(|e| format!("the payload does not decompress: {e}"))?;
    if bytes.len() != len {
        return Err(format!("the payload is {} bytes, not {len}", bytes.len()));
    }
    Ok(bytes)
}

/// The person and company of a version 1 value (JSON).
#[derive(Deserialize)]
struct StoredObjects {
    #[serde(default)]
    person: Option<Person>,
    #[serde(default)]
    company: Option<Company>,
}

/// The fixed part of a stored value: enough for `stats` without parsing the JSON.
pub(super) struct ValueHeader {
    pub(super) version: u8,
    pub(super) status: u8,
    pub(super) bits: u8,
    pub(super) stored_at: SystemTime,
    pub(super) cost: i64,
}

impl ValueHeader {
    /// Whether the field lists a match of version 2 was written under read here (`value` is
    /// the value this header heads, at least its first [`VALUE_HEADER_LEN`] + 4 bytes); always
    /// true for other values.
    pub(super) fn fingerprint_reads(&self, value: &[u8]) -> bool {
        if self.version != VALUE_VERSION || self.status != STATUS_MATCHED {
            return true;
        }
        value
            .get(VALUE_HEADER_LEN..)
            .and_then(payload_layout)
            .is_some()
    }

    pub(super) fn decode(bytes: &[u8]) -> std::result::Result<Self, String> {
        if bytes.len() < VALUE_HEADER_LEN {
            return Err(format!("{} bytes is too short for a value", bytes.len()));
        }
        let version = bytes[0];
        if version != VALUE_VERSION && version != VALUE_VERSION_JSON {
            return Err(format!("unknown value version {version}"));
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
            version,
            status,
            bits: bytes[2],
            stored_at: from_unix_millis(word(3)),
            cost: word(11),
        })
    }
}

pub(super) fn unix_millis(time: SystemTime) -> i64 {
    match time.duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_millis()).unwrap_or(i64::MAX),
        Err(before) => i64::try_from(before.duration().as_millis()).map_or(i64::MIN, |ms| -ms),
    }
}

pub(super) fn from_unix_millis(millis: i64) -> SystemTime {
    let magnitude = Duration::from_millis(millis.unsigned_abs());
    if millis >= 0 {
        UNIX_EPOCH
            .checked_add(magnitude)
            .unwrap_or(UNIX_EPOCH + Duration::from_secs(i64::MAX as u64 / 1000))
    } else {
        UNIX_EPOCH.checked_sub(magnitude).unwrap_or(UNIX_EPOCH)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::fixtures::*;
    use crate::vendor::outcome::DeferReason;

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

    #[test]
    fn an_outcome_encodes_in_place_to_what_its_entry_encodes_to() {
        let flags = EnrichFlags {
            enrich_mobile: true,
            ..EnrichFlags::default()
        };
        let outcomes = every_answer_kind();
        for outcome in &outcomes {
            let entry = CacheEntry::from_outcome(outcome, flags, at(1_700_000_000_123)).unwrap();
            let encoded =
                EncodedEntry::from_outcome(outcome, flags, at(1_700_000_000_123)).unwrap();
            assert_eq!(encoded, entry.encode(), "{outcome:?}");
            assert_eq!(encoded, EncodedEntry::from(&entry));
            assert_eq!(encoded.decode(), Ok(entry));
        }
        let deferred = RecordOutcome::Deferred {
            reason: DeferReason::DailyQuota,
            retry_at: None,
        };
        assert_eq!(EncodedEntry::from_outcome(&deferred, flags, at(0)), None);
    }

    #[test]
    fn values_written_as_json_by_version_1_still_read() {
        let flags = EnrichFlags::default();
        let entry =
            CacheEntry::from_outcome(&matched(true, 10), flags, at(1_700_000_000_123)).unwrap();
        let old = EncodedEntry::from_bytes(version_1_value(&entry));
        assert_eq!(old.decode(), Ok(entry.clone()));
        // Version 2 is smaller than the JSON it replaces.
        assert!(entry.encode().as_bytes().len() < old.as_bytes().len());
    }

    #[test]
    fn values_of_the_first_compact_layout_still_read() {
        use crate::vendor::wire::compact;
        let mut entry =
            CacheEntry::from_outcome(&matched(false, 10), EnrichFlags::default(), at(7)).unwrap();
        // Unknown fields, at the top and inside, are what the layouts differ on.
        let CachedAnswer::Matched {
            person, company, ..
        } = &mut entry.answer
        else {
            unreachable!()
        };
        let person = person.as_mut().unwrap();
        person
            .extra
            .insert("brand_new".into(), serde_json::json!([1]));
        let email = person.email.get_or_insert_default();
        email
            .extra
            .insert("confidence".into(), serde_json::json!(0.5));
        let company = company.as_mut().unwrap();
        company
            .extra
            .insert("later".into(), serde_json::json!({"a": "b"}));
        let first = first_layout_value(&entry, compact::first_layout_fingerprint());
        assert_eq!(EncodedEntry::from_bytes(first).decode(), Ok(entry.clone()));
        // Read as the current layout, the same objects are an error (not wrong fields).
        let misread = first_layout_value(&entry, compact::schema_fingerprint());
        assert!(EncodedEntry::from_bytes(misread).decode().is_err());
        assert_ne!(
            compact::schema_fingerprint(),
            compact::first_layout_fingerprint()
        );
    }

    #[test]
    fn a_damaged_value_or_one_under_other_field_lists_does_not_decode() {
        let flags = EnrichFlags::default();
        let entry = CacheEntry::from_outcome(&matched(false, 10), flags, at(5)).unwrap();
        let bytes = entry.encode().into_bytes();
        let mut other_lists = bytes.clone();
        other_lists[VALUE_HEADER_LEN] ^= 1;
        assert!(EncodedEntry::from_bytes(other_lists).decode().is_err());
        for cut in VALUE_HEADER_LEN..bytes.len() {
            assert!(
                EncodedEntry::from_bytes(bytes[..cut].to_vec())
                    .decode()
                    .is_err()
            );
        }
        let mut newer = bytes;
        newer[0] = VALUE_VERSION + 1;
        assert!(EncodedEntry::from_bytes(newer).decode().is_err());
    }

    #[test]
    fn timestamps_round_trip_to_the_millisecond() {
        for millis in [0, 1, -1, 1_700_000_000_123, -86_400_000] {
            assert_eq!(unix_millis(from_unix_millis(millis)), millis);
        }
    }
}
