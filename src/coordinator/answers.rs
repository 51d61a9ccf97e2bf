//! The coordinator's `answers` as a response cache: what `prospeo cache stats | export | clear
//! --coordinator` reads and deletes, and [`Coordinator::put_answers`], the upsert they are
//! seeded with.
//!
//! A row is a cache entry as the local file stores it: `record_key` is
//! [`CacheKey::as_bytes`], `value` is [`EncodedEntry::as_bytes`]. Every walk is keyset
//! pagination by `record_key` (the primary key's index): one bounded statement a page, so that
//! neither this process nor the server holds the table, and no statement comes near the
//! connection's statement timeout whatever the table's size. A walk is not one snapshot:
//! answers workers store meanwhile may or may not be seen (each page is consistent).

use crate::cache::{CacheEntry, CacheKey, CacheStats, EncodedEntry};
use crate::error::Result;

use super::{Coordinator, SCHEMA};

/// Rows a page of `answer_stats` or `clear_answers` reads or deletes at most (stats read the
/// values' headers only: a page is about a megabyte).
const ROWS_PER_STATEMENT: usize = 10_000;

/// Answers a statement of [`Coordinator::put_answers`] upserts at most.
const PUT_ROWS: usize = 1_000;

/// One page of stored answers, in key order: [`Coordinator::answers_after`].
#[derive(Debug, Clone, Default)]
pub struct AnswerPage {
    /// The answers that decode (the others are skipped, with a warning, as the file's are).
    pub entries: Vec<(CacheKey, CacheEntry)>,
    /// Where the next page starts, `None` when this page was the last.
    pub next: Option<CacheKey>,
}

impl Coordinator {
    /// An error of a statement on the answers, with the server's message (`tokio_postgres`
    /// shows a server error as "db error" alone).
    fn answers_failed(&self, what: &str, e: tokio_postgres::Error) -> crate::error::Error {
        let reason = match e.as_db_error() {
            Some(db) => db.message().to_string(),
            None => e.to_string(),
        };
        crate::error::Error::Config(format!("the coordinator {}: {what}: {reason}", self.url))
    }

    /// `SELECT {columns} FROM answers` after `after` (from the first key when `None`) in key
    /// order, `limit` rows: the keyset page every walk reads.
    async fn answer_rows(
        &self,
        columns: &str,
        after: Option<&[u8]>,
        limit: usize,
        what: &str,
    ) -> Result<Vec<tokio_postgres::Row>> {
        let limit = i64::try_from(limit.max(1)).unwrap_or(i64::MAX);
        let rows = match after {
            None => {
                self.client
                    .query(
                        &format!(
                            "SELECT {columns} FROM {SCHEMA}.answers WHERE api = $2 ORDER BY record_key LIMIT $1"
                        ),
                        &[&limit, &self.api],
                    )
                    .await
            }
            Some(after) => {
                self.client
                    .query(
                        &format!(
                            "SELECT {columns} FROM {SCHEMA}.answers WHERE api = $3 AND record_key > $1 ORDER BY record_key LIMIT $2"
                        ),
                        &[&after, &limit, &self.api],
                    )
                    .await
            }
        };
        rows.map_err(|e| self.answers_failed(what, e))
    }

    /// [`crate::cache::ResponseCache::stats`] of the answers: counts by status, revealed
    /// mobiles, oldest and newest, entries that do not decode as `unreadable`. Reads each
    /// value's header only (not its JSON), a page at a time. `file_bytes` is the stored values'
    /// bytes (`octet_length(value)`, as `prospeo coordinator status` counts them), not the
    /// table's size on disk.
    pub async fn answer_stats(&self) -> Result<CacheStats> {
        let columns = format!(
            "record_key, substring(value FROM 1 FOR {}), octet_length(value)::bigint",
            CacheStats::HEADER_BYTES
        );
        let mut stats = CacheStats {
            file_bytes: Some(0),
            ..CacheStats::default()
        };
        let mut after: Option<Vec<u8>> = None;
        loop {
            let rows = self
                .answer_rows(
                    &columns,
                    after.as_deref(),
                    ROWS_PER_STATEMENT,
                    "cannot count its answers",
                )
                .await?;
            for row in &rows {
                stats.count(row.get::<_, &[u8]>(1));
                let bytes: i64 = row.get(2);
                stats.file_bytes = stats
                    .file_bytes
                    .map(|total| total.saturating_add(u64::try_from(bytes).unwrap_or(0)));
            }
            if rows.len() < ROWS_PER_STATEMENT {
                return Ok(stats);
            }
            after = rows.last().map(|row| row.get::<_, Vec<u8>>(0));
        }
    }

    /// The stored answers after `after` (from the first when `None`), `page` rows at most (at
    /// least one), in key order. Values that do not decode are skipped with a warning, as the
    /// file's are; they still count towards `page`, so `next` is set whenever the page was full.
    pub async fn answers_after(&self, after: Option<&CacheKey>, page: usize) -> Result<AnswerPage> {
        let page = page.max(1);
        let rows = self
            .answer_rows(
                "record_key, value",
                after.map(CacheKey::as_bytes),
                page,
                "cannot read its answers",
            )
            .await?;
        let next = if rows.len() == page {
            rows.last()
                .map(|row| CacheKey::from_stored(row.get::<_, Vec<u8>>(0)))
        } else {
            None
        };
        let entries = rows
            .into_iter()
            .filter_map(|row| {
                let key = CacheKey::from_stored(row.get::<_, Vec<u8>>(0));
                match EncodedEntry::from_bytes(row.get::<_, Vec<u8>>(1)).decode() {
                    Ok(entry) => Some((key, entry)),
                    Err(reason) => {
                        tracing::warn!(
                            coordinator = %self.url,
                            "ignoring a stored answer that does not decode ({reason})"
                        );
                        None
                    }
                }
            })
            .collect();
        Ok(AnswerPage { entries, next })
    }

    /// [`crate::cache::ResponseCache::for_each_page`] of the answers: every answer that
    /// decodes, in key order, `page` at a time (at least one); one page in memory at a time.
    /// Stops at the first error `f` returns. A page may hold fewer than `page` entries when
    /// some did not decode; an empty page is never passed.
    pub async fn for_each_answer_page(
        &self,
        page: usize,
        mut f: impl FnMut(&[(CacheKey, CacheEntry)]) -> Result<()>,
    ) -> Result<()> {
        let mut after: Option<CacheKey> = None;
        loop {
            let AnswerPage { entries, next } = self.answers_after(after.as_ref(), page).await?;
            if !entries.is_empty() {
                f(&entries)?;
            }
            match next {
                Some(next) => after = Some(next),
                None => return Ok(()),
            }
        }
    }

    /// Deletes every stored answer; returns how many were deleted. In pages of keys (each its
    /// own short statement, so workers storing answers meanwhile wait for a page at most, never
    /// for the whole table); an answer stored behind the walk while it runs is kept.
    pub async fn clear_answers(&self) -> Result<u64> {
        let limit = ROWS_PER_STATEMENT as i64;
        let mut removed = 0u64;
        let mut after: Option<Vec<u8>> = None;
        loop {
            let filter = match &after {
                None => "WHERE api = $2",
                Some(_) => "WHERE api = $2 AND record_key > $3",
            };
            let sql = format!(
                "WITH doomed AS (
                    SELECT record_key FROM {SCHEMA}.answers {filter}
                    ORDER BY record_key LIMIT $1
                 ), gone AS (
                    DELETE FROM {SCHEMA}.answers
                    WHERE api = $2 AND record_key IN (SELECT record_key FROM doomed)
                    RETURNING 1
                 )
                 SELECT (SELECT count(*) FROM gone), (SELECT count(*) FROM doomed),
                        (SELECT record_key FROM doomed ORDER BY record_key DESC LIMIT 1)"
            );
            let row = match &after {
                None => self.client.query_one(&sql, &[&limit, &self.api]).await,
                Some(after) => {
                    self.client
                        .query_one(&sql, &[&limit, &self.api, after])
                        .await
                }
            }
            .map_err(|e| self.answers_failed("cannot delete its answers", e))?;
            let gone: i64 = row.get(0);
            let seen: i64 = row.get(1);
            removed += u64::try_from(gone).unwrap_or(0);
            if seen < limit {
                return Ok(removed);
            }
            after = row.get::<_, Option<Vec<u8>>>(2);
        }
    }

    /// Stores answers (the response cache's encoding); a later answer of the same key
    /// overwrites, within `entries` and across calls, as the file's `put_many` does. Each
    /// statement upserts up to a thousand answers atomically; a failure part way keeps the
    /// statements already done (answers that were paid for).
    pub async fn put_answers(&self, entries: &[(CacheKey, EncodedEntry)]) -> Result<()> {
        // One statement must not name a key twice (ON CONFLICT would refuse it): the last of
        // each key is the one stored.
        let mut last = std::collections::HashMap::with_capacity(entries.len());
        for (i, (key, _)) in entries.iter().enumerate() {
            last.insert(key.as_bytes(), i);
        }
        let kept: Vec<&(CacheKey, EncodedEntry)> = entries
            .iter()
            .enumerate()
            .filter(|(i, (key, _))| last.get(key.as_bytes()) == Some(i))
            .map(|(_, entry)| entry)
            .collect();
        let sql = format!(
            "INSERT INTO {SCHEMA}.answers (api, record_key, value)
             SELECT $3, k, v FROM unnest($1::bytea[], $2::bytea[]) AS a(k, v)
             ON CONFLICT (api, record_key) DO UPDATE
                SET value = excluded.value, stored_at = clock_timestamp()"
        );
        for chunk in kept.chunks(PUT_ROWS) {
            let (keys, values): (Vec<&[u8]>, Vec<&[u8]>) = chunk
                .iter()
                .map(|(key, value)| (key.as_bytes(), value.as_bytes()))
                .unzip();
            self.client
                .execute(&sql, &[&keys, &values, &self.api])
                .await
                .map_err(|e| self.answers_failed("cannot store answers", e))?;
        }
        Ok(())
    }
}
