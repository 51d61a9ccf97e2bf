//! What happened to each record: the outcome types every part of the engine shares (the client
//! produces them, de-duplication hands them on, the cache stores them, the output flattens them).

use std::fmt;
use std::ops::Deref;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::vendor::tally::{AtomicTotals, Tally};
use crate::vendor::wire::{Company, Person};
/// The status of a record after enrichment: `prospeo_status` in the output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordStatus {
    /// The record matched a person.
    Matched,
    /// The record matched nobody.
    NotMatched,
    /// The record is below the vendor's minimum requirement.
    InvalidDatapoints,
    /// The record could not be enriched (`prospeo_error` says why): a re-run sends it again.
    Failed,
    /// The record was not sent now (quota, credits, budget, a stop): a re-run sends it.
    Deferred,
}

impl RecordStatus {
    /// The status as written in the output.
    pub fn as_str(self) -> &'static str {
        match self {
            RecordStatus::Matched => "matched",
            RecordStatus::NotMatched => "not_matched",
            RecordStatus::InvalidDatapoints => "invalid_datapoints",
            RecordStatus::Failed => "failed",
            RecordStatus::Deferred => "deferred",
        }
    }
}

/// Why records were deferred (not sent, to be sent by a later run).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeferReason {
    /// The daily quota is used up.
    DailyQuota,
    /// The per-minute quota did not return within the batch's time.
    RateLimited,
    /// The account ran out of credits (`INSUFFICIENT_CREDITS`).
    InsufficientCredits,
    /// The job's credit budget (`max_credits`) is spent.
    Budget,
    /// The job was stopped ([`Client::stop_sending`](crate::api::Client::stop_sending)) before the record was sent.
    Stopped,
    /// The coordinator (`prospeo.coordinator`) was lost and did not return in time: sending on
    /// this worker's pacing alone would overrun the quota other workers share.
    CoordinatorUnavailable,
}

impl fmt::Display for DeferReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DeferReason::DailyQuota => "the daily quota is used up",
            DeferReason::RateLimited => "the rate limit did not allow sending in time",
            DeferReason::InsufficientCredits => "the account has no credits left",
            DeferReason::Budget => "the job's credit budget is spent",
            DeferReason::Stopped => "the job was stopped before it was sent",
            DeferReason::CoordinatorUnavailable => {
                "the coordinator was unreachable, so it was not sent (a re-run sends it)"
            }
        })
    }
}

/// A matched record.
#[derive(Debug, Clone, PartialEq)]
pub struct Match {
    /// The person, as the vendor sent it.
    pub person: Option<Person>,
    /// The person's current company, as the vendor sent it.
    pub company: Option<Company>,
    /// The vendor said this re-enrichment was free.
    pub free_enrichment: bool,
    /// Credits assigned to this record (see [`Client::bulk_enrich`](crate::api::Client::bulk_enrich)).
    pub cost: i64,
}

/// What happened to one record.
#[derive(Debug, Clone, PartialEq)]
pub enum RecordOutcome {
    /// Matched a person.
    Matched(Box<Match>),
    /// Matched nobody.
    NotMatched,
    /// Below the minimum requirement: never sent, or listed in `invalid_datapoints`.
    InvalidDatapoints,
    /// The record could not be enriched; the reason says why.
    Failed {
        /// Why, in words for the output's `prospeo_error`.
        reason: String,
    },
    /// Not sent now; a later run should send it, from `retry_at` on when known.
    Deferred {
        /// Why it was not sent.
        reason: DeferReason,
        /// When the quota returns, when the API said.
        retry_at: Option<SystemTime>,
    },
}

impl RecordOutcome {
    /// The record's status.
    pub fn status(&self) -> RecordStatus {
        match self {
            RecordOutcome::Matched(_) => RecordStatus::Matched,
            RecordOutcome::NotMatched => RecordStatus::NotMatched,
            RecordOutcome::InvalidDatapoints => RecordStatus::InvalidDatapoints,
            RecordOutcome::Failed { .. } => RecordStatus::Failed,
            RecordOutcome::Deferred { .. } => RecordStatus::Deferred,
        }
    }

    /// Credits assigned to the record (0 for everything but matches).
    pub fn cost(&self) -> i64 {
        match self {
            RecordOutcome::Matched(m) => m.cost,
            _ => 0,
        }
    }

    /// The same outcome at no cost: what a duplicate record or a cache hit gets.
    pub fn without_cost(&self) -> RecordOutcome {
        match self {
            RecordOutcome::Matched(m) => RecordOutcome::Matched(Box::new(Match {
                cost: 0,
                ..(**m).clone()
            })),
            other => other.clone(),
        }
    }

    /// A human-readable reason for failed and deferred records.
    pub fn error(&self) -> Option<String> {
        match self {
            RecordOutcome::Failed { reason } => Some(reason.clone()),
            RecordOutcome::Deferred { reason, retry_at } => Some(match retry_at {
                Some(at) => format!(
                    "deferred: {reason}; quota returns at {}",
                    crate::time::rfc3339(*at)
                ),
                None => format!("deferred: {reason}"),
            }),
            _ => None,
        }
    }
}

/// The outcome of [`Client::bulk_enrich`](crate::api::Client::bulk_enrich): one outcome per input record, in input order,
/// and the batch's counts (read through, as in `batch.duplicates`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BatchOutcome {
    /// One outcome per input record, in input order.
    pub records: Vec<RecordOutcome>,
    /// Sum of the `total_cost` of the requests that answered (equal to the sum of the records'
    /// costs, except a surplus charged when nothing matched: no record carries it). The same
    /// number as `tally.credits`, under the vendor's name.
    pub total_cost: i64,
    /// What the batch counted: statuses, requests, retries, rate limits, quota wait, records
    /// sent, cache hits, duplicates, cost warnings (see [`Tally`]). The client's totals add the
    /// same counts at the same moments.
    pub tally: Tally,
}

impl BatchOutcome {
    /// Appends `other`'s records and adds its counts.
    pub fn absorb(&mut self, other: BatchOutcome) {
        self.records.extend(other.records);
        self.total_cost += other.total_cost;
        self.tally.add(&other.tally);
    }

    /// Time spent waiting for quota before sending.
    pub fn quota_wait(&self) -> Duration {
        self.tally.quota_wait()
    }
}

impl Deref for BatchOutcome {
    type Target = Tally;
    fn deref(&self) -> &Tally {
        &self.tally
    }
}

// Counting outcomes lives with the outcomes: the counts type knows nothing of them.
impl Tally {
    /// The statuses of `outcomes` counted, with their free re-enrichments.
    pub fn of_outcomes(outcomes: &[RecordOutcome]) -> Tally {
        let mut tally = Tally::default();
        for outcome in outcomes {
            match outcome {
                RecordOutcome::Matched(m) => {
                    tally.matched += 1;
                    tally.free_enrichments += u64::from(m.free_enrichment);
                }
                RecordOutcome::NotMatched => tally.not_matched += 1,
                RecordOutcome::InvalidDatapoints => tally.invalid += 1,
                RecordOutcome::Failed { .. } => tally.failed += 1,
                RecordOutcome::Deferred { .. } => tally.deferred += 1,
            }
        }
        tally
    }
}

impl AtomicTotals {
    /// Counts the statuses of `outcomes` in a batch's counts and in these totals.
    pub(crate) fn settle(&self, batch: &mut Tally, outcomes: &[RecordOutcome]) {
        let delta = Tally::of_outcomes(outcomes);
        batch.add(&delta);
        self.add(
            &delta,
            outcomes.iter().filter_map(|outcome| match outcome {
                RecordOutcome::Deferred { retry_at, .. } => *retry_at,
                _ => None,
            }),
        );
    }
}
