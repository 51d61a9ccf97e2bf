//! Shared pacing: the per-second, per-minute and rolling-day windows of a key, kept in the
//! coordinator's `send_log` and timed by the database server's clock, so that every worker on
//! the key books its sends in one queue.
//!
//! A reservation is one short transaction under a per-key advisory lock (workers queue on it
//! first come, first served): it finds the earliest moment at or after the latest booking (no
//! one jumps the queue) and after any block the vendor imposed, at which every window has room
//! for the records, books them at that moment, and returns how long to wait for it, measured on
//! the server's clock (workers' clocks may disagree). A request that was not processed
//! releases its booking; an answered one moves its booking to the answer's time (the vendor
//! counted the records somewhere between send and answer). Each window is taken a margin
//! longer than the vendor's (150 ms, 1 s, 60 s) for the delay between a booked moment and the
//! vendor's count. A request larger than a window's limit (50 records on 30 a second) is booked
//! alone in that window, as the vendor admits it. The client sends a booking at most 120 ms
//! late (later, it books again), and checks right before sending that no worker met a block
//! meanwhile: a booking made before a block is not moved. The 429 handling (a block for every
//! worker) is the backstop.

use std::time::Duration;

use crate::coordinator::{Coordinator, KeyId, SCHEMA};
use crate::error::{Error, Result};
use crate::vendor::plan::{QuotaWindow, RateLimits};

/// Records booked in the shared windows: send them after `wait`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Booking {
    /// The booking's row, to confirm or release it.
    pub id: i64,
    /// Records booked.
    pub records: u32,
    /// How long to wait before sending, by the server's clock.
    pub wait: Duration,
}

/// The windows, longest last: (its length in seconds, its limit).
fn windows(limits: &RateLimits) -> [(f64, i64); 3] {
    let clamp = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    // The vendor's window plus a margin for the delay between a booked moment and its count
    // (a send up to the client's lateness bound, 120 ms, after its booking, and the network).
    [
        (1.15, clamp(limits.per_second)),
        (61.0, clamp(limits.per_minute)),
        (86_460.0, clamp(limits.per_day)),
    ]
}

/// The windows' names, in the order of [`windows`].
const WINDOWS: [QuotaWindow; 3] = [QuotaWindow::Second, QuotaWindow::Minute, QuotaWindow::Day];

/// Takes `key`'s lock until `transaction` ends: its reservations and blocks queue on it.
async fn lock_key(
    transaction: &tokio_postgres::Transaction<'_>,
    key: &KeyId,
) -> std::result::Result<(), tokio_postgres::Error> {
    transaction
        .execute(
            "SELECT pg_advisory_xact_lock($1, hashtext($2))",
            &[&crate::coordinator::LOCK_CLASS, &key.as_str()],
        )
        .await
        .map(|_| ())
}

/// What a reservation came to.
#[derive(Debug, Clone, PartialEq)]
pub enum Reserved {
    /// Booked: send after the booking's wait.
    Booked(Booking),
    /// Not booked: the records would wait `wait`, longer than allowed, for `window`.
    TooLong {
        /// The wait.
        wait: Duration,
        /// The window that holds the records longest (a block counts as the minute's).
        window: QuotaWindow,
    },
}

impl Coordinator {
    /// Books `records` records of `key` in the shared windows under `limits` (the lower of
    /// these and any the vendor reported to a worker of the key); the booking says how long to
    /// wait. A request larger than a window's limit can never fit: an error (the client splits
    /// requests to the limits first).
    pub async fn reserve(
        &mut self,
        key: &KeyId,
        records: u32,
        limits: &RateLimits,
        worker: &str,
    ) -> Result<Booking> {
        match self
            .reserve_within(key, records, limits, worker, None)
            .await?
        {
            Reserved::Booked(booking) => Ok(booking),
            Reserved::TooLong { .. } => unreachable!("no wait is too long without a bound"),
        }
    }

    /// [`Coordinator::reserve`], booking nothing when the wait would pass `max_wait`.
    pub async fn reserve_within(
        &mut self,
        key: &KeyId,
        records: u32,
        limits: &RateLimits,
        worker: &str,
        max_wait: Option<Duration>,
    ) -> Result<Reserved> {
        let failed = |e: tokio_postgres::Error| {
            Error::Config(format!(
                "the coordinator {}: a reservation failed: {}",
                self.url,
                crate::coordinator::describe(&e)
            ))
        };
        let url = self.url.clone();
        let transaction = self.client.transaction().await.map_err(failed)?;
        lock_key(&transaction, key).await.map_err(failed)?;
        // The limits every worker of the key learnt from the vendor bind here too.
        let learnt = transaction
            .query_opt(
                &format!(
                    "SELECT per_second, per_minute, per_day FROM {SCHEMA}.key_state WHERE key_id = $1"
                ),
                &[&key.as_str()],
            )
            .await
            .map_err(failed)?;
        let mut windows = windows(limits);
        if let Some(row) = &learnt {
            for (i, window) in windows.iter_mut().enumerate() {
                if let Some(limit) = row.get::<_, Option<i64>>(i) {
                    window.1 = window.1.min(limit);
                }
            }
        }
        let records_i = i64::from(records);
        let records_i32 = i32::try_from(records).map_err(|_| {
            Error::Config(format!(
                "the coordinator {url}: a request of {records} records is too large"
            ))
        })?;
        // A request larger than a window's limit fits when it is alone in the window (the
        // vendor admits it then, as the local pacer does).
        if windows.iter().any(|(_, limit)| *limit < 1) {
            return Err(Error::Config(format!(
                "the coordinator {url}: a limit of the key is 0: nothing can be sent"
            )));
        }
        // Seconds from now (server clock) to the earliest allowed moment: after the latest
        // booking and after any block.
        let start: f64 = transaction
            .query_one(
                &format!(
                    "SELECT greatest(
                        coalesce(extract(epoch FROM (SELECT max(sent_at) FROM {SCHEMA}.send_log WHERE key_id = $1) - clock_timestamp()), 0),
                        coalesce(extract(epoch FROM (SELECT blocked_until FROM {SCHEMA}.key_state WHERE key_id = $1) - clock_timestamp()), 0),
                        0)::float8"
                ),
                &[&key.as_str()],
            )
            .await
            .map_err(failed)?
            .get(0);
        // Move the moment forward until every window has room; each step only frees room, so
        // a few rounds settle it.
        let mut at = start;
        let mut settled = false;
        // The window that moved the moment last (a block or the queue: the minute's).
        let mut binding = QuotaWindow::Minute;
        for _ in 0..8 {
            let mut latest = at;
            for ((seconds, limit), window) in windows.into_iter().zip(WINDOWS) {
                // The oldest bookings that must leave the window before the records fit, and
                // the moment the last of them leaves.
                let row = transaction
                    .query_one(
                        &format!(
                            "WITH live AS (
                                SELECT sent_at, sum(records) OVER (ORDER BY sent_at, id) AS cumulative,
                                       sum(records) OVER () AS total
                                FROM {SCHEMA}.send_log
                                WHERE key_id = $1
                                  AND sent_at > clock_timestamp() + make_interval(secs => $2) - make_interval(secs => $3)
                            )
                            SELECT CASE
                                WHEN coalesce((SELECT max(total) FROM live), 0) + $4 <= $5 THEN $2
                                ELSE (SELECT extract(epoch FROM min(sent_at) - clock_timestamp())::float8 + $3
                                      FROM live WHERE total - cumulative + $4 <= $5)
                            END"
                        ),
                        &[
                            &key.as_str(),
                            &at,
                            &seconds,
                            &records_i.min(limit),
                            &limit,
                        ],
                    )
                    .await
                    .map_err(failed)?;
                let fits_at: f64 = row.get(0);
                if fits_at > latest {
                    latest = fits_at;
                    binding = window;
                }
            }
            if latest <= at {
                settled = true;
                break;
            }
            at = latest;
        }
        if !settled {
            return Err(Error::Config(format!(
                "the coordinator {url}: the shared windows kept moving while booking; try again"
            )));
        }
        let wait = Duration::from_secs_f64(at.max(0.0));
        if max_wait.is_some_and(|max| wait > max) {
            // Nothing booked: the transaction ends without a change.
            return Ok(Reserved::TooLong {
                wait,
                window: binding,
            });
        }
        let id: i64 = transaction
            .query_one(
                &format!(
                    "INSERT INTO {SCHEMA}.send_log (key_id, sent_at, records, worker)
                     VALUES ($1, clock_timestamp() + make_interval(secs => $2), $3, $4)
                     RETURNING id"
                ),
                &[&key.as_str(), &at, &records_i32, &worker],
            )
            .await
            .map_err(failed)?
            .get(0);
        // Bookings older than the longest window count for nothing any more.
        transaction
            .execute(
                &format!(
                    "DELETE FROM {SCHEMA}.send_log WHERE key_id = $1 AND sent_at < clock_timestamp() - interval '25 hours'"
                ),
                &[&key.as_str()],
            )
            .await
            .map_err(failed)?;
        transaction.commit().await.map_err(failed)?;
        Ok(Reserved::Booked(Booking { id, records, wait }))
    }

    /// The booked request was not processed (a network error before the server read it, a
    /// 429): its records are free again.
    pub async fn release(&self, booking: &Booking) -> Result<()> {
        self.client
            .execute(
                &format!("DELETE FROM {SCHEMA}.send_log WHERE id = $1"),
                &[&booking.id],
            )
            .await
            .map(|_| ())
            .map_err(|e| {
                Error::Config(format!(
                    "the coordinator {}: {}",
                    self.url,
                    crate::coordinator::describe(&e)
                ))
            })
    }

    /// The booked request was answered now: its records count from now (never earlier than
    /// booked).
    pub async fn confirm(&self, booking: &Booking) -> Result<()> {
        self.client
            .execute(
                &format!(
                    "UPDATE {SCHEMA}.send_log SET sent_at = greatest(sent_at, clock_timestamp()) WHERE id = $1"
                ),
                &[&booking.id],
            )
            .await
            .map(|_| ())
            .map_err(|e| Error::Config(format!("the coordinator {}: {}", self.url, crate::coordinator::describe(&e))))
    }

    /// No worker of `key` sends for `duration` (a 429 said a window is used up until then).
    /// Bookings already made inside the block are not moved: a worker checks the block before
    /// it sends (the client's part).
    pub async fn block_for(&mut self, key: &KeyId, duration: Duration) -> Result<()> {
        let url = self.url.clone();
        let failed = |e: tokio_postgres::Error| {
            Error::Config(format!(
                "the coordinator {url}: {}",
                crate::coordinator::describe(&e)
            ))
        };
        // Under the key's lock: a reservation in progress sees the block or finishes first.
        let transaction = self.client.transaction().await.map_err(failed)?;
        lock_key(&transaction, key).await.map_err(failed)?;
        transaction
            .execute(
                &format!(
                    "INSERT INTO {SCHEMA}.key_state (key_id, blocked_until)
                     VALUES ($1, clock_timestamp() + make_interval(secs => $2))
                     ON CONFLICT (key_id) DO UPDATE
                     SET blocked_until = greatest({SCHEMA}.key_state.blocked_until, excluded.blocked_until)"
                ),
                &[&key.as_str(), &duration.as_secs_f64()],
            )
            .await
            .map_err(failed)?;
        transaction.commit().await.map_err(failed)
    }
}
