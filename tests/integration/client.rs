//! The enrichment client against the sandbox over real HTTP, and against a small in-test server
//! where a test needs an exact answer the sandbox never gives (a contract breach, a 429 without
//! headers).

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use datafusion_prospeo::api::{
    ApiKey, BatchOutcome, Client, ClientBuilder, DeferReason, EnrichFlags, RecordOutcome,
    RecordStatus, RetryPolicy, Totals,
};
use datafusion_prospeo::sandbox::{Faults, Sandbox, SandboxKey};
use datafusion_prospeo::{Datapoints, Error};
use serde_json::{Value, json};

use crate::common::*;

fn datapoints(record: Value) -> Datapoints {
    serde_json::from_value(record).expect("a record of datapoints")
}

fn records(values: Vec<Value>) -> Vec<Datapoints> {
    values.into_iter().map(datapoints).collect()
}

/// A client for `base_url` with quick retries, so failing tests end quickly.
fn builder(base_url: &str, key: &str) -> ClientBuilder {
    Client::builder()
        .base_url(base_url)
        .api_key(ApiKey::new(key).unwrap())
        .request_timeout(Duration::from_secs(20))
        .batch_timeout(Duration::from_secs(60))
        .retry(RetryPolicy {
            max_attempts: 6,
            base_delay: Duration::from_millis(5),
            max_delay: Duration::from_millis(50),
        })
}

fn client(sandbox: &Sandbox, key: &str) -> Client {
    builder(&sandbox.base_url(), key).build().unwrap()
}

fn statuses(batch: &BatchOutcome) -> Vec<RecordStatus> {
    batch.records.iter().map(RecordOutcome::status).collect()
}

fn costs(batch: &BatchOutcome) -> Vec<i64> {
    batch.records.iter().map(RecordOutcome::cost).collect()
}

fn person_id(outcome: &RecordOutcome) -> Option<&str> {
    match outcome {
        RecordOutcome::Matched(m) => m.person.as_ref()?.person_id.as_deref(),
        _ => None,
    }
}

fn reason(outcome: &RecordOutcome) -> String {
    match outcome {
        RecordOutcome::Failed { reason } => reason.clone(),
        other => panic!("expected a failed record, got {other:?}"),
    }
}

fn deferred(outcome: &RecordOutcome) -> (DeferReason, Option<SystemTime>) {
    match outcome {
        RecordOutcome::Deferred { reason, retry_at } => (*reason, *retry_at),
        other => panic!("expected a deferred record, got {other:?}"),
    }
}

/// Asserts that the first `sent` records were answered (all strangers: not matched) and the
/// rest deferred for `reason`; returns the deferred records' retry times.
fn sent_then_deferred(
    batch: &BatchOutcome,
    sent: usize,
    reason: DeferReason,
) -> Vec<Option<SystemTime>> {
    assert!(
        batch.records[..sent]
            .iter()
            .all(|r| r.status() == RecordStatus::NotMatched),
        "{:?}",
        statuses(batch)
    );
    batch.records[sent..]
        .iter()
        .map(|record| {
            let (why, retry_at) = deferred(record);
            assert_eq!(why, reason);
            retry_at
        })
        .collect()
}

#[tokio::test]
async fn every_record_gets_its_status_and_cost_in_input_order() {
    let sandbox = start(config()).await;
    let client = client(&sandbox, ALPHA_KEY);
    let batch = client
        .bulk_enrich(
            &records(vec![
                eva("a"),
                stranger("b"),
                invalid("c"),
                nicolas("d"),
                eva("e"),
            ]),
            EnrichFlags::default(),
        )
        .await
        .unwrap();
    assert_eq!(
        statuses(&batch),
        [
            RecordStatus::Matched,
            RecordStatus::NotMatched,
            RecordStatus::InvalidDatapoints,
            RecordStatus::Matched,
            RecordStatus::Matched,
        ]
    );
    assert_eq!(person_id(&batch.records[0]), Some(EVA_ID));
    assert_eq!(person_id(&batch.records[3]), Some(NICOLAS_ID));
    // Eva twice: sent once, charged on the first row; the second gets the answer for free.
    assert_eq!(costs(&batch), [1, 0, 0, 1, 0]);
    assert_eq!(batch.records[4], batch.records[0].without_cost());
    assert_eq!(batch.total_cost, 2);
    assert_eq!(batch.duplicates, 1);
    let stats = sandbox.stats().key(ALPHA);
    // The invalid record and the duplicate were never sent.
    assert_eq!(stats.records_submitted, 3);
    assert_eq!(stats.credits_charged, 2);
    let totals = client.totals();
    assert_eq!(
        (
            totals.matched,
            totals.not_matched,
            totals.invalid,
            totals.credits
        ),
        (3, 1, 1, 2)
    );
    assert_eq!((totals.records_sent, totals.requests), (3, 1));
    assert_eq!(totals.duplicates, 1);
}

#[tokio::test]
async fn the_callers_data_need_not_be_unique_or_alphanumeric() {
    let sandbox = start(config()).await;
    let client = client(&sandbox, ALPHA_KEY);
    // Raw values with spaces, case and URL prefixes; the same person written three ways.
    let batch = client
        .bulk_enrich(
            &[
                Datapoints {
                    email: Some("  NICOLAS.B@KPMG.COM ".into()),
                    ..Default::default()
                },
                Datapoints {
                    full_name: Some("Eva   Kiegler".into()),
                    company_website: Some("https://www.Intercom.com/about".into()),
                    ..Default::default()
                },
                Datapoints {
                    email: Some("nicolas.b@kpmg.com".into()),
                    ..Default::default()
                },
            ],
            EnrichFlags::default(),
        )
        .await
        .unwrap();
    assert_eq!(person_id(&batch.records[0]), Some(NICOLAS_ID));
    assert_eq!(person_id(&batch.records[1]), Some(EVA_ID));
    assert_eq!(person_id(&batch.records[2]), Some(NICOLAS_ID));
}

#[tokio::test]
async fn more_than_fifty_records_go_in_several_requests() {
    let sandbox = start(config()).await;
    let client = client(&sandbox, ALPHA_KEY);
    let mut values = strangers(120);
    values.push(eva("eva"));
    let batch = client
        .bulk_enrich(&records(values), EnrichFlags::default())
        .await
        .unwrap();
    assert_eq!(batch.records.len(), 121);
    assert_eq!(batch.requests, 3);
    assert_eq!(person_id(&batch.records[120]), Some(EVA_ID));
    let stats = sandbox.stats().key(ALPHA);
    assert_eq!((stats.successful_requests, stats.records), (3, 121));
}

#[tokio::test]
async fn retryable_faults_are_retried_until_every_record_settles_and_nothing_is_paid_twice() {
    for (name, faults) in [
        (
            "internal error",
            Faults {
                internal_error_rate: 0.5,
                ..Faults::default()
            },
        ),
        (
            "bad gateway",
            Faults {
                bad_gateway_rate: 0.5,
                ..Faults::default()
            },
        ),
        (
            "dropped connection",
            Faults {
                drop_rate: 0.5,
                ..Faults::default()
            },
        ),
    ] {
        let mut config = config();
        config.faults = faults;
        config.seed = 7;
        let sandbox = start(config).await;
        // A client per round: a client answers what it has seen from its cache, and every
        // round must go through the faults.
        let mut totals = Totals::default();
        for round in 0..6 {
            let client = builder(&sandbox.base_url(), ALPHA_KEY)
                .retry(RetryPolicy {
                    max_attempts: 12,
                    base_delay: Duration::from_millis(1),
                    max_delay: Duration::from_millis(10),
                })
                .build()
                .unwrap();
            let batch = client
                .bulk_enrich(
                    &records(vec![eva("e"), nicolas("n"), stranger("s")]),
                    EnrichFlags::default(),
                )
                .await
                .unwrap();
            assert_eq!(
                statuses(&batch),
                [
                    RecordStatus::Matched,
                    RecordStatus::Matched,
                    RecordStatus::NotMatched
                ],
                "{name}, round {round}"
            );
            let t = client.totals();
            totals.retries += t.retries;
            totals.credits += t.credits;
        }
        let stats = sandbox.stats().key(ALPHA);
        let faults = stats.faults.internal_error + stats.faults.bad_gateway + stats.faults.dropped;
        assert!(faults > 0, "{name}: no fault was injected");
        assert_eq!(totals.retries, faults, "{name}: one retry per fault");
        assert_eq!(stats.successful_requests, 6, "{name}");
        // Two people, charged once each across six rounds.
        assert_eq!(stats.credits_charged, 2, "{name}");
        assert_eq!(totals.credits, 2, "{name}");
    }
}

#[tokio::test]
async fn retries_are_bounded_and_the_reason_is_kept() {
    let mut config = config();
    config.faults.drop_rate = 1.0;
    let sandbox = start(config).await;
    let client = builder(&sandbox.base_url(), ALPHA_KEY)
        .retry(RetryPolicy {
            max_attempts: 3,
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(5),
        })
        .build()
        .unwrap();
    let batch = client
        .bulk_enrich(&records(vec![eva("e")]), EnrichFlags::default())
        .await
        .unwrap();
    let reason = reason(&batch.records[0]);
    assert!(reason.contains("gave up after 3 attempts"), "{reason}");
    assert_eq!(sandbox.stats().key(ALPHA).faults.dropped, 3);
    assert_eq!(sandbox.stats().key(ALPHA).credits_charged, 0);
    assert_eq!(client.totals().failed, 1);
}

#[tokio::test]
async fn slow_responses_hit_the_timeout_and_the_retry_is_not_charged_again() {
    let mut config = config();
    config.faults.slow_rate = 1.0;
    config.faults.slow_delay = Duration::from_secs(30);
    let sandbox = start(config).await;
    let client = builder(&sandbox.base_url(), ALPHA_KEY)
        .request_timeout(Duration::from_millis(300))
        .retry(RetryPolicy {
            max_attempts: 2,
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(5),
        })
        .build()
        .unwrap();
    let batch = client
        .bulk_enrich(&records(vec![eva("e")]), EnrichFlags::default())
        .await
        .unwrap();
    let reason = reason(&batch.records[0]);
    assert!(reason.contains("timed out"), "{reason}");
    let stats = sandbox.stats().key(ALPHA);
    // Both attempts reached the server and were processed; the person was charged once.
    assert_eq!(stats.faults.slow, 2);
    assert_eq!(stats.credits_charged, 1);
    assert_eq!(stats.free_enrichments, 1);
    sandbox.stop().await.unwrap();
}

#[tokio::test]
async fn a_rate_limit_sent_as_http_200_is_a_rate_limit_and_defers_when_it_does_not_clear() {
    let mut config = config_with_limits(100, 60, 10_000);
    config.faults.rate_limit_as_200 = true;
    let sandbox = start(config).await;
    // The client believes the plan allows 1,800 a minute; the server allows 60.
    let client = builder(&sandbox.base_url(), ALPHA_KEY)
        .batch_timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let first = client
        .bulk_enrich(&records(strangers(50)), EnrichFlags::default())
        .await
        .unwrap();
    assert!(
        first
            .records
            .iter()
            .all(|r| r.status() == RecordStatus::NotMatched)
    );
    // The headers said 10 are left this minute: the client waits for the reset instead of
    // sending, and since the reset is past the batch's time, it defers.
    let second = client
        .bulk_enrich(&records(strangers_from(50, 50)), EnrichFlags::default())
        .await
        .unwrap();
    let (why, retry_at) = deferred(&second.records[0]);
    assert_eq!(why, DeferReason::RateLimited);
    assert!(retry_at.is_some());
    let stats = sandbox.stats().key(ALPHA);
    assert_eq!(stats.records, 50);
    assert_eq!(
        stats.rate_limited, 0,
        "the headers kept the client from asking"
    );
}

#[tokio::test]
async fn a_rate_limit_that_cannot_clear_defers_instead_of_failing() {
    // The server answers 429 (with the headers) on the first attempt: the client's limits are
    // looser than the server's, and it has not seen any headers yet.
    let mut config = config_with_limits(100, 10, 10_000);
    config.faults.rate_limit_as_200 = true;
    config.manual_clock = false;
    let sandbox = start(config).await;
    let client = builder(&sandbox.base_url(), ALPHA_KEY)
        .batch_timeout(Duration::from_secs(3))
        .build()
        .unwrap();
    let batch = client
        .bulk_enrich(&records(strangers(20)), EnrichFlags::default())
        .await
        .unwrap();
    // 20 records never fit a 10-a-minute window: the answer is a rate limit, recognised as
    // one, and its headers teach the client the real limit. The request is split: the first
    // 10 go out, the other 10 would wait a minute, past the batch's time, and are deferred
    // (not failed).
    let retry_at = sent_then_deferred(&batch, 10, DeferReason::RateLimited);
    assert!(retry_at.iter().all(Option::is_some));
    assert_eq!(client.totals().rate_limited, 1);
    assert_eq!(client.max_request_records(), 10);
    let stats = sandbox.stats().key(ALPHA);
    assert_eq!((stats.records, stats.rate_limited), (10, 1));
    assert_eq!(client.totals().records_sent, 10);
}

#[tokio::test]
async fn the_daily_quota_defers_the_rest_with_the_time_quota_returns() {
    let sandbox = start(config_with_limits(1000, 1000, 60)).await;
    let client = client(&sandbox, ALPHA_KEY);
    let first = client
        .bulk_enrich(&records(strangers(50)), EnrichFlags::default())
        .await
        .unwrap();
    assert_eq!(first.records[0].status(), RecordStatus::NotMatched);
    let second = client
        .bulk_enrich(&records(strangers_from(50, 50)), EnrichFlags::default())
        .await
        .unwrap();
    // 10 records are left today: they are used, the other 40 wait for tomorrow.
    for retry_at in sent_then_deferred(&second, 10, DeferReason::DailyQuota) {
        let wait = retry_at
            .unwrap()
            .duration_since(SystemTime::now())
            .unwrap_or_default();
        assert!(wait > Duration::from_secs(23 * 3600), "{wait:?}");
    }
    assert!(
        second.records[10]
            .error()
            .unwrap()
            .contains("quota returns at")
    );
    let stats = sandbox.stats().key(ALPHA);
    assert_eq!(stats.records, 60);
    assert_eq!(
        stats.rate_limited, 0,
        "the client stopped before the server had to say no"
    );
    assert_eq!(client.totals().deferred, 40);
}

#[tokio::test]
async fn running_out_of_credits_defers_the_rest_and_nothing_is_charged_twice() {
    let mut config = config();
    config.keys = vec![SandboxKey::new(
        ALPHA,
        ALPHA_KEY,
        3,
        datafusion_prospeo::api::Plan::Pro,
    )];
    let sandbox = start(config).await;
    let client = client(&sandbox, ALPHA_KEY);
    let flags = EnrichFlags::default();
    let a = client
        .bulk_enrich(&records(vec![eva("e"), nicolas("n")]), flags)
        .await
        .unwrap();
    assert_eq!(costs(&a), [1, 1]);
    let b = client
        .bulk_enrich(&records(vec![nicole("n2"), omar("o")]), flags)
        .await
        .unwrap();
    assert_eq!(deferred(&b.records[0]).0, DeferReason::InsufficientCredits);
    let c = client
        .bulk_enrich(&records(vec![stranger("s")]), flags)
        .await
        .unwrap();
    assert_eq!(deferred(&c.records[0]).0, DeferReason::InsufficientCredits);
    let stats = sandbox.stats().key(ALPHA);
    // Batch c was not even sent.
    assert_eq!(stats.requests, 2);
    assert_eq!((stats.credits_charged, stats.remaining_credits), (2, 1));
    // A later job re-sending what was paid for pays nothing.
    let rerun = Client::builder()
        .base_url(sandbox.base_url())
        .api_key(ApiKey::new(ALPHA_KEY).unwrap())
        .build()
        .unwrap();
    let again = rerun
        .bulk_enrich(&records(vec![eva("e"), nicolas("n")]), flags)
        .await
        .unwrap();
    assert_eq!(costs(&again), [0, 0]);
    assert_eq!(sandbox.stats().key(ALPHA).credits_charged, 2);
}

#[tokio::test]
async fn the_credit_budget_defers_what_would_pass_it() {
    let sandbox = start(config()).await;
    let client = builder(&sandbox.base_url(), ALPHA_KEY)
        .max_credits(Some(2))
        .build()
        .unwrap();
    let flags = EnrichFlags::default();
    let a = client
        .bulk_enrich(&records(vec![eva("e"), nicolas("n")]), flags)
        .await
        .unwrap();
    assert_eq!(costs(&a), [1, 1]);
    let b = client
        .bulk_enrich(&records(vec![nicole("x")]), flags)
        .await
        .unwrap();
    assert_eq!(deferred(&b.records[0]).0, DeferReason::Budget);
    assert_eq!(sandbox.stats().key(ALPHA).requests, 1);
}

#[tokio::test]
async fn costs_follow_the_flags_and_either_reading_of_the_mobile_rule() {
    let flags = EnrichFlags {
        enrich_mobile: true,
        ..Default::default()
    };
    for charge_mobile_attempts in [false, true] {
        let mut config = config();
        config.charge_mobile_attempts = charge_mobile_attempts;
        let sandbox = start(config).await;
        let client = client(&sandbox, ALPHA_KEY);
        // Eva has a mobile, Nicolas has none.
        let batch = client
            .bulk_enrich(&records(vec![eva("e"), nicolas("n")]), flags)
            .await
            .unwrap();
        let nicolas_cost = if charge_mobile_attempts { 10 } else { 1 };
        assert_eq!(costs(&batch), [10, nicolas_cost]);
        assert_eq!(batch.total_cost, 10 + nicolas_cost);
        assert_eq!(batch.cost_warnings, 0, "both readings are explained");
        assert_eq!(
            client.totals().credits,
            sandbox.stats().key(ALPHA).credits_charged
        );
    }
}

#[tokio::test]
async fn an_invalid_key_is_fatal_and_never_shown() {
    let sandbox = start(config()).await;
    let secret = "my-very-secret-prospeo-key";
    let client = client(&sandbox, secret);
    let error = client
        .bulk_enrich(&records(vec![eva("e")]), EnrichFlags::default())
        .await
        .unwrap_err();
    assert!(matches!(error, Error::InvalidApiKey), "{error:?}");
    let account = client.account_status().await.unwrap_err();
    assert!(matches!(account, Error::InvalidApiKey), "{account:?}");
    for text in [
        error.to_string(),
        format!("{error:?}"),
        account.to_string(),
        format!("{client:?}"),
    ] {
        assert!(!text.contains(secret), "the key leaked: {text}");
        assert!(!text.contains("my-very"), "the key leaked: {text}");
    }
    assert_eq!(sandbox.stats().unauthorized, 2);
}

#[tokio::test]
async fn the_account_status_shows_credits_and_quota() {
    let sandbox = start(config()).await;
    let client = client(&sandbox, ALPHA_KEY);
    client
        .bulk_enrich(&records(vec![eva("e")]), EnrichFlags::default())
        .await
        .unwrap();
    let status = client.account_status().await.unwrap();
    assert_eq!(status.account.remaining_credits, Some(9_999));
    assert_eq!(status.account.used_credits, Some(1));
    assert_eq!(status.account.current_plan.as_deref(), Some("PRO"));
    assert_eq!(status.quota.day_left, Some(500_000 - 1));
    assert_eq!(status.quota.minute_limit, Some(1_800));
}

// ---------------------------------------------------------------------------------------------
// Exact answers from an in-test server
// ---------------------------------------------------------------------------------------------

type Answerer = dyn Fn(usize, &Value, &HeaderMap) -> Response + Send + Sync;

/// A server on 127.0.0.1 that answers `/bulk-enrich-person` with `answer(attempt, request,
/// headers)`. Returns its base URL and the requests it received.
async fn scripted_server(answer: Arc<Answerer>) -> (String, Arc<Mutex<Vec<Value>>>) {
    let received = Arc::new(Mutex::new(Vec::new()));
    let log = received.clone();
    let app = Router::new().route(
        "/bulk-enrich-person",
        post(move |headers: HeaderMap, body: Bytes| {
            let answer = answer.clone();
            let log = log.clone();
            async move {
                let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                let attempt = {
                    let mut log = log.lock().unwrap();
                    log.push(request.clone());
                    log.len()
                };
                answer(attempt, &request, &headers)
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), received)
}

fn identifiers(request: &Value) -> Vec<String> {
    request["data"]
        .as_array()
        .map(|records| {
            records
                .iter()
                .map(|r| r["identifier"].as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default()
}

fn json_answer(status: StatusCode, body: Value) -> Response {
    (status, axum::Json(body)).into_response()
}

fn all_not_matched(request: &Value) -> Response {
    json_answer(
        StatusCode::OK,
        json!({"error": false, "total_cost": 0, "matched": [], "not_matched": identifiers(request), "invalid_datapoints": []}),
    )
}

#[tokio::test]
async fn identifiers_are_the_clients_own_and_unique() {
    let (url, received) = scripted_server(Arc::new(|_, request, _| all_not_matched(request))).await;
    let client = builder(&url, "k").build().unwrap();
    client
        .bulk_enrich(
            &records(vec![nicolas("x"), eva("x"), nicole("x")]),
            EnrichFlags::default(),
        )
        .await
        .unwrap();
    let ids = identifiers(&received.lock().unwrap()[0]);
    let unique: BTreeSet<_> = ids.iter().collect();
    assert_eq!((ids.len(), unique.len()), (3, 3));
    assert!(
        ids.iter()
            .all(|id| id.chars().all(|c| c.is_ascii_alphanumeric()))
    );
}

#[tokio::test]
async fn a_response_that_breaks_the_contract_fails_only_the_affected_records() {
    let (url, received) = scripted_server(Arc::new(|attempt, request, _| {
        if attempt > 1 {
            // The record the first answer left out, asked again.
            return all_not_matched(request);
        }
        let ids = identifiers(request);
        // ids[0] matched, ids[1] listed twice, ids[2] missing, plus one we never sent.
        json_answer(
            StatusCode::OK,
            json!({
                "error": false, "total_cost": 1,
                "matched": [{"identifier": ids[0], "person": {"person_id": "p0"}, "company": null}],
                "not_matched": [ids[1], ids[1], "not-ours"],
                "invalid_datapoints": []
            }),
        )
    }))
    .await;
    let client = builder(&url, "k").build().unwrap();
    let batch = client
        .bulk_enrich(
            &records(vec![nicolas("a"), eva("b"), nicole("c")]),
            EnrichFlags::default(),
        )
        .await
        .unwrap();
    assert_eq!(person_id(&batch.records[0]), Some("p0"));
    assert!(reason(&batch.records[1]).contains("more than once"));
    // The record the answer left out was processed but its answer lost: asked again, alone.
    assert_eq!(batch.records[2].status(), RecordStatus::NotMatched);
    assert_eq!(costs(&batch), [1, 0, 0]);
    let received = received.lock().unwrap();
    assert_eq!(
        received.len(),
        2,
        "the first request, then the left-out record"
    );
    assert_eq!(identifiers(&received[1]).len(), 1);
    assert_eq!(batch.lost_answers, 1);
    assert_eq!(batch.records_sent, 4);
    assert_eq!((batch.failed, batch.not_matched, batch.matched), (1, 1, 1));
}

#[tokio::test]
async fn a_record_every_answer_leaves_out_fails_after_the_retry_policys_attempts() {
    let (url, received) = scripted_server(Arc::new(|_, request, _| {
        let ids = identifiers(request);
        // The last record is never mentioned.
        json_answer(
            StatusCode::OK,
            json!({
                "error": false, "total_cost": 0, "matched": [],
                "not_matched": ids[..ids.len() - 1], "invalid_datapoints": []
            }),
        )
    }))
    .await;
    let client = builder(&url, "k").build().unwrap();
    let batch = client
        .bulk_enrich(
            &records(vec![nicolas("a"), eva("b")]),
            EnrichFlags::default(),
        )
        .await
        .unwrap();
    assert_eq!(batch.records[0].status(), RecordStatus::NotMatched);
    assert!(reason(&batch.records[1]).contains("did not mention"));
    // The first request, then five re-asks: six, the policy's attempts.
    assert_eq!(received.lock().unwrap().len(), 6);
    assert_eq!(batch.lost_answers, 5);
    assert_eq!((batch.failed, batch.not_matched), (1, 1));
    assert_eq!(client.totals().failed, 1);
}

#[tokio::test]
async fn a_success_whose_body_is_not_json_is_asked_again_until_the_attempts_run_out() {
    let (url, received) = scripted_server(Arc::new(|_, _, _| {
        (StatusCode::OK, "<html>maintenance</html>").into_response()
    }))
    .await;
    let client = builder(&url, "k").build().unwrap();
    let batch = client
        .bulk_enrich(
            &records(vec![nicolas("a"), eva("b")]),
            EnrichFlags::default(),
        )
        .await
        .unwrap();
    for record in &batch.records {
        let reason = reason(record);
        assert!(reason.contains("not JSON"), "{reason}");
        assert!(reason.contains("gave up after 6 attempts"), "{reason}");
    }
    assert_eq!(received.lock().unwrap().len(), 6);
    // Each attempt was processed by the server (it counts against the quota).
    assert_eq!(batch.records_sent, 12);
    assert_eq!(batch.lost_answers, 10);
}

#[tokio::test]
async fn a_success_whose_body_is_not_json_is_answered_by_the_next_attempt() {
    let (url, received) = scripted_server(Arc::new(|attempt, request, _| match attempt {
        1 => (StatusCode::OK, "{\"error\": false, \"total_co").into_response(),
        _ => all_not_matched(request),
    }))
    .await;
    let client = builder(&url, "k").build().unwrap();
    let batch = client
        .bulk_enrich(
            &records(vec![nicolas("a"), eva("b")]),
            EnrichFlags::default(),
        )
        .await
        .unwrap();
    assert_eq!(
        statuses(&batch),
        [RecordStatus::NotMatched, RecordStatus::NotMatched]
    );
    assert_eq!(received.lock().unwrap().len(), 2);
    assert_eq!(
        (batch.lost_answers, batch.records_sent, batch.retries),
        (2, 4, 1)
    );
}

#[tokio::test]
async fn an_invalid_request_fails_the_batch_with_the_servers_words() {
    let (url, received) = scripted_server(Arc::new(|_, _, _| {
        json_answer(
            StatusCode::BAD_REQUEST,
            json!({"error": true, "error_code": "INVALID_REQUEST", "message": "data[3] is odd"}),
        )
    }))
    .await;
    let client = builder(&url, "k").build().unwrap();
    let batch = client
        .bulk_enrich(&records(vec![nicolas("a")]), EnrichFlags::default())
        .await
        .unwrap();
    let reason = reason(&batch.records[0]);
    assert!(
        reason.contains("INVALID_REQUEST") && reason.contains("data[3] is odd"),
        "{reason}"
    );
    assert_eq!(received.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn a_429_without_headers_is_retried_after_a_backoff() {
    let (url, received) = scripted_server(Arc::new(|attempt, request, _| {
        if attempt == 1 {
            (StatusCode::TOO_MANY_REQUESTS, "slow down").into_response()
        } else {
            all_not_matched(request)
        }
    }))
    .await;
    let client = builder(&url, "k").build().unwrap();
    let batch = client
        .bulk_enrich(&records(vec![nicolas("a")]), EnrichFlags::default())
        .await
        .unwrap();
    assert_eq!(batch.records[0].status(), RecordStatus::NotMatched);
    assert_eq!(received.lock().unwrap().len(), 2);
    let totals = client.totals();
    assert_eq!((totals.rate_limited, totals.retries), (1, 1));
}

#[tokio::test]
async fn a_429_with_reset_headers_waits_for_the_reset_then_succeeds() {
    let (url, received) = scripted_server(Arc::new(|attempt, request, _| {
        if attempt == 1 {
            let mut response = json_answer(
                StatusCode::TOO_MANY_REQUESTS,
                json!({"error": true, "error_code": "RATE_LIMITED"}),
            );
            let headers = response.headers_mut();
            headers.insert("x-minute-request-left", 0.into());
            headers.insert("x-minute-reset-seconds", 1.into());
            headers.insert("x-daily-request-left", 1000.into());
            response
        } else {
            all_not_matched(request)
        }
    }))
    .await;
    let client = builder(&url, "k").build().unwrap();
    let batch = client
        .bulk_enrich(&records(vec![nicolas("a")]), EnrichFlags::default())
        .await
        .unwrap();
    assert_eq!(batch.records[0].status(), RecordStatus::NotMatched);
    assert_eq!(received.lock().unwrap().len(), 2);
    assert!(
        client.totals().quota_wait_ms > 0,
        "the second attempt waited for the reset"
    );
}

#[tokio::test]
async fn an_unexplained_total_cost_is_assigned_and_warned_about() {
    let (url, _) = scripted_server(Arc::new(|_, request, _| {
        let ids = identifiers(request);
        json_answer(
            StatusCode::OK,
            json!({
                "error": false, "total_cost": 7,
                "matched": [
                    {"identifier": ids[1], "person": {"person_id": "p1"}},
                    {"identifier": ids[0], "person": {"person_id": "p0"}}
                ],
                "not_matched": [], "invalid_datapoints": []
            }),
        )
    }))
    .await;
    let client = builder(&url, "k").build().unwrap();
    let batch = client
        .bulk_enrich(
            &records(vec![nicolas("a"), eva("b")]),
            EnrichFlags::default(),
        )
        .await
        .unwrap();
    // The documented price is 1 each; the surplus of 5 goes to the first match in request order.
    assert_eq!(costs(&batch), [6, 1]);
    assert_eq!(batch.total_cost, 7);
    assert_eq!(client.totals().cost_warnings, 1);
}

#[tokio::test]
async fn a_server_that_echoes_the_key_does_not_leak_it_into_reasons() {
    let (url, _) = scripted_server(Arc::new(|_, _, headers| {
        let key = headers
            .get("x-key")
            .and_then(|k| k.to_str().ok())
            .unwrap_or_default()
            .to_string();
        json_answer(
            StatusCode::BAD_REQUEST,
            json!({"error": true, "error_code": "INVALID_REQUEST", "message": format!("bad key {key}")}),
        )
    }))
    .await;
    let secret = "echoed-secret-key-42";
    let client = builder(&url, secret).build().unwrap();
    let batch = client
        .bulk_enrich(&records(vec![nicolas("a")]), EnrichFlags::default())
        .await
        .unwrap();
    let reason = reason(&batch.records[0]);
    assert!(!reason.contains(secret), "{reason}");
    assert!(reason.contains("<redacted>"), "{reason}");
}

#[tokio::test]
async fn a_caller_that_goes_away_still_answers_the_records_waiting_for_its_answer() {
    use futures::FutureExt;
    let sandbox = start(config()).await;
    let client = client(&sandbox, ALPHA_KEY);
    let eva = records(vec![eva("a")]);
    // Polled once (the record is claimed and its request task started), then dropped.
    assert!(
        client
            .bulk_enrich(&eva, EnrichFlags::default())
            .now_or_never()
            .is_none()
    );
    let batch = client
        .bulk_enrich(&eva, EnrichFlags::default())
        .await
        .unwrap();
    assert_eq!(person_id(&batch.records[0]), Some(EVA_ID));
    assert_eq!(batch.records[0].cost(), 0, "the first caller paid for it");
    assert_eq!(batch.duplicates, 1);
    assert_eq!(sandbox.stats().key(ALPHA).records, 1, "sent once");
    assert_eq!(client.totals().credits, 1);
}

#[tokio::test]
async fn a_lost_answer_counts_against_the_credit_budget_as_if_charged() {
    let (url, received) = scripted_server(Arc::new(|attempt, request, _| match attempt {
        1 => (StatusCode::OK, "<html>maintenance</html>").into_response(),
        _ => all_not_matched(request),
    }))
    .await;
    let client = builder(&url, "k").max_credits(Some(2)).build().unwrap();
    let first = client
        .bulk_enrich(
            &records(vec![nicolas("a"), eva("b")]),
            EnrichFlags::default(),
        )
        .await
        .unwrap();
    assert_eq!(first.lost_answers, 2);
    // Its answer said nothing of its cost: the budget takes the worst case (2) as spent, so
    // nothing more fits.
    let second = client
        .bulk_enrich(&records(vec![nicole("c")]), EnrichFlags::default())
        .await
        .unwrap();
    assert!(
        matches!(
            second.records[0],
            RecordOutcome::Deferred {
                reason: DeferReason::Budget,
                ..
            }
        ),
        "{:?}",
        second.records[0]
    );
    assert_eq!(received.lock().unwrap().len(), 2);
}

#[tokio::test]
async fn a_record_left_out_is_asked_again_even_when_the_budget_is_spent() {
    let (url, received) = scripted_server(Arc::new(|attempt, request, _| {
        let ids = identifiers(request);
        let (first, cost, free) = match attempt {
            // Both records charged, the second left out of the answer.
            1 => (&ids[0], 2, false),
            // Asked again: the vendor does not charge twice.
            _ => (&ids[0], 0, true),
        };
        json_answer(
            StatusCode::OK,
            json!({
                "error": false, "total_cost": cost,
                "matched": [{"identifier": first, "free_enrichment": free, "person": {"person_id": "p"}, "company": null}],
                "not_matched": [], "invalid_datapoints": []
            }),
        )
    }))
    .await;
    let client = builder(&url, "k").max_credits(Some(2)).build().unwrap();
    let batch = client
        .bulk_enrich(
            &records(vec![nicolas("a"), eva("b")]),
            EnrichFlags::default(),
        )
        .await
        .unwrap();
    // The re-ask spends nothing, so a budget the first request used up does not stop it.
    assert_eq!(
        statuses(&batch),
        [RecordStatus::Matched, RecordStatus::Matched]
    );
    assert_eq!(received.lock().unwrap().len(), 2);
    assert_eq!(costs(&batch), [1, 1]);
    assert_eq!(batch.total_cost, 2);
}

#[tokio::test]
async fn an_answer_cut_off_after_a_success_status_is_asked_again() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // The server processed (and charged) the request, sent its status line and headers, then
    // the connection broke mid-body: exact bytes, so a raw socket.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = connections.clone();
    tokio::spawn(async move {
        // Bounded: at most as many connections as a client could ever open for one request.
        for connection in 0..8 {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let mut request = vec![0u8; 64 * 1024];
            let _ = socket.read(&mut request).await;
            // The first answer breaks off; the second is whole (the client made the
            // identifier `r0`).
            let answer: &[u8] = if connection == 0 {
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 500\r\n\r\n{\"error\": false, \"total_cost\": 1, \"matc"
            } else {
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 97\r\nconnection: close\r\n\r\n{\"error\": false, \"total_cost\": 0, \"matched\": [], \"not_matched\": [\"r0\"], \"invalid_datapoints\": []}"
            };
            let _ = socket.write_all(answer).await;
            let _ = socket.shutdown().await;
        }
    });
    let client = builder(&url, "k").build().unwrap();
    let batch = client
        .bulk_enrich(&records(vec![nicolas("a")]), EnrichFlags::default())
        .await
        .unwrap();
    assert_eq!(batch.records[0].status(), RecordStatus::NotMatched);
    assert_eq!(
        connections.load(std::sync::atomic::Ordering::SeqCst),
        2,
        "asked again once"
    );
    let totals = client.totals();
    assert_eq!(
        (totals.retries, totals.lost_answers, totals.records_sent),
        (1, 1, 2)
    );
}

#[tokio::test]
async fn a_401_with_an_unknown_error_code_is_a_refused_key() {
    let (url, received) = scripted_server(Arc::new(|_, _, _| {
        json_answer(
            StatusCode::UNAUTHORIZED,
            json!({"error": true, "error_code": "KEY_REVOKED", "message": "no"}),
        )
    }))
    .await;
    let client = builder(&url, "k").build().unwrap();
    let result = client
        .bulk_enrich(
            &records(vec![nicolas("a"), eva("b")]),
            EnrichFlags::default(),
        )
        .await;
    assert!(matches!(result, Err(Error::InvalidApiKey)), "{result:?}");
    assert_eq!(received.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn the_batches_counts_add_up_to_the_clients_totals() {
    let mut config = config();
    config.faults = Faults {
        internal_error_rate: 0.4,
        ..Faults::default()
    };
    config.seed = 11;
    let sandbox = start(config).await;
    let client = builder(&sandbox.base_url(), ALPHA_KEY)
        .retry(RetryPolicy {
            max_attempts: 12,
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(10),
        })
        .build()
        .unwrap();
    let mut summed = datafusion_prospeo::api::Tally::default();
    for values in [
        vec![
            eva("e"),
            nicolas("n"),
            invalid("i"),
            eva("e2"),
            stranger("s"),
        ],
        // Answered before: from the client's cache, as duplicates.
        vec![eva("e"), omar("o")],
        strangers(60),
    ] {
        let batch = client
            .bulk_enrich(&records(values), EnrichFlags::default())
            .await
            .unwrap();
        assert_eq!(batch.total_cost, batch.credits);
        assert_eq!(batch.settled(), batch.records.len() as u64);
        summed += &batch.tally;
    }
    let totals = client.totals();
    assert_eq!(totals.tally, summed);
    assert!(totals.retries > 0, "faults were injected: {totals:?}");
    assert_eq!(totals.credits, sandbox.stats().key(ALPHA).credits_charged);
}
