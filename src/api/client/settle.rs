//! How a request's records are settled once the send loop has decided: an answer reconciled,
//! priced and stored before anyone sees it; failures; deferrals; and records whose answer was
//! lost, asked again.

use std::sync::atomic::Ordering;
use std::time::SystemTime;

use super::{Ask, Claimed, Client, Sent};
use crate::api::dedup::store_answers;
use crate::api::pacing::Moment;
use crate::api::pricing::{Reconciled, reconcile, worst_case};
use crate::api::retry::Settle;
use crate::cache::{CacheKey, EncodedEntry};
use crate::error::{Error, Result};
use crate::vendor::outcome::{BatchOutcome, DeferReason, RecordOutcome};
use crate::vendor::tally::Tally;

impl Client {
    /// Commits the answers to the response cache before anyone sees them, so a crash after
    /// this point loses nothing that was paid for. Failed and deferred records are not stored:
    /// a later run sends them.
    pub(super) async fn remember(
        &self,
        records: &[Claimed],
        outcomes: &[RecordOutcome],
        ask: Ask,
        tally: &mut Tally,
    ) {
        let now = SystemTime::now();
        // Encoded straight from the outcomes: the person and company are not copied.
        let entries: Vec<(CacheKey, EncodedEntry)> = records
            .iter()
            .zip(outcomes)
            .filter_map(|((_, _, key), outcome)| {
                EncodedEntry::from_outcome(outcome, ask.flags, now)
                    .map(|entry| (key.clone(), entry))
            })
            .collect();
        if entries.is_empty() {
            return;
        }
        let count = entries.len() as u64;
        let stored = match self.shared() {
            Some(shared) => self.store_shared(shared, entries).await,
            None => store_answers(&self.inner.cache, entries).await,
        };
        let Err(error) = stored else {
            return;
        };
        self.inner.totals.count(tally, |t| t.cache_errors += count);
        tracing::error!("{error}: {count} answers were not cached; a re-run sends them again");
    }

    /// Settles the records as decided (the in-flight slot is still held: an answer is stored
    /// before it is freed).
    pub(super) async fn conclude(
        &self,
        settle: Settle,
        records: &[Claimed],
        ask: Ask,
        tally: &mut Tally,
    ) -> Result<Sent> {
        let (inner, n) = (&self.inner, records.len());
        Ok(match settle {
            Settle::Answered(response) => {
                let total_cost = response.total_cost;
                let Reconciled {
                    outcomes,
                    warning,
                    unanswered,
                    unexplained,
                } = reconcile(n, response, ask.flags);
                // Records the answer left out settle when they are asked again, or given up.
                let answered: Vec<RecordOutcome>;
                let settled = if unanswered.is_empty() {
                    &outcomes[..]
                } else {
                    answered = (0..n)
                        .filter(|i| !unanswered.contains(i))
                        .map(|i| outcomes[i].clone())
                        .collect();
                    &answered[..]
                };
                if warning {
                    tracing::warn!(
                        total_cost,
                        "the request's total_cost is not explained by the documented prices; the difference was assigned to its first matched records"
                    );
                }
                inner.totals.settle(tally, settled);
                inner.totals.count(tally, |t| {
                    t.credits += total_cost;
                    t.cost_warnings += u64::from(warning);
                });
                self.remember(records, &outcomes, ask, tally).await;
                match self.sent(tally, n, outcomes) {
                    Sent::Settled(outcomes) if !unanswered.is_empty() => Sent::Partly {
                        outcomes,
                        lost: unanswered,
                        unexplained,
                    },
                    sent => sent,
                }
            }
            Settle::InvalidKey => return Err(Error::InvalidApiKey),
            Settle::OutOfCredits => {
                inner.stopped.store(true, Ordering::SeqCst);
                tracing::warn!("the account is out of credits: no more records are sent");
                if let Some(shared) = self.shared() {
                    shared.out_of_credits().await;
                }
                self.deferred(tally, n, DeferReason::InsufficientCredits, None)
            }
            Settle::Fail { reason, charged } => {
                let outcomes = vec![RecordOutcome::Failed { reason }; n];
                inner.totals.settle(tally, &outcomes);
                // A success status: the server processed (and may have charged) them.
                if charged {
                    inner.budget.lost(worst_case(n, ask.flags));
                    self.sent(tally, n, outcomes)
                } else {
                    Sent::Settled(outcomes)
                }
            }
            Settle::Defer {
                reason,
                after,
                window,
            } => {
                let resume = Moment::now().after(after);
                inner.pacer.block_until(resume, window);
                if let Some(shared) = self.shared() {
                    shared.block_for(after).await;
                }
                self.deferred(tally, n, reason, Some(resume.wall))
            }
        })
    }

    /// The `n` records deferred (and counted): the request is settled without being sent.
    pub(super) fn deferred(
        &self,
        tally: &mut Tally,
        n: usize,
        reason: DeferReason,
        retry_at: Option<SystemTime>,
    ) -> Sent {
        let outcomes = vec![RecordOutcome::Deferred { reason, retry_at }; n];
        self.inner.totals.settle(tally, &outcomes);
        Sent::Settled(outcomes)
    }

    /// The request's `n` records were processed by the server (they count against the quota).
    pub(super) fn sent(&self, tally: &mut Tally, n: usize, outcomes: Vec<RecordOutcome>) -> Sent {
        self.inner
            .totals
            .count(tally, |t| t.records_sent += n as u64);
        Sent::Settled(outcomes)
    }

    /// Asks again for the records at `lost` (indexes into `records`), which an answer left
    /// out, and puts their outcomes into `batch`; after the retry policy's attempts they stay
    /// failed.
    pub(super) async fn ask_again(
        &self,
        records: &[Claimed],
        lost: Vec<usize>,
        unexplained: i64,
        ask: Ask,
        asked_again: u32,
        batch: &mut BatchOutcome,
    ) -> Result<()> {
        let inner = &self.inner;
        if asked_again + 1 >= inner.settings.retry.max_attempts {
            tracing::warn!(
                records = lost.len(),
                "the API's answers kept leaving records out; they failed"
            );
            let failed: Vec<RecordOutcome> =
                lost.iter().map(|&i| batch.records[i].clone()).collect();
            inner.totals.settle(&mut batch.tally, &failed);
            return Ok(());
        }
        let again: Vec<Claimed> = lost.iter().map(|&i| records[i].clone()).collect();
        tracing::debug!(
            records = again.len(),
            "asking again for records the answer left out"
        );
        inner
            .totals
            .count(&mut batch.tally, |t| t.lost_answers += again.len() as u64);
        let mut answer = self.send_request(&again, ask, asked_again + 1).await?;
        // Their first request's charge, which the re-ask (free) does not show.
        if let Some(m) = answer.records.iter_mut().find_map(|o| match o {
            RecordOutcome::Matched(m) => Some(m),
            _ => None,
        }) {
            m.cost += unexplained;
        }
        for (&i, outcome) in lost.iter().zip(std::mem::take(&mut answer.records)) {
            batch.records[i] = outcome;
        }
        batch.absorb(answer);
        Ok(())
    }
}
