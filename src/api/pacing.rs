//! Pacing: one limiter over records, shared by every caller of a client, that keeps sends inside
//! the plan's per-second, per-minute and rolling per-day windows (reference, "Rate limits": "A
//! bulk call counts ONE PER SUBMITTED RECORD").
//!
//! Callers reserve a send time for a number of records; reservations are handed out in order
//! (first come, first served), so concurrent callers share the quota fairly and no window is
//! ever overbooked by the client's own sends. The limiter trusts the server over itself: when the
//! `x-*-request-left` headers report fewer records left than it believes, it books the difference
//! until the reset the headers give.

use std::collections::VecDeque;
use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use crate::vendor::plan::{QuotaWindow, RateLimits};

/// A point in time read from both clocks at once: the monotonic clock, on which this process
/// waits, and the wall clock, the only one a pacer shared with other processes can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Moment {
    /// On the monotonic clock.
    pub instant: Instant,
    /// On the wall clock.
    pub wall: SystemTime,
}

/// The latest a [`Moment::after`] reaches when the duration asked overflows the clock.
const FAR_OFF: Duration = Duration::from_secs(365 * 24 * 60 * 60);

impl Moment {
    /// Now.
    pub fn now() -> Moment {
        Moment {
            instant: Instant::now(),
            wall: SystemTime::now(),
        }
    }

    /// `duration` later, on both clocks.
    pub fn after(self, duration: Duration) -> Moment {
        Moment {
            // A far-off time rather than a panic when a server's number is absurd.
            instant: self
                .instant
                .checked_add(duration)
                .or_else(|| self.instant.checked_add(FAR_OFF))
                .unwrap_or(self.instant),
            wall: self.wall.checked_add(duration).unwrap_or(self.wall),
        }
    }

    /// The wall-clock time of `instant`, reckoned from this moment.
    pub fn wall_of(self, instant: Instant) -> SystemTime {
        if instant >= self.instant {
            self.wall + (instant - self.instant)
        } else {
            self.wall
                .checked_sub(self.instant - instant)
                .unwrap_or(self.wall)
        }
    }

    /// The monotonic instant of a wall-clock time, reckoned from this moment.
    pub fn instant_of(self, wall: SystemTime) -> Instant {
        match wall.duration_since(self.wall) {
            Ok(ahead) => self.instant + ahead,
            Err(behind) => self
                .instant
                .checked_sub(behind.duration())
                .unwrap_or(self.instant),
        }
    }
}

/// Paces sends to the plan's quota, for every caller of a client. Times are [`Moment`]s, so an
/// implementation shared across processes (one backed by a database) can keep its books in
/// wall-clock time; [`QuotaLimiter`] is the in-process one.
pub trait Pacer: Send + Sync + fmt::Debug {
    /// The largest request the limits allow, at most `wanted` records.
    fn max_request_records(&self, wanted: usize) -> usize;
    /// Records the per-day window still admits at `now`.
    fn left_today(&self, now: Moment) -> u64;
    /// Reserves the earliest send time for `records` records, or says to defer them when that
    /// time is more than `max_wait` away.
    fn reserve(&self, now: Moment, records: u64, max_wait: Duration) -> Admission;
    /// The request was answered with success at `answered_at`: its records count.
    fn confirm(&self, reservation: Reservation, answered_at: Moment);
    /// The request failed: its records are free again.
    fn release(&self, reservation: Reservation);
    /// No send before `until` (after a rate limit that said `window` was used up).
    fn block_until(&self, until: Moment, window: QuotaWindow);
    /// Adapts to the quota a response's headers reported at `now`.
    fn observe(&self, now: Moment, headers: &QuotaHeaders);
}

/// A reserved send: `records` records may be sent at `send_at`.
#[derive(Debug)]
#[must_use = "a reservation must be confirmed or released"]
pub struct Reservation {
    id: u64,
    /// Records reserved.
    pub records: u64,
    /// When the records may be sent.
    pub send_at: Instant,
}

impl Reservation {
    /// A reservation a [`Pacer`] hands out; `id` is the pacer's own, to find it again.
    pub fn new(id: u64, records: u64, send_at: Instant) -> Self {
        Reservation {
            id,
            records,
            send_at,
        }
    }

    /// The pacer's identifier of this reservation.
    pub fn id(&self) -> u64 {
        self.id
    }
}

/// What the limiter says about a send.
#[derive(Debug)]
pub enum Admission {
    /// Send at the reservation's time.
    Send(Reservation),
    /// The quota does not return within the caller's patience: the records should be deferred.
    Defer {
        /// When the quota returns.
        until: Instant,
        /// The window that is exhausted.
        window: QuotaWindow,
    },
}

/// The quota as a response's headers report it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QuotaHeaders {
    /// `x-minute-request-left`: records left this minute.
    pub minute_left: Option<u64>,
    /// `x-minute-reset-seconds`: seconds until the minute's quota returns.
    pub minute_reset_seconds: Option<u64>,
    /// `x-daily-request-left`: records left in the rolling day.
    pub day_left: Option<u64>,
    /// `x-daily-reset-seconds`: seconds until the day's quota returns.
    pub day_reset_seconds: Option<u64>,
    /// `x-second-rate-limit`: the key's records a second.
    pub second_limit: Option<u64>,
    /// `x-minute-rate-limit`: the key's records a minute.
    pub minute_limit: Option<u64>,
    /// `x-daily-rate-limit`: the key's records a day.
    pub day_limit: Option<u64>,
}

impl QuotaHeaders {
    /// Reads the `x-*` headers of a response; absent or malformed headers are `None`.
    pub fn from_headers(headers: &reqwest::header::HeaderMap) -> Self {
        use crate::vendor::plan::headers as h;
        let number = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<f64>().ok())
                .filter(|v| v.is_finite() && *v >= 0.0)
                .map(|v| v.ceil() as u64)
        };
        // A window resets within its length: a larger reset is a server's mistake, read as
        // the window's length (and never a time the clock cannot hold).
        let reset = |name: &str, window: QuotaWindow| {
            number(name).map(|v| v.min(window.length().as_secs()))
        };
        QuotaHeaders {
            minute_left: number(h::MINUTE_LEFT),
            minute_reset_seconds: reset(h::MINUTE_RESET_SECONDS, QuotaWindow::Minute),
            day_left: number(h::DAILY_LEFT),
            day_reset_seconds: reset(h::DAILY_RESET_SECONDS, QuotaWindow::Day),
            second_limit: number(h::SECOND_LIMIT),
            minute_limit: number(h::MINUTE_LIMIT),
            day_limit: number(h::DAILY_LIMIT),
        }
    }

    /// How long the server says to wait before records are available again, when a window is
    /// empty: the day's reset when the day is used up, else the minute's.
    pub fn wait_hint(&self) -> Option<(QuotaWindow, Duration)> {
        if self.day_left == Some(0) {
            return self
                .day_reset_seconds
                .map(|s| (QuotaWindow::Day, Duration::from_secs(s)));
        }
        if self.minute_left == Some(0) {
            return self
                .minute_reset_seconds
                .map(|s| (QuotaWindow::Minute, Duration::from_secs(s)));
        }
        None
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    id: u64,
    at: Instant,
    records: u64,
}

#[derive(Debug)]
struct Log {
    kind: QuotaWindow,
    limit: u64,
    length: Duration,
    entries: VecDeque<Entry>,
}

impl Log {
    fn new(kind: QuotaWindow, limit: u64) -> Self {
        Log {
            kind,
            limit,
            length: kind.length() + safety_margin(kind),
            entries: VecDeque::new(),
        }
    }

    /// Drops entries that no longer count at `now`. Entries are kept in booking order; an
    /// entry is dropped only when it and every entry booked before it have expired, which can
    /// only keep records counted longer than necessary, never shorter.
    fn expire(&mut self, now: Instant) {
        let mut latest = None::<Instant>;
        while let Some(front) = self.entries.front() {
            let expiry = latest.map_or(front.at, |l| l.max(front.at)) + self.length;
            if expiry > now {
                break;
            }
            latest = Some(latest.map_or(front.at, |l| l.max(front.at)));
            self.entries.pop_front();
        }
    }

    /// Records counted at `at` (entries booked at or before `at`).
    fn used_at(&self, at: Instant) -> u64 {
        self.entries
            .iter()
            .filter(|e| e.at <= at && e.at + self.length > at)
            .map(|e| e.records)
            .sum()
    }

    /// The earliest time `>= from` at which `records` more fit. Every entry is at or before
    /// `from` (reservations are handed out in order), so the count only falls after `from`.
    /// The per-second window admits a send larger than its limit when it is alone in its
    /// second (see `sandbox::quota`); the caller keeps sends within the other limits.
    fn earliest(&self, from: Instant, records: u64) -> Instant {
        let mut used: u64 = self.entries.iter().map(|e| e.records).sum();
        let allowed = if self.kind == QuotaWindow::Second {
            self.limit.max(records)
        } else {
            self.limit
        };
        if used + records <= allowed {
            return from;
        }
        let mut latest = None::<Instant>;
        for entry in &self.entries {
            latest = Some(latest.map_or(entry.at, |l: Instant| l.max(entry.at)));
            used -= entry.records;
            if used + records <= allowed {
                return latest.map_or(from, |l| (l + self.length).max(from));
            }
        }
        from
    }
}

/// Added to each window's length: the server counts a request when it processes it, some time
/// after the client sent it, and that delay varies from one request to the next. Without a
/// margin a send paced exactly one window after another can reach the server a little inside
/// the window and draw a 429. Costs under 3% of throughput.
fn safety_margin(kind: QuotaWindow) -> Duration {
    match kind {
        QuotaWindow::Second => Duration::from_millis(25),
        QuotaWindow::Minute => Duration::from_millis(500),
        QuotaWindow::Day => Duration::from_secs(30),
    }
}

#[derive(Debug)]
struct State {
    logs: [Log; 3],
    /// No send before this (set after a 429 or by the server's headers).
    blocked_until: Option<Instant>,
    /// The window the server said was used up when it set `blocked_until`.
    blocked_window: QuotaWindow,
    /// The latest reservation handed out: reservations are first come, first served.
    last_reserved: Option<Instant>,
    next_id: u64,
}

/// The shared limiter over records (see the module docs).
#[derive(Debug)]
pub struct QuotaLimiter {
    state: Mutex<State>,
}

impl QuotaLimiter {
    /// A limiter for these limits.
    pub fn new(limits: RateLimits) -> Self {
        let logs = limits
            .windows()
            .map(|(kind, limit)| Log::new(kind, limit.max(1)));
        QuotaLimiter {
            state: Mutex::new(State {
                logs,
                blocked_until: None,
                blocked_window: QuotaWindow::Minute,
                last_reserved: None,
                next_id: 0,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The largest request the limits allow: the per-minute and per-day limits cap it (the
    /// per-second limit does not: see `Log::earliest`).
    pub fn max_request_records(&self, wanted: usize) -> usize {
        let state = self.lock();
        let cap = state.logs[1].limit.min(state.logs[2].limit);
        wanted.min(cap as usize).max(1)
    }

    /// Records the per-day window still admits at `now`.
    pub fn left_today(&self, now: Instant) -> u64 {
        let mut state = self.lock();
        let day = &mut state.logs[2];
        day.expire(now);
        let used: u64 = day.entries.iter().map(|e| e.records).sum();
        day.limit.saturating_sub(used)
    }

    /// Reserves the earliest send time for `records` records, or says to defer them when that
    /// time is more than `max_wait` away.
    pub fn reserve(&self, now: Instant, records: u64, max_wait: Duration) -> Admission {
        let mut state = self.lock();
        for log in &mut state.logs {
            log.expire(now);
        }
        let mut at = now;
        for bound in [state.blocked_until, state.last_reserved]
            .into_iter()
            .flatten()
        {
            at = at.max(bound);
        }
        let mut limiting = QuotaWindow::Second;
        // Moving later only frees capacity, so one pass from the longest window settles it.
        for log in state.logs.iter().rev() {
            let earliest = log.earliest(at, records);
            if earliest > at {
                at = earliest;
                limiting = log.kind;
            }
        }
        if at.saturating_duration_since(now) > max_wait {
            let window = if state.blocked_until.is_some_and(|b| b >= at) {
                state.blocked_window
            } else {
                limiting
            };
            return Admission::Defer { until: at, window };
        }
        let id = state.next_id;
        state.next_id += 1;
        state.last_reserved = Some(at);
        for log in &mut state.logs {
            log.entries.push_back(Entry { id, at, records });
        }
        Admission::Send(Reservation {
            id,
            records,
            send_at: at,
        })
    }

    /// The request was answered with success at `answered_at`: its records count from then
    /// (the server counted them somewhere between the send and the answer).
    pub fn confirm(&self, reservation: Reservation, answered_at: Instant) {
        let mut state = self.lock();
        for log in &mut state.logs {
            if let Some(entry) = log.entries.iter_mut().find(|e| e.id == reservation.id) {
                entry.at = entry.at.max(answered_at);
            }
        }
    }

    /// The request failed: failed requests do not count (reference), so its records are free
    /// again.
    pub fn release(&self, reservation: Reservation) {
        let mut state = self.lock();
        for log in &mut state.logs {
            log.entries.retain(|e| e.id != reservation.id);
        }
    }

    /// No send before `until` (after a 429 that said `window` was used up).
    pub fn block_until(&self, until: Instant, window: QuotaWindow) {
        let mut state = self.lock();
        if state.blocked_until.is_none_or(|b| until >= b) {
            state.blocked_until = Some(until);
            state.blocked_window = window;
        }
    }

    /// Adapts to what the server reports at `now`: lower limits than configured are adopted,
    /// and when fewer records are left than the limiter believes, the difference is booked
    /// until the window's reset.
    pub fn observe(&self, now: Instant, headers: &QuotaHeaders) {
        let mut guard = self.lock();
        let state = &mut *guard;
        let next_id = &mut state.next_id;
        let [second, minute, day] = &mut state.logs;
        for (log, limit) in [
            (&mut *second, headers.second_limit),
            (&mut *minute, headers.minute_limit),
            (&mut *day, headers.day_limit),
        ] {
            if let Some(limit) = limit.filter(|l| *l > 0 && *l < log.limit) {
                log.limit = limit;
            }
        }
        for (log, left, reset) in [
            (minute, headers.minute_left, headers.minute_reset_seconds),
            (day, headers.day_left, headers.day_reset_seconds),
        ] {
            let Some(server_left) = left else { continue };
            log.expire(now);
            let believed_left = log.limit.saturating_sub(log.used_at(now));
            if server_left >= believed_left {
                continue;
            }
            // Book the records the server counts and the limiter does not, so that they
            // expire when the server says the window resets (a full window when it does not).
            let expires_in = reset
                .map_or(log.length, Duration::from_secs)
                .min(log.length);
            let at = (now + expires_in).checked_sub(log.length).unwrap_or(now);
            let id = *next_id;
            *next_id += 1;
            log.entries.push_back(Entry {
                id,
                at,
                records: believed_left - server_left,
            });
        }
    }
}

impl Pacer for QuotaLimiter {
    fn max_request_records(&self, wanted: usize) -> usize {
        QuotaLimiter::max_request_records(self, wanted)
    }
    fn left_today(&self, now: Moment) -> u64 {
        QuotaLimiter::left_today(self, now.instant)
    }
    fn reserve(&self, now: Moment, records: u64, max_wait: Duration) -> Admission {
        QuotaLimiter::reserve(self, now.instant, records, max_wait)
    }
    fn confirm(&self, reservation: Reservation, answered_at: Moment) {
        QuotaLimiter::confirm(self, reservation, answered_at.instant)
    }
    fn release(&self, reservation: Reservation) {
        QuotaLimiter::release(self, reservation)
    }
    fn block_until(&self, until: Moment, window: QuotaWindow) {
        QuotaLimiter::block_until(self, until.instant, window)
    }
    fn observe(&self, now: Moment, headers: &QuotaHeaders) {
        QuotaLimiter::observe(self, now.instant, headers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_absurd_reset_header_is_read_as_the_windows_length_and_never_panics() {
        use crate::vendor::plan::headers as h;
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(h::MINUTE_RESET_SECONDS, "1e19".parse().unwrap());
        headers.insert(h::DAILY_RESET_SECONDS, "99999999999".parse().unwrap());
        let quota = QuotaHeaders::from_headers(&headers);
        assert_eq!(quota.minute_reset_seconds, Some(60));
        assert_eq!(quota.day_reset_seconds, Some(24 * 60 * 60));
        let now = Moment::now();
        assert!(now.after(Duration::MAX).instant > now.instant);
    }

    fn send(admission: Admission) -> Reservation {
        match admission {
            Admission::Send(r) => r,
            Admission::Defer { until, window } => panic!("deferred to {until:?} by {window:?}"),
        }
    }

    const PATIENT: Duration = Duration::from_secs(3600);

    #[test]
    fn a_moment_converts_between_its_clocks() {
        let now = Moment::now();
        let later = now.after(Duration::from_secs(90));
        assert_eq!(now.instant_of(later.wall), later.instant);
        assert_eq!(now.wall_of(later.instant), later.wall);
        let earlier = now.wall - Duration::from_secs(5);
        assert_eq!(
            now.instant_of(earlier),
            now.instant - Duration::from_secs(5)
        );
        // The in-process limiter behind the trait: the same books as its own methods.
        let pacer: &dyn Pacer = &QuotaLimiter::new(RateLimits::new(100, 100, 1000));
        let a = send(pacer.reserve(now, 100, PATIENT));
        pacer.confirm(a, now);
        let b = send(pacer.reserve(now, 10, PATIENT));
        assert_eq!(
            b.send_at.duration_since(now.instant),
            Duration::from_millis(60_500)
        );
        pacer.release(b);
        assert_eq!(pacer.left_today(now), 900);
    }

    #[test]
    fn sends_are_spaced_by_the_per_second_limit_and_bounded_by_the_minute() {
        let limiter = QuotaLimiter::new(RateLimits::new(30, 1800, 500_000));
        let t0 = Instant::now();
        let mut times = Vec::new();
        for _ in 0..40 {
            let r = send(limiter.reserve(t0, 50, PATIENT));
            times.push(r.send_at.duration_since(t0));
        }
        // A 50-record send is admitted alone in its second (plus the margin).
        let second = Duration::from_millis(1025);
        assert_eq!(times[0], Duration::ZERO);
        assert_eq!(times[1], second);
        assert_eq!(times[35], second * 35);
        // 36 sends fill the minute (1,800 records); the 37th waits for the first to expire.
        assert_eq!(times[36], Duration::from_millis(60_500));
        assert_eq!(times[37], Duration::from_millis(60_500) + second);
    }

    #[test]
    fn the_day_window_defers_beyond_the_callers_patience() {
        let limiter = QuotaLimiter::new(RateLimits::new(100, 1000, 120));
        let t0 = Instant::now();
        let a = send(limiter.reserve(t0, 50, Duration::from_secs(60)));
        let b = send(limiter.reserve(t0, 50, Duration::from_secs(60)));
        limiter.confirm(a, t0);
        limiter.confirm(b, t0);
        match limiter.reserve(t0, 50, Duration::from_secs(60)) {
            Admission::Defer { until, window } => {
                assert_eq!(window, QuotaWindow::Day);
                assert_eq!(
                    until.duration_since(t0),
                    QuotaWindow::Day.length() + safety_margin(QuotaWindow::Day)
                );
            }
            Admission::Send(r) => panic!("sent at {:?}", r.send_at.duration_since(t0)),
        }
        // 20 records still fit today.
        let c = send(limiter.reserve(t0, 20, Duration::from_secs(60)));
        limiter.release(c);
    }

    #[test]
    fn released_reservations_free_their_records() {
        let limiter = QuotaLimiter::new(RateLimits::new(100, 100, 1000));
        let t0 = Instant::now();
        let a = send(limiter.reserve(t0, 100, PATIENT));
        limiter.release(a);
        let b = send(limiter.reserve(t0, 100, PATIENT));
        assert_eq!(b.send_at, t0);
        limiter.confirm(b, t0 + Duration::from_millis(300));
        // Counted from the answer, not the send: the minute frees 60.8 s after t0.
        let c = send(limiter.reserve(t0, 10, PATIENT));
        assert_eq!(c.send_at.duration_since(t0), Duration::from_millis(60_800));
    }

    #[test]
    fn the_server_is_believed_when_it_reports_less_quota() {
        let limiter = QuotaLimiter::new(RateLimits::new(30, 1800, 500_000));
        let t0 = Instant::now();
        limiter.observe(
            t0,
            &QuotaHeaders {
                minute_left: Some(0),
                minute_reset_seconds: Some(20),
                day_left: Some(400_000),
                ..Default::default()
            },
        );
        let r = send(limiter.reserve(t0, 50, PATIENT));
        assert_eq!(r.send_at.duration_since(t0), Duration::from_secs(20));
        // A server reporting a lower plan than configured lowers the limits.
        let limiter = QuotaLimiter::new(RateLimits::new(30, 1800, 500_000));
        limiter.observe(
            t0,
            &QuotaHeaders {
                minute_limit: Some(300),
                day_limit: Some(2000),
                ..Default::default()
            },
        );
        assert_eq!(limiter.max_request_records(50), 50);
        for _ in 0..6 {
            let _ = send(limiter.reserve(t0, 50, PATIENT));
        }
        let r = send(limiter.reserve(t0, 50, PATIENT));
        assert_eq!(r.send_at.duration_since(t0), Duration::from_millis(60_500));
    }

    #[test]
    fn a_block_after_a_429_holds_every_caller() {
        let limiter = QuotaLimiter::new(RateLimits::new(30, 1800, 500_000));
        let t0 = Instant::now();
        limiter.block_until(t0 + Duration::from_secs(5), QuotaWindow::Minute);
        let r = send(limiter.reserve(t0, 10, PATIENT));
        assert_eq!(r.send_at.duration_since(t0), Duration::from_secs(5));
        // A block for the day defers other callers for the day, and says so.
        limiter.block_until(t0 + Duration::from_secs(20 * 3600), QuotaWindow::Day);
        match limiter.reserve(t0, 10, PATIENT) {
            Admission::Defer { window, .. } => assert_eq!(window, QuotaWindow::Day),
            Admission::Send(_) => panic!("sent through a day's block"),
        }
        assert_eq!(limiter.max_request_records(50), 50);
        let small = QuotaLimiter::new(RateLimits::new(5, 20, 100));
        assert_eq!(small.max_request_records(50), 20);
    }
}
