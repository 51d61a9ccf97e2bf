//! What a sandbox is started with: keys, faults, and the directory.

use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::sandbox::directory::Directory;
use crate::vendor::plan::{Plan, RateLimits};

/// The key the sandbox accepts when none is configured, and the one the quickstart uses.
/// It is a sandbox key: it opens nothing but a local sandbox.
pub const DEMO_KEY: &str = "sandbox-demo-key";

/// One API key the sandbox accepts.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SandboxKey {
    /// The `X-KEY` value.
    pub key: String,
    /// The name the key goes by in `/_sandbox/stats` and logs (keys are never shown).
    #[serde(default)]
    pub label: String,
    /// Starting credit balance.
    pub credits: i64,
    /// The plan shown by `/account-information` and, unless overridden, its limits.
    #[serde(default = "default_plan")]
    pub plan: Plan,
    /// Per-second, per-minute and per-day record limits (the plan's when absent).
    #[serde(default)]
    pub limits: Option<RateLimits>,
}

fn default_plan() -> Plan {
    Plan::Pro
}

impl SandboxKey {
    /// A key with a balance and a plan, labelled `label`.
    pub fn new(label: impl Into<String>, key: impl Into<String>, credits: i64, plan: Plan) -> Self {
        SandboxKey {
            key: key.into(),
            label: label.into(),
            credits,
            plan,
            limits: None,
        }
    }

    /// The same key with custom limits instead of the plan's.
    pub fn with_limits(mut self, limits: RateLimits) -> Self {
        self.limits = Some(limits);
        self
    }

    /// The limits in force for this key.
    pub fn effective_limits(&self) -> RateLimits {
        self.limits.unwrap_or_else(|| self.plan.limits())
    }

    /// Reads keys from a JSON file: `[{"key": "...", "credits": 1000, "plan": "pro",
    /// "label": "team-a", "limits": {"per_second": 30, "per_minute": 1800, "per_day": 500000}}]`.
    pub fn from_file(path: &Path) -> Result<Vec<SandboxKey>, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read keys file {}: {e}", path.display()))?;
        let mut keys: Vec<SandboxKey> = serde_json::from_str(&text).map_err(|e| {
            format!(
                "keys file {} is not a JSON list of {{key, credits, plan?, label?, limits?}}: {e}",
                path.display()
            )
        })?;
        for (i, key) in keys.iter_mut().enumerate() {
            if key.label.is_empty() {
                key.label = format!("key-{}", i + 1);
            }
        }
        Ok(keys)
    }
}

impl fmt::Debug for SandboxKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SandboxKey")
            .field("key", &"<redacted>")
            .field("label", &self.label)
            .field("credits", &self.credits)
            .field("plan", &self.plan)
            .field("limits", &self.effective_limits())
            .finish()
    }
}

/// Faults the sandbox injects, each deterministic under [`SandboxConfig::seed`] for a given order
/// of requests. Rates are probabilities per request, drawn in the order listed here.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Faults {
    /// Added to every response.
    pub latency: Duration,
    /// A uniform extra delay in `[0, latency_jitter]` on top of `latency`.
    pub latency_jitter: Duration,
    /// Share of requests whose connection is closed without any response (before processing).
    pub drop_rate: f64,
    /// Share of requests answered 502 or 503 with an HTML body, as a proxy would (before
    /// processing).
    pub bad_gateway_rate: f64,
    /// Share of requests answered HTTP 400 `INTERNAL_ERROR` (before processing).
    pub internal_error_rate: f64,
    /// Share of requests that are processed and charged, then answered only after `slow_delay`:
    /// slower than any sane client timeout.
    pub slow_rate: f64,
    /// How long a slow response waits.
    pub slow_delay: Duration,
    /// Share of successful bulk answers (processed and charged) whose body stops halfway: the
    /// success status and headers arrive, then the connection breaks.
    pub cut_body_rate: f64,
    /// Share of successful bulk answers (processed and charged) sent as HTTP 200 with a body
    /// that is not JSON (the first half of the JSON text).
    pub garbled_rate: f64,
    /// Share of successful bulk answers (processed and charged) that leave one record out: its
    /// identifier is in none of `matched`, `not_matched`, `invalid_datapoints`.
    pub lost_record_rate: f64,
    /// Signal rate limiting as HTTP 200 with `error: true, error_code: "RATE_LIMIT_EXCEEDED"`
    /// instead of 429 (seen in the wild).
    pub rate_limit_as_200: bool,
}

/// Everything a sandbox is started with.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// Where to listen; port 0 picks a free port.
    pub bind: SocketAddr,
    /// The keys it accepts.
    pub keys: Vec<SandboxKey>,
    /// The people and companies it matches against.
    pub directory: Arc<Directory>,
    /// Injected faults.
    pub faults: Faults,
    /// Seed of the fault draws.
    pub seed: u64,
    /// Charge 10 credits for a match with `enrich_mobile` even when no mobile was found (the
    /// other reading of an uncertain vendor rule; by default such a match costs 1).
    pub charge_mobile_attempts: bool,
    /// Freeze the rate-limit clock: it moves only by [`crate::sandbox::Sandbox::advance_clock`]
    /// (or `POST /_sandbox/clock`), so tests of the windows never depend on real time.
    pub manual_clock: bool,
}

impl SandboxConfig {
    /// A sandbox on a free loopback port over `directory`, with the demo key (10,000 credits,
    /// Pro) and no faults.
    pub fn new(directory: Arc<Directory>) -> Self {
        SandboxConfig {
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            keys: vec![SandboxKey::new("demo", DEMO_KEY, 10_000, Plan::Pro)],
            directory,
            faults: Faults::default(),
            seed: 0,
            charge_mobile_attempts: false,
            manual_clock: false,
        }
    }
}
