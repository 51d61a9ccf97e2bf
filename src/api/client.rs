//! The enrichment client: one connection pool, one pacer and one set of running totals shared
//! by every caller; the send loop; a typed, cost-accounted outcome per record.
//!
//! The parts live apart: settings in [`builder`](super::builder), the HTTP exchanges in
//! [`endpoint`](super::endpoint), the retry decision in `retry`, costs and the credit budget in
//! `pricing`, counts in [`tally`](super::tally), de-duplication in `dedup`, pacing behind
//! [`Pacer`]. No DataFusion types here: the enrichment node drives this, and so can any other
//! caller.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::Semaphore;

use super::dedup::{Claim, Claims, Pending, cached_answers};
use super::http::Vendor;
use super::pacing::{Moment, Pacer};
use super::pricing::{CreditBudget, worst_case};
use super::retry::{self, Decision, Progress};
use crate::cache::{CacheKey, ResponseCache};
use crate::coordinator::{KeyId, Shared};
use crate::datapoints::Datapoints;
use crate::error::{Error, Result};
use crate::rng::SplitMix64;
use crate::vendor::endpoint::Endpoint;
use crate::vendor::tally::{AtomicTotals, Tally};
use crate::vendor::wire::{EnrichFlags, MAX_BULK_RECORDS};

mod build;
mod settle;
mod shared;
mod slot;

use slot::{LATE, Slot};

// These lived here first; their public paths stay.
pub use super::builder::{
    ApiKey, ClientBuilder, DEFAULT_BASE_URL, ENV_API_KEY, ENV_API_KEY_FILE, ENV_BASE_URL,
    RetryPolicy,
};
pub use super::http::AccountStatus;
pub use crate::vendor::outcome::{BatchOutcome, DeferReason, Match, RecordOutcome, RecordStatus};
pub use crate::vendor::tally::Totals;

struct ClientInner {
    /// Answers of earlier requests (persistent, or in memory for this client).
    cache: ResponseCache,
    /// Keys being answered now, for in-job de-duplication.
    pending: Arc<Pending>,
    vendor: Vendor,
    pacer: Arc<dyn Pacer>,
    in_flight: Semaphore,
    totals: AtomicTotals,
    /// Set when the account ran out of credits: nothing more is sent.
    stopped: AtomicBool,
    /// Set by [`Client::stop_sending`]: requests not yet on the wire are deferred.
    halted: AtomicBool,
    /// The job's `max_credits`, against the worst case of the requests in flight.
    budget: Arc<CreditBudget>,
    rng: Mutex<SplitMix64>,
    /// The coordinator every worker of the key shares pacing, claims and answers through.
    shared: Option<Arc<Shared>>,
    /// The key's limits the vendor last reported (shared with the coordinator when they change).
    reported_limits: Mutex<[Option<u64>; 3]>,
    settings: ClientBuilder,
}

/// The Prospeo client. Cheap to clone; clones share the connection pool, the pacer and the
/// totals.
#[derive(Clone)]
pub struct Client {
    inner: Arc<ClientInner>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("base_url", &self.inner.vendor.base_url())
            .field("api_key", self.inner.vendor.api_key())
            .field("limits", &self.inner.settings.limits)
            .field("max_in_flight", &self.inner.settings.max_in_flight)
            .finish()
    }
}

/// What a call asks: which endpoint, with the flags it takes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ask {
    pub(crate) endpoint: Endpoint,
    pub(crate) flags: EnrichFlags,
}

/// A record this caller claimed: its place in the caller's input, its normalised datapoints
/// and its key (made once).
type Claimed = (usize, Datapoints, CacheKey);

/// What sending one request came to.
enum Sent {
    /// Every record has its outcome.
    Settled(Vec<RecordOutcome>),
    /// Every record has its outcome but those at `lost`, which the answer left out: asked
    /// again (their outcomes are failures until then).
    Partly {
        outcomes: Vec<RecordOutcome>,
        lost: Vec<usize>,
        /// Credits of the request the answered records do not explain.
        unexplained: i64,
    },
    /// The limits allow only this many of the records now: split the request.
    Split(usize),
}

impl Client {
    /// The client of checked settings (see [`ClientBuilder::build`]).
    pub(super) fn new(
        settings: ClientBuilder,
        api_key: ApiKey,
        base_url: String,
        http: reqwest::Client,
        cache: ResponseCache,
    ) -> Client {
        let shared = settings.coordinator.clone().map(|url| {
            Shared::new(
                url,
                settings.coordinator_password.clone(),
                &base_url,
                KeyId::of(&api_key),
                settings.coordinator_lease,
                settings.coordinator_wait,
            )
        });
        Client {
            inner: Arc::new(ClientInner {
                shared,
                reported_limits: Mutex::new([None; 3]),
                cache,
                pending: Arc::default(),
                vendor: Vendor::new(http, base_url, api_key),
                pacer: settings.pacer_or_default(),
                in_flight: Semaphore::new(settings.max_in_flight),
                totals: AtomicTotals::default(),
                stopped: AtomicBool::new(false),
                halted: AtomicBool::new(false),
                budget: CreditBudget::new(settings.max_credits),
                rng: Mutex::new(SplitMix64::new(settings.seed)),
                settings,
            }),
        }
    }

    /// A builder with the defaults.
    pub fn builder() -> ClientBuilder {
        ClientBuilder::new()
    }

    /// The base URL requests go to.
    pub fn base_url(&self) -> &str {
        self.inner.vendor.base_url()
    }

    /// The settings the client was built with (the key stays redacted).
    pub fn settings(&self) -> &ClientBuilder {
        &self.inner.settings
    }

    /// Totals so far, across every caller.
    pub fn totals(&self) -> Totals {
        self.inner.totals.snapshot()
    }

    /// Stops the client for good: requests not yet on the wire are deferred
    /// ([`DeferReason::Stopped`]); requests already sent still complete and are counted.
    pub fn stop_sending(&self) {
        self.inner.halted.store(true, Ordering::SeqCst);
    }

    /// Waits, at most `timeout`, until no request is on the wire; true when none is. After
    /// [`Client::stop_sending`] this makes the totals include every answer that was paid for.
    pub async fn wait_idle(&self, timeout: Duration) -> bool {
        let all = self.inner.settings.max_in_flight as u32;
        matches!(
            tokio::time::timeout(timeout, self.inner.in_flight.acquire_many(all)).await,
            Ok(Ok(_))
        )
    }

    /// Records per request the plan allows (50, or less on tiny custom limits).
    pub fn max_request_records(&self) -> usize {
        self.inner.pacer.max_request_records(MAX_BULK_RECORDS)
    }

    /// `GET /account-information`: the plan and the credits left (free of charge), plus the
    /// quota as the rate-limit headers report it.
    pub async fn account_status(&self) -> Result<AccountStatus> {
        self.inner.vendor.account_status().await
    }

    /// Enriches `records` through `/bulk-enrich-person` with the flags: [`Client::enrich`] of
    /// [`Endpoint::BulkEnrichPerson`].
    pub async fn bulk_enrich(
        &self,
        records: &[Datapoints],
        flags: EnrichFlags,
    ) -> Result<BatchOutcome> {
        self.enrich(Endpoint::BulkEnrichPerson, records, flags)
            .await
    }

    /// Enriches `records` through `endpoint` with the flags (those the endpoint takes), in
    /// requests of at most 50 records. Every endpoint draws on the client's one pacer: they
    /// share the key's enrich quota (reference, "Rate limits").
    ///
    /// Returns one outcome per record, in input order. Records below the endpoint's minimum
    /// requirement are not sent. The client makes its own identifiers, so the caller's data never has to be
    /// unique. Never twice: a record whose normalised datapoints and flags the response cache
    /// answers, or that another record (of this call or any other) is being answered for, is
    /// not sent; it gets that answer at cost 0 ([`Tally::cached`], [`Tally::duplicates`]).
    /// Answers are committed to the cache as they arrive. Retryable failures (429 and
    /// rate-limit codes even on HTTP 200, `INTERNAL_ERROR`, 5xx, connection errors, timeouts)
    /// are retried with capped exponential backoff and full jitter, waiting for the reset the
    /// headers give after a 429; a request is retried only when no attempt got a successful
    /// answer, so nothing is paid twice.
    ///
    /// Costs: 1 per match, 10 per match with a revealed mobile, 0 for a free re-enrichment and
    /// everything else; they always sum to the request's `total_cost` (the rules for an answer
    /// they do not explain are in the `pricing` module; such answers count in
    /// [`Tally::cost_warnings`]).
    ///
    /// Errors only for `INVALID_API_KEY`, which is fatal for the whole job. Running out of
    /// credits, the daily quota, or the `max_credits` budget defers the records instead.
    ///
    /// The records are answered on a task of their own: if the caller drops this future, that
    /// task still sends this call's requests (unless [`Client::stop_sending`] was called),
    /// stores the answers, and counts them in [`Client::totals`]; records of other calls that
    /// wait on the same datapoints get their answers.
    pub async fn enrich(
        &self,
        endpoint: Endpoint,
        records: &[Datapoints],
        flags: EnrichFlags,
    ) -> Result<BatchOutcome> {
        let inner = &self.inner;
        let ask = Ask {
            endpoint,
            flags: endpoint.flags(flags),
        };
        // An unreachable coordinator stops the job before anything is sent.
        self.coordinator_ready().await?;
        let mut outcomes: Vec<Option<RecordOutcome>> = vec![None; records.len()];
        // Claim every valid record's key: the first claim of a key answers it, later ones
        // (in this call or any other) wait for that answer.
        let mut mine: Vec<Claimed> = Vec::new();
        let mut waiting = Vec::new();
        let mut invalid = Vec::new();
        for (i, record) in records.iter().enumerate() {
            let Some(normalized) = endpoint.prepare(record) else {
                outcomes[i] = Some(RecordOutcome::InvalidDatapoints);
                invalid.push(RecordOutcome::InvalidDatapoints);
                continue;
            };
            let key = CacheKey::for_endpoint(endpoint, &normalized, ask.flags);
            match inner.pending.claim(&key) {
                Claim::Mine => mine.push((i, normalized, key)),
                Claim::Waiting(receiver) => waiting.push((i, receiver)),
            }
        }
        let mut tally = Tally::default();
        inner.totals.settle(&mut tally, &invalid);
        let claims = Claims::new(
            inner.pending.clone(),
            mine.iter().map(|(_, _, key)| key.clone()).collect(),
        );
        // The claimed records are answered on a task of their own, spawned before this
        // function first waits: records of other callers waiting on these keys never depend on
        // this caller being polled, or even kept.
        let client = self.clone();
        let task = tokio::spawn(async move { client.answer_claimed(mine, claims, ask).await });
        let (answered, mut batch) = task.await.map_err(|e| Error::Request {
            endpoint: endpoint.path(),
            reason: format!("the request task ended abnormally: {e}"),
        })??;
        batch.tally.add(&tally);
        for (i, outcome) in answered {
            outcomes[i] = Some(outcome);
        }

        // Records that another record with the same datapoints answered, at no cost.
        for (i, receiver) in waiting {
            let outcome = receiver.await.unwrap_or_else(|_| RecordOutcome::Failed {
                reason: "a record with the same datapoints was not answered".into(),
            });
            // A duplicate is a record answered by another; one that shares its failure or
            // deferral is counted as failed or deferred only.
            if !matches!(
                outcome,
                RecordOutcome::Failed { .. } | RecordOutcome::Deferred { .. }
            ) {
                inner.totals.count(&mut batch.tally, |t| t.duplicates += 1);
            }
            inner
                .totals
                .settle(&mut batch.tally, std::slice::from_ref(&outcome));
            outcomes[i] = Some(outcome);
        }

        batch.records = outcomes
            .into_iter()
            .map(|o| {
                o.unwrap_or(RecordOutcome::Failed {
                    reason: "internal error: the record was not processed".into(),
                })
            })
            .collect();
        Ok(batch)
    }

    /// Answers the records this caller claimed: from the response cache when it serves them,
    /// else by sending them, 50 to a request. Every answer is handed to the records waiting
    /// for the same key; claims still held when this ends (an error) are released.
    async fn answer_claimed(
        &self,
        mine: Vec<Claimed>,
        mut claims: Claims,
        ask: Ask,
    ) -> Result<(Vec<(usize, RecordOutcome)>, BatchOutcome)> {
        let inner = &self.inner;
        let mut batch = BatchOutcome::default();
        let mut answered = Vec::with_capacity(mine.len());
        if mine.is_empty() {
            return Ok((answered, batch));
        }
        if let Some(shared) = self.shared().cloned() {
            self.answer_shared(&shared, mine, &mut claims, ask, &mut batch, &mut answered)
                .await?;
            return Ok((answered, batch));
        }
        // Answers already in the response cache cost nothing and send nothing.
        let keys: Vec<CacheKey> = mine.iter().map(|(_, _, key)| key.clone()).collect();
        let cached = cached_answers(&inner.cache, keys).await;
        let now = SystemTime::now();
        let mut to_send = Vec::new();
        for ((i, normalized, key), entry) in mine.into_iter().zip(cached) {
            match entry.filter(|e| e.serves(ask.flags, inner.settings.cache_ttl, now)) {
                Some(entry) => {
                    let outcome = entry.into_outcome();
                    let duplicate = inner.pending.answered_here(&key);
                    let totals = &inner.totals;
                    totals.count(&mut batch.tally, |t| match duplicate {
                        true => t.duplicates += 1,
                        false => t.cached += 1,
                    });
                    totals.settle(&mut batch.tally, std::slice::from_ref(&outcome));
                    claims.publish(&key, &outcome);
                    answered.push((i, outcome));
                }
                None => to_send.push((i, normalized, key)),
            }
        }

        for chunk in to_send.chunks(self.max_request_records()) {
            let mut answer = self.send_request(chunk, ask, 0).await?;
            let records = std::mem::take(&mut answer.records);
            let mut name_only = 0;
            for ((i, prepared, key), outcome) in chunk.iter().zip(records) {
                // Answered on a name alone: the match may be the wrong one (the vendor's
                // warning), so the summary says how many.
                let settled = !matches!(
                    outcome,
                    RecordOutcome::Failed { .. } | RecordOutcome::Deferred { .. }
                );
                name_only += u64::from(settled && ask.endpoint.name_only(prepared));
                claims.publish(key, &outcome);
                answered.push((*i, outcome));
            }
            inner
                .totals
                .count(&mut answer.tally, |t| t.name_only += name_only);
            batch.absorb(answer);
        }
        Ok((answered, batch))
    }

    /// Sends one request of at most 50 normalised, valid records, with pacing and retries;
    /// splits it when the limits allow fewer records now, and asks again for records whose
    /// answer was lost (`asked_again` times so far, at most the retry policy's attempts).
    fn send_request<'a>(
        &'a self,
        records: &'a [Claimed],
        ask: Ask,
        asked_again: u32,
    ) -> futures::future::BoxFuture<'a, Result<BatchOutcome>> {
        Box::pin(async move {
            let mut batch = BatchOutcome::default();
            if records.is_empty() {
                return Ok(batch);
            }
            // A re-ask is of records already paid for: it spends nothing of the budget.
            let paid = asked_again > 0;
            match self.send_loop(records, ask, paid, &mut batch.tally).await? {
                Sent::Settled(outcomes) => {
                    batch.records = outcomes;
                    batch.total_cost = batch.tally.credits;
                }
                Sent::Partly {
                    outcomes,
                    lost,
                    unexplained,
                } => {
                    batch.records = outcomes;
                    batch.total_cost = batch.tally.credits;
                    self.ask_again(records, lost, unexplained, ask, asked_again, &mut batch)
                        .await?;
                }
                Sent::Split(size) => {
                    // The first `size` records go now; the rest follows as requests of its
                    // own (sent, split again, or deferred).
                    let size = size.clamp(1, records.len().saturating_sub(1).max(1));
                    tracing::debug!(
                        records = records.len(),
                        size,
                        "splitting a request to what the limits allow"
                    );
                    let (first, rest) = records.split_at(size);
                    batch.absorb(self.send_request(first, ask, asked_again).await?);
                    batch.absorb(self.send_request(rest, ask, asked_again).await?);
                }
            }
            Ok(batch)
        })
    }

    /// The send loop: ask the pacer, send, let [`retry::decide`] say what follows, until the
    /// records are settled. Every count goes to `tally` and the client's totals at once.
    async fn send_loop(
        &self,
        records: &[Claimed],
        ask: Ask,
        paid: bool,
        tally: &mut Tally,
    ) -> Result<Sent> {
        let inner = &self.inner;
        let n = records.len();
        if inner.stopped.load(Ordering::SeqCst) {
            return Ok(self.deferred(tally, n, DeferReason::InsufficientCredits, None));
        }
        // The budget is checked against the worst case of everything in flight.
        let spent = || inner.totals.tally.credits.load(Ordering::SeqCst);
        let worst = if paid { 0 } else { worst_case(n, ask.flags) };
        let Some(_budget) = inner.budget.reserve(worst, spent) else {
            return Ok(self.deferred(tally, n, DeferReason::Budget, None));
        };
        let body = ask
            .endpoint
            .encode(
                records.iter().map(|(_, datapoints, _)| datapoints),
                ask.flags,
            )
            .map_err(|e| Error::Request {
                endpoint: ask.endpoint.path(),
                reason: format!("cannot encode the request: {e}"),
            })?;
        let started = Instant::now();
        let mut attempts = 0u32;
        loop {
            // Limits the server reported since the request was formed may be lower than it.
            if n > 1 && n > self.max_request_records() {
                return Ok(Sent::Split(self.max_request_records()));
            }
            let patience = inner
                .settings
                .batch_timeout
                .saturating_sub(started.elapsed());
            let paced = match self.shared() {
                Some(shared) => self.pace_shared(shared, records, patience, tally).await,
                None => self.pace(n, patience, tally).await.map(Slot::Local),
            };
            let slot = match paced {
                Ok(slot) => slot,
                Err(sent) => return Ok(sent),
            };
            // Held until the answer is in the cache: `wait_idle` then means "every answer that
            // was paid for is stored".
            let permit = inner
                .in_flight
                .acquire()
                .await
                .map_err(|_| Error::Request {
                    endpoint: ask.endpoint.path(),
                    reason: "the client was shut down".into(),
                })?;
            if let Slot::Shared(_, due) = &slot
                && due.elapsed() > LATE
            {
                // Waiting for a slot made it late for its booking.
                drop(permit);
                self.release(slot).await;
                continue;
            }
            // Checked again at the last moment: the job may have been stopped, or the account
            // run dry, while this request waited for quota or a slot.
            for (flag, reason) in [
                (&inner.halted, DeferReason::Stopped),
                (&inner.stopped, DeferReason::InsufficientCredits),
            ] {
                if flag.load(Ordering::SeqCst) {
                    self.release(slot).await;
                    return Ok(self.deferred(tally, n, reason, None));
                }
            }
            attempts += 1;
            inner.totals.count(tally, |t| t.requests += 1);
            let attempt = self.exchange(ask.endpoint, &body, slot).await;
            inner.totals.count(tally, |t| {
                t.rate_limited += u64::from(attempt.is_rate_limited())
            });
            let progress = Progress {
                attempts,
                elapsed: started.elapsed(),
                allowed: inner.settings.batch_timeout,
            };
            match retry::decide(attempt, progress, &inner.settings.retry, || self.jitter()) {
                Decision::Retry {
                    reason,
                    after,
                    every_caller,
                    lost,
                } => {
                    drop(permit);
                    tracing::debug!(attempt = attempts, %reason, "retrying a bulk request");
                    inner.totals.count(tally, |t| {
                        t.retries += 1;
                        // The server processed these records (they count against the quota);
                        // their answer is asked again.
                        if lost {
                            t.records_sent += n as u64;
                            t.lost_answers += n as u64;
                        }
                    });
                    if lost {
                        inner.budget.lost(worst_case(n, ask.flags));
                    }
                    let resume = Moment::now().after(after);
                    match every_caller {
                        // The pacer holds the next send until `resume`, and that wait counts
                        // as time waiting for quota; so do the shared windows, for every
                        // worker of the key.
                        Some(window) => {
                            inner.pacer.block_until(resume, window);
                            if let Some(shared) = self.shared() {
                                shared.block_for(after).await;
                            }
                        }
                        None => tokio::time::sleep_until(resume.instant.into()).await,
                    }
                }
                Decision::Settle(settle) => {
                    return self.conclude(settle, records, ask, tally).await;
                }
            }
        }
    }

    /// The random part of a backoff, in `[0, 1)`.
    fn jitter(&self) -> f64 {
        let mut rng = self.inner.rng.lock().unwrap_or_else(|e| e.into_inner());
        rng.next_f64()
    }
}
