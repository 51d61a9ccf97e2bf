//! Shared helpers of the integration tests: a hand-made directory, sandbox set-up, and small
//! HTTP helpers that talk to the sandbox over real HTTP with reqwest.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use datafusion_prospeo::api::plan::{Plan, RateLimits};
use datafusion_prospeo::api::wire::{Company, JobHistoryEntry, Person, PersonEmail, PersonMobile};
use datafusion_prospeo::sandbox::{Directory, Sandbox, SandboxConfig, SandboxKey, SandboxStats};
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};

// ---------------------------------------------------------------------------------------------
// The directory
// ---------------------------------------------------------------------------------------------

/// Eva Kiegler at Intercom: verified email, has a mobile (vendor page, record 1).
pub const EVA_ID: &str = "p-eva-kiegler";
pub const EVA_LINKEDIN: &str = "https://www.linkedin.com/in/eva-kiegler";
pub const EVA_EMAIL: &str = "eva.kiegler@intercom.com";
pub const EVA_MOBILE: &str = "+14155550123";
pub const EVA_MOBILE_NATIONAL: &str = "(415) 555-0123";
pub const EVA_MOBILE_INTERNATIONAL: &str = "+1 415-555-0123";

/// The person with email `nicolas.b@kpmg.com`: verified, no mobile (vendor page, record 5).
pub const NICOLAS_ID: &str = "p-nicolas-b";
pub const NICOLAS_EMAIL: &str = "nicolas.b@kpmg.com";

/// Nicole Wonda at the company `linkedin.com/company/young`: verified email, has a mobile
/// (vendor page, record 6).
pub const NICOLE_ID: &str = "p-nicole-wonda";
pub const NICOLE_MOBILE: &str = "+447700900123";

/// The person found through `/search-person`: verified email, no mobile (vendor page, record 7).
pub const SEARCHED_ID: &str = "6f564548455488874f48e";

/// Omar Haddad at Globex: email UNAVAILABLE (no address), has a mobile.
pub const OMAR_ID: &str = "p-omar-haddad";
pub const OMAR_MOBILE: &str = "+33612345678";

/// Two people called Sam Taylor, at two companies both named "Acme" (acme.com and acme.io).
pub const SAM_COM_ID: &str = "p-sam-taylor-acme-com";
pub const SAM_IO_ID: &str = "p-sam-taylor-acme-io";

fn company(id: &str, name: &str, domain: &str, website: &str, linkedin: &str) -> Company {
    Company {
        company_id: Some(id.into()),
        name: Some(name.into()),
        domain: Some(domain.into()),
        website: Some(website.into()),
        linkedin_url: Some(linkedin.into()),
        ..Default::default()
    }
}

fn verified(email: &str) -> PersonEmail {
    PersonEmail {
        status: Some("VERIFIED".into()),
        revealed: Some(true),
        email: Some(email.into()),
        verification_method: Some("SMTP".into()),
        ..Default::default()
    }
}

fn mobile(
    e164: &str,
    national: &str,
    international: &str,
    country: &str,
    code: &str,
) -> PersonMobile {
    PersonMobile {
        status: Some("VERIFIED".into()),
        revealed: Some(true),
        mobile: Some(e164.into()),
        mobile_national: Some(national.into()),
        mobile_international: Some(international.into()),
        mobile_country: Some(country.into()),
        mobile_country_code: Some(code.into()),
        ..Default::default()
    }
}

struct NewPerson<'a> {
    id: &'a str,
    first: &'a str,
    last: &'a str,
    linkedin: &'a str,
    email: PersonEmail,
    mobile: Option<PersonMobile>,
    company: &'a Company,
}

fn person(p: NewPerson<'_>) -> Person {
    Person {
        person_id: Some(p.id.into()),
        first_name: Some(p.first.into()),
        last_name: Some(p.last.into()),
        full_name: Some(format!("{} {}", p.first, p.last)),
        linkedin_url: Some(p.linkedin.into()),
        current_job_title: Some("Manager".into()),
        email: Some(p.email),
        mobile: p.mobile,
        job_history: Some(vec![
            JobHistoryEntry {
                title: Some("Analyst".into()),
                company_name: Some("Previous Co".into()),
                current: Some(false),
                company_id: Some("c-previous".into()),
                ..Default::default()
            },
            JobHistoryEntry {
                title: Some("Manager".into()),
                company_name: p.company.name.clone(),
                current: Some(true),
                company_id: p.company.company_id.clone(),
                ..Default::default()
            },
        ]),
        ..Default::default()
    }
}

/// The directory of the tests: the vendor page's example people (but no Jonah Stones and no
/// micah-sanders, who must stay unmatched), a person whose email is unavailable, and two
/// namesakes at two companies that share a name.
pub fn directory() -> Arc<Directory> {
    let previous = company(
        "c-previous",
        "Previous Co",
        "previous.example",
        "https://previous.example",
        "https://www.linkedin.com/company/previous-co",
    );
    let intercom = company(
        "c-intercom",
        "Intercom",
        "intercom.com",
        "https://www.intercom.com",
        "https://www.linkedin.com/company/intercom",
    );
    let kpmg = company(
        "c-kpmg",
        "KPMG",
        "kpmg.com",
        "https://kpmg.com",
        "https://www.linkedin.com/company/kpmg",
    );
    let young = company(
        "c-young",
        "Young & Partners",
        "young-partners.com",
        "https://young-partners.com",
        "https://www.linkedin.com/company/young",
    );
    let initech = company(
        "c-initech",
        "Initech",
        "initech.com",
        "https://initech.com",
        "https://www.linkedin.com/company/initech",
    );
    let globex = company(
        "c-globex",
        "Globex",
        "globex.com",
        "https://globex.com",
        "https://www.linkedin.com/company/globex",
    );
    let acme_com = company(
        "c-acme-com",
        "Acme",
        "acme.com",
        "https://acme.com",
        "https://www.linkedin.com/company/acme-com",
    );
    let acme_io = company(
        "c-acme-io",
        "Acme",
        "acme.io",
        "https://acme.io",
        "https://www.linkedin.com/company/acme-io",
    );
    let people = vec![
        person(NewPerson {
            id: EVA_ID,
            first: "Eva",
            last: "Kiegler",
            linkedin: EVA_LINKEDIN,
            email: verified(EVA_EMAIL),
            mobile: Some(mobile(
                EVA_MOBILE,
                EVA_MOBILE_NATIONAL,
                EVA_MOBILE_INTERNATIONAL,
                "United States",
                "US",
            )),
            company: &intercom,
        }),
        person(NewPerson {
            id: NICOLAS_ID,
            first: "Nicolas",
            last: "Bernard",
            linkedin: "https://www.linkedin.com/in/nicolas-bernard",
            email: verified(NICOLAS_EMAIL),
            mobile: None,
            company: &kpmg,
        }),
        person(NewPerson {
            id: NICOLE_ID,
            first: "Nicole",
            last: "Wonda",
            linkedin: "https://www.linkedin.com/in/nicole-wonda",
            email: verified("nicole.wonda@young-partners.com"),
            mobile: Some(mobile(
                NICOLE_MOBILE,
                "07700 900123",
                "+44 7700 900123",
                "United Kingdom",
                "GB",
            )),
            company: &young,
        }),
        person(NewPerson {
            id: SEARCHED_ID,
            first: "Priya",
            last: "Raman",
            linkedin: "https://www.linkedin.com/in/priya-raman",
            email: verified("priya.raman@initech.com"),
            mobile: None,
            company: &initech,
        }),
        person(NewPerson {
            id: OMAR_ID,
            first: "Omar",
            last: "Haddad",
            linkedin: "https://www.linkedin.com/in/omar-haddad",
            email: PersonEmail {
                status: Some("UNAVAILABLE".into()),
                revealed: Some(false),
                email: None,
                ..Default::default()
            },
            mobile: Some(mobile(
                OMAR_MOBILE,
                "06 12 34 56 78",
                "+33 6 12 34 56 78",
                "France",
                "FR",
            )),
            company: &globex,
        }),
        person(NewPerson {
            id: SAM_COM_ID,
            first: "Sam",
            last: "Taylor",
            linkedin: "https://www.linkedin.com/in/sam-taylor-acme-com",
            email: verified("sam.taylor@acme.com"),
            mobile: None,
            company: &acme_com,
        }),
        person(NewPerson {
            id: SAM_IO_ID,
            first: "Sam",
            last: "Taylor",
            linkedin: "https://www.linkedin.com/in/sam-taylor-acme-io",
            email: verified("sam@acme.io"),
            mobile: None,
            company: &acme_io,
        }),
    ];
    let companies = vec![
        previous, intercom, kpmg, young, initech, globex, acme_com, acme_io,
    ];
    Arc::new(Directory::new(companies, people).expect("the test directory is valid"))
}

// ---------------------------------------------------------------------------------------------
// Records
// ---------------------------------------------------------------------------------------------

/// Eva by name and company website (vendor page, record 1).
pub fn eva(identifier: &str) -> Value {
    json!({"identifier": identifier, "full_name": "Eva Kiegler", "company_website": "intercom.com"})
}

/// Nicolas by email (vendor page, record 5).
pub fn nicolas(identifier: &str) -> Value {
    json!({"identifier": identifier, "email": NICOLAS_EMAIL})
}

/// Nicole by name and company LinkedIn (vendor page, record 6).
pub fn nicole(identifier: &str) -> Value {
    json!({
        "identifier": identifier,
        "full_name": "Nicole Wonda",
        "company_linkedin_url": "https://www.linkedin.com/company/young"
    })
}

/// Omar (unavailable email, has a mobile) by name and company website.
pub fn omar(identifier: &str) -> Value {
    json!({"identifier": identifier, "first_name": "Omar", "last_name": "Haddad", "company_website": "globex.com"})
}

/// Someone the directory does not know, with enough datapoints to be looked up.
pub fn stranger(identifier: &str) -> Value {
    json!({"identifier": identifier, "email": "nobody@nowhere.example"})
}

/// A record below the minimum requirements (vendor page, record 4).
pub fn invalid(identifier: &str) -> Value {
    json!({"identifier": identifier, "full_name": "Brandon Stering"})
}

/// `n` distinct records (all of them unknown people, so they cost nothing), for quota tests.
pub fn strangers(n: usize) -> Vec<Value> {
    strangers_from(0, n)
}

/// `n` distinct unknown people numbered from `first` (a client answers a record it has seen
/// from its cache, so a second batch must hold other people).
pub fn strangers_from(first: usize, n: usize) -> Vec<Value> {
    (first..first + n)
        .map(|i| json!({"identifier": format!("s{i}"), "email": format!("stranger{i}@nowhere.example")}))
        .collect()
}

/// A bulk request of `records` with no flag.
pub fn bulk(records: Vec<Value>) -> Value {
    json!({ "data": records })
}

/// A bulk request of `records` with `enrich_mobile: true`.
pub fn bulk_mobile(records: Vec<Value>) -> Value {
    json!({ "enrich_mobile": true, "data": records })
}

// ---------------------------------------------------------------------------------------------
// Sandboxes
// ---------------------------------------------------------------------------------------------

pub const ALPHA: &str = "alpha";
pub const ALPHA_KEY: &str = "test-key-alpha";
pub const BETA: &str = "beta";
pub const BETA_KEY: &str = "test-key-beta";

/// A sandbox configuration over [`directory`] with two keys, `alpha` and `beta`, each with
/// 10,000 credits on the Pro plan, and no faults.
pub fn config() -> SandboxConfig {
    let mut config = SandboxConfig::new(directory());
    config.keys = vec![
        SandboxKey::new(ALPHA, ALPHA_KEY, 10_000, Plan::Pro),
        SandboxKey::new(BETA, BETA_KEY, 10_000, Plan::Pro),
    ];
    config
}

/// The same with only the `alpha` key, with custom limits.
pub fn config_with_limits(per_second: u64, per_minute: u64, per_day: u64) -> SandboxConfig {
    let mut config = SandboxConfig::new(directory());
    config.keys = vec![
        SandboxKey::new(ALPHA, ALPHA_KEY, 10_000, Plan::Pro)
            .with_limits(RateLimits::new(per_second, per_minute, per_day)),
    ];
    // The windows move only when the test advances the clock: no test depends on real time.
    config.manual_clock = true;
    config
}

/// Starts a sandbox (on 127.0.0.1, a free port).
pub async fn start(config: SandboxConfig) -> Sandbox {
    assert_eq!(config.bind.ip().to_string(), "127.0.0.1");
    assert_eq!(config.bind.port(), 0);
    Sandbox::start(config).await.expect("the sandbox starts")
}

// ---------------------------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------------------------

/// A client with a bound on every request, so no test can hang on the network.
pub fn client() -> reqwest::Client {
    client_with_timeout(Duration::from_secs(60))
}

/// A client that gives up after `timeout`.
pub fn client_with_timeout(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(timeout)
        .build()
        .expect("a reqwest client")
}

/// A response of the sandbox: status, headers, and the body as text and (when it is) JSON.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub text: String,
    /// `Value::Null` when the body is not JSON.
    pub body: Value,
}

impl Reply {
    async fn read(response: reqwest::Response) -> Reply {
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.expect("a readable body");
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Reply {
            status,
            headers,
            text,
            body,
        }
    }

    /// `error_code`, when there is one.
    pub fn error_code(&self) -> Option<&str> {
        self.body["error_code"].as_str()
    }

    /// Asserts a request-level error: this HTTP status, `error: true` and this `error_code`.
    #[track_caller]
    pub fn assert_error(&self, status: StatusCode, code: &str) {
        assert_eq!(self.status, status, "status of {}", self.text);
        assert_eq!(
            self.body["error"],
            json!(true),
            "error flag of {}",
            self.text
        );
        assert_eq!(self.error_code(), Some(code), "error_code of {}", self.text);
    }

    /// Asserts an HTTP 200 with `error: false`.
    #[track_caller]
    pub fn assert_ok(&self) {
        assert_eq!(self.status, StatusCode::OK, "status of {}", self.text);
        assert_eq!(
            self.body["error"],
            json!(false),
            "error flag of {}",
            self.text
        );
    }

    /// The value of a numeric header; panics when it is absent or not a number.
    #[track_caller]
    pub fn header(&self, name: &str) -> u64 {
        let value = self
            .headers
            .get(name)
            .unwrap_or_else(|| panic!("header {name} is missing ({:?})", self.headers));
        value
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("header {name} is not a number: {value:?}"))
    }

    /// `total_cost`.
    #[track_caller]
    pub fn total_cost(&self) -> i64 {
        self.body["total_cost"]
            .as_i64()
            .unwrap_or_else(|| panic!("no total_cost in {}", self.text))
    }

    /// The identifiers of `matched`.
    pub fn matched_ids(&self) -> BTreeSet<String> {
        self.body["matched"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| m["identifier"].as_str().map(str::to_string))
            .collect()
    }

    /// The `matched` entry of `identifier`.
    #[track_caller]
    pub fn matched(&self, identifier: &str) -> &Value {
        self.body["matched"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|m| m["identifier"] == json!(identifier))
            .unwrap_or_else(|| panic!("{identifier} is not matched in {}", self.text))
    }

    /// The `person_id` matched for `identifier`.
    #[track_caller]
    pub fn matched_person(&self, identifier: &str) -> &str {
        self.matched(identifier)["person"]["person_id"]
            .as_str()
            .unwrap_or_else(|| panic!("{identifier} has no person_id in {}", self.text))
    }

    /// `not_matched`.
    pub fn not_matched(&self) -> BTreeSet<String> {
        string_set(&self.body["not_matched"])
    }

    /// `invalid_datapoints`.
    pub fn invalid(&self) -> Vec<String> {
        string_set(&self.body["invalid_datapoints"])
            .into_iter()
            .collect()
    }
}

fn string_set(value: &Value) -> BTreeSet<String> {
    value
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect()
}

fn url(sandbox: &Sandbox, path: &str) -> String {
    format!("{}{path}", sandbox.base_url())
}

/// POSTs a raw body (sent as given, with `Content-Type: application/json`) to `path`.
pub async fn post_raw(sandbox: &Sandbox, path: &str, key: Option<&str>, body: &str) -> Reply {
    let response = send_raw(&client(), sandbox, path, key, body)
        .await
        .expect("the sandbox answers");
    Reply::read(response).await
}

/// POSTs with a given client; the error is returned as is (for the fault tests).
pub async fn send_raw(
    client: &reqwest::Client,
    sandbox: &Sandbox,
    path: &str,
    key: Option<&str>,
    body: &str,
) -> reqwest::Result<reqwest::Response> {
    let mut request = client
        .post(url(sandbox, path))
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some(key) = key {
        request = request.header("X-KEY", key);
    }
    request.send().await
}

/// `POST /bulk-enrich-person`.
pub async fn post_bulk(sandbox: &Sandbox, key: &str, body: &Value) -> Reply {
    post_raw(sandbox, "/bulk-enrich-person", Some(key), &body.to_string()).await
}

/// `POST /enrich-person` (single record).
pub async fn post_single(sandbox: &Sandbox, key: &str, body: &Value) -> Reply {
    post_raw(sandbox, "/enrich-person", Some(key), &body.to_string()).await
}

/// `GET /account-information`.
pub async fn account_information(sandbox: &Sandbox, key: &str) -> Reply {
    let response = client()
        .get(url(sandbox, "/account-information"))
        .header("X-KEY", key)
        .send()
        .await
        .expect("the sandbox answers");
    Reply::read(response).await
}

/// `GET /_sandbox/stats`, as JSON.
pub async fn stats_over_http(sandbox: &Sandbox) -> Value {
    let response = client()
        .get(url(sandbox, "/_sandbox/stats"))
        .send()
        .await
        .expect("the sandbox answers");
    let reply = Reply::read(response).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    reply.body
}

/// Parses the stats endpoint's JSON into the library's type.
pub fn parse_stats(value: Value) -> SandboxStats {
    serde_json::from_value(value).expect("the stats endpoint returns SandboxStats")
}

/// `POST /_sandbox/clock` with `{"advance_seconds": seconds}`.
pub async fn advance_clock_over_http(sandbox: &Sandbox, seconds: f64) -> Reply {
    post_raw(
        sandbox,
        "/_sandbox/clock",
        None,
        &json!({ "advance_seconds": seconds }).to_string(),
    )
    .await
}

/// The documented price of a match made by a key that never saw the person: 10 when a mobile
/// was revealed, 1 otherwise.
pub fn documented_cost(matched: &Value) -> i64 {
    if matched["person"]["mobile"]["revealed"] == json!(true) {
        10
    } else {
        1
    }
}

/// The seven rate-limit headers of the contract.
pub const RATE_LIMIT_HEADERS: [&str; 7] = [
    "x-daily-request-left",
    "x-minute-request-left",
    "x-daily-reset-seconds",
    "x-minute-reset-seconds",
    "x-daily-rate-limit",
    "x-minute-rate-limit",
    "x-second-rate-limit",
];
