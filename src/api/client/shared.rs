//! The client's side of the coordinator (see [`crate::coordinator`]): records claimed across
//! workers before they are sent, answers another worker paid for taken at cost 0, sends paced
//! in the key's shared windows, and what one worker learns shared with every other.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use super::{Ask, Claimed, Client, Sent, Slot};
use crate::api::dedup::Claims;
use crate::api::pacing::QuotaHeaders;
use crate::cache::{CacheKey, EncodedEntry};
use crate::coordinator::{ClaimState, Clearance, Reserved, Shared, SharedError};
use crate::error::Result;
use crate::vendor::outcome::{BatchOutcome, DeferReason, RecordOutcome};
use crate::vendor::plan::QuotaWindow;
use crate::vendor::tally::Tally;

/// The record keys of `records`, as stored.
fn keys_of(records: &[Claimed]) -> Vec<Vec<u8>> {
    records
        .iter()
        .map(|(_, _, key)| key.as_bytes().to_vec())
        .collect()
}

/// Longest pause between two looks at records another worker is asking for.
const MAX_POLL: Duration = Duration::from_secs(1);

impl Client {
    /// The coordinator, when the client has one.
    pub(super) fn shared(&self) -> Option<&Arc<Shared>> {
        self.inner.shared.as_ref()
    }

    /// Connects to the coordinator now, when the client has one: an unreachable coordinator,
    /// a missing or newer schema, is an error before anything is sent. Calls to
    /// [`Client::enrich`] do this themselves; a job calls it first to fail early.
    pub async fn coordinator_ready(&self) -> Result<()> {
        let Some(shared) = self.shared() else {
            return Ok(());
        };
        match shared.ready().await {
            Ok(()) => {
                shared.start_heartbeat();
                Ok(())
            }
            Err(SharedError::Fatal(e)) => Err(e),
            // Connected once and lost since: the records are deferred, not an error.
            Err(SharedError::Unavailable) => Ok(()),
        }
    }

    /// Tells the coordinator this worker is done (its claims go now, not when the lease ends).
    /// Call it when no more records will be enriched; without a coordinator it does nothing.
    pub async fn leave_coordinator(&self) {
        if let Some(shared) = self.shared() {
            shared.leave().await;
        }
    }

    /// Answers the records this call claimed through the coordinator: answers stored by any
    /// worker are taken at cost 0; the rest is claimed a request at a time, right before it is
    /// sent (a worker holds claims only on records it is about to send), and sent when this
    /// worker holds the claim; records another worker holds are looked at again after this
    /// worker's own requests, until they are answered or their claim comes free (bounded by the
    /// batch timeout; a dead worker's claim comes free when its lease runs out).
    pub(super) async fn answer_shared(
        &self,
        shared: &Shared,
        mine: Vec<Claimed>,
        claims: &mut Claims,
        ask: Ask,
        batch: &mut BatchOutcome,
        answered: &mut Vec<(usize, RecordOutcome)>,
    ) -> Result<()> {
        let deadline = Instant::now() + self.inner.settings.batch_timeout;
        let mut open = mine;
        let mut pause = Duration::from_millis(100);
        loop {
            let mut held = Vec::new();
            let round = self
                .shared_round(shared, open, ask, claims, batch, answered, &mut held)
                .await;
            if let Err((error, unsettled)) = round {
                let outcome = self.coordinator_failed(error)?;
                for (i, _, key) in unsettled.into_iter().chain(held) {
                    self.settle_one(claims, (i, &key), outcome.clone(), batch, answered);
                }
                return Ok(());
            }
            if held.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                // Another worker held them all this time (waiting for quota, most likely).
                let outcome = RecordOutcome::Deferred {
                    reason: DeferReason::RateLimited,
                    retry_at: None,
                };
                for (i, _, key) in held {
                    self.settle_one(claims, (i, &key), outcome.clone(), batch, answered);
                }
                return Ok(());
            }
            tokio::time::sleep(pause.min(deadline - Instant::now())).await;
            pause = (pause * 2).min(MAX_POLL);
            open = held;
        }
    }

    /// One look at `records`: stored answers taken, the rest claimed and sent a request at a
    /// time; those another worker holds go to `held`. On a coordinator error, the records not
    /// settled yet come back with it.
    #[allow(clippy::too_many_arguments)]
    async fn shared_round(
        &self,
        shared: &Shared,
        records: Vec<Claimed>,
        ask: Ask,
        claims: &mut Claims,
        batch: &mut BatchOutcome,
        answered: &mut Vec<(usize, RecordOutcome)>,
        held: &mut Vec<Claimed>,
    ) -> std::result::Result<(), (SharedError, Vec<Claimed>)> {
        let stored = match shared.answers(&keys_of(&records)).await {
            Ok(values) => self.serving(values, ask),
            Err(e) => return Err((e, records)),
        };
        let mut rest = Vec::new();
        for (record, outcome) in records.into_iter().zip(stored) {
            match outcome {
                Some(outcome) => self.take_stored(record, outcome, claims, batch, answered),
                None => rest.push(record),
            }
        }
        let size = self.max_request_records();
        let mut rest = rest.into_iter().peekable();
        while rest.peek().is_some() {
            let chunk: Vec<Claimed> = rest.by_ref().take(size).collect();
            let to_send = match self
                .claim_chunk(shared, chunk, ask, claims, batch, answered, held)
                .await
            {
                Ok(to_send) => to_send,
                Err((e, chunk)) => return Err((e, chunk.into_iter().chain(rest).collect())),
            };
            if let Err(e) = self
                .send_all(shared, &to_send, ask, claims, batch, answered)
                .await
            {
                // The job's own error (an invalid key): the remaining records are not sent.
                tracing::debug!("{e}");
                return Err((SharedError::Fatal(e), rest.collect()));
            }
        }
        Ok(())
    }

    /// Claims `chunk`'s records; returns those this worker now holds and must send. Records
    /// another worker holds go to `held`; an answer stored just before the claim (a second
    /// look, after claiming) is taken and its claim released.
    #[allow(clippy::too_many_arguments)]
    async fn claim_chunk(
        &self,
        shared: &Shared,
        chunk: Vec<Claimed>,
        ask: Ask,
        claims: &mut Claims,
        batch: &mut BatchOutcome,
        answered: &mut Vec<(usize, RecordOutcome)>,
        held: &mut Vec<Claimed>,
    ) -> std::result::Result<Vec<Claimed>, (SharedError, Vec<Claimed>)> {
        let states = match shared.claim(&keys_of(&chunk)).await {
            Ok(states) => states,
            Err(e) => return Err((e, chunk)),
        };
        let mut claimed = Vec::new();
        for (record, state) in chunk.into_iter().zip(states) {
            match state {
                ClaimState::Mine => claimed.push(record),
                ClaimState::Held => held.push(record),
            }
        }
        let second = match shared.answers(&keys_of(&claimed)).await {
            Ok(values) => self.serving(values, ask),
            Err(e) => return Err((e, claimed)),
        };
        let mut to_send = Vec::new();
        let mut release = Vec::new();
        for (record, outcome) in claimed.into_iter().zip(second) {
            match outcome {
                Some(outcome) => {
                    release.push(record.2.as_bytes().to_vec());
                    self.take_stored(record, outcome, claims, batch, answered);
                }
                None => to_send.push(record),
            }
        }
        if let Err(e) = shared.store_and_release(&[], &release).await {
            return Err((e, to_send));
        }
        Ok(to_send)
    }

    /// A record answered by a stored answer: counted as cached (cost 0) and handed to its
    /// waiters.
    fn take_stored(
        &self,
        (i, _, key): Claimed,
        outcome: RecordOutcome,
        claims: &mut Claims,
        batch: &mut BatchOutcome,
        answered: &mut Vec<(usize, RecordOutcome)>,
    ) {
        let totals = &self.inner.totals;
        totals.count(&mut batch.tally, |t| t.cached += 1);
        totals.settle(&mut batch.tally, std::slice::from_ref(&outcome));
        claims.publish(&key, &outcome);
        answered.push((i, outcome));
    }

    /// The stored values that answer a request with the call's flags now, as outcomes.
    fn serving(&self, values: Vec<Option<Vec<u8>>>, ask: Ask) -> Vec<Option<RecordOutcome>> {
        let now = SystemTime::now();
        let ttl = self.inner.settings.cache_ttl;
        values
            .into_iter()
            .map(|value| {
                let entry = EncodedEntry::from_bytes(value?).decode().ok()?;
                entry
                    .serves(ask.flags, ttl, now)
                    .then(|| entry.into_outcome())
            })
            .collect()
    }

    /// Sends the records this worker holds, 50 to a request; releases the claims of those that
    /// end failed or deferred (the answered ones were released as they were stored).
    async fn send_all(
        &self,
        shared: &Shared,
        records: &[Claimed],
        ask: Ask,
        claims: &mut Claims,
        batch: &mut BatchOutcome,
        answered: &mut Vec<(usize, RecordOutcome)>,
    ) -> Result<()> {
        for chunk in records.chunks(self.max_request_records()) {
            let mut answer = self.send_request(chunk, ask, 0).await?;
            let outcomes = std::mem::take(&mut answer.records);
            let mut unsettled = Vec::new();
            let mut name_only = 0;
            for ((i, prepared, key), outcome) in chunk.iter().zip(outcomes) {
                let settled = !matches!(
                    outcome,
                    RecordOutcome::Failed { .. } | RecordOutcome::Deferred { .. }
                );
                if !settled {
                    unsettled.push(key.as_bytes().to_vec());
                }
                name_only += u64::from(settled && ask.endpoint.name_only(prepared));
                claims.publish(key, &outcome);
                answered.push((*i, outcome));
            }
            self.inner
                .totals
                .count(&mut answer.tally, |t| t.name_only += name_only);
            batch.absorb(answer);
            // Another worker may ask for these now.
            if let Err(e) = shared.store_and_release(&[], &unsettled).await {
                tracing::debug!("claims were not released (their lease ends them): {e:?}");
            }
        }
        Ok(())
    }

    /// The record at `i` settled without being sent, counted and handed to its waiters.
    fn settle_one(
        &self,
        claims: &mut Claims,
        (i, key): (usize, &CacheKey),
        outcome: RecordOutcome,
        batch: &mut BatchOutcome,
        answered: &mut Vec<(usize, RecordOutcome)>,
    ) {
        self.inner
            .totals
            .settle(&mut batch.tally, std::slice::from_ref(&outcome));
        claims.publish(key, &outcome);
        answered.push((i, outcome));
    }

    /// A shared operation failed: a lost coordinator defers the records; one never reached is
    /// the job's error.
    fn coordinator_failed(&self, error: SharedError) -> Result<RecordOutcome> {
        match error {
            SharedError::Unavailable => Ok(RecordOutcome::Deferred {
                reason: DeferReason::CoordinatorUnavailable,
                retry_at: None,
            }),
            SharedError::Fatal(e) => Err(e),
        }
    }

    /// Waits for the key's shared windows to admit `n` records, at most `patience`; checks
    /// right before sending that no worker met a block or the credits' end meanwhile.
    pub(super) async fn pace_shared(
        &self,
        shared: &Shared,
        records: &[Claimed],
        patience: Duration,
        tally: &mut Tally,
    ) -> std::result::Result<Slot, Sent> {
        let inner = &self.inner;
        let n = records.len();
        let keys = keys_of(records);
        let started = Instant::now();
        let patience = inner.settings.max_quota_wait.min(patience);
        let unavailable =
            |tally: &mut Tally| self.deferred(tally, n, DeferReason::CoordinatorUnavailable, None);
        // A block another worker met moves the booking; a few rounds at most.
        for _ in 0..16 {
            let left = patience.saturating_sub(started.elapsed());
            let booking = match shared.reserve(n as u32, &inner.settings.limits, left).await {
                Ok(Reserved::Booked(booking)) => booking,
                Ok(Reserved::TooLong { wait, window }) => {
                    let reason = match window {
                        QuotaWindow::Day => DeferReason::DailyQuota,
                        _ => DeferReason::RateLimited,
                    };
                    let retry_at = SystemTime::now() + wait;
                    return Err(self.deferred(tally, n, reason, Some(retry_at)));
                }
                Err(_) => return Err(unavailable(tally)),
            };
            inner.totals.count(tally, |t| {
                t.quota_wait_ms += booking.wait.as_millis() as u64
            });
            let due = Instant::now() + booking.wait;
            tokio::time::sleep_until(due.into()).await;
            match shared.clearance(&keys).await {
                Ok(Clearance::Clear) => return Ok(Slot::Shared(booking, due)),
                Ok(Clearance::ClaimsLost) => {
                    // Another worker asks for them now; a re-run finds its answers stored.
                    shared.release(&booking).await;
                    tracing::warn!(
                        records = n,
                        "this worker's claims ran out while the coordinator was unreachable; the records are left to the worker that took them over"
                    );
                    return Err(unavailable(tally));
                }
                Ok(Clearance::Blocked(_)) => shared.release(&booking).await,
                Ok(Clearance::OutOfCredits) => {
                    shared.release(&booking).await;
                    inner
                        .stopped
                        .store(true, std::sync::atomic::Ordering::SeqCst);
                    return Err(self.deferred(tally, n, DeferReason::InsufficientCredits, None));
                }
                Err(_) => {
                    shared.release(&booking).await;
                    return Err(unavailable(tally));
                }
            }
        }
        Err(self.deferred(tally, n, DeferReason::RateLimited, None))
    }

    /// Shares what a response's headers said about the key: its limits, when they changed, and
    /// a window it says is used up (every worker holds until its reset).
    pub(super) async fn share_limits(&self, shared: &Shared, quota: &QuotaHeaders) {
        // A window the vendor says is used up holds every worker until its reset.
        let used_up = [
            (quota.minute_left, quota.minute_reset_seconds),
            (quota.day_left, quota.day_reset_seconds),
        ]
        .into_iter()
        .filter_map(|(left, reset)| (left == Some(0)).then_some(reset?))
        .max();
        if let Some(seconds) = used_up.filter(|&s| s > 0) {
            shared.block_for(Duration::from_secs(seconds)).await;
        }
        let reported = [quota.second_limit, quota.minute_limit, quota.day_limit];
        if reported.iter().all(Option::is_none) {
            return;
        }
        {
            let mut last = self
                .inner
                .reported_limits
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if *last == reported {
                return;
            }
            *last = reported;
        }
        shared.learn_limits(reported).await;
    }

    /// Stores answers in the coordinator and releases their claims (one transaction); the
    /// error says why not.
    pub(super) async fn store_shared(
        &self,
        shared: &Shared,
        entries: Vec<(CacheKey, EncodedEntry)>,
    ) -> std::result::Result<(), String> {
        let keys: Vec<Vec<u8>> = entries
            .iter()
            .map(|(key, _)| key.as_bytes().to_vec())
            .collect();
        let values: Vec<(Vec<u8>, Vec<u8>)> = entries
            .into_iter()
            .zip(&keys)
            .map(|((_, value), key)| (key.clone(), value.into_bytes()))
            .collect();
        shared
            .store_and_release(&values, &keys)
            .await
            .map_err(|e| match e {
                SharedError::Unavailable => {
                    format!("the coordinator {} was unreachable", shared.url())
                }
                SharedError::Fatal(e) => e.to_string(),
            })
    }
}
