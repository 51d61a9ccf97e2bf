//! The coordinator: any number of processes on any number of machines, on one API key, behave
//! as one client through a PostgreSQL database the data team already runs.
//!
//! This module holds what every part of it shares: the database's address ([`CoordinatorUrl`]:
//! never a password in it, redacted in every message), the password from libpq's usual places
//! (`PGPASSWORD`, `PGPASSFILE`, `~/.pgpass`), the schema (`prospeo_coordinator`, versioned,
//! created idempotently by [`Coordinator::init`], refused when newer than this build knows), a
//! key's identity ([`KeyId`]: a hash, never the key) and [`Coordinator::status`].
//!
//! What the schema is for: `send_log` (the records each worker sent, by the database's clock:
//! the per-second, per-minute and rolling-day windows every worker paces by), `key_state` (what
//! a worker learnt from the vendor that binds every worker: lower limits, a block until a reset,
//! credits run out), `claims` (a person key a worker is asking for, with a lease), `answers`
//! (the response cache's entries) and `workers` (heartbeats).

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio_postgres::NoTls;

use crate::error::{Error, Result};

mod answers;
mod claims;
mod pacing;
mod shared;

pub use answers::AnswerPage;
pub use claims::{ClaimState, Clearance};
pub use pacing::{Booking, Reserved};
pub use shared::{Shared, SharedError};

/// Environment variable of the coordinator's URL.
pub const ENV_COORDINATOR: &str = "PROSPEO_COORDINATOR";

/// The schema's name in the database.
pub const SCHEMA: &str = "prospeo_coordinator";

/// The schema version this build writes and reads.
pub const SCHEMA_VERSION: i32 = 1;

/// The first half of every advisory lock this crate takes (its own keyspace in a shared
/// database): "PRSP".
pub(crate) const LOCK_CLASS: i32 = 0x5052_5350;

/// How long connecting may take before the coordinator counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A database error with the server's message (tokio-postgres's own text says only "db
/// error" for those).
pub(crate) fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.severity(), db.message()),
        None => e.to_string(),
    }
}

/// Where the coordinator is: `postgres://user@host[:port]/database`. A password never comes in
/// it (it would end up in shell histories, process lists and logs): it comes from `PGPASSWORD`,
/// a `PGPASSFILE` or `~/.pgpass`, as for every PostgreSQL tool.
#[derive(Clone, PartialEq, Eq)]
pub struct CoordinatorUrl {
    user: String,
    host: String,
    port: u16,
    database: String,
}

impl CoordinatorUrl {
    /// Parses a URL; refuses one with a password, or not `postgres://` / `postgresql://`.
    pub fn parse(text: &str) -> Result<Self> {
        let invalid = |reason: &str| {
            Error::Config(format!(
                "prospeo.coordinator: {reason}; expected postgres://user@host[:port]/database"
            ))
        };
        let url = url::Url::parse(text.trim()).map_err(|_| invalid("not a URL"))?;
        if !matches!(url.scheme(), "postgres" | "postgresql") {
            return Err(invalid("the scheme is not postgres://"));
        }
        if url.query().is_some() || url.fragment().is_some() {
            // Parameters (a password, sslmode) are not taken from the URL: a password does not
            // belong in it, and this build connects without TLS.
            return Err(Error::Config(
                "prospeo.coordinator: the URL holds parameters (after `?`), which are not read: give a password in PGPASSWORD, a PGPASSFILE or ~/.pgpass; this build connects without TLS (a coordinator on loopback or a private network)".into(),
            ));
        }
        if url.password().is_some() {
            // The message names no part of the URL: the password is in it.
            return Err(Error::Config(
                "prospeo.coordinator: the URL holds a password; give it in PGPASSWORD, a PGPASSFILE or ~/.pgpass instead (never on a command line or in SQL)".into(),
            ));
        }
        let host = url
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| invalid("no host"))?;
        let user = if url.username().is_empty() {
            std::env::var("PGUSER").unwrap_or_else(|_| "postgres".to_string())
        } else {
            percent_decode(url.username())
        };
        let database = url.path().trim_start_matches('/');
        let database = if database.is_empty() {
            user.clone()
        } else {
            percent_decode(database)
        };
        Ok(CoordinatorUrl {
            user,
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
            port: url.port().unwrap_or(5432),
            database,
        })
    }

    /// The database user.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// The server's host.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The server's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The database.
    pub fn database(&self) -> &str {
        &self.database
    }
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(byte) = text
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(byte);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Shown without a password (it holds none) and as `postgres://user@host:port/database`.
impl fmt::Display for CoordinatorUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "postgres://{}@{}:{}/{}",
            self.user, self.host, self.port, self.database
        )
    }
}

impl fmt::Debug for CoordinatorUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CoordinatorUrl({self})")
    }
}

/// The API a stored answer is of: `vendor` for the vendor's, else a hash of the base URL (a
/// sandbox's answers must never answer for the vendor; the URL may carry credentials, so it is
/// not stored).
pub fn api_id(base_url: &str) -> String {
    use sha2::{Digest, Sha256};
    if crate::vendor::is_vendor(base_url) {
        return "vendor".into();
    }
    let digest = Sha256::digest(base_url.trim().trim_end_matches('/').as_bytes());
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("api-{hex}")
}

/// A coordinator password given by a program (a secrets manager's) rather than libpq's places.
/// Never shown: `Debug` prints `<redacted>`.
#[derive(Clone, PartialEq, Eq)]
pub struct CoordinatorPassword(String);

impl CoordinatorPassword {
    /// Wraps a password.
    pub fn new(password: impl Into<String>) -> Self {
        CoordinatorPassword(password.into())
    }

    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for CoordinatorPassword {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CoordinatorPassword(<redacted>)")
    }
}

/// The password for `url` from libpq's places: `PGPASSWORD`, else the first matching line of
/// `PGPASSFILE` (or `~/.pgpass`), which must not be readable by group or others (libpq ignores
/// such a file too).
pub fn password_for(url: &CoordinatorUrl) -> Option<String> {
    if let Ok(password) = std::env::var("PGPASSWORD")
        && !password.is_empty()
    {
        return Some(password);
    }
    let file = std::env::var_os("PGPASSFILE")
        .map(PathBuf::from)
        .or_else(|| dirs::home_dir().map(|home| home.join(".pgpass")))?;
    passfile_password(&file, url)
}

/// The password of the first line of a `.pgpass` file that matches `url`
/// (`host:port:database:user:password`, `*` matches anything, `\:` and `\\` escape).
pub fn passfile_password(file: &Path, url: &CoordinatorUrl) -> Option<String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(file).ok()?.permissions().mode();
        if mode & 0o077 != 0 {
            tracing::warn!(
                file = %file.display(),
                "the password file is readable by others: ignored (chmod 0600 it)"
            );
            return None;
        }
    }
    let text = std::fs::read_to_string(file).ok()?;
    let port = url.port.to_string();
    let wanted = [
        url.host.as_str(),
        port.as_str(),
        url.database.as_str(),
        url.user.as_str(),
    ];
    text.lines()
        .filter(|line| !line.trim_start().starts_with('#'))
        .map(split_passfile_line)
        .find(|fields| {
            fields.len() == 5
                && fields[..4]
                    .iter()
                    .zip(wanted)
                    .all(|(field, want)| field == "*" || field == want)
        })
        .map(|mut fields| fields.swap_remove(4))
}

fn split_passfile_line(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(next) = chars.next() {
                    fields.last_mut().expect("one field at least").push(next);
                }
            }
            ':' => fields.push(String::new()),
            c => fields.last_mut().expect("one field at least").push(c),
        }
    }
    fields
}

/// A key as the coordinator knows it: a hash (never the key), the same for every worker.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct KeyId(String);

impl KeyId {
    /// The id of the key `secret` (see `KeyId::of`, beside the key's type in
    /// [`crate::api::builder`], which the coordinator does not depend on).
    pub(crate) fn of_secret(secret: &str) -> KeyId {
        use sha2::{Digest, Sha256};
        let digest = Sha256::digest(format!("prospeo-coordinator-key\0{secret}"));
        KeyId(digest[..16].iter().map(|b| format!("{b:02x}")).collect())
    }

    /// The hash, in hex.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({})", self.0)
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A connection to the coordinator's database.
pub struct Coordinator {
    url: CoordinatorUrl,
    client: tokio_postgres::Client,
    /// The API whose answers this connection reads and writes (see [`api_id`]).
    api: String,
}

impl fmt::Debug for Coordinator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Coordinator")
            .field("url", &self.url)
            .finish()
    }
}

/// What the coordinator knows of a key.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct KeyStatus {
    /// The key's id (a hash).
    pub key: String,
    /// Records sent in the last second, minute and 24 hours, by every worker.
    pub records_last_second: i64,
    /// See `records_last_second`.
    pub records_last_minute: i64,
    /// See `records_last_second`.
    pub records_last_day: i64,
    /// Workers that heartbeated within their lease.
    pub live_workers: i64,
    /// Person keys claimed by a live lease.
    pub claims: i64,
}

/// What the coordinator holds, for every key.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Status {
    /// The database, without a password.
    pub coordinator: String,
    /// The schema version.
    pub schema_version: i32,
    /// Stored answers.
    pub answers: i64,
    /// Their size in bytes.
    pub answer_bytes: i64,
    /// Each key the coordinator has seen.
    pub keys: Vec<KeyStatus>,
}

impl Coordinator {
    /// Connects (the password from libpq's places). An unreachable server or a refused login is
    /// an error that names the server (never a password) and says what to check.
    pub async fn connect(url: &CoordinatorUrl) -> Result<Coordinator> {
        Coordinator::connect_with_password(url, password_for(url)).await
    }

    /// [`Coordinator::connect`] with a password from elsewhere (a secrets manager, a test).
    pub async fn connect_with_password(
        url: &CoordinatorUrl,
        password: Option<String>,
    ) -> Result<Coordinator> {
        let mut config = tokio_postgres::Config::new();
        config
            .user(&url.user)
            .host(&url.host)
            .port(url.port)
            .dbname(&url.database)
            .application_name("prospeo")
            .connect_timeout(CONNECT_TIMEOUT)
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(10))
            .keepalives_interval(Duration::from_secs(5))
            .keepalives_retries(3)
            // A cut-off server is noticed in about 30 s, not after the system's keepalive
            // defaults (minutes): a worker then stops sending rather than waiting on it.
            .tcp_user_timeout(Duration::from_secs(30));
        if let Some(password) = password {
            config.password(password);
        }
        let unreachable = |e: &dyn fmt::Display| {
            Error::Config(format!(
                "the coordinator {url} cannot be reached: {e}; check that the server runs, the user and database exist, and the password is in PGPASSWORD, a PGPASSFILE or ~/.pgpass"
            ))
        };
        let connected = tokio::time::timeout(CONNECT_TIMEOUT, config.connect(NoTls))
            .await
            .map_err(|_| unreachable(&"no answer in 10 s"))?;
        let (client, connection) = connected.map_err(|e| unreachable(&e))?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::warn!(error = %e, "the coordinator's connection ended");
            }
        });
        // A worker that hangs inside a transaction (stopped, cut off) must not hold a key's
        // lock for the TCP keepalive's two hours: the server ends its transaction, and waits
        // for a lock or a statement are bounded.
        client
            .batch_execute(
                "SET idle_in_transaction_session_timeout = '10s';
                 SET lock_timeout = '30s';
                 SET statement_timeout = '30s';",
            )
            .await
            .map_err(|e| unreachable(&e))?;
        Ok(Coordinator {
            url: url.clone(),
            client,
            api: "vendor".into(),
        })
    }

    /// Reads and writes the answers of the API at `base_url` (the vendor's by default): a
    /// sandbox's answers never answer for the vendor, as with the cache files.
    pub fn set_api(&mut self, base_url: &str) {
        self.api = api_id(base_url);
    }

    /// The database's address.
    pub fn url(&self) -> &CoordinatorUrl {
        &self.url
    }

    fn failed(&self, what: &str, e: tokio_postgres::Error) -> Error {
        Error::Config(format!(
            "the coordinator {}: {what}: {}",
            self.url,
            describe(&e)
        ))
    }

    /// Creates the schema and its tables when missing (idempotent; several workers may run it
    /// at once). Refuses a database whose schema is newer than this build knows.
    pub async fn init(&mut self) -> Result<()> {
        let url = self.url.clone();
        let failed = |e: tokio_postgres::Error| {
            Error::Config(format!(
                "the coordinator {url}: cannot create its tables: {}",
                describe(&e)
            ))
        };
        let transaction = self.client.transaction().await.map_err(failed)?;
        transaction
            .execute("SELECT pg_advisory_xact_lock($1, 0)", &[&LOCK_CLASS])
            .await
            .map_err(failed)?;
        // The version first: a newer schema is left as it is.
        let exists: bool = transaction
            .query_one(
                &format!("SELECT to_regclass('{SCHEMA}.schema_version') IS NOT NULL"),
                &[],
            )
            .await
            .map_err(failed)?
            .get(0);
        let version: Option<i32> = if exists {
            transaction
                .query_one(
                    &format!("SELECT max(version) FROM {SCHEMA}.schema_version"),
                    &[],
                )
                .await
                .map_err(failed)?
                .get(0)
        } else {
            None
        };
        match version {
            Some(version) if version > SCHEMA_VERSION => {
                return Err(Error::Config(format!(
                    "the coordinator {url} has schema version {version}, newer than this build knows ({SCHEMA_VERSION}): upgrade prospeo on this machine"
                )));
            }
            Some(version) if version == SCHEMA_VERSION => {
                transaction.commit().await.map_err(failed)?;
                return Ok(());
            }
            _ => {}
        }
        let ddl = format!(
            "
            CREATE SCHEMA IF NOT EXISTS {SCHEMA};
            CREATE TABLE IF NOT EXISTS {SCHEMA}.schema_version (
                version integer NOT NULL
            );
            INSERT INTO {SCHEMA}.schema_version (version)
                SELECT {SCHEMA_VERSION} WHERE NOT EXISTS (SELECT 1 FROM {SCHEMA}.schema_version);
            CREATE TABLE IF NOT EXISTS {SCHEMA}.send_log (
                id bigserial PRIMARY KEY,
                key_id text NOT NULL,
                sent_at timestamptz NOT NULL DEFAULT clock_timestamp(),
                records integer NOT NULL,
                worker text
            );
            CREATE INDEX IF NOT EXISTS send_log_key_time
                ON {SCHEMA}.send_log (key_id, sent_at, id) INCLUDE (records);
            CREATE TABLE IF NOT EXISTS {SCHEMA}.key_state (
                key_id text PRIMARY KEY,
                per_second bigint,
                per_minute bigint,
                per_day bigint,
                blocked_until timestamptz,
                out_of_credits_at timestamptz
            );
            CREATE TABLE IF NOT EXISTS {SCHEMA}.workers (
                worker text PRIMARY KEY,
                key_id text NOT NULL,
                host text NOT NULL,
                pid integer NOT NULL,
                started_at timestamptz NOT NULL DEFAULT clock_timestamp(),
                lease_until timestamptz NOT NULL
            );
            CREATE TABLE IF NOT EXISTS {SCHEMA}.claims (
                key_id text NOT NULL,
                record_key bytea NOT NULL,
                worker text NOT NULL,
                lease_until timestamptz NOT NULL,
                PRIMARY KEY (key_id, record_key)
            );
            CREATE TABLE IF NOT EXISTS {SCHEMA}.answers (
                api text NOT NULL,
                record_key bytea NOT NULL,
                value bytea NOT NULL,
                stored_at timestamptz NOT NULL DEFAULT clock_timestamp(),
                PRIMARY KEY (api, record_key)
            );
            "
        );
        transaction.batch_execute(&ddl).await.map_err(failed)?;
        transaction.commit().await.map_err(failed)?;
        self.check_version().await.map(|_| ())
    }

    /// The schema version; an error when the schema is missing (run `prospeo coordinator
    /// init`) or newer than this build knows.
    pub async fn check_version(&self) -> Result<i32> {
        let rows = self
            .client
            .query(
                &format!("SELECT max(version) FROM {SCHEMA}.schema_version"),
                &[],
            )
            .await
            .map_err(|e| {
                if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE) {
                    Error::Config(format!(
                        "the coordinator {} has no prospeo tables: run `prospeo coordinator init`",
                        self.url
                    ))
                } else {
                    self.failed("cannot read its schema version", e)
                }
            })?;
        let version: Option<i32> = rows.first().and_then(|row| row.get(0));
        match version {
            Some(version) if version > SCHEMA_VERSION => Err(Error::Config(format!(
                "the coordinator {} has schema version {version}, newer than this build knows ({SCHEMA_VERSION}): upgrade prospeo on this machine",
                self.url
            ))),
            Some(version) => Ok(version),
            None => Err(Error::Config(format!(
                "the coordinator {} has no schema version: run `prospeo coordinator init`",
                self.url
            ))),
        }
    }

    /// What the coordinator holds: answers, and per key the records sent in each window (by
    /// the database's clock), live workers and claims.
    pub async fn status(&self) -> Result<Status> {
        let schema_version = self.check_version().await?;
        let answers = self
            .client
            .query_one(
                &format!(
                    "SELECT count(*), coalesce(sum(octet_length(value)), 0)::bigint FROM {SCHEMA}.answers"
                ),
                &[],
            )
            .await
            .map_err(|e| self.failed("cannot count its answers", e))?;
        let keys = self
            .client
            .query(
                &format!(
                    "
                    WITH keys AS (
                        SELECT key_id FROM {SCHEMA}.send_log
                        UNION SELECT key_id FROM {SCHEMA}.workers
                        UNION SELECT key_id FROM {SCHEMA}.claims
                        UNION SELECT key_id FROM {SCHEMA}.key_state
                    )
                    SELECT k.key_id,
                        (SELECT coalesce(sum(records), 0) FROM {SCHEMA}.send_log s
                            WHERE s.key_id = k.key_id AND s.sent_at > clock_timestamp() - interval '1 second' AND s.sent_at <= clock_timestamp())::bigint,
                        (SELECT coalesce(sum(records), 0) FROM {SCHEMA}.send_log s
                            WHERE s.key_id = k.key_id AND s.sent_at > clock_timestamp() - interval '60 seconds' AND s.sent_at <= clock_timestamp())::bigint,
                        (SELECT coalesce(sum(records), 0) FROM {SCHEMA}.send_log s
                            WHERE s.key_id = k.key_id AND s.sent_at > clock_timestamp() - interval '86400 seconds' AND s.sent_at <= clock_timestamp())::bigint,
                        (SELECT count(*) FROM {SCHEMA}.workers w
                            WHERE w.key_id = k.key_id AND w.lease_until > clock_timestamp()),
                        (SELECT count(*) FROM {SCHEMA}.claims c
                            WHERE c.key_id = k.key_id AND c.lease_until > clock_timestamp())
                    FROM keys k ORDER BY k.key_id
                    "
                ),
                &[],
            )
            .await
            .map_err(|e| self.failed("cannot read the keys' state", e))?;
        Ok(Status {
            coordinator: self.url.to_string(),
            schema_version,
            answers: answers.get(0),
            answer_bytes: answers.get(1),
            keys: keys
                .iter()
                .map(|row| KeyStatus {
                    key: row.get(0),
                    records_last_second: row.get(1),
                    records_last_minute: row.get(2),
                    records_last_day: row.get(3),
                    live_workers: row.get(4),
                    claims: row.get(5),
                })
                .collect(),
        })
    }

    /// The underlying client, for the parts of the coordinator built on it.
    pub fn client(&self) -> &tokio_postgres::Client {
        &self.client
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_without_a_password_and_show_none() {
        let url = CoordinatorUrl::parse("postgres://etl@db.internal:6432/warehouse").unwrap();
        assert_eq!(
            (url.user(), url.host(), url.port(), url.database()),
            ("etl", "db.internal", 6432, "warehouse")
        );
        assert_eq!(url.to_string(), "postgres://etl@db.internal:6432/warehouse");
        let url = CoordinatorUrl::parse("postgresql://etl@127.0.0.1/").unwrap();
        assert_eq!((url.port(), url.database()), (5432, "etl"));

        let refused = CoordinatorUrl::parse("postgres://etl:hunter2@db/warehouse").unwrap_err();
        let message = refused.to_string();
        assert!(message.contains("PGPASSWORD"), "{message}");
        assert!(!message.contains("hunter2"), "{message}");
        let refused =
            CoordinatorUrl::parse("postgres://etl@db/warehouse?password=hunter2&sslmode=require")
                .unwrap_err()
                .to_string();
        assert!(refused.contains("PGPASSWORD"), "{refused}");
        assert!(!refused.contains("hunter2"), "{refused}");
        for bad in ["mysql://etl@db/x", "db.internal", "postgres:///x"] {
            assert!(CoordinatorUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_password_file_is_read_as_libpq_reads_it() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pgpass");
        std::fs::write(
            &file,
            "# comment\nother:5432:*:etl:wrong\ndb.internal:6432:warehouse:etl:s\\:cr\\\\et\n*:*:*:*:fallback\n",
        )
        .unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        let url = CoordinatorUrl::parse("postgres://etl@db.internal:6432/warehouse").unwrap();
        assert_eq!(passfile_password(&file, &url).as_deref(), Some("s:cr\\et"));
        let other = CoordinatorUrl::parse("postgres://bob@elsewhere/x").unwrap();
        assert_eq!(
            passfile_password(&file, &other).as_deref(),
            Some("fallback")
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
            assert_eq!(
                passfile_password(&file, &url),
                None,
                "a readable file is ignored"
            );
        }
    }

    #[test]
    fn a_key_id_is_a_stable_hash_that_holds_no_part_of_the_key() {
        let key = crate::api::ApiKey::new("pk_live_0123456789abcdef").unwrap();
        let id = KeyId::of(&key);
        assert_eq!(id, KeyId::of(&key));
        assert_eq!(id.as_str().len(), 32);
        assert!(!id.as_str().contains("0123456789abcdef"));
        assert_ne!(
            id,
            KeyId::of(&crate::api::ApiKey::new("pk_live_other").unwrap())
        );
    }
}
