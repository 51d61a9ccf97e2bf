//! Progress of a running job: a bar on a terminal, periodic JSON log events for machines,
//! nothing otherwise.

use std::io::IsTerminal;
use std::time::Duration;

use datafusion_prospeo::api::{Client, Totals};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::task::JoinHandle;

/// How progress is reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressMode {
    /// A bar on standard error (a terminal).
    Bar,
    /// A `tracing` event every few seconds (`--log-format json`).
    Log,
    /// Nothing (`--quiet`, or standard error is not a terminal).
    Off,
}

impl ProgressMode {
    /// The mode for a run: the bar only when standard error is a terminal.
    pub fn choose(quiet: bool, json_logs: bool) -> Self {
        if quiet {
            ProgressMode::Off
        } else if json_logs {
            ProgressMode::Log
        } else if std::io::stderr().is_terminal() {
            ProgressMode::Bar
        } else {
            ProgressMode::Off
        }
    }
}

/// Rows a job has settled so far, whatever their status.
pub fn rows_settled(totals: &Totals) -> u64 {
    totals.settled()
}

/// A running progress reporter; stop it with [`Progress::finish`].
pub struct Progress {
    bar: Option<ProgressBar>,
    task: Option<JoinHandle<()>>,
}

impl Progress {
    /// Starts reporting the client's totals; `total` is the number of input rows when known.
    pub fn start(mode: ProgressMode, client: Client, total: Option<u64>) -> Self {
        match mode {
            ProgressMode::Off => Progress {
                bar: None,
                task: None,
            },
            ProgressMode::Bar => {
                let bar = match total {
                    Some(total) => ProgressBar::with_draw_target(
                        Some(total),
                        ProgressDrawTarget::stderr_with_hz(4),
                    ),
                    None => ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()),
                };
                let template = if total.is_some() {
                    "{elapsed_precise} [{wide_bar}] {human_pos}/{human_len} rows, ETA {eta}\n{msg}"
                } else {
                    "{elapsed_precise} {spinner} {human_pos} rows\n{msg}"
                };
                if let Ok(style) = ProgressStyle::with_template(template) {
                    bar.set_style(style.progress_chars("=> "));
                }
                let shown = bar.clone();
                let started = std::time::Instant::now();
                let task = tokio::spawn(async move {
                    let mut tick = tokio::time::interval(Duration::from_millis(250));
                    loop {
                        tick.tick().await;
                        let totals = client.totals();
                        let rows = rows_settled(&totals);
                        let rate = rows as f64 / started.elapsed().as_secs_f64().max(0.001);
                        shown.set_position(rows);
                        shown.set_message(format!("{:.0} rows/s, {}", rate, describe(&totals)));
                    }
                });
                Progress {
                    bar: Some(bar),
                    task: Some(task),
                }
            }
            ProgressMode::Log => {
                let task = tokio::spawn(async move {
                    let mut tick = tokio::time::interval(Duration::from_secs(10));
                    tick.tick().await;
                    loop {
                        tick.tick().await;
                        let t = client.totals();
                        tracing::info!(
                            target: "prospeo::progress",
                            rows_done = rows_settled(&t),
                            rows_total = total,
                            matched = t.matched,
                            not_matched = t.not_matched,
                            invalid_datapoints = t.invalid,
                            deferred = t.deferred,
                            failed = t.failed,
                            credits = t.credits,
                            records_sent = t.records_sent,
                            rate_limited = t.rate_limited,
                            quota_wait_seconds = t.quota_wait_ms / 1000,
                            "progress"
                        );
                    }
                });
                Progress {
                    bar: None,
                    task: Some(task),
                }
            }
        }
    }

    /// Stops reporting and clears the bar.
    pub fn finish(self) {
        if let Some(task) = &self.task {
            task.abort();
        }
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// The bar's second line.
fn describe(t: &Totals) -> String {
    let mut line = format!(
        "{} matched, {} not matched, {} invalid, {} credits spent",
        t.matched, t.not_matched, t.invalid, t.credits
    );
    if t.deferred > 0 {
        line.push_str(&format!(", {} deferred", t.deferred));
    }
    if t.failed > 0 {
        line.push_str(&format!(", {} failed", t.failed));
    }
    if t.quota_wait_ms > 0 {
        line.push_str(&format!(
            ", waited {:.0}s for quota",
            t.quota_wait_ms as f64 / 1000.0
        ));
    }
    line
}
