//! Response cache throughput on a file in a temporary directory, with realistic answers: the
//! people and companies of the sandbox directory (seed 42, 400 companies, 5,000 people), four
//! answers in five matched, the rest not matched or invalid.
//!
//! Measures:
//! - writes: 50 entries per durable transaction (one bulk API answer per commit, as the client
//!   stores them), in records per second and commits per second;
//! - lookups: `get_many` of 50 keys (one bulk request's worth), every key once in a shuffled
//!   order, then the same number of keys that miss;
//! - a full walk in pages of 8,192 (what `prospeo cache export` reads), and `stats`;
//! - the file's size and the time to reopen it.
//!
//! Run: `cargo bench --bench cache` (optional argument: the number of entries, default 20,000:
//! `cargo bench --bench cache -- 100000`).

use std::time::{Duration, Instant, SystemTime};

use datafusion_prospeo::Datapoints;
use datafusion_prospeo::api::wire::EnrichFlags;
use datafusion_prospeo::cache::{CacheEntry, CacheKey, CachedAnswer, ResponseCache};
use datafusion_prospeo::sandbox::generator::{GeneratorConfig, generate_directory};

/// Entries per write transaction and keys per lookup: one bulk request.
const BATCH: usize = 50;

fn main() {
    let entries: usize = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .find_map(|a| a.parse().ok())
        .unwrap_or(20_000);
    let data = realistic_entries(entries);
    let (matches, json_bytes) = data
        .iter()
        .filter_map(|(_, entry)| match &entry.answer {
            CachedAnswer::Matched {
                person, company, ..
            } => Some(serde_json::to_vec(&(person, company)).expect("JSON").len()),
            _ => None,
        })
        .fold((0usize, 0usize), |(n, bytes), len| (n + 1, bytes + len));
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("responses.redb");
    let cache = ResponseCache::open(&path).expect("the cache opens");
    println!(
        "response cache bench: {entries} entries, {BATCH} per transaction / lookup, file {}",
        path.display()
    );

    let started = Instant::now();
    for chunk in data.chunks(BATCH) {
        cache.put_many(chunk).expect("put_many");
    }
    let elapsed = started.elapsed();
    let commits = data.len().div_ceil(BATCH);
    println!(
        "write  (durable, {BATCH}/commit)  {:>10.0} records/s  {:>8.0} commits/s  {:>8.2} ms/commit  ({:.2} s)",
        per_second(data.len(), elapsed),
        per_second(commits, elapsed),
        elapsed.as_secs_f64() * 1000.0 / commits as f64,
        elapsed.as_secs_f64()
    );

    // Every key once, in an order unrelated to the key order.
    let mut keys: Vec<CacheKey> = data.iter().map(|(k, _)| k.clone()).collect();
    shuffle(&mut keys, 7);
    let started = Instant::now();
    let mut hits = 0usize;
    for chunk in keys.chunks(BATCH) {
        hits += cache
            .get_many(chunk)
            .expect("get_many")
            .iter()
            .filter(|e| e.is_some())
            .count();
    }
    let elapsed = started.elapsed();
    assert_eq!(hits, keys.len(), "every stored key is found");
    println!(
        "lookup (hits, {BATCH}/get_many)    {:>10.0} records/s  {:>8.0} calls/s    {:>8.3} ms/call    ({:.2} s)",
        per_second(keys.len(), elapsed),
        per_second(keys.len().div_ceil(BATCH), elapsed),
        elapsed.as_secs_f64() * 1000.0 / keys.len().div_ceil(BATCH) as f64,
        elapsed.as_secs_f64()
    );

    let misses: Vec<CacheKey> = (0..entries)
        .map(|i| {
            let datapoints = Datapoints {
                email: Some(format!("nobody.{i}@example.org")),
                ..Datapoints::default()
            };
            CacheKey::new(&datapoints, EnrichFlags::default())
        })
        .collect();
    let started = Instant::now();
    for chunk in misses.chunks(BATCH) {
        let found = cache.get_many(chunk).expect("get_many");
        assert!(found.iter().all(Option::is_none));
    }
    let elapsed = started.elapsed();
    println!(
        "lookup (misses, {BATCH}/get_many)  {:>10.0} records/s",
        per_second(misses.len(), elapsed)
    );

    let started = Instant::now();
    let mut walked = 0usize;
    cache
        .for_each_page(8192, |page| {
            walked += page.len();
            Ok(())
        })
        .expect("for_each_page");
    let elapsed = started.elapsed();
    assert_eq!(walked, entries);
    println!(
        "walk   (pages of 8,192, decoded) {:>10.0} records/s",
        per_second(walked, elapsed)
    );

    let started = Instant::now();
    let stats = cache.stats().expect("stats");
    let stats_elapsed = started.elapsed();
    drop(cache);
    let started = Instant::now();
    let reopened = ResponseCache::open(&path).expect("the cache reopens");
    let reopen_elapsed = started.elapsed();
    drop(reopened);
    let bytes = stats.file_bytes.unwrap_or(0);
    println!(
        "stats  {:.1} ms (matched {}, not matched {}, invalid {}); reopen {:.1} ms",
        stats_elapsed.as_secs_f64() * 1000.0,
        stats.matched,
        stats.not_matched,
        stats.invalid_datapoints,
        reopen_elapsed.as_secs_f64() * 1000.0
    );
    println!(
        "file   {:.1} MiB, {:.0} bytes/entry (person + company JSON of a match: {:.0} bytes before compression)",
        bytes as f64 / (1024.0 * 1024.0),
        bytes as f64 / entries as f64,
        json_bytes as f64 / matches.max(1) as f64
    );
}

fn per_second(count: usize, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64().max(1e-9)
}

/// `count` entries keyed like real lead rows (name + company website, or LinkedIn URL, or
/// email), answered with the directory's people and their companies.
fn realistic_entries(count: usize) -> Vec<(CacheKey, CacheEntry)> {
    let directory = generate_directory(&GeneratorConfig {
        seed: 42,
        companies: 400,
        people: 5000,
    });
    let people = directory.people();
    assert!(!people.is_empty(), "the sandbox directory is empty");
    let flags = EnrichFlags::default();
    let stored_at = SystemTime::now();
    (0..count)
        .map(|i| {
            let person = &people[i % people.len()];
            let company = directory.company_of(person);
            // A distinct key per entry: each lap over the directory uses another route or
            // spelling, as different lead files would.
            let lap = i / people.len();
            let datapoints = Datapoints {
                first_name: person.first_name.clone(),
                last_name: person.last_name.clone(),
                company_website: company.and_then(|c| c.domain.clone()),
                linkedin_url: (lap % 2 == 1)
                    .then(|| person.linkedin_url.clone())
                    .flatten(),
                person_id: Some(format!("lead-{i}")),
                ..Datapoints::default()
            }
            .normalized();
            let answer = match i % 10 {
                0 | 1 => CachedAnswer::NotMatched,
                2 if i % 20 == 2 => CachedAnswer::InvalidDatapoints,
                _ => CachedAnswer::Matched {
                    person: Some(person.clone()),
                    company: company.cloned(),
                    free_enrichment: i % 13 == 0,
                },
            };
            let cost = match answer {
                CachedAnswer::Matched { .. } => 1,
                _ => 0,
            };
            let entry = CacheEntry {
                answer,
                stored_at,
                mobile_requested: false,
                cost,
            };
            (CacheKey::new(&datapoints, flags), entry)
        })
        .collect()
}

/// A deterministic Fisher-Yates shuffle (SplitMix64).
fn shuffle<T>(items: &mut [T], seed: u64) {
    let mut state = seed;
    let mut next = || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    for i in (1..items.len()).rev() {
        let j = (next() % (i as u64 + 1)) as usize;
        items.swap(i, j);
    }
}
