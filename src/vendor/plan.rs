//! Plans and their rate limits (reference, "Rate limits").
//!
//! The enrich limits count records, not requests: a 50-record bulk call uses 50 of each window.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A Prospeo plan, by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Plan {
    /// 5 / second, 300 / minute, 2,000 / day.
    Starter,
    /// 5 / second, 300 / minute, 5,000 / day.
    Growth,
    /// 30 / second, 1,800 / minute, 500,000 / day.
    Pro,
}

impl Plan {
    /// The plan's enrich limits (reference, rate-limit table).
    pub fn limits(self) -> RateLimits {
        match self {
            Plan::Starter => RateLimits::new(5, 300, 2_000),
            Plan::Growth => RateLimits::new(5, 300, 5_000),
            Plan::Pro => RateLimits::new(30, 1_800, 500_000),
        }
    }

    /// The name the vendor shows in `/account-information`.
    pub fn display_name(self) -> &'static str {
        match self {
            Plan::Starter => "STARTER",
            Plan::Growth => "GROWTH",
            Plan::Pro => "PRO",
        }
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Plan::Starter => "starter",
            Plan::Growth => "growth",
            Plan::Pro => "pro",
        })
    }
}

/// The error for an unknown plan name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown plan `{0}`: expected starter, growth or pro")]
pub struct UnknownPlan(pub String);

impl FromStr for Plan {
    type Err = UnknownPlan;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "starter" => Ok(Plan::Starter),
            "growth" => Ok(Plan::Growth),
            "pro" => Ok(Plan::Pro),
            _ => Err(UnknownPlan(s.to_string())),
        }
    }
}

/// Records allowed per second, per minute and per rolling day.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RateLimits {
    /// Records a second.
    pub per_second: u64,
    /// Records a minute.
    pub per_minute: u64,
    /// Records a rolling 24 hours.
    pub per_day: u64,
}

impl RateLimits {
    /// Limits from three numbers.
    pub const fn new(per_second: u64, per_minute: u64, per_day: u64) -> Self {
        RateLimits {
            per_second,
            per_minute,
            per_day,
        }
    }

    /// The three windows with their lengths, shortest first.
    pub fn windows(&self) -> [(QuotaWindow, u64); 3] {
        [
            (QuotaWindow::Second, self.per_second),
            (QuotaWindow::Minute, self.per_minute),
            (QuotaWindow::Day, self.per_day),
        ]
    }
}

/// One of the three rate-limit windows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QuotaWindow {
    /// One second.
    Second,
    /// One minute.
    Minute,
    /// A rolling 24 hours.
    Day,
}

impl QuotaWindow {
    /// The window's length; the day is a rolling 24 hours (reference).
    pub fn length(self) -> Duration {
        match self {
            QuotaWindow::Second => Duration::from_secs(1),
            QuotaWindow::Minute => Duration::from_secs(60),
            QuotaWindow::Day => Duration::from_secs(24 * 60 * 60),
        }
    }
}

/// The rate-limit response headers (reference, "Headers on responses").
pub mod headers {
    /// Records left in the rolling day.
    pub const DAILY_LEFT: &str = "x-daily-request-left";
    /// Records left in the current minute.
    pub const MINUTE_LEFT: &str = "x-minute-request-left";
    /// Seconds until the daily quota resets.
    pub const DAILY_RESET_SECONDS: &str = "x-daily-reset-seconds";
    /// Seconds until the minute's quota resets.
    pub const MINUTE_RESET_SECONDS: &str = "x-minute-reset-seconds";
    /// The key's records-per-day limit.
    pub const DAILY_LIMIT: &str = "x-daily-rate-limit";
    /// The key's records-per-minute limit.
    pub const MINUTE_LIMIT: &str = "x-minute-rate-limit";
    /// The key's records-per-second limit.
    pub const SECOND_LIMIT: &str = "x-second-rate-limit";
}
