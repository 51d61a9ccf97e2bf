//! In-job de-duplication: records with the same [`CacheKey`] are sent once. The first caller to
//! claim a key sends it; callers that claim it while it is pending wait for its outcome, which
//! they receive at no cost. Once answered, the key's answer lives in the response cache, where
//! later duplicates find it.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use crate::cache::{CacheEntry, CacheKey, EncodedEntry, ResponseCache};
use crate::vendor::outcome::RecordOutcome;

/// Keys being answered, and (in a fixed-size filter) keys this client has answered.
#[derive(Debug, Default)]
pub(crate) struct Pending {
    waiting: Mutex<HashMap<CacheKey, Vec<oneshot::Sender<RecordOutcome>>>>,
    answered: AnsweredFilter,
    hasher: RandomState,
}

/// Bits of [`AnsweredFilter`]: 2^26, 8 MiB, allocated zeroed (pages untouched until a bit in
/// them is set).
const FILTER_BITS: u64 = 1 << 26;
/// Bits set per key.
const FILTER_PROBES: u32 = 3;

/// The keys this client answered, as a Bloom filter of fixed size: memory does not grow with
/// the job (a set of every key's hash took 16 to 32 bytes a key, 150 MB or more at ten million
/// rows). A false positive only counts a cache hit from an earlier run as a duplicate of this
/// one (both cost nothing): about 1 in 12,000 at a million keys, 1 in 20 at ten million.
#[derive(Debug)]
struct AnsweredFilter {
    words: Mutex<Vec<u64>>,
}

impl Default for AnsweredFilter {
    fn default() -> Self {
        AnsweredFilter {
            // vec![0; n] asks the allocator for zeroed memory: the pages are only touched (and
            // resident) once a bit in them is set.
            words: Mutex::new(vec![0; (FILTER_BITS / 64) as usize]),
        }
    }
}

impl AnsweredFilter {
    /// The bits of a 64-bit hash: double hashing, the hash and its halves swapped (made odd,
    /// so that the probes differ).
    fn bits(hash: u64) -> impl Iterator<Item = u64> {
        let step = hash.rotate_left(32) | 1;
        (0..u64::from(FILTER_PROBES))
            .map(move |i| hash.wrapping_add(i.wrapping_mul(step)) & (FILTER_BITS - 1))
    }

    fn insert(&self, hash: u64) {
        let mut words = self.words.lock().unwrap_or_else(|e| e.into_inner());
        for bit in Self::bits(hash) {
            words[(bit / 64) as usize] |= 1 << (bit % 64);
        }
    }

    fn contains(&self, hash: u64) -> bool {
        let words = self.words.lock().unwrap_or_else(|e| e.into_inner());
        Self::bits(hash).all(|bit| words[(bit / 64) as usize] & (1 << (bit % 64)) != 0)
    }
}

/// What [`Pending::claim`] decided.
pub(crate) enum Claim {
    /// The caller answers this key (from the cache or by sending it) and must
    /// [`Pending::publish`] or [`Pending::release`] it.
    Mine,
    /// Another caller is answering it: its outcome arrives here.
    Waiting(oneshot::Receiver<RecordOutcome>),
}

impl Pending {
    /// Claims `key` for the caller, or queues the caller behind the caller that holds it.
    pub(crate) fn claim(&self, key: &CacheKey) -> Claim {
        let mut waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        match waiting.get_mut(key) {
            Some(queue) => {
                let (sender, receiver) = oneshot::channel();
                queue.push(sender);
                Claim::Waiting(receiver)
            }
            None => {
                waiting.insert(key.clone(), Vec::new());
                Claim::Mine
            }
        }
    }

    /// Hands `outcome` (at no cost) to every caller waiting on `key` and releases it. Call it
    /// after the answer is in the response cache, so a caller that claims the key next finds
    /// it there.
    pub(crate) fn publish(&self, key: &CacheKey, outcome: &RecordOutcome) {
        let queue = self
            .waiting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
        self.answered.insert(self.hasher.hash_one(key));
        for sender in queue.unwrap_or_default() {
            let _ = sender.send(outcome.without_cost());
        }
    }

    /// Releases `key` without an outcome: its waiters see the channel closed.
    pub(crate) fn release(&self, key: &CacheKey) {
        self.waiting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }

    /// Whether this client answered `key` before (a filter: a false positive only mislabels a
    /// cache hit as a duplicate in the counts).
    pub(crate) fn answered_here(&self, key: &CacheKey) -> bool {
        self.answered.contains(self.hasher.hash_one(key))
    }
}

/// How many cache lookups run at once in this process: one a core. A job served from the
/// cache has every chunk in flight looking up at the same time, and lookups hold their worker
/// ([`cached_answers`]); more at once than the cores would only hold more decoded answers
/// (when lookups ran on the blocking pool, a re-run of 100,000 rows writing Parquet peaked at
/// 250 to 259 MB with one a core, 275 to 287 MB without a bound, and was no slower). One fewer
/// than the cores kept a worker free for the network and the pacer's timers while a slow
/// disk answered, but on two cores it made lookups one lane, the bound of a re-run once the
/// Parquet output was encoded on lanes: one a core was faster in all of seven alternating
/// pairs (about 8%), with the same peak (247 to 254 MB either way). The cost: from a slow
/// disk, lookups following one another on every worker delay the network and the timers
/// until one parks or every 61 tasks (tokio's check). A late timer fires late, never early:
/// the pacer sends less, not more; a coordinator's lease (30 s by default) outlasts any
/// lookup.
/// Per process id: a child forked while lookups held permits (an Airflow worker) starts with
/// all of its own.
fn lookup_permits() -> Arc<tokio::sync::Semaphore> {
    static PERMITS: Mutex<Option<(u32, Arc<tokio::sync::Semaphore>)>> = Mutex::new(None);
    let mut permits = PERMITS.lock().unwrap_or_else(|e| e.into_inner());
    let pid = std::process::id();
    match &*permits {
        Some((owner, semaphore)) if *owner == pid => semaphore.clone(),
        _ => {
            let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
            let semaphore = Arc::new(tokio::sync::Semaphore::new(cores));
            *permits = Some((pid, semaphore.clone()));
            semaphore
        }
    }
}

/// The response cache's entries for `keys` (all `None` when the cache cannot be read: the
/// records are sent instead), at most [`lookup_permits`] lookups at once.
///
/// Read and decoded in place, on an async worker: the one that settles the answers, and
/// usually the one whose chunk task flattens and frees them next (tokio runs a task woken by
/// another next on the same worker). A lookup of one request's 50 keys holds its worker about
/// as long as flattening them does when the file's pages are in the operating system's cache,
/// longer from a cold or remote disk (see [`lookup_permits`] for what that delays). Run on
/// the blocking pool, decoded there or back on the worker, the same 100,000-row re-run from
/// the cache took 2.43-3.63 s and more memory, against 2.21-3.17 s in place (alternating
/// runs).
pub(crate) async fn cached_answers(
    cache: &ResponseCache,
    keys: Vec<CacheKey>,
) -> Vec<Option<CacheEntry>> {
    // Never closed: a permit always comes.
    let _permit = lookup_permits().acquire_owned().await.ok();
    cache.get_many(&keys).unwrap_or_else(|e| {
        tracing::warn!("{e}; the records are sent instead");
        vec![None; keys.len()]
    })
}

/// Commits answers to the response cache (off the async workers); the error says why not.
pub(crate) async fn store_answers(
    cache: &ResponseCache,
    entries: Vec<(CacheKey, EncodedEntry)>,
) -> Result<(), String> {
    let cache = cache.clone();
    match tokio::task::spawn_blocking(move || cache.put_encoded(&entries)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(e) => Err(format!("the cache write ended abnormally: {e}")),
    }
}

/// Keys a caller claimed and has not published yet; dropping it releases them, so records
/// waiting on them never wait forever (they fail instead).
pub(crate) struct Claims {
    pending: Arc<Pending>,
    keys: Vec<CacheKey>,
}

impl Claims {
    /// The claimed `keys` of `pending`.
    pub(crate) fn new(pending: Arc<Pending>, keys: Vec<CacheKey>) -> Self {
        Claims { pending, keys }
    }

    /// Hands `key`'s outcome to the records waiting for it; the key is no longer claimed.
    pub(crate) fn publish(&mut self, key: &CacheKey, outcome: &RecordOutcome) {
        if let Some(at) = self.keys.iter().position(|k| k == key) {
            self.keys.swap_remove(at);
            self.pending.publish(key, outcome);
        }
    }
}

impl Drop for Claims {
    fn drop(&mut self) {
        for key in &self.keys {
            self.pending.release(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datapoints::Datapoints;
    use crate::vendor::wire::EnrichFlags;

    fn key(email: &str) -> CacheKey {
        let datapoints = Datapoints {
            email: Some(email.into()),
            ..Default::default()
        };
        CacheKey::new(&datapoints, EnrichFlags::default())
    }

    #[tokio::test]
    async fn the_first_claim_answers_and_the_others_get_its_outcome_for_free() {
        let pending = Pending::default();
        let a = key("a@x.com");
        assert!(matches!(pending.claim(&a), Claim::Mine));
        let Claim::Waiting(second) = pending.claim(&a) else {
            panic!("a pending key queues the second caller")
        };
        assert!(matches!(pending.claim(&key("b@x.com")), Claim::Mine));
        assert!(!pending.answered_here(&a));
        pending.publish(&a, &RecordOutcome::NotMatched);
        assert_eq!(second.await.unwrap(), RecordOutcome::NotMatched);
        assert!(pending.answered_here(&a));
        // Published keys are free to claim again (the cache answers them).
        assert!(matches!(pending.claim(&a), Claim::Mine));
        let Claim::Waiting(orphan) = pending.claim(&a) else {
            panic!("queued")
        };
        pending.release(&a);
        assert!(orphan.await.is_err(), "a released key closes its waiters");
    }

    #[test]
    fn the_answered_filter_has_a_fixed_size_and_few_false_positives() {
        let pending = Pending::default();
        let size = || pending.answered.words.lock().unwrap().len() * 8;
        let bytes = size();
        let hash = |i: u64| pending.hasher.hash_one(i);
        for i in 0..200_000u64 {
            pending.answered.insert(hash(i));
        }
        assert_eq!(size(), bytes);
        assert_eq!(bytes, 8 << 20);
        assert!((0..200_000u64).all(|i| pending.answered.contains(hash(i))));
        let false_positives = (1_000_000..1_200_000u64)
            .filter(|&i| pending.answered.contains(hash(i)))
            .count();
        assert!(false_positives < 20, "{false_positives} of 200,000");
    }
}
