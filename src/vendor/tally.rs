//! The one counts type: what a job did, counted once. [`Tally`] is a plain snapshot (a batch's
//! counts, a client's totals, a summary); [`AtomicTally`] is its mirror that every caller of a
//! client adds to at once. Both are declared by one list below, together with each count's
//! public name (the key of `--summary-json` and the name of the EXPLAIN ANALYZE metric), so a
//! new count is one line and the summary, the metrics and the progress display cannot disagree.

use std::ops::{AddAssign, Deref, DerefMut};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use serde::Serialize;

/// A count's value type and its atomic mirror.
pub trait CountValue: Copy + Default + Eq + AddAssign {
    /// The atomic that holds this count in an [`AtomicTally`].
    type Atomic: Default + std::fmt::Debug;
    /// Reads the atomic.
    fn load(atomic: &Self::Atomic) -> Self;
    /// Adds to the atomic.
    fn fetch_add(atomic: &Self::Atomic, value: Self);
    /// The value as a signed number (counts never come near `i64::MAX`).
    fn as_i64(self) -> i64;
}

impl CountValue for u64 {
    type Atomic = AtomicU64;
    fn load(atomic: &AtomicU64) -> u64 {
        atomic.load(Ordering::Relaxed)
    }
    fn fetch_add(atomic: &AtomicU64, value: u64) {
        atomic.fetch_add(value, Ordering::Relaxed);
    }
    fn as_i64(self) -> i64 {
        i64::try_from(self).unwrap_or(i64::MAX)
    }
}

impl CountValue for i64 {
    type Atomic = AtomicI64;
    fn load(atomic: &AtomicI64) -> i64 {
        // Sequentially consistent: the credit budget reads it against reservations.
        atomic.load(Ordering::SeqCst)
    }
    fn fetch_add(atomic: &AtomicI64, value: i64) {
        atomic.fetch_add(value, Ordering::SeqCst);
    }
    fn as_i64(self) -> i64 {
        self
    }
}

/// Declares [`Tally`] and [`AtomicTally`] from one list of `field: type => "public name"`.
macro_rules! tally {
    ($( $(#[doc = $doc:literal])* $name:ident : $ty:ty => $label:literal, )*) => {
        /// Counts of what a job did: a batch's ([`BatchOutcome`](crate::api::BatchOutcome)), a
        /// client's ([`Totals`]), a run's summary. Serialized under the public names.
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
        pub struct Tally {
            $( $(#[doc = $doc])* #[serde(rename = $label)] pub $name: $ty, )*
        }

        /// The atomic mirror of a [`Tally`], shared by every caller of a client.
        #[derive(Debug, Default)]
        pub struct AtomicTally {
            $( $(#[doc = $doc])* pub $name: <$ty as CountValue>::Atomic, )*
        }

        impl Tally {
            /// The public names of the counts, in declaration order.
            pub const NAMES: &'static [&'static str] = &[$($label),*];

            /// Adds `other`'s counts to these.
            pub fn add(&mut self, other: &Tally) {
                $( self.$name += other.$name; )*
            }

            /// Every count with its public name, in declaration order.
            pub fn counts(&self) -> impl Iterator<Item = (&'static str, i64)> + use<> {
                [$( ($label, CountValue::as_i64(self.$name)) ),*].into_iter()
            }
        }

        impl AtomicTally {
            /// Adds `delta`'s counts.
            pub fn add(&self, delta: &Tally) {
                $(
                    if delta.$name != <$ty>::default() {
                        CountValue::fetch_add(&self.$name, delta.$name);
                    }
                )*
            }

            /// The counts now.
            pub fn snapshot(&self) -> Tally {
                Tally { $( $name: CountValue::load(&self.$name), )* }
            }
        }
    };
}

tally! {
    /// Records matched.
    matched: u64 => "matched",
    /// Records the API did not match.
    not_matched: u64 => "not_matched",
    /// Records below the minimum requirement, or listed in `invalid_datapoints`.
    invalid: u64 => "invalid_datapoints",
    /// Records that could not be enriched.
    failed: u64 => "failed",
    /// Records deferred to a later run.
    deferred: u64 => "deferred",
    /// Records answered from the response cache (earlier jobs): sent nothing, cost 0.
    cached: u64 => "cached",
    /// Records answered by an earlier record of this job with the same datapoints.
    duplicates: u64 => "duplicates",
    /// Credits charged (the sum of `total_cost`).
    credits: i64 => "credits",
    /// Matches the vendor said were free re-enrichments.
    free_enrichments: u64 => "free_enrichments",
    /// Records in requests the API answered (what counts against the quota; requests refused
    /// with a rate limit or an error do not count).
    records_sent: u64 => "records_sent",
    /// HTTP requests made, retries included.
    requests: u64 => "requests",
    /// Requests retried.
    retries: u64 => "retries",
    /// Rate-limit answers received (429 or a rate-limit code).
    rate_limited: u64 => "rate_limited",
    /// Requests whose `total_cost` the documented rules did not explain.
    cost_warnings: u64 => "cost_warnings",
    /// Time spent waiting for quota, summed over callers, in milliseconds.
    quota_wait_ms: u64 => "quota_wait_ms",
    /// Answers that could not be written to the response cache (a re-run sends them again).
    cache_errors: u64 => "cache_errors",
    /// Records whose answer was lost after the API processed them (a body cut off after a
    /// success status, a body that is not the documented JSON, a record the answer left out),
    /// asked again in the same run.
    lost_answers: u64 => "lost_answers",
    /// Company records with a name and nothing else to match on that the API answered in this
    /// run (the vendor allows them, but warns that a match on a name alone may be the wrong
    /// company); answers from the cache or for a duplicate are not counted again.
    name_only: u64 => "name_only",
}

impl Tally {
    /// The public name of [`Tally::quota_wait_ms`] (a time, where the other counts are numbers).
    pub const QUOTA_WAIT: &'static str = "quota_wait_ms";

    /// Records settled so far, whatever their status.
    pub fn settled(&self) -> u64 {
        self.matched + self.not_matched + self.invalid + self.failed + self.deferred
    }

    /// Time spent waiting for quota.
    pub fn quota_wait(&self) -> Duration {
        Duration::from_millis(self.quota_wait_ms)
    }
}

impl AddAssign<&Tally> for Tally {
    fn add_assign(&mut self, other: &Tally) {
        self.add(other);
    }
}

/// Running totals of a client, across every caller: its [`Tally`] (read through, as in
/// `totals.credits`) and when deferred records may be sent again.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Totals {
    /// The counts.
    #[serde(flatten)]
    pub tally: Tally,
    /// When the quota that deferred records returns (the latest such time), when known.
    #[serde(serialize_with = "crate::time::serialize_rfc3339")]
    pub quota_returns_at: Option<SystemTime>,
}

impl Deref for Totals {
    type Target = Tally;
    fn deref(&self) -> &Tally {
        &self.tally
    }
}

impl DerefMut for Totals {
    fn deref_mut(&mut self) -> &mut Tally {
        &mut self.tally
    }
}

/// The atomic mirror of [`Totals`].
#[derive(Debug, Default)]
pub(crate) struct AtomicTotals {
    pub(crate) tally: AtomicTally,
    /// Unix milliseconds; 0 when unknown.
    quota_returns_at_ms: AtomicU64,
}

impl AtomicTotals {
    /// Adds `delta`; the times deferred records' quota returns (`returns_at`) move the
    /// totals' return later.
    pub(crate) fn add(&self, delta: &Tally, returns_at: impl IntoIterator<Item = SystemTime>) {
        self.tally.add(delta);
        for at in returns_at {
            if let Ok(since_epoch) = at.duration_since(SystemTime::UNIX_EPOCH) {
                self.quota_returns_at_ms
                    .fetch_max(since_epoch.as_millis() as u64, Ordering::Relaxed);
            }
        }
    }

    /// Adds what `edit` counts to a batch's counts and to these totals at once, so the two
    /// cannot disagree.
    pub(crate) fn count(&self, batch: &mut Tally, edit: impl FnOnce(&mut Tally)) {
        let mut delta = Tally::default();
        edit(&mut delta);
        batch.add(&delta);
        self.add(&delta, None);
    }

    /// The totals now.
    pub(crate) fn snapshot(&self) -> Totals {
        Totals {
            tally: self.tally.snapshot(),
            quota_returns_at: match self.quota_returns_at_ms.load(Ordering::Relaxed) {
                0 => None,
                ms => Some(SystemTime::UNIX_EPOCH + Duration::from_millis(ms)),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_atomic_mirror_sums_what_it_is_given_and_names_every_count() {
        let totals = AtomicTally::default();
        let delta = Tally {
            matched: 2,
            credits: 11,
            quota_wait_ms: 5,
            ..Default::default()
        };
        totals.add(&delta);
        totals.add(&delta);
        let mut expected = delta;
        expected += &delta;
        assert_eq!(totals.snapshot(), expected);
        assert_eq!(expected.counts().count(), Tally::NAMES.len());
        let named: Vec<_> = expected.counts().filter(|(_, v)| *v != 0).collect();
        assert_eq!(
            named,
            [("matched", 4), ("credits", 22), (Tally::QUOTA_WAIT, 10)]
        );
        let json = serde_json::to_value(expected).unwrap();
        assert_eq!(json["invalid_datapoints"], 0);
        assert_eq!(json.as_object().unwrap().len(), Tally::NAMES.len());
    }
}
