//! The wire model of the Prospeo API: requests, responses, errors, and the person and company
//! objects, as `reference/prospeo-api.md` gives them. Shared by the client and the sandbox.
//!
//! Every property of the person and company objects is optional and read leniently: a value of
//! an unexpected type (a number sent as a string, a float where an integer was documented)
//! becomes the documented type when it can, and is dropped (the field becomes `None`) when it
//! cannot, instead of failing the whole response. A bulk response is paid for, so one odd field
//! of a person or company must never cost the other 49 records. (The envelope — `total_cost`,
//! the identifiers, the lists — is read strictly: without it no record can be told apart.) Fields this version does not know are kept in `extra`
//! and serialised back unchanged ("The vendor adds fields over time", reference, last line).

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

use crate::datapoints::Datapoints;

/// Most records one bulk request may carry (reference: "1 to 50 records").
pub const MAX_BULK_RECORDS: usize = 50;

/// Flags that apply to every record of a request and change what matches and what it costs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct EnrichFlags {
    /// Only return records with a verified email; the others are `not_matched`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub only_verified_email: bool,
    /// Reveal the mobile when one exists (10 credits instead of 1).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub enrich_mobile: bool,
    /// Only return records with a mobile; implies `enrich_mobile`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub only_verified_mobile: bool,
}

impl EnrichFlags {
    /// Whether the mobile is revealed: `only_verified_mobile` implies `enrich_mobile`
    /// (reference: "`only_verified_mobile: true` implies `enrich_mobile: true`").
    pub fn reveals_mobile(&self) -> bool {
        self.enrich_mobile || self.only_verified_mobile
    }
}

/// `POST /bulk-enrich-person` request body.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BulkEnrichRequest {
    /// The request's flags, at the top level of the body.
    #[serde(flatten)]
    pub flags: EnrichFlags,
    /// The records, 1 to 50.
    pub data: Vec<BulkRecord>,
}

/// One record of a bulk request: a caller-chosen identifier plus the datapoints.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BulkRecord {
    /// Unique within the request; the answer names records by it.
    pub identifier: String,
    /// The record's datapoints, at the top level of the record.
    #[serde(flatten)]
    pub datapoints: Datapoints,
}

/// `POST /bulk-enrich-person` response body when `error` is false.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BulkEnrichResponse {
    /// False on an answer (an error body is an [`ErrorBody`]).
    pub error: bool,
    /// The authoritative charge of the request (reference: "`total_cost` is the authoritative
    /// charge of the request").
    #[serde(default)]
    pub total_cost: i64,
    /// The records that matched a person.
    #[serde(default)]
    pub matched: Vec<MatchedRecord>,
    /// Identifiers of the records that matched nobody.
    #[serde(default)]
    pub not_matched: Vec<String>,
    /// Identifiers of the records below the minimum requirement.
    #[serde(default)]
    pub invalid_datapoints: Vec<String>,
    /// Fields this version does not know, kept as received.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// One entry of `matched`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MatchedRecord {
    /// The identifier of the request's record.
    pub identifier: String,
    /// Not in the page's example, read by the vendor's tools: optional (reference).
    #[serde(
        default,
        deserialize_with = "lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub free_enrichment: Option<bool>,
    /// The person found.
    #[serde(default, deserialize_with = "lenient")]
    pub person: Option<Person>,
    /// The person's current company.
    #[serde(default, deserialize_with = "lenient")]
    pub company: Option<Company>,
    /// Fields this version does not know, kept as received.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `GET /account-information` response body.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AccountInformationResponse {
    /// False on an answer.
    pub error: bool,
    /// The account's plan and credits.
    #[serde(default, deserialize_with = "lenient")]
    pub response: Option<AccountInformation>,
    /// Fields this version does not know, kept as received.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A request-level error body: `{error: true, error_code, ...}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// True on an error.
    pub error: bool,
    /// The vendor's code (`INVALID_API_KEY`, `RATE_LIMITED`, ...); see [`ErrorCode`].
    #[serde(default, deserialize_with = "lenient")]
    pub error_code: Option<String>,
    /// Human-readable detail, when the server gives one.
    #[serde(
        default,
        deserialize_with = "lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub message: Option<String>,
    /// Fields this version does not know (the search endpoints' `filter_error`, say), kept as
    /// received.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl ErrorBody {
    /// An error body with a code and a message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ErrorBody {
            error: true,
            error_code: Some(code.as_str().to_string()),
            message: Some(message.into()),
            extra: Map::new(),
        }
    }

    /// The classified error code.
    pub fn code(&self) -> ErrorCode {
        ErrorCode::parse(self.error_code.as_deref().unwrap_or(""))
    }
}

/// The request-level error codes (reference, "Errors (request level)").
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// 400: not enough credits for the request. Not retryable: stop the job cleanly.
    InsufficientCredits,
    /// 401: bad `X-KEY`. Fatal for the job.
    InvalidApiKey,
    /// 429, or any code that names a rate limit (seen in the wild as HTTP 200 with
    /// `RATE_LIMIT_EXCEEDED` or "Rate limit exceeded"). Retry after waiting.
    RateLimited,
    /// 400: malformed request. Not retryable.
    InvalidRequest,
    /// 400 (not 5xx): vendor-side failure. Retryable, bounded.
    InternalError,
    /// Single-record endpoints: nothing matched.
    NoMatch,
    /// Single-record endpoints: below the minimum requirement.
    InvalidDatapoints,
    /// Any other code, as received.
    Other(String),
}

impl ErrorCode {
    /// Classifies a received `error_code`. Anything that names a rate limit is
    /// [`ErrorCode::RateLimited`], whatever its spelling.
    pub fn parse(code: &str) -> ErrorCode {
        let folded: String = code
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .collect::<String>()
            .to_ascii_uppercase();
        match folded.as_str() {
            "INSUFFICIENTCREDITS" => ErrorCode::InsufficientCredits,
            "INVALIDAPIKEY" => ErrorCode::InvalidApiKey,
            "INVALIDREQUEST" => ErrorCode::InvalidRequest,
            "INTERNALERROR" => ErrorCode::InternalError,
            "NOMATCH" => ErrorCode::NoMatch,
            "INVALIDDATAPOINTS" => ErrorCode::InvalidDatapoints,
            f if f.contains("RATELIMIT") || f.contains("TOOMANYREQUESTS") => ErrorCode::RateLimited,
            _ => ErrorCode::Other(code.to_string()),
        }
    }

    /// The code as the vendor spells it.
    pub fn as_str(&self) -> &str {
        match self {
            ErrorCode::InsufficientCredits => "INSUFFICIENT_CREDITS",
            ErrorCode::InvalidApiKey => "INVALID_API_KEY",
            ErrorCode::RateLimited => "RATE_LIMITED",
            ErrorCode::InvalidRequest => "INVALID_REQUEST",
            ErrorCode::InternalError => "INTERNAL_ERROR",
            ErrorCode::NoMatch => "NO_MATCH",
            ErrorCode::InvalidDatapoints => "INVALID_DATAPOINTS",
            ErrorCode::Other(code) => code,
        }
    }
}

/// Declares a wire object whose every field is optional and read leniently, plus an `extra`
/// map that keeps unknown fields.
macro_rules! wire_object {
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            $( $(#[$fmeta:meta])* $field:ident : $ty:ty ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
        pub struct $name {
            $(
                #[doc = concat!("`", stringify!($field), "` as the vendor sends it; `None` when absent, null or unreadable.")]
                $(#[$fmeta])*
                #[serde(default, deserialize_with = "lenient", skip_serializing_if = "Option::is_none")]
                pub $field: Option<$ty>,
            )*
            /// Fields this version does not know, kept as received.
            #[serde(flatten)]
            pub extra: Map<String, Value>,
        }

        impl Loose for $name {
            fn from_value(value: Value) -> Option<Self> {
                match value {
                    Value::Object(_) => serde_json::from_value(value).ok(),
                    _ => None,
                }
            }
        }
    };
}

wire_object! {
    /// `GET /account-information` → `response`.
    pub struct AccountInformation {
        current_plan: String,
        current_team_members: i64,
        remaining_credits: i64,
        used_credits: i64,
        next_quota_renewal_days: i64,
        next_quota_renewal_date: String,
    }
}

wire_object! {
    /// The person object (reference, "The person object").
    pub struct Person {
        person_id: String,
        first_name: String,
        last_name: String,
        full_name: String,
        linkedin_url: String,
        headline: String,
        current_job_title: String,
        current_job_key: String,
        linkedin_member_id: String,
        /// ISO-8601 UTC, e.g. `2024-08-27T21:18:29.577Z`.
        last_job_change_detected_at: String,
        skills: Vec<String>,
        email: PersonEmail,
        mobile: PersonMobile,
        location: PersonLocation,
        job_history: Vec<JobHistoryEntry>,
    }
}

wire_object! {
    /// `person.email`.
    pub struct PersonEmail {
        /// `VERIFIED`, `UNAVAILABLE`; other values are seen.
        status: String,
        revealed: bool,
        email: String,
        /// `SMTP` or `BOUNCEBAN`.
        verification_method: String,
        email_mx_provider: String,
    }
}

wire_object! {
    /// `person.mobile`. When `revealed` is false the numbers are masked with `*`.
    pub struct PersonMobile {
        status: String,
        revealed: bool,
        /// E.164.
        mobile: String,
        mobile_national: String,
        mobile_international: String,
        mobile_country: String,
        mobile_country_code: String,
    }
}

wire_object! {
    /// `person.location`.
    pub struct PersonLocation {
        country: String,
        country_code: String,
        state: String,
        city: String,
        time_zone: String,
        /// Hours from UTC, e.g. `-7.0`.
        time_zone_offset: f64,
    }
}

wire_object! {
    /// One entry of `person.job_history`.
    pub struct JobHistoryEntry {
        title: String,
        company_name: String,
        logo_url: String,
        current: bool,
        start_year: i64,
        start_month: i64,
        end_year: i64,
        end_month: i64,
        duration_in_months: i64,
        departments: Vec<String>,
        seniority: String,
        company_id: String,
        job_key: String,
    }
}

wire_object! {
    /// The company object: the person's current company (reference, "The company object").
    pub struct Company {
        company_id: String,
        name: String,
        website: String,
        domain: String,
        description: String,
        description_seo: String,
        description_ai: String,
        r#type: String,
        industry: String,
        employee_range: String,
        linkedin_url: String,
        twitter_url: String,
        facebook_url: String,
        instagram_url: String,
        youtube_url: String,
        crunchbase_url: String,
        linkedin_id: String,
        revenue_range_printed: String,
        logo_url: String,
        employee_count: i64,
        employee_count_on_prospeo: i64,
        founded: i64,
        other_websites: Vec<String>,
        sic_codes: Vec<String>,
        naics_codes: Vec<String>,
        keywords: Vec<String>,
        location: CompanyLocation,
        email_tech: CompanyEmailTech,
        phone_hq: CompanyPhoneHq,
        revenue_range: RevenueRange,
        attributes: CompanyAttributes,
        funding: CompanyFunding,
        technology: CompanyTechnology,
        job_postings: CompanyJobPostings,
    }
}

wire_object! {
    /// `company.location`.
    pub struct CompanyLocation {
        country: String,
        country_code: String,
        state: String,
        city: String,
        raw_address: String,
    }
}

wire_object! {
    /// `company.email_tech`.
    pub struct CompanyEmailTech {
        domain: String,
        mx_provider: String,
        catch_all_domain: bool,
    }
}

wire_object! {
    /// `company.phone_hq`.
    pub struct CompanyPhoneHq {
        phone_hq: String,
        phone_hq_national: String,
        phone_hq_international: String,
        phone_hq_country: String,
        phone_hq_country_code: String,
    }
}

wire_object! {
    /// `company.revenue_range`, whole US dollars (up to ~1e10: 64-bit).
    pub struct RevenueRange {
        min: i64,
        max: i64,
    }
}

wire_object! {
    /// `company.attributes`: nullable booleans.
    pub struct CompanyAttributes {
        is_b2b: bool,
        has_demo: bool,
        has_free_trial: bool,
        has_downloadable: bool,
        has_mobile_apps: bool,
        has_online_reviews: bool,
        has_pricing: bool,
    }
}

wire_object! {
    /// `company.funding`.
    pub struct CompanyFunding {
        count: i64,
        /// Whole US dollars.
        total_funding: i64,
        total_funding_printed: String,
        /// No time zone, e.g. `2021-01-01T00:00:00`.
        latest_funding_date: String,
        latest_funding_stage: String,
        funding_events: Vec<FundingEvent>,
    }
}

wire_object! {
    /// One entry of `company.funding.funding_events`.
    pub struct FundingEvent {
        amount: i64,
        amount_printed: String,
        raised_at: String,
        stage: String,
        link: String,
    }
}

wire_object! {
    /// `company.technology`. `count` may exceed the list's length.
    pub struct CompanyTechnology {
        count: i64,
        technology_names: Vec<String>,
        technology_list: Vec<Technology>,
    }
}

wire_object! {
    /// One entry of `company.technology.technology_list`.
    pub struct Technology {
        name: String,
        category: String,
    }
}

wire_object! {
    /// `company.job_postings`.
    pub struct CompanyJobPostings {
        active_count: i64,
        active_titles: Vec<String>,
    }
}

/// A value read from JSON that tolerates the neighbouring types.
pub trait Loose: Sized {
    /// The value as this type, or `None` when it cannot be read as one.
    fn from_value(value: Value) -> Option<Self>;
}

impl Loose for String {
    fn from_value(value: Value) -> Option<Self> {
        match value {
            Value::String(s) => Some(s),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            _ => None,
        }
    }
}

impl Loose for i64 {
    fn from_value(value: Value) -> Option<Self> {
        match value {
            Value::Number(n) => n.as_i64().or_else(|| {
                n.as_f64()
                    .filter(|f| f.fract() == 0.0 && f.abs() < 9.0e18)
                    .map(|f| f as i64)
            }),
            Value::String(s) => {
                let s = s.trim();
                s.parse::<i64>().ok().or_else(|| {
                    s.parse::<f64>()
                        .ok()
                        .filter(|f| f.fract() == 0.0 && f.abs() < 9.0e18)
                        .map(|f| f as i64)
                })
            }
            _ => None,
        }
    }
}

impl Loose for f64 {
    fn from_value(value: Value) -> Option<Self> {
        match value {
            Value::Number(n) => n.as_f64(),
            Value::String(s) => s.trim().parse::<f64>().ok().filter(|f| f.is_finite()),
            _ => None,
        }
    }
}

impl Loose for bool {
    fn from_value(value: Value) -> Option<Self> {
        match value {
            Value::Bool(b) => Some(b),
            Value::Number(n) => match n.as_i64() {
                Some(0) => Some(false),
                Some(1) => Some(true),
                _ => None,
            },
            Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" => Some(true),
                "false" | "0" | "no" => Some(false),
                _ => None,
            },
            _ => None,
        }
    }
}

impl<T: Loose> Loose for Vec<T> {
    fn from_value(value: Value) -> Option<Self> {
        match value {
            Value::Array(items) => Some(items.into_iter().filter_map(T::from_value).collect()),
            _ => None,
        }
    }
}

/// Reads an optional field leniently (see the module docs). `null` and values that cannot be
/// read as `T` are `None`.
pub fn lenient<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Loose,
{
    Ok(Option::<Value>::deserialize(deserializer)?.and_then(T::from_value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn bulk_response_of_the_vendor_page_parses() {
        let body = json!({
            "error": false, "total_cost": 10,
            "not_matched": ["2", "3"], "invalid_datapoints": ["4"],
            "matched": [
                {"identifier": "1", "person": {"person_id": "p1"}, "company": {"name": "Intercom"}},
                {"identifier": "5", "person": {}, "company": null},
            ]
        });
        let parsed: BulkEnrichResponse = serde_json::from_value(body).unwrap();
        assert_eq!(parsed.total_cost, 10);
        assert_eq!(parsed.not_matched, ["2", "3"]);
        assert_eq!(parsed.invalid_datapoints, ["4"]);
        assert_eq!(
            parsed.matched[0]
                .person
                .as_ref()
                .unwrap()
                .person_id
                .as_deref(),
            Some("p1")
        );
        assert_eq!(parsed.matched[1].company, None);
        assert_eq!(parsed.matched[0].free_enrichment, None);
    }

    #[test]
    fn unknown_fields_are_kept_and_written_back() {
        let person = json!({
            "person_id": "p1",
            "brand_new_field": {"a": [1, 2]},
            "email": {"email": "a@b.co", "status": "VERIFIED", "confidence": 0.9}
        });
        let parsed: Person = serde_json::from_value(person.clone()).unwrap();
        assert_eq!(parsed.extra["brand_new_field"], json!({"a": [1, 2]}));
        assert_eq!(
            parsed.email.as_ref().unwrap().extra["confidence"],
            json!(0.9)
        );
        assert_eq!(serde_json::to_value(&parsed).unwrap(), person);
    }

    #[test]
    fn numbers_and_flags_are_read_leniently() {
        let company = json!({
            "employee_count": "1200",
            "founded": 1999.0,
            "revenue_range": {"min": 1000000, "max": 9999999999i64},
            "attributes": {"is_b2b": "true", "has_demo": 1, "has_pricing": null},
            "linkedin_id": 12345,
            "keywords": ["saas", 7, null],
            "funding": "not an object",
        });
        let parsed: Company = serde_json::from_value(company).unwrap();
        assert_eq!(parsed.employee_count, Some(1200));
        assert_eq!(parsed.founded, Some(1999));
        assert_eq!(
            parsed.revenue_range.as_ref().unwrap().max,
            Some(9_999_999_999)
        );
        let attributes = parsed.attributes.unwrap();
        assert_eq!(
            (attributes.is_b2b, attributes.has_demo),
            (Some(true), Some(true))
        );
        assert_eq!(attributes.has_pricing, None);
        assert_eq!(parsed.linkedin_id.as_deref(), Some("12345"));
        assert_eq!(parsed.keywords.unwrap(), ["saas", "7"]);
        assert_eq!(parsed.funding, None);
    }

    #[test]
    fn error_codes_are_classified_on_the_code_not_the_status() {
        assert_eq!(ErrorCode::parse("RATE_LIMITED"), ErrorCode::RateLimited);
        assert_eq!(
            ErrorCode::parse("RATE_LIMIT_EXCEEDED"),
            ErrorCode::RateLimited
        );
        assert_eq!(
            ErrorCode::parse("Rate limit exceeded"),
            ErrorCode::RateLimited
        );
        assert_eq!(ErrorCode::parse("INTERNAL_ERROR"), ErrorCode::InternalError);
        assert_eq!(
            ErrorCode::parse("insufficient_credits"),
            ErrorCode::InsufficientCredits
        );
        assert_eq!(
            ErrorCode::parse("WHO_KNOWS"),
            ErrorCode::Other("WHO_KNOWS".into())
        );
        let body: ErrorBody =
            serde_json::from_str(r#"{"error": true, "error_code": "INVALID_API_KEY"}"#).unwrap();
        assert_eq!(body.code(), ErrorCode::InvalidApiKey);
    }

    #[test]
    fn requests_serialise_as_the_vendor_page_shows() {
        let request = BulkEnrichRequest {
            flags: EnrichFlags {
                only_verified_email: true,
                enrich_mobile: true,
                only_verified_mobile: false,
            },
            data: vec![BulkRecord {
                identifier: "1".into(),
                datapoints: Datapoints {
                    full_name: Some("Eva Kiegler".into()),
                    company_website: Some("intercom.com".into()),
                    ..Default::default()
                },
            }],
        };
        assert_eq!(
            serde_json::to_value(&request).unwrap(),
            json!({
                "only_verified_email": true, "enrich_mobile": true,
                "data": [{"identifier": "1", "full_name": "Eva Kiegler", "company_website": "intercom.com"}]
            })
        );
        assert!(
            EnrichFlags {
                only_verified_mobile: true,
                ..Default::default()
            }
            .reveals_mobile()
        );
    }
}
