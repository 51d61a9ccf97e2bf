//! In-job de-duplication: records with the same [`CacheKey`] are sent once. The first caller to
//! claim a key sends it; callers that claim it while it is pending wait for its outcome, which
//! they receive at no cost. Once answered, the key's answer lives in the response cache, where
//! later duplicates find it.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use super::outcome::RecordOutcome;
use crate::cache::{CacheEntry, CacheKey, ResponseCache};

/// Keys being answered, and (as 64-bit hashes) keys this client has answered.
#[derive(Debug, Default)]
pub(crate) struct Pending {
    waiting: Mutex<HashMap<CacheKey, Vec<oneshot::Sender<RecordOutcome>>>>,
    answered: Mutex<HashSet<u64>>,
    hasher: RandomState,
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
        self.answered
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(self.hasher.hash_one(key));
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

    /// Whether this client answered `key` before (a hash: a collision only mislabels a cache
    /// hit as a duplicate in the counts).
    pub(crate) fn answered_here(&self, key: &CacheKey) -> bool {
        self.answered
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&self.hasher.hash_one(key))
    }
}

/// The response cache's entries for `keys` (all `None` when the cache cannot be read: the
/// records are sent instead). Reads touch the disk: off the async workers.
pub(crate) async fn cached_answers(
    cache: &ResponseCache,
    keys: Vec<CacheKey>,
) -> Vec<Option<CacheEntry>> {
    let (cache, n) = (cache.clone(), keys.len());
    match tokio::task::spawn_blocking(move || cache.get_many(&keys)).await {
        Ok(Ok(entries)) => entries,
        Ok(Err(e)) => {
            tracing::warn!("{e}; the records are sent instead");
            vec![None; n]
        }
        Err(e) => {
            tracing::warn!("the cache lookup ended abnormally: {e}; the records are sent instead");
            vec![None; n]
        }
    }
}

/// Commits answers to the response cache (off the async workers); the error says why not.
pub(crate) async fn store_answers(
    cache: &ResponseCache,
    entries: Vec<(CacheKey, CacheEntry)>,
) -> Result<(), String> {
    let cache = cache.clone();
    match tokio::task::spawn_blocking(move || cache.put_many(&entries)).await {
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
    use crate::api::wire::EnrichFlags;
    use crate::datapoints::Datapoints;

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
}
