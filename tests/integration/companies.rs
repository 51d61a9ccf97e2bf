//! Bulk Enrich Company through the client and the sandbox: matching, costs, the cache's
//! endpoint tag, and one quota shared with the person endpoint.

use std::sync::Arc;
use std::time::Duration;

use datafusion_prospeo::Datapoints;
use datafusion_prospeo::api::{
    ApiKey, BatchOutcome, Client, Endpoint, EnrichFlags, RateLimits, RecordOutcome, RecordStatus,
    RetryPolicy,
};
use datafusion_prospeo::sandbox::{Faults, Sandbox};
use serde_json::{Value, json};

use crate::common::*;

fn client(sandbox: &Sandbox, limits: Option<RateLimits>) -> Client {
    let mut builder = Client::builder()
        .base_url(sandbox.base_url())
        .api_key(ApiKey::new(ALPHA_KEY).unwrap())
        .batch_timeout(Duration::from_secs(30))
        .retry(RetryPolicy {
            max_attempts: 4,
            base_delay: Duration::from_millis(5),
            max_delay: Duration::from_millis(50),
        });
    if let Some(limits) = limits {
        builder = builder.limits(limits);
    }
    builder.build().unwrap()
}

fn records(values: &[Value]) -> Vec<Datapoints> {
    values
        .iter()
        .map(|v| serde_json::from_value(v.clone()).unwrap())
        .collect()
}

fn statuses(batch: &BatchOutcome) -> Vec<RecordStatus> {
    batch.records.iter().map(RecordOutcome::status).collect()
}

fn company_ids(batch: &BatchOutcome) -> Vec<Option<String>> {
    batch
        .records
        .iter()
        .map(|o| match o {
            RecordOutcome::Matched(m) => {
                assert!(m.person.is_none(), "a company answer carries no person");
                m.company.as_ref().and_then(|c| c.company_id.clone())
            }
            _ => None,
        })
        .collect()
}

fn company_strangers(n: usize) -> Vec<Value> {
    (0..n)
        .map(|i| json!({"company_website": format!("stranger-{i}.example")}))
        .collect()
}

#[tokio::test]
async fn companies_match_by_id_website_linkedin_or_name_and_each_is_paid_once() {
    let sandbox = start(config()).await;
    let client = client(&sandbox, None);
    let input = records(&[
        json!({"company_website": "https://www.Intercom.com/pricing"}),
        json!({"company_linkedin_url": "linkedin.com/company/kpmg/"}),
        json!({"company_id": "c-globex"}),
        json!({"company_name": "  Initech "}),
        // Two companies are called Acme: a name alone cannot tell them apart.
        json!({"company_name": "Acme"}),
        json!({"company_name": "Nobody Inc"}),
        // A person's datapoints are no company record: never sent.
        json!({"full_name": "Eva Kiegler", "email": EVA_EMAIL}),
        json!({"company_website": "intercom.com"}),
    ]);
    let batch = client
        .enrich(Endpoint::BulkEnrichCompany, &input, EnrichFlags::default())
        .await
        .unwrap();
    use RecordStatus::*;
    assert_eq!(
        statuses(&batch),
        [
            Matched,
            Matched,
            Matched,
            Matched,
            NotMatched,
            NotMatched,
            InvalidDatapoints,
            Matched
        ]
    );
    let ids = company_ids(&batch);
    let expected = [
        Some("c-intercom"),
        Some("c-kpmg"),
        Some("c-globex"),
        Some("c-initech"),
        None,
        None,
        None,
        Some("c-intercom"),
    ];
    assert_eq!(ids, expected.map(|id| id.map(str::to_string)));
    // One credit a company; the second Intercom row is the first one's answer, free.
    let costs: Vec<i64> = batch.records.iter().map(RecordOutcome::cost).collect();
    assert_eq!(costs, [1, 1, 1, 1, 0, 0, 0, 0]);
    assert_eq!(batch.duplicates, 1);
    let stats = sandbox.stats().key(ALPHA);
    assert_eq!(
        stats.companies.records, 6,
        "the invalid row and the duplicate stay home"
    );
    assert_eq!(stats.companies.credits_charged, 4);
    assert_eq!(stats.credits_charged, 4);
    assert_eq!((stats.records, stats.matched), (6, 4));
    let totals = client.totals();
    assert_eq!((totals.credits, totals.records_sent), (4, 6));
    // Initech, Acme and Nobody Inc were asked by their name alone.
    assert_eq!((batch.name_only, totals.name_only), (3, 3));

    // A second client (no shared cache) asks again: the vendor does not charge twice for a
    // company the account enriched.
    let again = self::client(&sandbox, None)
        .enrich(
            Endpoint::BulkEnrichCompany,
            &input[..1],
            EnrichFlags::default(),
        )
        .await
        .unwrap();
    match &again.records[0] {
        RecordOutcome::Matched(m) => assert!(m.free_enrichment && m.cost == 0),
        other => panic!("{other:?}"),
    }
    assert_eq!(sandbox.stats().key(ALPHA).companies.free_enrichments, 1);
    sandbox.stop().await.unwrap();
}

#[tokio::test]
async fn a_company_answer_never_answers_a_person_record() {
    let sandbox = start(config()).await;
    let client = client(&sandbox, None);
    // The same datapoints asked of both endpoints: two questions, two answers.
    let input = records(&[json!({
        "first_name": "Eva",
        "last_name": "Kiegler",
        "company_website": "intercom.com",
    })]);
    let company = client
        .enrich(Endpoint::BulkEnrichCompany, &input, EnrichFlags::default())
        .await
        .unwrap();
    let person = client
        .bulk_enrich(&input, EnrichFlags::default())
        .await
        .unwrap();
    assert_eq!(company_ids(&company), [Some("c-intercom".to_string())]);
    match &person.records[0] {
        RecordOutcome::Matched(m) => {
            assert_eq!(
                m.person.as_ref().unwrap().person_id.as_deref(),
                Some(EVA_ID)
            );
        }
        other => panic!("{other:?}"),
    }
    let totals = client.totals();
    assert_eq!(
        (totals.cached, totals.duplicates, totals.requests),
        (0, 0, 2)
    );
    // Asked again, each is served by its own answer.
    let company_again = client
        .enrich(Endpoint::BulkEnrichCompany, &input, EnrichFlags::default())
        .await
        .unwrap();
    assert_eq!(
        company_again.records,
        company
            .records
            .iter()
            .map(RecordOutcome::without_cost)
            .collect::<Vec<_>>()
    );
    assert_eq!(
        client.totals().requests,
        2,
        "the second ask is served without a request"
    );
    sandbox.stop().await.unwrap();
}

#[tokio::test]
async fn person_and_company_calls_on_one_key_share_one_quota() {
    // 60 records a day for the key, whatever the endpoint.
    let sandbox = start(config_with_limits(1_000, 1_000, 60)).await;
    let client = client(&sandbox, Some(RateLimits::new(1_000, 1_000, 60)));
    let persons = records(&strangers(40));
    let companies = records(&company_strangers(40));
    let (person, company) = tokio::join!(
        client.bulk_enrich(&persons, EnrichFlags::default()),
        client.enrich(
            Endpoint::BulkEnrichCompany,
            &companies,
            EnrichFlags::default()
        ),
    );
    let (person, company) = (person.unwrap(), company.unwrap());
    let settled = |b: &BatchOutcome| {
        b.records
            .iter()
            .filter(|o| o.status() == RecordStatus::NotMatched)
            .count()
    };
    let deferred = |b: &BatchOutcome| {
        b.records
            .iter()
            .filter(|o| o.status() == RecordStatus::Deferred)
            .count()
    };
    // Together they used the day's 60 records, and not one more.
    assert_eq!(settled(&person) + settled(&company), 60);
    assert_eq!(deferred(&person) + deferred(&company), 20);
    let stats = sandbox.stats().key(ALPHA);
    assert_eq!(stats.records, 60);
    assert_eq!(stats.companies.records, settled(&company) as u64);
    assert_eq!(
        stats.rate_limited, 0,
        "the client kept both inside the shared windows"
    );
    sandbox.stop().await.unwrap();
}

#[tokio::test]
async fn company_requests_survive_the_sandboxs_faults_and_nothing_is_paid_twice() {
    let mut config = config();
    config.faults = Faults {
        internal_error_rate: 0.2,
        drop_rate: 0.15,
        cut_body_rate: 0.15,
        garbled_rate: 0.1,
        lost_record_rate: 0.2,
        ..Faults::default()
    };
    config.seed = 11;
    let sandbox = start(config).await;
    let client = Client::builder()
        .base_url(sandbox.base_url())
        .api_key(ApiKey::new(ALPHA_KEY).unwrap())
        .batch_timeout(Duration::from_secs(60))
        .retry(RetryPolicy {
            max_attempts: 12,
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(10),
        })
        .build()
        .unwrap();
    let mut values = vec![
        json!({"company_website": "intercom.com"}),
        json!({"company_id": "c-kpmg"}),
        json!({"company_linkedin_url": "linkedin.com/company/globex"}),
    ];
    values.extend(company_strangers(60));
    let input = records(&values);
    // Small calls: many requests, so many draws of the faults.
    let mut outcomes = Vec::new();
    for chunk in input.chunks(4) {
        let batch = client
            .enrich(Endpoint::BulkEnrichCompany, chunk, EnrichFlags::default())
            .await
            .unwrap();
        outcomes.extend(batch.records);
    }
    // Every record settled in the one run, as it would without faults.
    let statuses: Vec<RecordStatus> = outcomes.iter().map(RecordOutcome::status).collect();
    assert_eq!(&statuses[..3], [RecordStatus::Matched; 3]);
    assert!(
        statuses[3..].iter().all(|s| *s == RecordStatus::NotMatched),
        "{statuses:?}"
    );
    let stats = sandbox.stats().key(ALPHA);
    let faults = &stats.faults;
    assert!(
        faults.internal_error
            + faults.dropped
            + faults.cut_body
            + faults.garbled
            + faults.lost_record
            > 0,
        "{faults:?}"
    );
    // Three companies, each charged once, whatever was asked again.
    assert_eq!(stats.companies.credits_charged, 3);
    let paid: i64 = outcomes.iter().map(RecordOutcome::cost).sum();
    assert_eq!(paid, 3);
    sandbox.stop().await.unwrap();
}

#[tokio::test]
async fn a_company_answer_whose_total_cost_the_prices_do_not_explain_is_reconciled_with_a_warning()
{
    use axum::routing::post;
    use std::sync::Mutex;
    // The vendor page's example: two matches, `total_cost: 10`.
    let received = Arc::new(Mutex::new(Vec::<Value>::new()));
    let log = received.clone();
    let app = axum::Router::new().route(
        "/bulk-enrich-company",
        post(move |body: axum::body::Bytes| {
            let log = log.clone();
            async move {
                log.lock()
                    .unwrap()
                    .push(serde_json::from_slice(&body).unwrap());
                axum::Json(json!({
                    "error": false,
                    "total_cost": 10,
                    "matched": [
                        {"identifier": "r0", "company": {"company_id": "c-1", "name": "Intercom"}},
                        {"identifier": "r1", "company": {"company_id": "c-2", "name": "KPMG"}}
                    ],
                    "not_matched": [],
                    "invalid_datapoints": []
                }))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let client = Client::builder()
        .base_url(url)
        .api_key(ApiKey::new("k").unwrap())
        .build()
        .unwrap();
    let input = records(&[
        json!({"company_website": "intercom.com", "email": "not@sent.io"}),
        json!({"company_name": "KPMG"}),
    ]);
    let flags = EnrichFlags {
        enrich_mobile: true,
        ..EnrichFlags::default()
    };
    let batch = client
        .enrich(Endpoint::BulkEnrichCompany, &input, flags)
        .await
        .unwrap();
    let costs: Vec<i64> = batch.records.iter().map(RecordOutcome::cost).collect();
    assert_eq!(costs.iter().sum::<i64>(), 10, "{costs:?}");
    assert_eq!(batch.total_cost, 10);
    assert_eq!(client.totals().cost_warnings, 1);
    // What went out: the company datapoints only, no flags.
    let sent = received.lock().unwrap().clone();
    assert_eq!(
        sent,
        [json!({"data": [
            {"identifier": "r0", "company_website": "intercom.com"},
            {"identifier": "r1", "company_name": "KPMG"}
        ]})]
    );
    server.abort();
}
