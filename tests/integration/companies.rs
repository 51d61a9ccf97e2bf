//! Bulk Enrich Company through the client and the sandbox: matching, costs, the cache's
//! endpoint tag, and one quota shared with the person endpoint.

use std::time::Duration;

use datafusion_prospeo::Datapoints;
use datafusion_prospeo::api::{
    ApiKey, BatchOutcome, Client, Endpoint, EnrichFlags, RateLimits, RecordOutcome, RecordStatus,
    RetryPolicy,
};
use datafusion_prospeo::sandbox::Sandbox;
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
