//! Room for a request: reserved in this process's pacer or booked in the key's shared
//! windows, then confirmed once the server processed the request, or released.

use std::time::{Duration, Instant};

use super::{Client, Sent};
use crate::api::pacing::{Admission, Moment, Reservation};
use crate::api::retry::Attempt;
use crate::coordinator::Booking;
use crate::vendor::endpoint::Endpoint;
use crate::vendor::outcome::DeferReason;
use crate::vendor::plan::QuotaWindow;
use crate::vendor::tally::Tally;

/// Room for one request: in this process's pacer, or in the key's shared windows.
pub(super) enum Slot {
    Local(Reservation),
    /// A booking, and when it is due by this process's clock.
    Shared(Booking, Instant),
}

/// How late a shared booking may be sent: later, it may crowd windows other workers booked
/// against, so it is booked again.
pub(super) const LATE: Duration = Duration::from_millis(120);

impl Client {
    /// Waits for the pacer to admit `n` records, at most `patience` (and `max_quota_wait`);
    /// the records settled as deferred (or the request to split) when it does not.
    pub(super) async fn pace(
        &self,
        n: usize,
        patience: Duration,
        tally: &mut Tally,
    ) -> std::result::Result<Reservation, Sent> {
        let (inner, pacer) = (&self.inner, &self.inner.pacer);
        let now = Moment::now();
        let patience = inner.settings.max_quota_wait.min(patience);
        let reservation = match pacer.reserve(now, n as u64, patience) {
            Admission::Send(reservation) => reservation,
            Admission::Defer { until, window } => {
                // The day's last records of quota are used rather than left idle.
                let left = pacer.left_today(now) as usize;
                if window == QuotaWindow::Day && n > 1 && left > 0 && left < n {
                    return Err(Sent::Split(left));
                }
                let reason = match window {
                    QuotaWindow::Day => DeferReason::DailyQuota,
                    _ => DeferReason::RateLimited,
                };
                return Err(self.deferred(tally, n, reason, Some(now.wall_of(until))));
            }
        };
        let wait = reservation.send_at.saturating_duration_since(now.instant);
        inner
            .totals
            .count(tally, |t| t.quota_wait_ms += wait.as_millis() as u64);
        tokio::time::sleep_until(reservation.send_at.into()).await;
        Ok(reservation)
    }

    /// One attempt on the wire; settles its reservation: counted when the server processed the
    /// request, released otherwise (failed requests do not count, reference).
    pub(super) async fn exchange(
        &self,
        endpoint: Endpoint,
        body: &bytes::Bytes,
        slot: Slot,
    ) -> Attempt {
        let pacer = &self.inner.pacer;
        let exchange = self.inner.vendor.post_bulk(endpoint, body).await;
        let processed = matches!(exchange.attempt, Attempt::Answered(_) | Attempt::Lost(_));
        match (slot, processed) {
            (Slot::Local(reservation), true) => pacer.confirm(reservation, exchange.answered_at),
            (Slot::Shared(booking, _), true) => {
                if let Some(shared) = self.shared() {
                    shared.confirm(&booking).await;
                }
            }
            (slot, false) => self.release(slot).await,
        }
        if let Some(quota) = &exchange.quota {
            pacer.observe(exchange.answered_at, quota);
            if let Some(shared) = self.shared() {
                self.share_limits(shared, quota).await;
            }
        }
        exchange.attempt
    }

    /// Frees a slot that was not used.
    pub(super) async fn release(&self, slot: Slot) {
        match slot {
            Slot::Local(reservation) => self.inner.pacer.release(reservation),
            Slot::Shared(booking, _) => {
                if let Some(shared) = self.shared() {
                    shared.release(&booking).await;
                }
            }
        }
    }
}
