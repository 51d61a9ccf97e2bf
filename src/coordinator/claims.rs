//! Shared claims and the shared state of a key: which worker is asking for which person key
//! (with a lease its heartbeats extend), the answers stored in the same transaction that
//! releases their claims, and what one worker learnt that binds every worker (the vendor's
//! limits, a block, credits run out).
//!
//! Ordering argument, the reason "never twice while every worker lives" holds: a worker stores
//! an answer and deletes its claim in one transaction, so a claim another worker inserts after
//! that commit is followed by a look-up (a statement of its own, so a snapshot taken after the
//! claim) that sees the answer. A claim is taken over only when its lease ran out, i.e. when
//! its worker stopped heartbeating (killed, cut off for longer than the lease).

use std::time::Duration;

use crate::coordinator::{Coordinator, KeyId, SCHEMA};
use crate::error::Result;

/// A claim attempt on one record key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimState {
    /// This worker holds the key now (it asks for it, or finds its answer stored).
    Mine,
    /// Another live worker is asking for it.
    Held,
}

/// What the key's shared state says about sending now.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Clearance {
    /// Send.
    Clear,
    /// A worker was told to hold off for this long (a 429's reset).
    Blocked(Duration),
    /// A worker met the account without credits after this job started.
    OutOfCredits,
    /// Some of the records' claims are no longer this worker's: their lease ran out (the
    /// coordinator was unreachable longer than it) and another worker took them over.
    ClaimsLost,
}

impl Coordinator {
    /// Claims `records` (record keys) of `key` for `worker` with a lease of `lease`: a key
    /// nobody holds, or whose lease ran out, or that `worker` holds already, becomes `Mine`.
    pub async fn claim(
        &self,
        key: &KeyId,
        worker: &str,
        records: &[Vec<u8>],
        lease: Duration,
    ) -> Result<Vec<ClaimState>> {
        if records.is_empty() {
            return Ok(Vec::new());
        }
        let rows = self
            .client
            .query(
                &format!(
                    "INSERT INTO {SCHEMA}.claims AS c (key_id, record_key, worker, lease_until)
                     SELECT $1, r, $2, clock_timestamp() + make_interval(secs => $4)
                     FROM unnest($3::bytea[]) AS r
                     ORDER BY r
                     ON CONFLICT (key_id, record_key) DO UPDATE
                        SET worker = excluded.worker, lease_until = excluded.lease_until
                        WHERE c.worker = excluded.worker OR c.lease_until < clock_timestamp()
                     RETURNING record_key"
                ),
                &[&key.as_str(), &worker, &records, &lease.as_secs_f64()],
            )
            .await
            .map_err(|e| self.failed("cannot claim records", e))?;
        let mine: std::collections::HashSet<Vec<u8>> =
            rows.iter().map(|row| row.get::<_, Vec<u8>>(0)).collect();
        Ok(records
            .iter()
            .map(|r| match mine.contains(r) {
                true => ClaimState::Mine,
                false => ClaimState::Held,
            })
            .collect())
    }

    /// The stored answers (values in the response cache's encoding) of `records`, in order.
    pub async fn answers(&self, records: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>> {
        if records.is_empty() {
            return Ok(Vec::new());
        }
        let rows = self
            .client
            .query(
                &format!(
                    "SELECT record_key, value FROM {SCHEMA}.answers WHERE api = $2 AND record_key = ANY($1::bytea[])"
                ),
                &[&records, &self.api],
            )
            .await
            .map_err(|e| self.failed("cannot read answers", e))?;
        let mut found: std::collections::HashMap<Vec<u8>, Vec<u8>> = rows
            .into_iter()
            .map(|row| (row.get(0), row.get(1)))
            .collect();
        Ok(records.iter().map(|r| found.remove(r)).collect())
    }

    /// Stores `answers` (record key, encoded value; a later answer overwrites) and releases
    /// `worker`'s claims on `release` in one transaction: "answered" and "stored" are one fact.
    pub async fn store_and_release(
        &mut self,
        key: &KeyId,
        worker: &str,
        answers: &[(Vec<u8>, Vec<u8>)],
        release: &[Vec<u8>],
    ) -> Result<()> {
        let url = self.url.clone();
        let failed = |e: tokio_postgres::Error| {
            crate::error::Error::Config(format!(
                "the coordinator {url}: cannot store answers: {}",
                crate::coordinator::describe(&e)
            ))
        };
        let transaction = self.client.transaction().await.map_err(failed)?;
        if !answers.is_empty() {
            // One statement must not name a key twice: the last answer of a key is stored. Keys
            // in order, as claims take them: two workers storing the same keys never deadlock.
            let last: std::collections::BTreeMap<&[u8], &[u8]> = answers
                .iter()
                .map(|(k, v)| (k.as_slice(), v.as_slice()))
                .collect();
            let (keys, values): (Vec<&[u8]>, Vec<&[u8]>) = last.into_iter().unzip();
            transaction
                .execute(
                    &format!(
                        "INSERT INTO {SCHEMA}.answers (api, record_key, value)
                         SELECT $3, k, v FROM unnest($1::bytea[], $2::bytea[]) AS a(k, v)
                         ON CONFLICT (api, record_key) DO UPDATE
                            SET value = excluded.value, stored_at = clock_timestamp()"
                    ),
                    &[&keys, &values, &self.api],
                )
                .await
                .map_err(failed)?;
        }
        if !release.is_empty() {
            transaction
                .execute(
                    &format!(
                        "DELETE FROM {SCHEMA}.claims
                         WHERE key_id = $1 AND worker = $2 AND record_key = ANY($3::bytea[])"
                    ),
                    &[&key.as_str(), &worker, &release],
                )
                .await
                .map_err(failed)?;
        }
        transaction.commit().await.map_err(failed)
    }

    /// Keeps `worker` alive: its row in `workers` and the leases of its claims run `lease`
    /// from now.
    pub async fn heartbeat(&self, key: &KeyId, worker: &str, lease: Duration) -> Result<()> {
        let (host, pid) = (host_name(), std::process::id() as i32);
        self.client
            .execute(
                &format!(
                    "WITH alive AS (
                        INSERT INTO {SCHEMA}.workers (worker, key_id, host, pid, lease_until)
                        VALUES ($1, $2, $3, $4, clock_timestamp() + make_interval(secs => $5))
                        ON CONFLICT (worker) DO UPDATE SET lease_until = excluded.lease_until
                    )
                    UPDATE {SCHEMA}.claims SET lease_until = clock_timestamp() + make_interval(secs => $5)
                    WHERE key_id = $2 AND worker = $1"
                ),
                &[&worker, &key.as_str(), &host, &pid, &lease.as_secs_f64()],
            )
            .await
            .map(|_| ())
            .map_err(|e| self.failed("cannot renew this worker's lease", e))
    }

    /// This worker ends: its claims and its row go (answers stay).
    pub async fn leave(&self, key: &KeyId, worker: &str) -> Result<()> {
        self.client
            .execute(
                &format!(
                    "WITH gone AS (DELETE FROM {SCHEMA}.workers WHERE worker = $2)
                     DELETE FROM {SCHEMA}.claims WHERE key_id = $1 AND worker = $2"
                ),
                &[&key.as_str(), &worker],
            )
            .await
            .map(|_| ())
            .map_err(|e| self.failed("cannot leave", e))
    }

    /// The database's clock now, in seconds since the epoch: when a job started, by the clock
    /// every worker shares.
    pub async fn server_now(&self) -> Result<f64> {
        self.client
            .query_one("SELECT extract(epoch FROM clock_timestamp())::float8", &[])
            .await
            .map(|row| row.get(0))
            .map_err(|e| self.failed("cannot read its clock", e))
    }

    /// Whether `worker` may send `records` of `key` now: it still holds their claims (renewed
    /// here: a lease that ran out while the coordinator was unreachable may have been taken
    /// over), no worker's block holds, and no worker met the account without credits after
    /// `since` (seconds since the epoch, the database's clock).
    pub async fn clearance(
        &self,
        key: &KeyId,
        since: f64,
        worker: &str,
        records: &[Vec<u8>],
        lease: Duration,
    ) -> Result<Clearance> {
        let row = self
            .client
            .query_one(
                &format!(
                    "WITH renewed AS (
                        UPDATE {SCHEMA}.claims SET lease_until = clock_timestamp() + make_interval(secs => $5)
                        WHERE key_id = $1 AND worker = $3 AND record_key = ANY($4::bytea[])
                        RETURNING 1
                    )
                    SELECT (SELECT count(*) FROM renewed),
                           (SELECT greatest(extract(epoch FROM blocked_until - clock_timestamp())::float8, 0)::float8
                            FROM {SCHEMA}.key_state WHERE key_id = $1),
                           coalesce((SELECT extract(epoch FROM out_of_credits_at)::float8 > $2::float8
                                     FROM {SCHEMA}.key_state WHERE key_id = $1), false)"
                ),
                &[&key.as_str(), &since, &worker, &records, &lease.as_secs_f64()],
            )
            .await
            .map_err(|e| self.failed("cannot read the key's state", e))?;
        let (held, blocked, out_of_credits): (i64, Option<f64>, bool) =
            (row.get(0), row.get(1), row.get(2));
        Ok(if usize::try_from(held).unwrap_or(0) < records.len() {
            Clearance::ClaimsLost
        } else if out_of_credits {
            Clearance::OutOfCredits
        } else {
            match blocked {
                Some(seconds) if seconds > 0.0 => {
                    Clearance::Blocked(Duration::from_secs_f64(seconds))
                }
                _ => Clearance::Clear,
            }
        })
    }

    /// A worker met the account without credits: every worker of `key` that started before
    /// now stops sending (a job started later tries again: the answer costs nothing).
    pub async fn out_of_credits(&self, key: &KeyId) -> Result<()> {
        self.client
            .execute(
                &format!(
                    "INSERT INTO {SCHEMA}.key_state (key_id, out_of_credits_at)
                     VALUES ($1, clock_timestamp())
                     ON CONFLICT (key_id) DO UPDATE SET out_of_credits_at = excluded.out_of_credits_at"
                ),
                &[&key.as_str()],
            )
            .await
            .map(|_| ())
            .map_err(|e| self.failed("cannot record the credits' end", e))
    }

    /// The key's limits as the vendor reported them (records a second, minute, day; `None`:
    /// not reported), for every worker of the key.
    pub async fn learn_limits(
        &self,
        key: &KeyId,
        per_second: Option<u64>,
        per_minute: Option<u64>,
        per_day: Option<u64>,
    ) -> Result<()> {
        let clamp = |n: Option<u64>| n.map(|n| i64::try_from(n).unwrap_or(i64::MAX));
        self.client
            .execute(
                &format!(
                    "INSERT INTO {SCHEMA}.key_state AS s (key_id, per_second, per_minute, per_day)
                     VALUES ($1, $2, $3, $4)
                     ON CONFLICT (key_id) DO UPDATE SET
                        per_second = coalesce(excluded.per_second, s.per_second),
                        per_minute = coalesce(excluded.per_minute, s.per_minute),
                        per_day = coalesce(excluded.per_day, s.per_day)
                     WHERE (s.per_second, s.per_minute, s.per_day)
                        IS DISTINCT FROM (coalesce(excluded.per_second, s.per_second),
                                          coalesce(excluded.per_minute, s.per_minute),
                                          coalesce(excluded.per_day, s.per_day))"
                ),
                &[
                    &key.as_str(),
                    &clamp(per_second),
                    &clamp(per_minute),
                    &clamp(per_day),
                ],
            )
            .await
            .map(|_| ())
            .map_err(|e| self.failed("cannot record the key's limits", e))
    }
}

/// This machine's name, for `prospeo coordinator status` (`HOSTNAME`, else /etc/hostname).
pub(crate) fn host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.trim().is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_string())
                .filter(|h| !h.is_empty())
        })
        .unwrap_or_else(|| "unknown".into())
}
