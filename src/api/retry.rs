//! Retries: what an answer means (classification on `error_code` first, HTTP status second),
//! the decision that follows from it, and the backoff. No HTTP here: the decision is a pure
//! function of the attempt number, the classified answer (or transport error), the quota headers
//! it carried and the time already spent, so tests drive it directly.

use std::time::Duration;

use reqwest::StatusCode;
use serde::Deserialize;
use serde_json::Value;

use crate::api::builder::RetryPolicy;
use crate::api::pacing::QuotaHeaders;
use crate::vendor::outcome::DeferReason;
use crate::vendor::plan::QuotaWindow;
use crate::vendor::wire::{BulkEnrichResponse, ErrorBody, ErrorCode};

/// How one attempt ended.
#[derive(Debug)]
pub(crate) enum Attempt {
    Answered(BulkEnrichResponse),
    Retry {
        reason: String,
        rate_limited: bool,
        wait: Option<(QuotaWindow, Duration)>,
    },
    InvalidKey,
    OutOfCredits,
    /// Not retryable: every record of the request fails with this reason.
    Reject(String),
    /// A success status whose answer was lost on the way: cut off, not JSON, or not the
    /// documented shape. The server processed (and may have charged) the request, so its
    /// records count against the quota; they are asked again, which costs no second credit: the
    /// vendor does not charge twice for a person it enriched for the account (a re-run would
    /// ask the same).
    Lost(String),
}

impl Attempt {
    /// A transport error (no answer, or an error status whose body broke off): retryable.
    pub(crate) fn transport(reason: String) -> Attempt {
        Attempt::Retry {
            reason,
            rate_limited: false,
            wait: None,
        }
    }

    /// A rate-limit answer (429 or a rate-limit code).
    pub(crate) fn is_rate_limited(&self) -> bool {
        matches!(
            self,
            Attempt::Retry {
                rate_limited: true,
                ..
            }
        )
    }

    /// The attempt's words with `redact` applied (the server's words end up in outputs and
    /// logs: a server that echoes the key must not leak it there).
    pub(crate) fn redacted(self, redact: impl Fn(String) -> String) -> Attempt {
        match self {
            Attempt::Retry {
                reason,
                rate_limited,
                wait,
            } => Attempt::Retry {
                reason: redact(reason),
                rate_limited,
                wait,
            },
            Attempt::Reject(reason) => Attempt::Reject(redact(reason)),
            Attempt::Lost(reason) => Attempt::Lost(redact(reason)),
            other => other,
        }
    }
}

/// What the send loop does after an attempt.
#[derive(Debug)]
pub(crate) enum Decision {
    /// Send again `after` from now. `every_caller`: a rate limit said this window is used up,
    /// so the pacer holds every caller until then (and that wait counts as quota wait);
    /// otherwise only this request sleeps.
    Retry {
        reason: String,
        after: Duration,
        every_caller: Option<QuotaWindow>,
        /// The attempt's answer was lost after the server processed it ([`Attempt::Lost`]):
        /// its records count as sent.
        lost: bool,
    },
    /// No more attempts: the records are settled so.
    Settle(Settle),
}

/// How a request's records are settled.
#[derive(Debug)]
pub(crate) enum Settle {
    /// The records have their answer.
    Answered(BulkEnrichResponse),
    /// `INVALID_API_KEY`: fatal for the whole job.
    InvalidKey,
    /// The account is out of credits: nothing more is sent, the records are deferred.
    OutOfCredits,
    /// Every record of the request fails with `reason`. `charged`: the server processed the
    /// request (a success status), so its records count as sent.
    Fail { reason: String, charged: bool },
    /// A rate limit that does not return in time: the records are deferred, the quota returns
    /// `after` from now, and the pacer holds every caller until then for `window`.
    Defer {
        reason: DeferReason,
        after: Duration,
        window: QuotaWindow,
    },
}

/// Where a request stands when an attempt ends.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Progress {
    /// Attempts made, the one that just ended included.
    pub attempts: u32,
    /// Time since the request was formed.
    pub elapsed: Duration,
    /// Time allowed for the request, retries and waits included.
    pub allowed: Duration,
}

/// The pure retry decision. A request is retried only when no attempt got a successful answer,
/// so nothing is paid twice. After a rate limit every caller waits: for the reset when the
/// headers gave it (in `wait`), else for the backoff. `jitter` draws the backoff's random part
/// in `[0, 1)`; it is called only for a retryable answer.
pub(crate) fn decide(
    attempt: Attempt,
    progress: Progress,
    policy: &RetryPolicy,
    jitter: impl FnOnce() -> f64,
) -> Decision {
    let (reason, rate_limited, wait, lost) = match attempt {
        Attempt::Answered(response) => return Decision::Settle(Settle::Answered(response)),
        Attempt::InvalidKey => return Decision::Settle(Settle::InvalidKey),
        Attempt::OutOfCredits => return Decision::Settle(Settle::OutOfCredits),
        Attempt::Reject(reason) => {
            return Decision::Settle(Settle::Fail {
                reason,
                charged: false,
            });
        }
        Attempt::Lost(reason) => (reason, false, None, true),
        Attempt::Retry {
            reason,
            rate_limited,
            wait,
        } => (reason, rate_limited, wait, false),
    };
    let backoff = backoff(policy, progress.attempts, jitter());
    let next_try = match (rate_limited, wait) {
        (true, Some((_, reset))) => reset,
        _ => backoff,
    };
    let window = wait.map_or(QuotaWindow::Minute, |(window, _)| window);
    let out_of_attempts = progress.attempts >= policy.max_attempts;
    if out_of_attempts || progress.elapsed.saturating_add(next_try) > progress.allowed {
        if rate_limited {
            let reason = if window == QuotaWindow::Day {
                DeferReason::DailyQuota
            } else {
                DeferReason::RateLimited
            };
            return Decision::Settle(Settle::Defer {
                reason,
                after: next_try,
                window,
            });
        }
        return Decision::Settle(Settle::Fail {
            reason: format!("{reason} (gave up after {} attempts)", progress.attempts),
            charged: lost,
        });
    }
    Decision::Retry {
        reason,
        after: next_try,
        every_caller: rate_limited.then_some(window),
        lost,
    }
}

/// Full-jitter exponential backoff after attempt `attempt`: uniform in `[0, cap)`, where the
/// cap starts at `base_delay` and doubles with each attempt up to `max_delay`. `unit` is the
/// random draw in `[0, 1)`.
pub(crate) fn backoff(policy: &RetryPolicy, attempt: u32, unit: f64) -> Duration {
    let exp = policy
        .base_delay
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
    exp.min(policy.max_delay).mul_f64(unit)
}

/// Classifies an answer on its `error_code` first and its HTTP status second (reference,
/// "Errors": INTERNAL_ERROR arrives as HTTP 400, rate limits have been seen as HTTP 200).
pub(crate) fn classify(status: StatusCode, body: &[u8], quota: &QuotaHeaders) -> Attempt {
    // The usual answer is read once, straight into its type. Anything else (an error body, a
    // body that is not the documented answer) is read again as JSON: rare, and small.
    // UTF-8 is checked once for the whole body (SIMD), not string by string. A body with
    // bytes that are not UTF-8 is read as before, string by string: the lenient reader skips
    // a mistyped field's strings unchecked, and one odd field must not cost the answer.
    let typed = match simdutf8::basic::from_utf8(body) {
        Ok(text) => serde_json::from_str::<BulkEnrichResponse>(text).ok(),
        Err(_) => serde_json::from_slice::<BulkEnrichResponse>(body).ok(),
    }
    .filter(|response| !response.error);
    let json: Option<Value> = match typed {
        Some(_) => None,
        None => serde_json::from_slice(body).ok(),
    };
    let error_body = json
        .as_ref()
        .filter(|v| v.get("error") == Some(&Value::Bool(true)))
        .and_then(|v| ErrorBody::deserialize(v).ok());
    let snippet = || {
        let text = String::from_utf8_lossy(&body[..body.len().min(200)]).replace('\n', " ");
        format!("HTTP {status}: {}", text.trim())
    };
    if let Some(error) = error_body {
        let code = error.code();
        let message = match (&error.message, &error.error_code) {
            (Some(m), Some(c)) => format!("{c}: {m}"),
            (None, Some(c)) => c.clone(),
            (Some(m), None) => m.clone(),
            (None, None) => snippet(),
        };
        return match code {
            ErrorCode::RateLimited => Attempt::Retry {
                reason: format!("rate limited ({message})"),
                rate_limited: true,
                wait: quota.wait_hint(),
            },
            ErrorCode::InternalError => Attempt::Retry {
                reason: format!("the API reported an internal error ({message})"),
                rate_limited: false,
                wait: None,
            },
            ErrorCode::InvalidApiKey => Attempt::InvalidKey,
            ErrorCode::InsufficientCredits => Attempt::OutOfCredits,
            ErrorCode::InvalidRequest => {
                Attempt::Reject(format!("the API rejected the request: {message}"))
            }
            _ if status == StatusCode::UNAUTHORIZED => Attempt::InvalidKey,
            _ if status == StatusCode::TOO_MANY_REQUESTS => Attempt::Retry {
                reason: format!("rate limited ({message})"),
                rate_limited: true,
                wait: quota.wait_hint(),
            },
            _ if status.is_server_error() => Attempt::Retry {
                reason: format!("the API failed ({message})"),
                rate_limited: false,
                wait: None,
            },
            _ => Attempt::Reject(format!("the API answered an error: {message}")),
        };
    }
    if status == StatusCode::TOO_MANY_REQUESTS {
        return Attempt::Retry {
            reason: "rate limited (HTTP 429)".into(),
            rate_limited: true,
            wait: quota.wait_hint(),
        };
    }
    if status == StatusCode::UNAUTHORIZED {
        return Attempt::InvalidKey;
    }
    if status.is_server_error() {
        return Attempt::Retry {
            reason: format!("the API or a proxy failed ({})", snippet()),
            rate_limited: false,
            wait: None,
        };
    }
    if !status.is_success() {
        return Attempt::Reject(format!("unexpected answer ({})", snippet()));
    }
    if let Some(response) = typed {
        return Attempt::Answered(response);
    }
    match json.map(BulkEnrichResponse::deserialize) {
        Some(Ok(response)) => Attempt::Answered(response),
        Some(Err(e)) => Attempt::Lost(format!(
            "the API's answer is JSON but not the documented shape ({e})"
        )),
        None => Attempt::Lost(format!("the API's answer is not JSON ({})", snippet())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: RetryPolicy = RetryPolicy {
        max_attempts: 4,
        base_delay: Duration::from_millis(500),
        max_delay: Duration::from_secs(30),
    };

    fn body(code: &str) -> Vec<u8> {
        format!(r#"{{"error": true, "error_code": "{code}", "message": "m"}}"#).into_bytes()
    }

    fn progress(attempts: u32, elapsed_secs: u64) -> Progress {
        Progress {
            attempts,
            elapsed: Duration::from_secs(elapsed_secs),
            allowed: Duration::from_secs(600),
        }
    }

    /// The decision for an HTTP answer, with a jitter of one half.
    fn after(status: StatusCode, body: &[u8], quota: &QuotaHeaders, p: Progress) -> Decision {
        decide(classify(status, body, quota), p, &POLICY, || 0.5)
    }

    fn minute_used_up(reset_secs: u64) -> QuotaHeaders {
        QuotaHeaders {
            minute_left: Some(0),
            minute_reset_seconds: Some(reset_secs),
            ..Default::default()
        }
    }

    #[test]
    fn a_429_with_reset_headers_holds_every_caller_until_the_reset() {
        let decision = after(
            StatusCode::TOO_MANY_REQUESTS,
            b"slow down",
            &minute_used_up(7),
            progress(1, 0),
        );
        assert!(
            matches!(decision, Decision::Retry { after, every_caller: Some(QuotaWindow::Minute), .. } if after == Duration::from_secs(7)),
            "{decision:?}"
        );
        // Without headers: the backoff, for every caller.
        let decision = after(
            StatusCode::TOO_MANY_REQUESTS,
            b"",
            &QuotaHeaders::default(),
            progress(1, 0),
        );
        assert!(
            matches!(decision, Decision::Retry { after, every_caller: Some(QuotaWindow::Minute), .. } if after == Duration::from_millis(250)),
            "{decision:?}"
        );
    }

    #[test]
    fn a_rate_limit_code_on_http_200_is_a_rate_limit() {
        let attempt = classify(
            StatusCode::OK,
            &body("RATE_LIMIT_EXCEEDED"),
            &minute_used_up(3),
        );
        assert!(attempt.is_rate_limited());
        let decision = decide(attempt, progress(2, 0), &POLICY, || 0.5);
        assert!(
            matches!(decision, Decision::Retry { after, every_caller: Some(_), .. } if after == Duration::from_secs(3)),
            "{decision:?}"
        );
    }

    #[test]
    fn internal_errors_5xx_and_transport_errors_back_off_alone() {
        let quota = QuotaHeaders::default();
        // Attempt 3: the cap is 500 ms * 4 = 2 s; half of it.
        let expected = Duration::from_secs(1);
        for decision in [
            after(
                StatusCode::BAD_REQUEST,
                &body("INTERNAL_ERROR"),
                &quota,
                progress(3, 0),
            ),
            after(StatusCode::BAD_GATEWAY, b"<html>", &quota, progress(3, 0)),
            after(
                StatusCode::SERVICE_UNAVAILABLE,
                &body("SOMETHING_NEW"),
                &quota,
                progress(3, 0),
            ),
            decide(
                Attempt::transport("could not connect".into()),
                progress(3, 0),
                &POLICY,
                || 0.5,
            ),
        ] {
            assert!(
                matches!(decision, Decision::Retry { after, every_caller: None, .. } if after == expected),
                "{decision:?}"
            );
        }
    }

    #[test]
    fn out_of_attempts_fails_or_defers_a_rate_limit() {
        let decision = after(
            StatusCode::BAD_GATEWAY,
            b"bad gateway",
            &QuotaHeaders::default(),
            progress(4, 0),
        );
        assert!(
            matches!(&decision, Decision::Settle(Settle::Fail { reason, charged: false }) if reason.contains("gave up after 4 attempts")),
            "{decision:?}"
        );
        let decision = after(
            StatusCode::TOO_MANY_REQUESTS,
            b"",
            &minute_used_up(20),
            progress(4, 0),
        );
        assert!(
            matches!(decision, Decision::Settle(Settle::Defer { reason: DeferReason::RateLimited, after, window: QuotaWindow::Minute }) if after == Duration::from_secs(20)),
            "{decision:?}"
        );
    }

    #[test]
    fn a_retry_past_the_deadline_is_not_made() {
        // 590 s spent of 600: a 20 s reset does not fit, a daily one even less.
        let decision = after(
            StatusCode::TOO_MANY_REQUESTS,
            b"",
            &minute_used_up(20),
            progress(1, 590),
        );
        assert!(
            matches!(
                decision,
                Decision::Settle(Settle::Defer {
                    reason: DeferReason::RateLimited,
                    ..
                })
            ),
            "{decision:?}"
        );
        let day = QuotaHeaders {
            day_left: Some(0),
            day_reset_seconds: Some(3600),
            ..Default::default()
        };
        let decision = after(StatusCode::TOO_MANY_REQUESTS, b"", &day, progress(1, 0));
        assert!(
            matches!(
                decision,
                Decision::Settle(Settle::Defer {
                    reason: DeferReason::DailyQuota,
                    window: QuotaWindow::Day,
                    ..
                })
            ),
            "{decision:?}"
        );
        let decision = after(
            StatusCode::BAD_REQUEST,
            &body("INTERNAL_ERROR"),
            &QuotaHeaders::default(),
            progress(1, 600),
        );
        assert!(
            matches!(
                decision,
                Decision::Settle(Settle::Fail { charged: false, .. })
            ),
            "{decision:?}"
        );
    }

    #[test]
    fn an_invalid_key_and_no_credits_stop_and_are_not_retried() {
        let quota = QuotaHeaders::default();
        let no_jitter = || -> f64 { panic!("no backoff is drawn") };
        for status in [StatusCode::UNAUTHORIZED, StatusCode::BAD_REQUEST] {
            let attempt = classify(status, &body("INVALID_API_KEY"), &quota);
            assert!(matches!(
                decide(attempt, progress(1, 0), &POLICY, no_jitter),
                Decision::Settle(Settle::InvalidKey)
            ));
        }
        assert!(matches!(
            decide(
                classify(StatusCode::UNAUTHORIZED, b"", &quota),
                progress(1, 0),
                &POLICY,
                no_jitter
            ),
            Decision::Settle(Settle::InvalidKey)
        ));
        let attempt = classify(
            StatusCode::BAD_REQUEST,
            &body("INSUFFICIENT_CREDITS"),
            &quota,
        );
        assert!(matches!(
            decide(attempt, progress(1, 0), &POLICY, no_jitter),
            Decision::Settle(Settle::OutOfCredits)
        ));
    }

    #[test]
    fn a_lost_answer_is_asked_again_until_the_attempts_run_out_and_a_rejection_is_not() {
        let quota = QuotaHeaders::default();
        let decision = after(StatusCode::OK, b"<html>oops</html>", &quota, progress(1, 0));
        assert!(
            matches!(
                decision,
                Decision::Retry {
                    lost: true,
                    every_caller: None,
                    ..
                }
            ),
            "{decision:?}"
        );
        // Out of attempts: the records fail, counted as sent (the server processed them).
        let decision = after(StatusCode::OK, b"<html>oops</html>", &quota, progress(4, 0));
        assert!(
            matches!(
                decision,
                Decision::Settle(Settle::Fail { charged: true, ref reason }) if reason.contains("not JSON")
            ),
            "{decision:?}"
        );
        // An ordinary retryable failure is no lost answer.
        let decision = after(StatusCode::BAD_GATEWAY, b"<html>", &quota, progress(1, 0));
        assert!(
            matches!(decision, Decision::Retry { lost: false, .. }),
            "{decision:?}"
        );
        let decision = after(
            StatusCode::BAD_REQUEST,
            &body("INVALID_REQUEST"),
            &quota,
            progress(1, 0),
        );
        assert!(
            matches!(&decision, Decision::Settle(Settle::Fail { reason, charged: false }) if reason.contains("rejected")),
            "{decision:?}"
        );
        let decision = after(
            StatusCode::OK,
            br#"{"error": false, "total_cost": 0, "matched": [], "not_matched": ["r0"], "invalid_datapoints": []}"#,
            &quota,
            progress(1, 0),
        );
        assert!(
            matches!(decision, Decision::Settle(Settle::Answered(ref r)) if r.not_matched == ["r0"]),
            "{decision:?}"
        );
    }

    #[test]
    fn a_success_is_read_in_one_pass_with_odd_fields_read_leniently() {
        let quota = QuotaHeaders::default();
        let body = br#"{"error": false, "total_cost": 1, "surprise": [1],
            "matched": [{"identifier": "r0", "free_enrichment": "yes", "person": 7, "company": null}],
            "not_matched": [], "invalid_datapoints": []}"#;
        let Attempt::Answered(response) = classify(StatusCode::OK, body, &quota) else {
            panic!("answered")
        };
        assert_eq!(response.matched[0].identifier, "r0");
        assert_eq!(response.matched[0].person, None);
        assert!(response.extra.contains_key("surprise"));
        // A byte that is not UTF-8 inside a mistyped field (skipped, not read) costs only that
        // field, as before, not the answer.
        let mut odd = br#"{"error": false, "total_cost": 1, "matched": [{"identifier": "r0",
            "person": {"person_id": "p1", "first_name": [""#
            .to_vec();
        odd.push(0xff);
        odd.extend_from_slice(br#""]}}], "not_matched": [], "invalid_datapoints": []}"#);
        let Attempt::Answered(response) = classify(StatusCode::OK, &odd, &quota) else {
            panic!("answered")
        };
        let person = response.matched[0].person.as_ref().unwrap();
        assert_eq!(person.person_id.as_deref(), Some("p1"));
        assert_eq!(person.first_name, None);
        // JSON of another shape on a success status: a lost answer, said so.
        let Attempt::Lost(reason) =
            classify(StatusCode::OK, br#"{"error": false, "matched": 5}"#, &quota)
        else {
            panic!("lost")
        };
        assert!(
            reason.contains("JSON but not the documented shape"),
            "{reason}"
        );
    }

    #[test]
    fn the_backoff_doubles_up_to_its_cap() {
        let at = |attempt| backoff(&POLICY, attempt, 0.999_999);
        assert!(at(1) < Duration::from_millis(500) && at(1) > Duration::from_millis(499));
        assert!(at(2) > Duration::from_millis(999));
        assert!(at(20) <= Duration::from_secs(30) && at(20) > Duration::from_millis(29_999));
        assert_eq!(backoff(&POLICY, 1, 0.0), Duration::ZERO);
    }

    #[test]
    fn answers_are_classified_on_the_error_code() {
        let quota = QuotaHeaders::default();
        let body =
            |code: &str| format!(r#"{{"error": true, "error_code": "{code}"}}"#).into_bytes();
        let is_retry = |a: &Attempt, limited: bool| matches!(a, Attempt::Retry { rate_limited, .. } if *rate_limited == limited);
        assert!(is_retry(
            &classify(StatusCode::BAD_REQUEST, &body("INTERNAL_ERROR"), &quota),
            false
        ));
        assert!(is_retry(
            &classify(StatusCode::OK, &body("RATE_LIMIT_EXCEEDED"), &quota),
            true
        ));
        assert!(is_retry(
            &classify(StatusCode::TOO_MANY_REQUESTS, b"slow down", &quota),
            true
        ));
        assert!(is_retry(
            &classify(StatusCode::BAD_GATEWAY, b"<html>", &quota),
            false
        ));
        assert!(matches!(
            classify(StatusCode::UNAUTHORIZED, &body("INVALID_API_KEY"), &quota),
            Attempt::InvalidKey
        ));
        assert!(matches!(
            classify(
                StatusCode::BAD_REQUEST,
                &body("INSUFFICIENT_CREDITS"),
                &quota
            ),
            Attempt::OutOfCredits
        ));
        assert!(matches!(
            classify(StatusCode::BAD_REQUEST, &body("INVALID_REQUEST"), &quota),
            Attempt::Reject(_)
        ));
        assert!(matches!(
            classify(StatusCode::OK, b"<html>oops</html>", &quota),
            Attempt::Lost(_)
        ));
    }
}
