//! Per-key rate-limit windows of the sandbox: rolling windows that count records.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::vendor::plan::{QuotaWindow, RateLimits};

/// A rolling window: the records admitted in the last `length`.
#[derive(Debug, Clone)]
struct RollingWindow {
    limit: u64,
    length: Duration,
    log: VecDeque<(Instant, u64)>,
    used: u64,
}

impl RollingWindow {
    fn new(limit: u64, length: Duration) -> Self {
        RollingWindow {
            limit,
            length,
            log: VecDeque::new(),
            used: 0,
        }
    }

    fn expire(&mut self, now: Instant) {
        while let Some(&(at, n)) = self.log.front() {
            if now.duration_since(at) < self.length {
                break;
            }
            self.used -= n;
            self.log.pop_front();
        }
    }

    fn left(&self) -> u64 {
        self.limit.saturating_sub(self.used)
    }

    /// Seconds until the oldest counted record leaves the window (0 when nothing is counted).
    fn reset_seconds(&self, now: Instant) -> u64 {
        self.log.front().map_or(0, |&(at, _)| {
            let left = self.length.saturating_sub(now.duration_since(at));
            left.as_secs() + u64::from(left.subsec_nanos() > 0)
        })
    }
}

/// The three windows of one key.
#[derive(Debug, Clone)]
pub struct QuotaWindows {
    limits: RateLimits,
    windows: [RollingWindow; 3],
}

/// What the headers report about a key's quota at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaReport {
    pub limits: RateLimits,
    pub minute_left: u64,
    pub day_left: u64,
    pub minute_reset_seconds: u64,
    pub day_reset_seconds: u64,
}

impl QuotaWindows {
    /// Empty windows for these limits.
    pub fn new(limits: RateLimits) -> Self {
        let windows = limits
            .windows()
            .map(|(window, limit)| RollingWindow::new(limit, window.length()));
        QuotaWindows { limits, windows }
    }

    /// The first window that `records` more records would overflow, if any.
    ///
    /// The vendor counts one per record and does not say what happens to a bulk call larger than
    /// the per-second limit (Pro allows 30 a second, a bulk call carries up to 50). The sandbox
    /// reads the per-second limit as a burst limit: such a call is admitted when it is alone in
    /// its second, so the per-minute and per-day limits are what bound a steady client.
    pub fn check(&mut self, now: Instant, records: u64) -> Option<QuotaWindow> {
        let kinds = [QuotaWindow::Second, QuotaWindow::Minute, QuotaWindow::Day];
        for (kind, window) in kinds.into_iter().zip(self.windows.iter_mut()) {
            window.expire(now);
            let alone_in_its_second = kind == QuotaWindow::Second && window.used == 0;
            if window.used + records > window.limit && !alone_in_its_second {
                return Some(kind);
            }
        }
        None
    }

    /// Counts `records` as sent now. Call only for requests that succeeded.
    pub fn record(&mut self, now: Instant, records: u64) {
        for window in &mut self.windows {
            window.expire(now);
            window.used += records;
            window.log.push_back((now, records));
        }
    }

    /// The quota as the response headers report it.
    pub fn report(&mut self, now: Instant) -> QuotaReport {
        for window in &mut self.windows {
            window.expire(now);
        }
        let [_, minute, day] = &self.windows;
        QuotaReport {
            limits: self.limits,
            minute_left: minute.left(),
            day_left: day.left(),
            minute_reset_seconds: minute.reset_seconds(now),
            day_reset_seconds: day.reset_seconds(now),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_count_records_and_roll() {
        let mut q = QuotaWindows::new(RateLimits::new(30, 100, 150));
        let t0 = Instant::now();
        assert_eq!(
            q.check(t0, 50),
            None,
            "a bulk call larger than the per-second limit, alone"
        );
        q.record(t0, 50);
        assert_eq!(q.check(t0, 1), Some(QuotaWindow::Second));
        let t1 = t0 + Duration::from_millis(1000);
        assert_eq!(q.check(t1, 50), None);
        q.record(t1, 50);
        let t2 = t0 + Duration::from_secs(2);
        assert_eq!(q.check(t2, 1), Some(QuotaWindow::Minute));
        let report = q.report(t2);
        assert_eq!((report.minute_left, report.day_left), (0, 50));
        assert_eq!(report.minute_reset_seconds, 58);
        let t3 = t0 + Duration::from_secs(61);
        assert_eq!(q.check(t3, 50), None);
        q.record(t3, 50);
        assert_eq!(
            q.check(t3 + Duration::from_secs(120), 1),
            Some(QuotaWindow::Day)
        );
        let report = q.report(t3 + Duration::from_secs(120));
        assert_eq!(report.day_left, 0);
        assert_eq!(report.day_reset_seconds, 24 * 3600 - 120 - 61);
    }
}
