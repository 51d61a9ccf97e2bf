//! The sandbox against the vendor contract (`reference/prospeo-api.md` and the vendor's Bulk
//! Enrich Person page), over real HTTP.

use std::collections::BTreeSet;
use std::time::Duration;

use datafusion_prospeo::api::plan::Plan;
use datafusion_prospeo::sandbox::{Faults, Sandbox, SandboxConfig, SandboxKey};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::*;

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// Stops a sandbox, failing the test if stopping does not end pending delays (a guard against
/// a hang, far above what stopping takes).
async fn stop(sandbox: Sandbox) {
    tokio::time::timeout(Duration::from_secs(20), sandbox.stop())
        .await
        .expect("stopping the sandbox ends pending delays")
        .expect("the sandbox stops cleanly");
}

// ---------------------------------------------------------------------------------------------
// 1. The vendor page's example
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn the_vendor_page_example_request() {
    let sandbox = start(config()).await;
    let request = json!({
        "only_verified_email": true,
        "enrich_mobile": true,
        "data": [
            { "identifier": "1", "full_name": "Eva Kiegler", "company_website": "intercom.com" },
            {
                "identifier": "2", "first_name": "Jonah", "last_name": "Stones",
                "linkedin_url": "https://www.linkedin.com/in/jonah-stones",
                "company_name": "Deloitte", "company_website": "deloitte.com",
                "company_linkedin_url": "https://www.linkedin.com/company/deloitte"
            },
            { "identifier": "3", "linkedin_url": "https://www.linkedin.com/in/micah-sanders" },
            { "identifier": "4", "full_name": "Brandon Stering" },
            { "identifier": "5", "email": "nicolas.b@kpmg.com" },
            {
                "identifier": "6", "full_name": "Nicole Wonda",
                "company_linkedin_url": "https://www.linkedin.com/company/young"
            },
            { "identifier": "7", "person_id": "6f564548455488874f48e" }
        ]
    });
    let reply = post_bulk(&sandbox, ALPHA_KEY, &request).await;

    reply.assert_ok();
    assert_eq!(reply.invalid(), ["4"]);
    let not_matched = reply.not_matched();
    assert!(
        not_matched.contains("2") && not_matched.contains("3"),
        "{not_matched:?}"
    );
    assert_eq!(not_matched, set(&["2", "3"]));
    assert_eq!(reply.matched_ids(), set(&["1", "5", "6", "7"]));
    for id in ["1", "5", "6", "7"] {
        let m = reply.matched(id);
        assert!(m["person"].is_object(), "{id}: person object");
        assert!(m["company"].is_object(), "{id}: company object");
    }
    assert_eq!(reply.matched_person("1"), EVA_ID);
    assert_eq!(reply.matched_person("5"), NICOLAS_ID);
    assert_eq!(reply.matched_person("6"), NICOLE_ID);
    assert_eq!(reply.matched_person("7"), SEARCHED_ID);
    assert_eq!(reply.matched("1")["company"]["domain"], "intercom.com");
    assert_eq!(
        reply.matched("6")["company"]["linkedin_url"],
        "https://www.linkedin.com/company/young"
    );
    // Mobiles revealed where they exist (enrich_mobile).
    assert_eq!(reply.matched("1")["person"]["mobile"]["revealed"], true);
    assert_eq!(reply.matched("1")["person"]["mobile"]["mobile"], EVA_MOBILE);
    assert_eq!(
        reply.matched("6")["person"]["mobile"]["mobile"],
        NICOLE_MOBILE
    );

    // The documented rule: 10 per match with a revealed mobile, 1 per other match.
    let by_rule: i64 = ["1", "5", "6", "7"]
        .iter()
        .map(|id| documented_cost(reply.matched(id)))
        .sum();
    assert_eq!(by_rule, 10 + 1 + 10 + 1);
    assert_eq!(reply.total_cost(), by_rule);

    let stats = sandbox.stats().key(ALPHA);
    assert_eq!(stats.credits_charged, by_rule);
    assert_eq!(stats.remaining_credits, 10_000 - by_rule);
    assert_eq!(stats.matched, 4);
    assert_eq!(stats.not_matched, 2);
    assert_eq!(stats.invalid, 1);
    assert_eq!(stats.records, 7);
    assert_eq!(stats.mobile_reveals, 2);
    assert_eq!(stats.successful_requests, 1);

    // A bulk call counts one per submitted record, invalid and unmatched ones included.
    assert_eq!(reply.header("x-minute-request-left"), 1_800 - 7);
    assert_eq!(reply.header("x-daily-request-left"), 500_000 - 7);
}

// ---------------------------------------------------------------------------------------------
// 2. Error codes
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_missing_or_wrong_key_is_401_invalid_api_key() {
    let sandbox = start(config()).await;
    let body = bulk(vec![eva("1")]).to_string();

    let no_key = post_raw(&sandbox, "/bulk-enrich-person", None, &body).await;
    no_key.assert_error(StatusCode::UNAUTHORIZED, "INVALID_API_KEY");
    let wrong = post_raw(&sandbox, "/bulk-enrich-person", Some("not-a-key"), &body).await;
    wrong.assert_error(StatusCode::UNAUTHORIZED, "INVALID_API_KEY");
    let single = post_single(
        &sandbox,
        "not-a-key",
        &json!({"data": {"email": NICOLAS_EMAIL}}),
    )
    .await;
    single.assert_error(StatusCode::UNAUTHORIZED, "INVALID_API_KEY");
    let account = account_information(&sandbox, "not-a-key").await;
    account.assert_error(StatusCode::UNAUTHORIZED, "INVALID_API_KEY");

    let stats = sandbox.stats();
    assert_eq!(stats.unauthorized, 4);
    for label in [ALPHA, BETA] {
        let key = stats.key(label);
        assert_eq!((key.requests, key.credits_charged, key.records), (0, 0, 0));
    }
}

#[tokio::test]
async fn malformed_requests_are_400_invalid_request() {
    let sandbox = start(config()).await;
    let fifty_one = bulk(strangers(51)).to_string();
    let cases: Vec<(&str, String)> = vec![
        (
            "malformed JSON",
            r#"{"data": [{"identifier": "1""#.to_string(),
        ),
        ("data missing", json!({"enrich_mobile": true}).to_string()),
        (
            "data not a list",
            json!({"data": {"identifier": "1", "email": NICOLAS_EMAIL}}).to_string(),
        ),
        ("0 records", json!({"data": []}).to_string()),
        ("51 records", fifty_one),
        (
            "record without identifier",
            json!({"data": [nicolas("1"), {"email": "someone@kpmg.com"}]}).to_string(),
        ),
        (
            "duplicate identifiers",
            json!({"data": [nicolas("1"), eva("1")]}).to_string(),
        ),
        (
            "non-boolean flag",
            json!({"enrich_mobile": "yes", "data": [nicolas("1")]}).to_string(),
        ),
    ];
    let count = cases.len() as u64;
    for (name, body) in cases {
        let reply = post_raw(&sandbox, "/bulk-enrich-person", Some(ALPHA_KEY), &body).await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{name}: {}",
            reply.text
        );
        assert_eq!(reply.body["error"], true, "{name}: {}", reply.text);
        assert_eq!(
            reply.error_code(),
            Some("INVALID_REQUEST"),
            "{name}: {}",
            reply.text
        );
    }

    let stats = sandbox.stats().key(ALPHA);
    assert_eq!(stats.requests, count);
    assert_eq!(stats.successful_requests, 0);
    assert_eq!(stats.errors.get("INVALID_REQUEST"), Some(&count));
    assert_eq!(
        (stats.records, stats.matched, stats.credits_charged),
        (0, 0, 0)
    );
    assert_eq!(stats.remaining_credits, 10_000);

    // 50 records is the most a request may carry, and is accepted.
    let fifty = post_bulk(&sandbox, ALPHA_KEY, &bulk(strangers(50))).await;
    fifty.assert_ok();
    assert_eq!(fifty.not_matched().len(), 50);
    assert_eq!(fifty.total_cost(), 0);
}

#[tokio::test]
async fn a_request_above_the_balance_is_insufficient_credits_and_charges_nothing() {
    let mut config = config();
    config.keys = vec![SandboxKey::new("poor", "poor-key", 12, Plan::Pro)];
    let sandbox = start(config).await;

    // Two revealed mobiles: 20 credits, 12 left.
    let reply = post_bulk(
        &sandbox,
        "poor-key",
        &bulk_mobile(vec![eva("e"), nicole("n")]),
    )
    .await;
    reply.assert_error(StatusCode::BAD_REQUEST, "INSUFFICIENT_CREDITS");
    let stats = sandbox.stats().key("poor");
    assert_eq!(stats.remaining_credits, 12);
    assert_eq!(
        (stats.credits_charged, stats.records, stats.matched),
        (0, 0, 0)
    );
    let account = account_information(&sandbox, "poor-key").await;
    account.assert_ok();
    assert_eq!(account.body["response"]["remaining_credits"], 12);
    assert_eq!(account.body["response"]["used_credits"], 0);

    // What the balance allows still goes through.
    let eva_only = post_bulk(&sandbox, "poor-key", &bulk_mobile(vec![eva("e")])).await;
    eva_only.assert_ok();
    assert_eq!(eva_only.total_cost(), 10);
    let nicole_too = post_bulk(&sandbox, "poor-key", &bulk_mobile(vec![nicole("n")])).await;
    nicole_too.assert_error(StatusCode::BAD_REQUEST, "INSUFFICIENT_CREDITS");
    let nicolas_plain = post_bulk(&sandbox, "poor-key", &bulk(vec![nicolas("x")])).await;
    nicolas_plain.assert_ok();
    assert_eq!(nicolas_plain.total_cost(), 1);

    let stats = sandbox.stats().key("poor");
    assert_eq!(stats.remaining_credits, 1);
    assert_eq!(stats.credits_charged, 11);
    assert_eq!(stats.records, 2, "failed requests do not count");
    assert_eq!(stats.errors.get("INSUFFICIENT_CREDITS"), Some(&2));
}

#[tokio::test]
async fn the_single_enrich_endpoint() {
    let sandbox = start(config()).await;

    let first = post_single(
        &sandbox,
        ALPHA_KEY,
        &json!({"data": {"email": NICOLAS_EMAIL}}),
    )
    .await;
    first.assert_ok();
    let fields: BTreeSet<String> = first.body.as_object().unwrap().keys().cloned().collect();
    for field in ["error", "free_enrichment", "person", "company"] {
        assert!(fields.contains(field), "{field} in {}", first.text);
    }
    assert_eq!(first.body["free_enrichment"], false);
    assert_eq!(first.body["person"]["person_id"], NICOLAS_ID);
    assert_eq!(first.body["company"]["domain"], "kpmg.com");

    let again = post_single(
        &sandbox,
        ALPHA_KEY,
        &json!({"data": {"email": NICOLAS_EMAIL}}),
    )
    .await;
    again.assert_ok();
    assert_eq!(again.body["free_enrichment"], true);
    assert_eq!(again.body["person"]["person_id"], NICOLAS_ID);

    let mobile = post_single(
        &sandbox,
        ALPHA_KEY,
        &json!({"enrich_mobile": true, "data": {"full_name": "Eva Kiegler", "company_website": "intercom.com"}}),
    )
    .await;
    mobile.assert_ok();
    assert_eq!(mobile.body["person"]["mobile"]["mobile"], EVA_MOBILE);

    let no_match = post_single(
        &sandbox,
        ALPHA_KEY,
        &json!({"data": {"email": "nobody@nowhere.example"}}),
    )
    .await;
    assert!(no_match.status.is_client_error(), "{}", no_match.text);
    assert_eq!(no_match.body["error"], true);
    assert_eq!(no_match.error_code(), Some("NO_MATCH"));

    let invalid = post_single(
        &sandbox,
        ALPHA_KEY,
        &json!({"data": {"full_name": "Brandon Stering"}}),
    )
    .await;
    assert!(invalid.status.is_client_error(), "{}", invalid.text);
    assert_eq!(invalid.body["error"], true);
    assert_eq!(invalid.error_code(), Some("INVALID_DATAPOINTS"));

    let stats = sandbox.stats().key(ALPHA);
    assert_eq!(
        stats.credits_charged,
        1 + 10,
        "misses and invalid records cost nothing"
    );
    assert_eq!(stats.records, 3, "failed requests do not count");
}

// ---------------------------------------------------------------------------------------------
// 3. Flags
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn only_verified_email_turns_an_unavailable_email_into_not_matched() {
    let sandbox = start(config()).await;

    let plain = post_bulk(&sandbox, ALPHA_KEY, &bulk(vec![omar("o"), nicolas("n")])).await;
    plain.assert_ok();
    assert_eq!(plain.matched_ids(), set(&["o", "n"]));
    assert_eq!(plain.matched_person("o"), OMAR_ID);
    assert_eq!(plain.total_cost(), 2);

    let request = json!({"only_verified_email": true, "data": [omar("o"), nicolas("n")]});
    let verified = post_bulk(&sandbox, BETA_KEY, &request).await;
    verified.assert_ok();
    assert_eq!(verified.matched_ids(), set(&["n"]));
    assert_eq!(verified.not_matched(), set(&["o"]));
    assert_eq!(verified.total_cost(), 1);
}

/// Asserts that a mobile object is masked: `revealed: false`, `*` in every number, and the real
/// number nowhere.
#[track_caller]
fn assert_masked(mobile: &Value, real: &[&str]) {
    assert_eq!(mobile["revealed"], false, "{mobile}");
    for field in ["mobile", "mobile_national", "mobile_international"] {
        let value = mobile[field].as_str().unwrap_or_default();
        assert!(value.contains('*'), "{field} is masked: {mobile}");
        for number in real {
            assert_ne!(value, *number, "{field} is not the real number");
        }
    }
}

fn digits(text: &str) -> String {
    text.chars().filter(char::is_ascii_digit).collect()
}

#[tokio::test]
async fn without_enrich_mobile_the_mobile_is_masked_and_costs_one() {
    let sandbox = start(config()).await;
    let reply = post_bulk(&sandbox, ALPHA_KEY, &bulk(vec![eva("e"), nicole("n")])).await;
    reply.assert_ok();
    assert_eq!(reply.total_cost(), 2);
    assert_masked(
        &reply.matched("e")["person"]["mobile"],
        &[EVA_MOBILE, EVA_MOBILE_NATIONAL, EVA_MOBILE_INTERNATIONAL],
    );
    assert_masked(&reply.matched("n")["person"]["mobile"], &[NICOLE_MOBILE]);
    // The subscriber numbers appear nowhere in the response, in any format.
    for hidden in ["4155550123", "555-0123", "5550123", "7700900123", "900123"] {
        assert!(
            !reply.text.contains(hidden),
            "{hidden} leaked: {}",
            reply.text
        );
    }
    assert_eq!(sandbox.stats().key(ALPHA).mobile_reveals, 0);
}

/// Masking replaces the digits of the number: at most the country calling code may stay
/// visible in the E.164 and international forms, and no digit at all in the national form
/// (which carries no country code).
#[tokio::test]
async fn a_masked_mobile_shows_no_digit_beyond_the_country_code() {
    let sandbox = start(config()).await;
    let reply = post_bulk(&sandbox, ALPHA_KEY, &bulk(vec![eva("e")])).await;
    reply.assert_ok();
    let mobile = &reply.matched("e")["person"]["mobile"];
    for field in ["mobile", "mobile_international"] {
        let kept = digits(mobile[field].as_str().unwrap_or_default());
        assert!(
            "1".starts_with(&kept),
            "{field} keeps only the country code: {mobile}"
        );
    }
    let national = mobile["mobile_national"].as_str().unwrap_or_default();
    assert_eq!(
        digits(national),
        "",
        "mobile_national keeps no digit: {national}"
    );
}

#[tokio::test]
async fn with_enrich_mobile_the_mobile_is_revealed_and_costs_ten() {
    let sandbox = start(config()).await;
    let reply = post_bulk(
        &sandbox,
        ALPHA_KEY,
        &bulk_mobile(vec![eva("e"), nicolas("n")]),
    )
    .await;
    reply.assert_ok();
    let mobile = &reply.matched("e")["person"]["mobile"];
    assert_eq!(mobile["revealed"], true);
    assert_eq!(mobile["mobile"], EVA_MOBILE);
    assert_eq!(mobile["mobile_national"], EVA_MOBILE_NATIONAL);
    assert_eq!(mobile["mobile_international"], EVA_MOBILE_INTERNATIONAL);
    // Nicolas has no mobile: a plain match (1, the default reading of the uncertain rule).
    assert_eq!(reply.total_cost(), 10 + 1);
    let stats = sandbox.stats().key(ALPHA);
    assert_eq!(stats.mobile_reveals, 1);
    assert_eq!(stats.credits_charged, 11);
}

#[tokio::test]
async fn only_verified_mobile_keeps_people_with_a_mobile_and_reveals_it() {
    let sandbox = start(config()).await;
    let request =
        json!({"only_verified_mobile": true, "data": [eva("e"), nicolas("n"), omar("o")]});
    let reply = post_bulk(&sandbox, ALPHA_KEY, &request).await;
    reply.assert_ok();
    assert_eq!(reply.matched_ids(), set(&["e", "o"]));
    assert_eq!(reply.not_matched(), set(&["n"]));
    for (id, number) in [("e", EVA_MOBILE), ("o", OMAR_MOBILE)] {
        let mobile = &reply.matched(id)["person"]["mobile"];
        assert_eq!(mobile["revealed"], true, "{id}: implied enrich_mobile");
        assert_eq!(mobile["mobile"], number);
    }
    assert_eq!(reply.total_cost(), 20);
    assert_eq!(sandbox.stats().key(ALPHA).mobile_reveals, 2);
}

// ---------------------------------------------------------------------------------------------
// 4. Credits
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_match_costs_one_a_revealed_mobile_ten_and_misses_nothing() {
    let sandbox = start(config()).await;
    let records = || vec![eva("e"), nicolas("n"), stranger("s"), invalid("i")];

    let plain = post_bulk(&sandbox, ALPHA_KEY, &bulk(records())).await;
    plain.assert_ok();
    assert_eq!(plain.matched_ids(), set(&["e", "n"]));
    assert_eq!(plain.not_matched(), set(&["s"]));
    assert_eq!(plain.invalid(), ["i"]);
    assert_eq!(plain.total_cost(), 2);

    let mobile = post_bulk(&sandbox, BETA_KEY, &bulk_mobile(records())).await;
    mobile.assert_ok();
    assert_eq!(mobile.total_cost(), 10 + 1);

    let nothing = post_bulk(
        &sandbox,
        ALPHA_KEY,
        &bulk(vec![stranger("s"), invalid("i")]),
    )
    .await;
    nothing.assert_ok();
    assert_eq!(nothing.total_cost(), 0);

    let stats = sandbox.stats();
    assert_eq!(stats.key(ALPHA).credits_charged, 2);
    assert_eq!(stats.key(ALPHA).remaining_credits, 10_000 - 2);
    assert_eq!(stats.key(BETA).credits_charged, 11);
    assert_eq!(stats.key(BETA).remaining_credits, 10_000 - 11);
}

#[tokio::test]
async fn re_enriching_a_person_with_the_same_key_is_free() {
    let sandbox = start(config()).await;

    let first = post_bulk(&sandbox, ALPHA_KEY, &bulk(vec![eva("1")])).await;
    first.assert_ok();
    assert_eq!(first.total_cost(), 1);
    assert_ne!(first.matched("1")["free_enrichment"], true);

    let second = post_bulk(&sandbox, ALPHA_KEY, &bulk(vec![eva("2")])).await;
    second.assert_ok();
    assert_eq!(second.total_cost(), 0);
    assert_eq!(second.matched("2")["free_enrichment"], true);
    assert_eq!(second.matched_person("2"), EVA_ID);

    // Found through another route, it is still the same person.
    let by_linkedin = json!({"identifier": "3", "linkedin_url": EVA_LINKEDIN});
    let third = post_bulk(&sandbox, ALPHA_KEY, &bulk(vec![by_linkedin])).await;
    third.assert_ok();
    assert_eq!(third.total_cost(), 0);
    assert_eq!(third.matched("3")["free_enrichment"], true);

    let stats = sandbox.stats().key(ALPHA);
    assert_eq!(stats.credits_charged, 1);
    assert_eq!(stats.free_enrichments, 2);
    assert_eq!(stats.people_charged, 1);
    assert_eq!(stats.matched, 3);
}

#[tokio::test]
async fn a_first_mobile_reveal_after_a_plain_match_is_charged_and_the_next_is_free() {
    let sandbox = start(config()).await;

    let plain = post_bulk(&sandbox, ALPHA_KEY, &bulk(vec![eva("e")])).await;
    assert_eq!(plain.total_cost(), 1);
    assert_eq!(plain.matched("e")["person"]["mobile"]["revealed"], false);

    let reveal = post_bulk(&sandbox, ALPHA_KEY, &bulk_mobile(vec![eva("e")])).await;
    reveal.assert_ok();
    assert_eq!(reveal.total_cost(), 10);
    assert_ne!(reveal.matched("e")["free_enrichment"], true);
    assert_eq!(
        reveal.matched("e")["person"]["mobile"]["mobile"],
        EVA_MOBILE
    );

    let again = post_bulk(&sandbox, ALPHA_KEY, &bulk_mobile(vec![eva("e")])).await;
    again.assert_ok();
    assert_eq!(again.total_cost(), 0);
    assert_eq!(again.matched("e")["free_enrichment"], true);
    assert_eq!(again.matched("e")["person"]["mobile"]["mobile"], EVA_MOBILE);

    let plain_again = post_bulk(&sandbox, ALPHA_KEY, &bulk(vec![eva("e")])).await;
    assert_eq!(plain_again.total_cost(), 0);

    assert_eq!(sandbox.stats().key(ALPHA).credits_charged, 11);
}

#[tokio::test]
async fn the_same_person_twice_in_one_request_is_charged_once() {
    let sandbox = start(config()).await;
    let twice = || vec![eva("a"), json!({"identifier": "b", "person_id": EVA_ID})];

    let plain = post_bulk(&sandbox, ALPHA_KEY, &bulk(twice())).await;
    plain.assert_ok();
    assert_eq!(plain.matched_ids(), set(&["a", "b"]));
    assert_eq!(plain.total_cost(), 1);
    let free: Vec<bool> = ["a", "b"]
        .iter()
        .map(|id| plain.matched(id)["free_enrichment"] == true)
        .collect();
    assert_eq!(
        free.iter().filter(|f| **f).count(),
        1,
        "one of the two is free"
    );

    let mobile = post_bulk(&sandbox, BETA_KEY, &bulk_mobile(twice())).await;
    mobile.assert_ok();
    assert_eq!(mobile.total_cost(), 10);
    for id in ["a", "b"] {
        assert_eq!(mobile.matched(id)["person"]["mobile"]["mobile"], EVA_MOBILE);
    }
    let stats = sandbox.stats();
    assert_eq!(stats.key(ALPHA).credits_charged, 1);
    assert_eq!(stats.key(BETA).credits_charged, 10);
}

#[tokio::test]
async fn a_different_key_pays_again() {
    let sandbox = start(config()).await;
    let alpha = post_bulk(&sandbox, ALPHA_KEY, &bulk(vec![eva("e")])).await;
    assert_eq!(alpha.total_cost(), 1);
    let beta = post_bulk(&sandbox, BETA_KEY, &bulk(vec![eva("e")])).await;
    beta.assert_ok();
    assert_eq!(beta.total_cost(), 1);
    assert_ne!(beta.matched("e")["free_enrichment"], true);
    let stats = sandbox.stats();
    assert_eq!(stats.key(ALPHA).credits_charged, 1);
    assert_eq!(stats.key(BETA).credits_charged, 1);
}

#[tokio::test]
async fn charge_mobile_attempts_makes_a_mobile_attempt_without_a_mobile_cost_ten() {
    // By default an enrich_mobile match without a mobile costs 1 (reference: "evidence points
    // to 1").
    let default = start(config()).await;
    let reply = post_bulk(&default, ALPHA_KEY, &bulk_mobile(vec![nicolas("n")])).await;
    reply.assert_ok();
    assert_eq!(reply.total_cost(), 1);

    let mut config = config();
    config.charge_mobile_attempts = true;
    let charging = start(config).await;
    let attempt = post_bulk(&charging, ALPHA_KEY, &bulk_mobile(vec![nicolas("n")])).await;
    attempt.assert_ok();
    assert_eq!(attempt.total_cost(), 10);
    assert!(attempt.matched("n")["person"]["mobile"].is_null());
    // Without enrich_mobile nothing changes.
    let plain = post_bulk(&charging, BETA_KEY, &bulk(vec![nicolas("n")])).await;
    assert_eq!(plain.total_cost(), 1);
    let stats = charging.stats();
    assert_eq!(stats.key(ALPHA).credits_charged, 10);
    assert_eq!(stats.key(BETA).credits_charged, 1);
}

/// Under the reading that a mobile attempt costs 10, asking for the mobile of a person enriched
/// earlier without it is charged too (reference: "except that asking for the mobile of a record
/// enriched earlier without it is charged"), whether or not a mobile is found; once.
#[tokio::test]
async fn charge_mobile_attempts_also_charges_an_attempt_after_a_plain_match() {
    let mut config = config();
    config.charge_mobile_attempts = true;
    let sandbox = start(config).await;

    let plain = post_bulk(&sandbox, ALPHA_KEY, &bulk(vec![nicolas("n")])).await;
    assert_eq!(plain.total_cost(), 1);
    let attempt = post_bulk(&sandbox, ALPHA_KEY, &bulk_mobile(vec![nicolas("n")])).await;
    attempt.assert_ok();
    assert_eq!(attempt.total_cost(), 10, "{}", attempt.text);
    let again = post_bulk(&sandbox, ALPHA_KEY, &bulk_mobile(vec![nicolas("n")])).await;
    again.assert_ok();
    assert_eq!(again.total_cost(), 0, "{}", again.text);
    assert_eq!(again.matched("n")["free_enrichment"], true);
    assert_eq!(sandbox.stats().key(ALPHA).credits_charged, 11);
}

#[tokio::test]
async fn account_information_shows_the_credits_and_the_plan() {
    let mut config = config();
    config.keys = vec![SandboxKey::new(
        "starter",
        "starter-key",
        500,
        Plan::Starter,
    )];
    let sandbox = start(config).await;

    let before = account_information(&sandbox, "starter-key").await;
    before.assert_ok();
    let info = &before.body["response"];
    assert_eq!(info["remaining_credits"], 500);
    assert_eq!(info["used_credits"], 0);
    let plan = info["current_plan"].as_str().unwrap_or_default();
    assert!(plan.eq_ignore_ascii_case("starter"), "plan: {plan}");

    let spent = post_bulk(
        &sandbox,
        "starter-key",
        &bulk_mobile(vec![eva("e"), nicolas("n")]),
    )
    .await;
    assert_eq!(spent.total_cost(), 11);

    for _ in 0..2 {
        // Asking is free: the same numbers twice.
        let after = account_information(&sandbox, "starter-key").await;
        after.assert_ok();
        assert_eq!(after.body["response"]["remaining_credits"], 489);
        assert_eq!(after.body["response"]["used_credits"], 11);
    }
    let stats = sandbox.stats().key("starter");
    assert_eq!(stats.remaining_credits, 489);
    assert_eq!(stats.credits_charged, 11);
}

// ---------------------------------------------------------------------------------------------
// 5. Matching
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn records_match_by_every_route_despite_messy_input() {
    let sandbox = start(config()).await;
    let records = vec![
        json!({"identifier": "person-id", "person_id": SEARCHED_ID}),
        json!({"identifier": "linkedin-bare", "linkedin_url": "linkedin.com/in/eva-kiegler"}),
        json!({"identifier": "linkedin-slash", "linkedin_url": "https://www.linkedin.com/in/nicole-wonda/"}),
        json!({"identifier": "linkedin-case", "linkedin_url": " HTTP://uk.LinkedIn.com/in/Nicolas-Bernard?trk=x "}),
        json!({"identifier": "email", "email": "  Nicolas.B@KPMG.com "}),
        json!({"identifier": "website", "full_name": "Eva Kiegler", "company_website": "https://www.Intercom.com/about"}),
        json!({"identifier": "company-linkedin", "first_name": "Nicole", "last_name": "Wonda", "company_linkedin_url": "linkedin.com/company/young/"}),
        json!({"identifier": "company-name", "full_name": "Priya Raman", "company_name": "Initech"}),
        json!({"identifier": "first-last-name", "first_name": "Eva", "last_name": "Kiegler", "company_name": "Intercom"}),
    ];
    let reply = post_bulk(&sandbox, ALPHA_KEY, &bulk(records)).await;
    reply.assert_ok();
    assert_eq!(reply.not_matched(), BTreeSet::new(), "{}", reply.text);
    assert!(reply.invalid().is_empty(), "{}", reply.text);
    let expected = [
        ("person-id", SEARCHED_ID, "initech.com"),
        ("linkedin-bare", EVA_ID, "intercom.com"),
        ("linkedin-slash", NICOLE_ID, "young-partners.com"),
        ("linkedin-case", NICOLAS_ID, "kpmg.com"),
        ("email", NICOLAS_ID, "kpmg.com"),
        ("website", EVA_ID, "intercom.com"),
        ("company-linkedin", NICOLE_ID, "young-partners.com"),
        ("company-name", SEARCHED_ID, "initech.com"),
        ("first-last-name", EVA_ID, "intercom.com"),
    ];
    for (id, person, domain) in expected {
        assert_eq!(reply.matched_person(id), person, "{id}");
        assert_eq!(reply.matched(id)["company"]["domain"], domain, "{id}");
    }
    // Four distinct people.
    assert_eq!(reply.total_cost(), 4);
}

#[tokio::test]
async fn a_name_shared_at_two_companies_of_the_same_name_is_not_matched() {
    let sandbox = start(config()).await;
    let records = vec![
        json!({"identifier": "by-name", "full_name": "Sam Taylor", "company_name": "Acme"}),
        json!({"identifier": "by-first-last-name", "first_name": "Sam", "last_name": "Taylor", "company_name": "acme"}),
        json!({"identifier": "io", "full_name": "Sam Taylor", "company_website": "acme.io"}),
        json!({"identifier": "com", "first_name": "Sam", "last_name": "Taylor", "company_website": "https://www.acme.com/"}),
    ];
    let reply = post_bulk(&sandbox, ALPHA_KEY, &bulk(records)).await;
    reply.assert_ok();
    assert_eq!(reply.not_matched(), set(&["by-name", "by-first-last-name"]));
    assert_eq!(reply.matched_person("io"), SAM_IO_ID);
    assert_eq!(reply.matched("io")["company"]["domain"], "acme.io");
    assert_eq!(reply.matched_person("com"), SAM_COM_ID);
    assert_eq!(reply.matched("com")["company"]["domain"], "acme.com");
    assert_eq!(reply.total_cost(), 2);
}

// ---------------------------------------------------------------------------------------------
// 6. Rate limits
// ---------------------------------------------------------------------------------------------

#[track_caller]
fn assert_rate_headers(reply: &Reply, limits: (u64, u64, u64), minute_left: u64, day_left: u64) {
    for name in RATE_LIMIT_HEADERS {
        assert!(
            reply.headers.contains_key(name),
            "{name} on {} {}",
            reply.status,
            reply.text
        );
    }
    assert_eq!(reply.header("x-second-rate-limit"), limits.0);
    assert_eq!(reply.header("x-minute-rate-limit"), limits.1);
    assert_eq!(reply.header("x-daily-rate-limit"), limits.2);
    assert_eq!(
        reply.header("x-minute-request-left"),
        minute_left,
        "{}",
        reply.text
    );
    assert_eq!(
        reply.header("x-daily-request-left"),
        day_left,
        "{}",
        reply.text
    );
}

#[tokio::test]
async fn rate_limit_headers_on_success_and_on_errors() {
    let limits = (10, 20, 100);
    let sandbox = start(config_with_limits(limits.0, limits.1, limits.2)).await;

    let first = post_bulk(&sandbox, ALPHA_KEY, &bulk(strangers(3))).await;
    first.assert_ok();
    assert_rate_headers(&first, limits, 17, 97);
    assert_eq!(first.header("x-minute-reset-seconds"), 60);
    assert_eq!(first.header("x-daily-reset-seconds"), 24 * 3600);

    let malformed = post_raw(&sandbox, "/bulk-enrich-person", Some(ALPHA_KEY), "{oops").await;
    malformed.assert_error(StatusCode::BAD_REQUEST, "INVALID_REQUEST");
    assert_rate_headers(&malformed, limits, 17, 97);

    let no_match = post_single(
        &sandbox,
        ALPHA_KEY,
        &json!({"data": {"email": "x@nowhere.example"}}),
    )
    .await;
    assert_eq!(no_match.error_code(), Some("NO_MATCH"));
    assert_rate_headers(&no_match, limits, 17, 97);

    let account = account_information(&sandbox, ALPHA_KEY).await;
    account.assert_ok();
    assert_rate_headers(&account, limits, 17, 97);

    sandbox.advance_clock(Duration::from_secs(30));
    let second = post_bulk(&sandbox, ALPHA_KEY, &bulk(strangers(17))).await;
    second.assert_ok();
    assert_rate_headers(&second, limits, 0, 80);
    assert_eq!(second.header("x-minute-reset-seconds"), 30);
    assert_eq!(second.header("x-daily-reset-seconds"), 24 * 3600 - 30);

    let limited = post_bulk(&sandbox, ALPHA_KEY, &bulk(strangers(1))).await;
    limited.assert_error(StatusCode::TOO_MANY_REQUESTS, "RATE_LIMITED");
    assert_rate_headers(&limited, limits, 0, 80);

    let stats = sandbox.stats().key(ALPHA);
    assert_eq!(stats.records, 20, "failed requests do not count");
    assert_eq!(stats.rate_limited, 1);
    assert_eq!(stats.errors.get("RATE_LIMITED"), Some(&1));
    assert_eq!(stats.errors.get("INVALID_REQUEST"), Some(&1));
}

#[tokio::test]
async fn the_per_second_limit() {
    let sandbox = start(config_with_limits(2, 1_000, 10_000)).await;

    // Alone in its second, a call larger than the per-second limit is admitted.
    let burst = post_bulk(&sandbox, ALPHA_KEY, &bulk(strangers(5))).await;
    burst.assert_ok();
    let next = post_bulk(&sandbox, ALPHA_KEY, &bulk(strangers(1))).await;
    next.assert_error(StatusCode::TOO_MANY_REQUESTS, "RATE_LIMITED");
    assert_rate_headers(&next, (2, 1_000, 10_000), 995, 9_995);

    sandbox.advance_clock(Duration::from_secs(1));
    for _ in 0..2 {
        post_bulk(&sandbox, ALPHA_KEY, &bulk(strangers(1)))
            .await
            .assert_ok();
    }
    let third = post_bulk(&sandbox, ALPHA_KEY, &bulk(strangers(1))).await;
    third.assert_error(StatusCode::TOO_MANY_REQUESTS, "RATE_LIMITED");

    let stats = sandbox.stats().key(ALPHA);
    assert_eq!(stats.records, 7);
    assert_eq!(stats.rate_limited, 2);
}

#[tokio::test]
async fn the_per_minute_limit_and_429s_use_no_quota() {
    let limits = (50, 10, 10_000);
    let sandbox = start(config_with_limits(limits.0, limits.1, limits.2)).await;

    let full = post_bulk(&sandbox, ALPHA_KEY, &bulk(strangers(10))).await;
    full.assert_ok();
    assert_rate_headers(&full, limits, 0, 9_990);

    sandbox.advance_clock(Duration::from_secs(2));
    let limited = post_bulk(&sandbox, ALPHA_KEY, &bulk(strangers(1))).await;
    limited.assert_error(StatusCode::TOO_MANY_REQUESTS, "RATE_LIMITED");
    assert_rate_headers(&limited, limits, 0, 9_990);
    assert_eq!(limited.header("x-minute-reset-seconds"), 58);

    sandbox.advance_clock(Duration::from_secs(2));
    let still = post_bulk(&sandbox, ALPHA_KEY, &bulk(strangers(1))).await;
    still.assert_error(StatusCode::TOO_MANY_REQUESTS, "RATE_LIMITED");
    assert_eq!(still.header("x-minute-reset-seconds"), 56);

    sandbox.advance_clock(Duration::from_secs(56));
    let again = post_bulk(&sandbox, ALPHA_KEY, &bulk(strangers(1))).await;
    again.assert_ok();
    // The two 429s took nothing from the window.
    assert_rate_headers(&again, limits, 9, 9_989);

    let stats = sandbox.stats().key(ALPHA);
    assert_eq!(stats.records, 11);
    assert_eq!(stats.rate_limited, 2);
    assert_eq!(stats.errors.get("RATE_LIMITED"), Some(&2));
}

#[tokio::test]
async fn the_per_day_limit_is_a_rolling_24_hours() {
    let limits = (50, 1_000, 10);
    let sandbox = start(config_with_limits(limits.0, limits.1, limits.2)).await;

    let full = post_bulk(&sandbox, ALPHA_KEY, &bulk(strangers(10))).await;
    full.assert_ok();
    assert_rate_headers(&full, limits, 990, 0);
    assert_eq!(full.header("x-daily-reset-seconds"), 24 * 3600);

    sandbox.advance_clock(Duration::from_secs(2));
    let limited = post_bulk(&sandbox, ALPHA_KEY, &bulk(strangers(1))).await;
    limited.assert_error(StatusCode::TOO_MANY_REQUESTS, "RATE_LIMITED");
    assert_eq!(limited.header("x-daily-reset-seconds"), 24 * 3600 - 2);

    // 23 hours later the records are still in the window.
    sandbox.advance_clock(Duration::from_secs(23 * 3600));
    let later = post_bulk(&sandbox, ALPHA_KEY, &bulk(strangers(1))).await;
    later.assert_error(StatusCode::TOO_MANY_REQUESTS, "RATE_LIMITED");
    assert_rate_headers(&later, limits, 1_000, 0);
    assert_eq!(later.header("x-daily-reset-seconds"), 3600 - 2);

    // A full day after them, the window is free again.
    sandbox.advance_clock(Duration::from_secs(3600));
    let next_day = post_bulk(&sandbox, ALPHA_KEY, &bulk(strangers(1))).await;
    next_day.assert_ok();
    assert_rate_headers(&next_day, limits, 999, 9);

    let stats = sandbox.stats().key(ALPHA);
    assert_eq!(stats.records, 11);
    assert_eq!(stats.rate_limited, 2);
}

#[tokio::test]
async fn the_clock_endpoint_moves_the_windows_over_http() {
    let sandbox = start(config_with_limits(50, 5, 10_000)).await;

    post_bulk(&sandbox, ALPHA_KEY, &bulk(strangers(5)))
        .await
        .assert_ok();
    advance_clock_over_http(&sandbox, 2.0).await.assert_ok();
    let limited = post_bulk(&sandbox, ALPHA_KEY, &bulk(strangers(1))).await;
    limited.assert_error(StatusCode::TOO_MANY_REQUESTS, "RATE_LIMITED");

    let moved = advance_clock_over_http(&sandbox, 60.0).await;
    moved.assert_ok();
    let after = post_bulk(&sandbox, ALPHA_KEY, &bulk(strangers(1))).await;
    after.assert_ok();
    assert_eq!(after.header("x-minute-request-left"), 4);

    for bad in [
        r#"{"advance_seconds": -1}"#,
        r#"{"advance_seconds": 1e300}"#,
        r#"{"seconds": 5}"#,
        "later",
    ] {
        let reply = post_raw(&sandbox, "/_sandbox/clock", None, bad).await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{bad}: {}",
            reply.text
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 7. Faults
// ---------------------------------------------------------------------------------------------

fn with_faults(faults: Faults) -> SandboxConfig {
    let mut config = config();
    config.faults = faults;
    config
}

#[track_caller]
fn assert_nothing_charged(sandbox: &Sandbox) {
    let stats = sandbox.stats().key(ALPHA);
    assert_eq!(stats.credits_charged, 0);
    assert_eq!(stats.remaining_credits, 10_000);
    assert_eq!((stats.records, stats.matched), (0, 0));
}

#[tokio::test]
async fn the_internal_error_fault_is_http_400_internal_error() {
    let sandbox = start(with_faults(Faults {
        internal_error_rate: 1.0,
        ..Default::default()
    }))
    .await;
    for _ in 0..3 {
        let reply = post_bulk(&sandbox, ALPHA_KEY, &bulk(vec![eva("e")])).await;
        reply.assert_error(StatusCode::BAD_REQUEST, "INTERNAL_ERROR");
    }
    let stats = sandbox.stats().key(ALPHA);
    assert_eq!(stats.faults.internal_error, 3);
    assert_eq!(stats.errors.get("INTERNAL_ERROR"), Some(&3));
    assert_nothing_charged(&sandbox);
}

#[tokio::test]
async fn the_bad_gateway_fault_is_502_or_503_with_an_html_body() {
    let sandbox = start(with_faults(Faults {
        bad_gateway_rate: 1.0,
        ..Default::default()
    }))
    .await;
    for _ in 0..6 {
        let reply = post_bulk(&sandbox, ALPHA_KEY, &bulk(vec![eva("e")])).await;
        assert!(
            [StatusCode::BAD_GATEWAY, StatusCode::SERVICE_UNAVAILABLE].contains(&reply.status),
            "{} {}",
            reply.status,
            reply.text
        );
        assert!(
            serde_json::from_str::<Value>(&reply.text).is_err(),
            "not JSON: {}",
            reply.text
        );
        assert!(
            reply.text.to_ascii_lowercase().contains("<html"),
            "{}",
            reply.text
        );
        let content_type = reply
            .headers
            .get("content-type")
            .and_then(|v| v.to_str().ok());
        assert!(
            content_type.is_some_and(|t| t.contains("text/html")),
            "{content_type:?}"
        );
    }
    assert_eq!(sandbox.stats().key(ALPHA).faults.bad_gateway, 6);
    assert_nothing_charged(&sandbox);
}

#[tokio::test]
async fn the_drop_fault_closes_the_connection_without_a_response() {
    let sandbox = start(with_faults(Faults {
        drop_rate: 1.0,
        ..Default::default()
    }))
    .await;
    for _ in 0..2 {
        let body = bulk(vec![eva("e")]).to_string();
        let error = send_raw(
            &client(),
            &sandbox,
            "/bulk-enrich-person",
            Some(ALPHA_KEY),
            &body,
        )
        .await
        .expect_err("no response at all");
        assert_eq!(error.status(), None, "not an HTTP status: {error:?}");
        assert!(!error.is_timeout(), "not a timeout: {error:?}");
    }
    assert_eq!(sandbox.stats().key(ALPHA).faults.dropped, 2);
    assert_nothing_charged(&sandbox);
}

#[tokio::test]
async fn a_slow_response_times_the_client_out_but_is_processed_and_charged() {
    let sandbox = start(with_faults(Faults {
        slow_rate: 1.0,
        slow_delay: Duration::from_secs(30),
        ..Default::default()
    }))
    .await;
    let impatient = client_with_timeout(Duration::from_millis(300));
    let body = bulk(vec![eva("e")]).to_string();
    let error = send_raw(
        &impatient,
        &sandbox,
        "/bulk-enrich-person",
        Some(ALPHA_KEY),
        &body,
    )
    .await
    .expect_err("the client gives up first");
    assert!(error.is_timeout(), "a timeout: {error:?}");

    let stats = sandbox.stats().key(ALPHA);
    assert_eq!(stats.faults.slow, 1);
    assert_eq!(stats.credits_charged, 1);
    assert_eq!(stats.remaining_credits, 10_000 - 1);
    assert_eq!(stats.matched, 1);
    stop(sandbox).await;
}

#[tokio::test]
async fn a_cut_off_answer_has_a_success_status_is_charged_and_breaks_while_read() {
    let sandbox = start(with_faults(Faults {
        cut_body_rate: 1.0,
        ..Default::default()
    }))
    .await;
    let body = bulk(vec![eva("e"), nicolas("n")]).to_string();
    let response = send_raw(
        &client(),
        &sandbox,
        "/bulk-enrich-person",
        Some(ALPHA_KEY),
        &body,
    )
    .await
    .expect("the status and headers arrive");
    assert_eq!(response.status(), StatusCode::OK);
    let error = response.bytes().await.expect_err("the body breaks");
    assert!(error.is_body() || error.is_decode(), "{error:?}");

    let stats = sandbox.stats().key(ALPHA);
    assert_eq!(stats.faults.cut_body, 1);
    assert_eq!((stats.records, stats.matched), (2, 2));
    assert_eq!(stats.credits_charged, 2);
    stop(sandbox).await;
}

#[tokio::test]
async fn a_garbled_answer_is_http_200_with_a_body_that_is_not_json_and_is_charged() {
    let sandbox = start(with_faults(Faults {
        garbled_rate: 1.0,
        ..Default::default()
    }))
    .await;
    let reply = post_bulk(&sandbox, ALPHA_KEY, &bulk(vec![eva("e")])).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(!reply.text.is_empty());
    assert!(
        serde_json::from_str::<Value>(&reply.text).is_err(),
        "not JSON: {}",
        reply.text
    );
    let stats = sandbox.stats().key(ALPHA);
    assert_eq!(stats.faults.garbled, 1);
    assert_eq!(stats.credits_charged, 1);
    stop(sandbox).await;
}

#[tokio::test]
async fn a_lost_record_is_missing_from_the_answer_but_charged() {
    let sandbox = start(with_faults(Faults {
        lost_record_rate: 1.0,
        ..Default::default()
    }))
    .await;
    let reply = post_bulk(&sandbox, ALPHA_KEY, &bulk(vec![eva("e"), nicolas("n")])).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let named: BTreeSet<String> = ["matched", "not_matched", "invalid_datapoints"]
        .iter()
        .flat_map(|field| reply.body[*field].as_array().cloned().unwrap_or_default())
        .map(|record| match record {
            Value::String(id) => id,
            record => record["identifier"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        })
        .collect();
    assert_eq!(named.len(), 1, "one of two records is left out: {named:?}");
    assert_eq!(reply.body["total_cost"], 2, "both were charged");
    let stats = sandbox.stats().key(ALPHA);
    assert_eq!(stats.faults.lost_record, 1);
    assert_eq!(stats.credits_charged, 2);
    stop(sandbox).await;
}

#[tokio::test]
async fn latency_delays_every_response() {
    let slow = start(with_faults(Faults {
        latency: Duration::from_secs(20),
        ..Default::default()
    }))
    .await;
    let fast = start(config()).await;
    let impatient = client_with_timeout(Duration::from_millis(300));
    let body = bulk(vec![eva("e")]).to_string();

    let error = send_raw(
        &impatient,
        &slow,
        "/bulk-enrich-person",
        Some(ALPHA_KEY),
        &body,
    )
    .await
    .expect_err("the client gives up first");
    assert!(error.is_timeout(), "a timeout: {error:?}");

    let response = send_raw(
        &impatient,
        &fast,
        "/bulk-enrich-person",
        Some(ALPHA_KEY),
        &body,
    )
    .await
    .expect("no latency, no timeout");
    assert_eq!(response.status(), StatusCode::OK);
    stop(slow).await;
}

#[tokio::test]
async fn rate_limit_as_200_signals_the_limit_in_the_body() {
    let mut config = config_with_limits(50, 2, 1_000);
    config.faults.rate_limit_as_200 = true;
    let sandbox = start(config).await;

    post_bulk(&sandbox, ALPHA_KEY, &bulk(strangers(2)))
        .await
        .assert_ok();
    let limited = post_bulk(&sandbox, ALPHA_KEY, &bulk(vec![eva("e")])).await;
    limited.assert_error(StatusCode::OK, "RATE_LIMIT_EXCEEDED");
    assert_rate_headers(&limited, (50, 2, 1_000), 0, 998);

    let stats = sandbox.stats().key(ALPHA);
    assert_eq!(stats.rate_limited, 1);
    assert_eq!(stats.records, 2);
    assert_eq!(stats.credits_charged, 0);
}

/// The outcomes of 20 sequential requests to a sandbox with random faults.
async fn fault_sequence(seed: u64) -> Vec<String> {
    let mut config = with_faults(Faults {
        bad_gateway_rate: 0.5,
        internal_error_rate: 0.5,
        ..Default::default()
    });
    config.seed = seed;
    let sandbox = start(config).await;
    let mut outcomes = Vec::new();
    for i in 0..20 {
        let reply = post_bulk(&sandbox, ALPHA_KEY, &bulk(vec![nicolas(&i.to_string())])).await;
        outcomes.push(format!(
            "{} {}",
            reply.status.as_u16(),
            reply.error_code().unwrap_or("")
        ));
    }
    let stats = sandbox.stats().key(ALPHA);
    let count = |prefix: &str| outcomes.iter().filter(|o| o.starts_with(prefix)).count() as u64;
    assert_eq!(stats.faults.bad_gateway, count("502") + count("503"));
    assert_eq!(stats.faults.internal_error, count("400 INTERNAL_ERROR"));
    assert_eq!(stats.successful_requests, count("200"));
    outcomes
}

#[tokio::test]
async fn faults_follow_the_seed() {
    let first = fault_sequence(7).await;
    let same = fault_sequence(7).await;
    let other = fault_sequence(8).await;
    let kinds: BTreeSet<&String> = first.iter().collect();
    assert!(kinds.len() > 1, "a rate of 0.5 mixes outcomes: {first:?}");
    assert_eq!(first, same, "the same seed gives the same faults");
    assert_ne!(first, other, "another seed gives other faults");
}

// ---------------------------------------------------------------------------------------------
// 8. Stats over HTTP
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn the_stats_endpoint_reports_what_stats_returns() {
    let sandbox = start(config()).await;
    post_bulk(
        &sandbox,
        ALPHA_KEY,
        &bulk_mobile(vec![eva("e"), stranger("s"), invalid("i")]),
    )
    .await
    .assert_ok();
    post_bulk(&sandbox, BETA_KEY, &bulk(vec![nicolas("n")]))
        .await
        .assert_ok();
    post_raw(&sandbox, "/bulk-enrich-person", Some(ALPHA_KEY), "{").await;
    post_raw(&sandbox, "/bulk-enrich-person", Some("wrong"), "{}").await;

    let over_http = stats_over_http(&sandbox).await;
    assert_eq!(over_http["unauthorized"], 1);
    assert_eq!(over_http["keys"][ALPHA]["credits_charged"], 10);
    assert_eq!(over_http["keys"][BETA]["credits_charged"], 1);
    assert_eq!(parse_stats(over_http), sandbox.stats());
}

// ---------------------------------------------------------------------------------------------
// 8b. Bulk Enrich Company
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn the_company_endpoint_validates_matches_charges_and_shares_the_enrich_windows() {
    let sandbox = start(config_with_limits(60, 1_000, 10_000)).await;
    let company = |body: Value| {
        let sandbox = &sandbox;
        async move {
            post_raw(
                sandbox,
                "/bulk-enrich-company",
                Some(ALPHA_KEY),
                &body.to_string(),
            )
            .await
        }
    };
    // Validation: 1 to 50 records, unique identifiers, no flags, only the four company
    // datapoints (the strict reading of the contract: the client must never send more).
    let many: Vec<Value> = (0..51)
        .map(|i| json!({"identifier": i.to_string(), "company_name": format!("Co {i}")}))
        .collect();
    for body in [
        json!({"data": []}),
        json!({"data": many}),
        json!({"data": [
            {"identifier": "1", "company_name": "KPMG"},
            {"identifier": "1", "company_name": "Globex"}
        ]}),
        json!({"enrich_mobile": true, "data": [{"identifier": "1", "company_name": "KPMG"}]}),
        json!({"data": [{"identifier": "1", "company_name": "KPMG", "email": "a@kpmg.com"}]}),
    ] {
        company(body)
            .await
            .assert_error(StatusCode::BAD_REQUEST, "INVALID_REQUEST");
    }
    let reply = company(json!({
        "data": [
            {"identifier": "web", "company_website": "https://www.KPMG.com/careers"},
            {"identifier": "page", "company_linkedin_url": "linkedin.com/company/globex/"},
            {"identifier": "id", "company_id": "c-initech"},
            {"identifier": "name", "company_name": "Intercom"},
            {"identifier": "shared name", "company_name": "Acme"},
            {"identifier": "no datapoint"},
            {"identifier": "again", "company_website": "kpmg.com"},
        ]
    }))
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let matched: Vec<(&str, &str)> = reply.body["matched"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            assert!(
                m.get("person").is_none(),
                "a company answer has no person: {m}"
            );
            (
                m["identifier"].as_str().unwrap(),
                m["company"]["company_id"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        matched,
        [
            ("web", "c-kpmg"),
            ("page", "c-globex"),
            ("id", "c-initech"),
            ("name", "c-intercom"),
            ("again", "c-kpmg")
        ]
    );
    assert_eq!(reply.body["not_matched"], json!(["shared name"]));
    assert_eq!(reply.body["invalid_datapoints"], json!(["no datapoint"]));
    // 1 credit a company; KPMG's second row is free (enriched before, in this very request).
    assert_eq!(reply.body["total_cost"], 4);
    assert_eq!(reply.body["matched"][4]["free_enrichment"], true);
    // One enrich bucket: seven company records and then persons, in one second of 60.
    assert_eq!(reply.header("x-minute-request-left"), 1_000 - 7);
    let persons = post_bulk(&sandbox, ALPHA_KEY, &bulk(strangers(50))).await;
    assert_eq!(persons.status, StatusCode::OK, "{}", persons.text);
    let refused = company(json!({"data": [{"identifier": "1", "company_name": "KPMG"},
        {"identifier": "2", "company_name": "Globex"},
        {"identifier": "3", "company_name": "Initech"},
        {"identifier": "4", "company_name": "Intercom"}]}))
    .await;
    refused.assert_error(StatusCode::TOO_MANY_REQUESTS, "RATE_LIMITED");

    let stats = sandbox.stats().key(ALPHA);
    let companies = &stats.companies;
    assert_eq!(
        (
            companies.requests,
            companies.records,
            companies.matched,
            companies.not_matched,
            companies.invalid,
            companies.credits_charged,
            companies.free_enrichments
        ),
        (1, 7, 5, 1, 1, 4, 1)
    );
    // The key's figures hold both endpoints.
    assert_eq!(stats.records, 57);
    assert_eq!(stats.credits_charged, 4);
    assert_eq!(stats.rate_limited, 1);
    // Asked again later, a company the key enriched is free.
    advance_clock_over_http(&sandbox, 2.0).await;
    let again = company(json!({"data": [{"identifier": "1", "company_id": "c-globex"}]})).await;
    assert_eq!(again.body["total_cost"], 0, "{}", again.text);
    assert_eq!(again.body["matched"][0]["free_enrichment"], true);
}

// ---------------------------------------------------------------------------------------------
// 9. The binary's help
// ---------------------------------------------------------------------------------------------

#[test]
fn the_sandbox_help_documents_every_flag() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_prospeo"))
        .args(["sandbox", "--help"])
        .output()
        .expect("the prospeo binary runs");
    assert!(output.status.success(), "{output:?}");
    let help = String::from_utf8_lossy(&output.stdout);
    for flag in [
        "--bind",
        "--key",
        "--keys-file",
        "--credits",
        "--plan",
        "--per-second",
        "--per-minute",
        "--per-day",
        "--directory",
        "--seed",
        "--latency",
        "--latency-jitter",
        "--drop-rate",
        "--bad-gateway-rate",
        "--internal-error-rate",
        "--slow-rate",
        "--slow-delay",
        "--rate-limit-as-200",
        "--charge-mobile-attempts",
    ] {
        let documented = help
            .split(|c: char| c.is_whitespace() || c == ',' || c == '=' || c == '[' || c == '<')
            .any(|word| word == flag);
        assert!(
            documented,
            "{flag} is missing from `prospeo sandbox --help`:\n{help}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 10. Records asked again (`asked_again`)
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn the_same_person_asked_in_two_requests_is_asked_again_once() {
    let sandbox = start(config()).await;
    post_bulk(&sandbox, ALPHA_KEY, &bulk(vec![eva("1"), nicolas("2")]))
        .await
        .assert_ok();
    assert_eq!(sandbox.stats().key(ALPHA).asked_again, 0);
    post_bulk(&sandbox, ALPHA_KEY, &bulk(vec![eva("1")]))
        .await
        .assert_ok();
    let stats = sandbox.stats().key(ALPHA);
    assert_eq!(stats.asked_again, 1);
    assert_eq!(stats.records, 3);
    // The stats endpoint carries it too.
    let over_http = stats_over_http(&sandbox).await;
    assert_eq!(over_http["keys"][ALPHA]["asked_again"], 1);
    assert_eq!(parse_stats(over_http), sandbox.stats());
}

#[tokio::test]
async fn asked_again_ignores_the_identifier_and_normalises_the_datapoints() {
    let sandbox = start(config()).await;
    post_bulk(
        &sandbox,
        ALPHA_KEY,
        &bulk(vec![eva("a"), nicolas("b"), stranger("c"), invalid("d")]),
    )
    .await
    .assert_ok();
    // Other identifiers, and the same datapoints written otherwise: the email in capitals with
    // blanks around it, the name with extra inner spaces, the website as a URL. The stranger
    // matched nobody and still counts (it was answered); the invalid record never counts.
    let messy = vec![
        json!({
            "identifier": "x1", "full_name": "  Eva   Kiegler ", "company_website": "intercom.com"
        }),
        json!({"identifier": "x2", "email": format!("  {} ", NICOLAS_EMAIL.to_uppercase())}),
        json!({"identifier": "x3", "email": "nobody@nowhere.example"}),
        json!({"identifier": "x4", "full_name": "Brandon Stering"}),
    ];
    let reply = post_bulk(&sandbox, ALPHA_KEY, &bulk(messy)).await;
    reply.assert_ok();
    assert_eq!(reply.matched_ids(), set(&["x1", "x2"]));
    let stats = sandbox.stats().key(ALPHA);
    assert_eq!(stats.asked_again, 3);
    assert_eq!(stats.invalid, 2);
}

#[tokio::test]
async fn different_persons_or_other_datapoints_are_not_asked_again() {
    let sandbox = start(config()).await;
    post_bulk(&sandbox, ALPHA_KEY, &bulk(vec![eva("1"), nicolas("2")]))
        .await
        .assert_ok();
    post_bulk(
        &sandbox,
        ALPHA_KEY,
        &bulk(vec![nicole("1"), omar("2"), stranger("3")]),
    )
    .await
    .assert_ok();
    // Eva again, but through her LinkedIn URL: the same person, other datapoints. The sandbox
    // counts what was asked, not whom it found (a re-enrichment is still free).
    let by_linkedin = json!({"identifier": "4", "linkedin_url": EVA_LINKEDIN});
    let reply = post_bulk(&sandbox, ALPHA_KEY, &bulk(vec![by_linkedin])).await;
    reply.assert_ok();
    assert_eq!(reply.matched("4")["free_enrichment"], true);
    // The same person twice within one request: nothing had answered the first yet.
    post_bulk(
        &sandbox,
        ALPHA_KEY,
        &bulk(vec![strangers_from(7, 1)[0].clone(), {
            let mut again = strangers_from(7, 1)[0].clone();
            again["identifier"] = json!("again");
            again
        }]),
    )
    .await
    .assert_ok();
    // A company, then a person at that company: two questions (two endpoints).
    post_raw(
        &sandbox,
        "/bulk-enrich-company",
        Some(ALPHA_KEY),
        &json!({"data": [{"identifier": "c", "company_name": "Globex"}]}).to_string(),
    )
    .await
    .assert_ok();
    let omar_at_globex = json!({
        "identifier": "p", "first_name": "Omar", "last_name": "Haddad", "company_name": "Globex"
    });
    post_bulk(&sandbox, ALPHA_KEY, &bulk(vec![omar_at_globex]))
        .await
        .assert_ok();
    assert_eq!(sandbox.stats().key(ALPHA).asked_again, 0);
    // The company asked again is counted, on its own endpoint.
    post_raw(
        &sandbox,
        "/bulk-enrich-company",
        Some(ALPHA_KEY),
        &json!({"data": [{"identifier": "c2", "company_name": "  Globex "}]}).to_string(),
    )
    .await
    .assert_ok();
    assert_eq!(sandbox.stats().key(ALPHA).asked_again, 1);
}

#[tokio::test]
async fn a_rate_limited_request_is_not_asked_again_and_answers_nothing() {
    // Two records a minute.
    let sandbox = start(config_with_limits(50, 2, 10_000)).await;
    post_bulk(&sandbox, ALPHA_KEY, &bulk(vec![eva("1")]))
        .await
        .assert_ok();
    let limited = post_bulk(&sandbox, ALPHA_KEY, &bulk(vec![eva("1"), nicolas("2")])).await;
    limited.assert_error(StatusCode::TOO_MANY_REQUESTS, "RATE_LIMITED");
    let stats = sandbox.stats().key(ALPHA);
    assert_eq!((stats.rate_limited, stats.asked_again), (1, 0));

    sandbox.advance_clock(Duration::from_secs(60));
    // Nicolas was only in the refused request: nothing answered him, so he is not asked again;
    // Eva is.
    post_bulk(&sandbox, ALPHA_KEY, &bulk(vec![eva("1"), nicolas("2")]))
        .await
        .assert_ok();
    assert_eq!(sandbox.stats().key(ALPHA).asked_again, 1);
}

#[tokio::test]
async fn a_fault_before_processing_is_not_asked_again() {
    let sandbox = start(with_faults(Faults {
        internal_error_rate: 1.0,
        ..Faults::default()
    }))
    .await;
    for _ in 0..2 {
        post_bulk(&sandbox, ALPHA_KEY, &bulk(vec![eva("1")]))
            .await
            .assert_error(StatusCode::BAD_REQUEST, "INTERNAL_ERROR");
    }
    let stats = sandbox.stats().key(ALPHA);
    assert_eq!((stats.faults.internal_error, stats.asked_again), (2, 0));
}

#[tokio::test]
async fn asked_again_is_counted_per_key() {
    let sandbox = start(config()).await;
    post_bulk(&sandbox, ALPHA_KEY, &bulk(vec![eva("1"), nicolas("2")]))
        .await
        .assert_ok();
    // Beta asks the same: a first time for beta.
    post_bulk(&sandbox, BETA_KEY, &bulk(vec![eva("1"), nicolas("2")]))
        .await
        .assert_ok();
    let stats = sandbox.stats();
    assert_eq!(stats.key(ALPHA).asked_again, 0);
    assert_eq!(stats.key(BETA).asked_again, 0);
    post_bulk(&sandbox, BETA_KEY, &bulk(vec![nicolas("3")]))
        .await
        .assert_ok();
    let stats = sandbox.stats();
    assert_eq!(stats.key(ALPHA).asked_again, 0);
    assert_eq!(stats.key(BETA).asked_again, 1);
}
