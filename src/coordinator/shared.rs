//! A client's handle on the coordinator: one connection (the load is about one reservation a
//! second per key), made on first use, kept alive by heartbeats, and made again when it drops.
//!
//! Faults: the first connection failing is an error (nothing was sent yet: the job stops with
//! a clear message). A connection lost later is waited for, at most the patience given; past
//! it the coordinator counts as lost for the rest of this client's life and every call says
//! [`SharedError::Unavailable`] at once (the client defers the rest of its records: sending on
//! local pacing alone would overrun the quota other workers share).

use std::fmt;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use tokio::sync::MutexGuard;

use super::claims::{ClaimState, Clearance};
use super::pacing::Reserved;
use super::{Booking, Coordinator, CoordinatorPassword, CoordinatorUrl, KeyId, password_for};
use crate::error::Error;
use crate::vendor::plan::RateLimits;

/// Why a shared operation did not happen.
#[derive(Debug)]
pub enum SharedError {
    /// The coordinator was lost and did not come back in time.
    Unavailable,
    /// The coordinator could not be used at all (unreachable at start, no schema, a newer
    /// schema): the job stops.
    Fatal(Error),
}

/// Longest wait for one operation's answer (the server ends a statement after 30 s).
const OPERATION_TIMEOUT: Duration = Duration::from_secs(35);

const NEVER_CONNECTED: u8 = 0;
const CONNECTED: u8 = 1;
const LOST: u8 = 2;

/// The coordinator as one client of one key uses it.
pub struct Shared {
    url: CoordinatorUrl,
    password: Option<CoordinatorPassword>,
    /// The API whose answers are shared.
    base_url: String,
    key: KeyId,
    worker: String,
    lease: Duration,
    patience: Duration,
    connection: tokio::sync::Mutex<Option<Coordinator>>,
    state: AtomicU8,
    /// When this client first connected, by the database's clock (seconds since the epoch).
    since: OnceLock<f64>,
    heartbeat: Mutex<Option<tokio::task::AbortHandle>>,
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared")
            .field("url", &self.url)
            .field("worker", &self.worker)
            .field("lease", &self.lease)
            .field("patience", &self.patience)
            .finish()
    }
}

/// Runs `$op` (an expression using `$c: &mut Coordinator`) on the connection, reconnecting and
/// trying again until the patience runs out.
macro_rules! on_connection {
    ($shared:expr, |$c:ident| $op:expr) => {{
        let shared: &Shared = $shared;
        let mut deadline = None;
        loop {
            let mut guard = match shared.connection(&mut deadline).await {
                Ok(guard) => guard,
                Err(e) => break Err(e),
            };
            let Some($c) = guard.as_mut() else {
                continue;
            };
            // A statement the server never answers (a silent network cut) counts as a lost
            // connection; the server ends its own statements after 30 s.
            let done = match tokio::time::timeout(OPERATION_TIMEOUT, $op).await {
                Ok(done) => done,
                Err(_) => Err(Error::Config(format!(
                    "the coordinator {} did not answer in {} s",
                    shared.url,
                    OPERATION_TIMEOUT.as_secs()
                ))),
            };
            match done {
                Ok(value) => break Ok(value),
                Err(e) => {
                    if let Err(gave_up) = shared.dropped(&mut guard, &e, &mut deadline) {
                        break Err(gave_up);
                    }
                    drop(guard);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }};
}

impl Shared {
    /// A handle for `key`'s worker; connects on first use. `lease`: how long this worker's
    /// claims outlive its last heartbeat; `patience`: how long a lost coordinator is waited for.
    /// `password`: given by the program; `None`, libpq's places. `base_url`: the API whose
    /// answers are shared.
    pub fn new(
        url: CoordinatorUrl,
        password: Option<CoordinatorPassword>,
        base_url: &str,
        key: KeyId,
        lease: Duration,
        patience: Duration,
    ) -> Arc<Self> {
        let worker = format!(
            "{}:{}:{:08x}",
            super::claims::host_name(),
            std::process::id(),
            random_u32()
        );
        Arc::new(Shared {
            url,
            password,
            base_url: base_url.to_string(),
            key,
            worker,
            lease: lease.max(Duration::from_secs(1)),
            patience,
            connection: tokio::sync::Mutex::new(None),
            state: AtomicU8::new(NEVER_CONNECTED),
            since: OnceLock::new(),
            heartbeat: Mutex::new(None),
        })
    }

    /// The coordinator's (redacted) address.
    pub fn url(&self) -> &CoordinatorUrl {
        &self.url
    }

    /// This worker's name in the coordinator.
    pub fn worker(&self) -> &str {
        &self.worker
    }

    /// Whether the coordinator was lost for good.
    pub fn is_lost(&self) -> bool {
        self.state.load(Ordering::SeqCst) == LOST
    }

    /// Connects now (the job's first step: an unreachable coordinator stops it before anything
    /// is sent).
    pub async fn ready(self: &Arc<Self>) -> Result<(), SharedError> {
        let mut deadline = None;
        self.connection(&mut deadline).await.map(|_| ())
    }

    /// The connection, made (again) when there is none: the first time once, later until
    /// `deadline` (set on the first failure).
    async fn connection(
        &self,
        deadline: &mut Option<Instant>,
    ) -> Result<MutexGuard<'_, Option<Coordinator>>, SharedError> {
        let mut pause = Duration::from_millis(100);
        loop {
            if self.state.load(Ordering::SeqCst) == LOST {
                return Err(SharedError::Unavailable);
            }
            let mut guard = self.connection.lock().await;
            if guard.is_some() {
                return Ok(guard);
            }
            let error = match self.connect().await {
                Ok(coordinator) => {
                    *guard = Some(coordinator);
                    if self.state.swap(CONNECTED, Ordering::SeqCst) == NEVER_CONNECTED {
                        tracing::debug!(coordinator = %self.url, worker = %self.worker, "connected");
                    } else {
                        tracing::warn!(coordinator = %self.url, "the coordinator is back");
                    }
                    return Ok(guard);
                }
                Err(e) => e,
            };
            drop(guard);
            if self.state.load(Ordering::SeqCst) == NEVER_CONNECTED {
                return Err(SharedError::Fatal(error));
            }
            let deadline = *deadline.get_or_insert_with(|| Instant::now() + self.patience);
            if Instant::now() >= deadline {
                return Err(self.give_up(&error));
            }
            tracing::debug!(error = %error, "the coordinator is unreachable; trying again");
            tokio::time::sleep(pause.min(deadline.saturating_duration_since(Instant::now()))).await;
            pause = (pause * 2).min(Duration::from_secs(2));
        }
    }

    /// The coordinator stays lost for this client.
    fn give_up(&self, error: &Error) -> SharedError {
        if self.state.swap(LOST, Ordering::SeqCst) != LOST {
            tracing::error!(
                "{error}; waited {:?} for the coordinator to return: the records not yet sent are deferred",
                self.patience
            );
        }
        SharedError::Unavailable
    }

    /// An operation failed: the connection is dropped (and made again on the next try, until
    /// the patience runs out).
    /// An operation that keeps failing on a connection that works (a statement the server
    /// refuses) gives up at the same deadline as a lost connection.
    fn dropped(
        &self,
        guard: &mut MutexGuard<'_, Option<Coordinator>>,
        error: &Error,
        deadline: &mut Option<Instant>,
    ) -> Result<(), SharedError> {
        **guard = None;
        let deadline = *deadline.get_or_insert_with(|| Instant::now() + self.patience);
        if Instant::now() >= deadline {
            return Err(self.give_up(error));
        }
        tracing::warn!("{error}; reconnecting");
        Ok(())
    }

    /// Connects, checks the schema, records this worker and starts its heartbeat.
    async fn connect(&self) -> crate::error::Result<Coordinator> {
        let password = match &self.password {
            Some(password) => Some(password.expose().to_string()),
            None => password_for(&self.url),
        };
        let mut coordinator = Coordinator::connect_with_password(&self.url, password).await?;
        coordinator.set_api(&self.base_url);
        coordinator.check_version().await?;
        coordinator
            .heartbeat(&self.key, &self.worker, self.lease)
            .await?;
        if self.since.get().is_none() {
            let now = coordinator.server_now().await?;
            let _ = self.since.set(now);
        }
        Ok(coordinator)
    }

    /// Starts the heartbeat (once): every third of the lease, this worker's lease and claims
    /// are renewed. It ends with the handle.
    pub fn start_heartbeat(self: &Arc<Self>) {
        let mut heartbeat = self.heartbeat.lock().unwrap_or_else(|e| e.into_inner());
        if heartbeat.is_some() {
            return;
        }
        let weak: Weak<Shared> = Arc::downgrade(self);
        let every = self.lease / 3;
        let task = tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let Some(shared) = weak.upgrade() else {
                    return;
                };
                if shared.is_lost() {
                    return;
                }
                let mut guard = shared.connection.lock().await;
                let renewed = match guard.as_ref() {
                    Some(c) => c.heartbeat(&shared.key, &shared.worker, shared.lease).await,
                    None => continue,
                };
                if let Err(e) = renewed {
                    tracing::warn!("{e}; the heartbeat is retried");
                    *guard = None;
                }
            }
        });
        *heartbeat = Some(task.abort_handle());
    }

    /// Books `records` in the shared windows, unless they would wait longer than `max_wait`.
    pub async fn reserve(
        &self,
        records: u32,
        limits: &RateLimits,
        max_wait: Duration,
    ) -> Result<Reserved, SharedError> {
        let (key, worker) = (&self.key, &self.worker);
        on_connection!(self, |c| c.reserve_within(
            key,
            records,
            limits,
            worker,
            Some(max_wait)
        ))
    }

    /// Whether to send now (checked right before sending: a block another worker met, or the
    /// credits' end).
    /// `records`: the record keys about to be sent, whose claims must still be this worker's.
    pub async fn clearance(&self, records: &[Vec<u8>]) -> Result<Clearance, SharedError> {
        let since = self.since.get().copied().unwrap_or(f64::MAX);
        on_connection!(self, |c| c.clearance(
            &self.key,
            since,
            &self.worker,
            records,
            self.lease
        ))
    }

    /// The booked request was answered: its records count from now.
    pub async fn confirm(&self, booking: &Booking) {
        if let Err(e) = on_connection!(self, |c| c.confirm(booking)) {
            tracing::debug!("a booking was not confirmed: {e:?}");
        }
    }

    /// The booked request was not processed: its records are free again.
    pub async fn release(&self, booking: &Booking) {
        if let Err(e) = on_connection!(self, |c| c.release(booking)) {
            tracing::debug!("a booking was not released: {e:?}");
        }
    }

    /// No worker of the key sends for `duration`.
    pub async fn block_for(&self, duration: Duration) {
        if let Err(e) = on_connection!(self, |c| c.block_for(&self.key, duration)) {
            tracing::debug!("a block was not shared: {e:?}");
        }
    }

    /// The account has no credits left: every worker of the key stops sending.
    pub async fn out_of_credits(&self) {
        if let Err(e) = on_connection!(self, |c| c.out_of_credits(&self.key)) {
            tracing::debug!("the credits' end was not shared: {e:?}");
        }
    }

    /// The key's limits as the vendor reported them.
    pub async fn learn_limits(&self, limits: [Option<u64>; 3]) {
        let [second, minute, day] = limits;
        if let Err(e) = on_connection!(self, |c| c.learn_limits(&self.key, second, minute, day)) {
            tracing::debug!("the key's limits were not shared: {e:?}");
        }
    }

    /// Claims record keys for this worker.
    pub async fn claim(&self, records: &[Vec<u8>]) -> Result<Vec<ClaimState>, SharedError> {
        on_connection!(self, |c| c.claim(
            &self.key,
            &self.worker,
            records,
            self.lease
        ))
    }

    /// The stored answers of record keys.
    pub async fn answers(&self, records: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>, SharedError> {
        on_connection!(self, |c| c.answers(records))
    }

    /// Stores answers and releases this worker's claims on `release` in one transaction.
    pub async fn store_and_release(
        &self,
        answers: &[(Vec<u8>, Vec<u8>)],
        release: &[Vec<u8>],
    ) -> Result<(), SharedError> {
        if answers.is_empty() && release.is_empty() {
            return Ok(());
        }
        on_connection!(self, |c| c.store_and_release(
            &self.key,
            &self.worker,
            answers,
            release
        ))
    }
}

impl Shared {
    /// This worker is done: its claims are released and its row removed now, rather than when
    /// its lease runs out. Best effort (a lost coordinator lets the lease end them).
    pub async fn leave(&self) {
        let left = tokio::time::timeout(Duration::from_secs(5), async {
            let guard = self.connection.lock().await;
            match guard.as_ref() {
                Some(coordinator) => coordinator.leave(&self.key, &self.worker).await,
                None => Ok(()),
            }
        })
        .await;
        if !matches!(left, Ok(Ok(()))) {
            tracing::debug!("this worker did not leave the coordinator; its lease ends its claims");
        }
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        if let Some(task) = self
            .heartbeat
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            task.abort();
        }
        // This worker's claims and row go at once rather than when the lease runs out.
        let coordinator = self.connection.get_mut().take();
        if let (Some(coordinator), Ok(runtime)) =
            (coordinator, tokio::runtime::Handle::try_current())
        {
            let (key, worker) = (self.key.clone(), self.worker.clone());
            runtime.spawn(async move {
                let _ = coordinator.leave(&key, &worker).await;
            });
        }
    }
}

/// A random number for the worker's name (two processes with one pid on two hosts, or a pid
/// reused, stay apart).
fn random_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    hasher.finish() as u32
}
