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

use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

use crate::datapoints::Datapoints;

pub mod compact;

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
///
/// Its `Deserialize` reads the object's map in one pass, straight into the struct: each known
/// field through its type's [`Loose::deserialize_loose`] (nested objects too: no
/// [`serde_json::Value`] is built for them), each unknown field into `extra` as a `Value`.
/// A key that repeats is read again (the last one wins, as in a `Value`'s map).
macro_rules! wire_object {
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            $( $(#[$fmeta:meta])* $field:ident : $ty:ty ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Default, PartialEq, Serialize)]
        pub struct $name {
            $(
                #[doc = concat!("`", stringify!($field), "` as the vendor sends it; `None` when absent, null or unreadable.")]
                $(#[$fmeta])*
                #[serde(skip_serializing_if = "Option::is_none")]
                pub $field: Option<$ty>,
            )*
            /// Fields this version does not know, kept as received.
            #[serde(flatten)]
            pub extra: Map<String, Value>,
        }

        const _: () = {
            /// The known fields, by their JSON name.
            #[allow(non_camel_case_types)]
            #[derive(Clone, Copy)]
            enum Field {
                $( $field, )*
            }

            impl FieldName for Field {
                const ALL: &'static [Self] = &[$(Field::$field),*];
                const NAMES: &'static [&'static str] = &[$(wire_name(stringify!($field))),*];

                fn from_name(name: &str) -> Option<Self> {
                    $(
                        if name == const { wire_name(stringify!($field)) } {
                            return Some(Field::$field);
                        }
                    )*
                    None
                }
            }

            impl WireObject for $name {
                fn read_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<Self, A::Error> {
                    let mut out = $name::default();
                    let mut next = 0;
                    while let Some(key) = map.next_key_seed(KeySeed::<Field>::after(next))? {
                        match key {
                            $(
                                // A repeated key never erases a value read before.
                                Key::Known(Field::$field) => {
                                    next = Field::$field as usize + 1;
                                    if let Some(value) =
                                        map.next_value_seed(LooseSeed::<$ty>(PhantomData))?
                                    {
                                        out.$field = Some(value);
                                    }
                                }
                            )*
                            Key::Unknown(name) => {
                                let value: Value = map.next_value()?;
                                out.extra.insert(name, value);
                            }
                        }
                    }
                    Ok(out)
                }
            }

            /// Fields fit the compact form's 64-bit bitmap below its extra bit (in both layouts).
            const _: () = assert!([$(stringify!($field)),*].len() < 63);

            impl $name {
                // AccountInformation's is not used.
                #[allow(dead_code)]
                /// The compact form's field list: the object's name, then each field's name and
                /// type, in order (see [`compact::schema_fingerprint`]).
                pub(crate) const COMPACT_FIELDS: &'static [&'static str] = &[
                    stringify!($name),
                    $(concat!(stringify!($field), ":", stringify!($ty)),)*
                ];
            }

            impl compact::Compact for $name {
                fn put(&self, out: &mut compact::Writer) {
                    let mut present = 0u64;
                    let mut bit = 1u64;
                    $(
                        if self.$field.is_some() {
                            present |= bit;
                        }
                        bit <<= 1;
                    )*
                    if !self.extra.is_empty() {
                        present |= out.layout().extra_bit(bit);
                    }
                    out.varint(present);
                    $(
                        if let Some(value) = &self.$field {
                            compact::Compact::put(value, out);
                        }
                    )*
                    if !self.extra.is_empty() {
                        compact::put_extra(out, &self.extra);
                    }
                }

                fn take(input: &mut compact::Reader<'_>) -> Result<Self, String> {
                    let present = input.varint()?;
                    let mut out = $name::default();
                    let mut bit = 1u64;
                    $(
                        if present & bit != 0 {
                            out.$field = Some(<$ty as compact::Compact>::take(input)?);
                        }
                        bit <<= 1;
                    )*
                    let extra = input.layout().extra_bit(bit);
                    if present & !((bit - 1) | extra) != 0 {
                        return Err(format!(
                            "`{}` has fields this version does not know",
                            stringify!($name)
                        ));
                    }
                    if present & extra != 0 {
                        // A field this version knows but the writer did not: read it as JSON
                        // would have been.
                        for (name, value) in compact::take_extra(input)? {
                            match Field::from_name(&name) {
                                $(
                                    Some(Field::$field) => {
                                        if out.$field.is_none() {
                                            out.$field = <$ty as Loose>::from_value(value);
                                        }
                                    }
                                )*
                                None => {
                                    out.extra.insert(name, value);
                                }
                            }
                        }
                    }
                    Ok(out)
                }
            }

            impl<'de> Deserialize<'de> for $name {
                fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                    deserializer.deserialize_map(ObjectVisitor::<$name>(PhantomData))
                }
            }

            impl Loose for $name {
                fn from_value(value: Value) -> Option<Self> {
                    match value {
                        Value::Object(_) => serde_json::from_value(value).ok(),
                        _ => None,
                    }
                }

                fn deserialize_loose<'de, D: Deserializer<'de>>(
                    deserializer: D,
                ) -> Result<Option<Self>, D::Error> {
                    deserializer.deserialize_any(LooseObjectVisitor::<$name>(PhantomData))
                }
            }
        };
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

/// The compact form's field lists of the person and company objects and every object inside
/// them (see [`compact::schema_fingerprint`]).
fn compact_schema() -> impl Iterator<Item = &'static str> {
    [
        Person::COMPACT_FIELDS,
        PersonEmail::COMPACT_FIELDS,
        PersonMobile::COMPACT_FIELDS,
        PersonLocation::COMPACT_FIELDS,
        JobHistoryEntry::COMPACT_FIELDS,
        Company::COMPACT_FIELDS,
        CompanyLocation::COMPACT_FIELDS,
        CompanyEmailTech::COMPACT_FIELDS,
        CompanyPhoneHq::COMPACT_FIELDS,
        RevenueRange::COMPACT_FIELDS,
        CompanyAttributes::COMPACT_FIELDS,
        CompanyFunding::COMPACT_FIELDS,
        FundingEvent::COMPACT_FIELDS,
        CompanyTechnology::COMPACT_FIELDS,
        Technology::COMPACT_FIELDS,
        CompanyJobPostings::COMPACT_FIELDS,
    ]
    .into_iter()
    .flatten()
    .copied()
}

/// A value read from JSON that tolerates the neighbouring types.
pub trait Loose: Sized {
    /// The value as this type, or `None` when it cannot be read as one.
    fn from_value(value: Value) -> Option<Self>;

    /// The next value of `deserializer` as this type, or `None` when it cannot be read as one
    /// (the value is consumed either way); what [`Loose::from_value`] gives for the same JSON.
    /// The default builds a [`Value`] first; the wire types and the types of their fields read
    /// straight from the deserializer.
    fn deserialize_loose<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Self>, D::Error> {
        Ok(Option::<Value>::deserialize(deserializer)?.and_then(Self::from_value))
    }
}

/// A JSON scalar's reading as a field type (the rules of the [`Loose`] impls below).
trait Scalar: Sized {
    fn from_bool(b: bool) -> Option<Self>;
    fn from_i64(n: i64) -> Option<Self>;
    fn from_u64(n: u64) -> Option<Self>;
    fn from_f64(f: f64) -> Option<Self>;
    fn from_str(s: &str) -> Option<Self>;
    fn from_string(s: String) -> Option<Self> {
        Self::from_str(&s)
    }
}

/// Visitor methods that read anything but the expected kind of value as `None`, consuming it.
macro_rules! none_for_the_rest {
    (scalars) => {
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
            Ok(None)
        }
        none_for_the_rest!(null);
    };
    (null) => {
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_any(self)
        }
    };
    (seq) => {
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            Ok(None)
        }
    };
    (map) => {
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
            Ok(None)
        }
    };
}

/// Reads any JSON value as a [`Scalar`].
struct ScalarVisitor<T>(PhantomData<T>);

impl<'de, T: Scalar> Visitor<'de> for ScalarVisitor<T> {
    type Value = Option<T>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E: de::Error>(self, b: bool) -> Result<Self::Value, E> {
        Ok(T::from_bool(b))
    }
    fn visit_i64<E: de::Error>(self, n: i64) -> Result<Self::Value, E> {
        Ok(T::from_i64(n))
    }
    fn visit_u64<E: de::Error>(self, n: u64) -> Result<Self::Value, E> {
        Ok(T::from_u64(n))
    }
    fn visit_f64<E: de::Error>(self, f: f64) -> Result<Self::Value, E> {
        Ok(T::from_f64(f))
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
        Ok(T::from_str(s))
    }
    fn visit_string<E: de::Error>(self, s: String) -> Result<Self::Value, E> {
        Ok(T::from_string(s))
    }
    none_for_the_rest!(null);
    none_for_the_rest!(seq);
    none_for_the_rest!(map);
}

macro_rules! loose_scalar {
    ($($ty:ty),*) => {$(
        impl Loose for $ty {
            fn from_value(value: Value) -> Option<Self> {
                match value {
                    Value::Bool(b) => <$ty as Scalar>::from_bool(b),
                    Value::Number(n) => {
                        if let Some(u) = n.as_u64() {
                            <$ty as Scalar>::from_u64(u)
                        } else if let Some(i) = n.as_i64() {
                            <$ty as Scalar>::from_i64(i)
                        } else {
                            n.as_f64().and_then(<$ty as Scalar>::from_f64)
                        }
                    }
                    Value::String(s) => <$ty as Scalar>::from_string(s),
                    _ => None,
                }
            }

            fn deserialize_loose<'de, D: Deserializer<'de>>(
                deserializer: D,
            ) -> Result<Option<Self>, D::Error> {
                deserializer.deserialize_any(ScalarVisitor::<$ty>(PhantomData))
            }
        }
    )*};
}

loose_scalar!(String, i64, f64, bool);

impl Scalar for String {
    fn from_bool(b: bool) -> Option<Self> {
        Some(b.to_string())
    }
    fn from_i64(n: i64) -> Option<Self> {
        Some(n.to_string())
    }
    fn from_u64(n: u64) -> Option<Self> {
        Some(n.to_string())
    }
    fn from_f64(f: f64) -> Option<Self> {
        // As a JSON number prints (`1.0`, `1e30`).
        serde_json::Number::from_f64(f).map(|n| n.to_string())
    }
    fn from_str(s: &str) -> Option<Self> {
        Some(s.to_owned())
    }
    fn from_string(s: String) -> Option<Self> {
        Some(s)
    }
}

/// A float that is a whole number within `i64`.
fn whole(f: f64) -> Option<i64> {
    (f.fract() == 0.0 && f.abs() < 9.0e18).then_some(f as i64)
}

impl Scalar for i64 {
    fn from_bool(_: bool) -> Option<Self> {
        None
    }
    fn from_i64(n: i64) -> Option<Self> {
        Some(n)
    }
    fn from_u64(n: u64) -> Option<Self> {
        i64::try_from(n).ok().or_else(|| whole(n as f64))
    }
    fn from_f64(f: f64) -> Option<Self> {
        whole(f)
    }
    fn from_str(s: &str) -> Option<Self> {
        let s = s.trim();
        s.parse::<i64>()
            .ok()
            .or_else(|| s.parse::<f64>().ok().and_then(whole))
    }
}

impl Scalar for f64 {
    fn from_bool(_: bool) -> Option<Self> {
        None
    }
    fn from_i64(n: i64) -> Option<Self> {
        Some(n as f64)
    }
    fn from_u64(n: u64) -> Option<Self> {
        Some(n as f64)
    }
    fn from_f64(f: f64) -> Option<Self> {
        Some(f)
    }
    fn from_str(s: &str) -> Option<Self> {
        s.trim().parse::<f64>().ok().filter(|f| f.is_finite())
    }
}

impl Scalar for bool {
    fn from_bool(b: bool) -> Option<Self> {
        Some(b)
    }
    fn from_i64(n: i64) -> Option<Self> {
        match n {
            0 => Some(false),
            1 => Some(true),
            _ => None,
        }
    }
    fn from_u64(n: u64) -> Option<Self> {
        match n {
            0 => Some(false),
            1 => Some(true),
            _ => None,
        }
    }
    fn from_f64(_: f64) -> Option<Self> {
        None
    }
    fn from_str(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" => Some(true),
            "false" | "0" | "no" => Some(false),
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

    fn deserialize_loose<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Self>, D::Error> {
        deserializer.deserialize_any(LooseSeqVisitor::<T>(PhantomData))
    }
}

/// Reads an array leniently: the items that read as `T`; anything else is `None`.
struct LooseSeqVisitor<T>(PhantomData<T>);

impl<'de, T: Loose> Visitor<'de> for LooseSeqVisitor<T> {
    type Value = Option<Vec<T>>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(item) = seq.next_element_seed(LooseSeed::<T>(PhantomData))? {
            items.extend(item);
        }
        Ok(Some(items))
    }
    none_for_the_rest!(scalars);
    none_for_the_rest!(map);
}

/// Reads the next value with [`Loose::deserialize_loose`].
struct LooseSeed<T>(PhantomData<T>);

impl<'de, T: Loose> DeserializeSeed<'de> for LooseSeed<T> {
    type Value = Option<T>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        T::deserialize_loose(deserializer)
    }
}

/// A wire object read from a map (see [`wire_object!`]).
trait WireObject: Sized {
    fn read_map<'de, A: MapAccess<'de>>(map: A) -> Result<Self, A::Error>;
}

/// A wire object's deserialisation: a map, or an error.
struct ObjectVisitor<T>(PhantomData<T>);

impl<'de, T: WireObject> Visitor<'de> for ObjectVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        T::read_map(map)
    }
}

/// A wire object read leniently: a map, or `None` for any other value.
struct LooseObjectVisitor<T>(PhantomData<T>);

impl<'de, T: WireObject> Visitor<'de> for LooseObjectVisitor<T> {
    type Value = Option<T>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        T::read_map(map).map(Some)
    }
    none_for_the_rest!(scalars);
    none_for_the_rest!(seq);
}

/// A wire object's known fields, by JSON name.
trait FieldName: Sized + Copy + 'static {
    /// Every field, in declaration order (the vendor's order).
    const ALL: &'static [Self];
    /// Their JSON names, in the same order.
    const NAMES: &'static [&'static str];

    fn from_name(name: &str) -> Option<Self>;

    /// The field named `name`, trying the field at `next` first: the vendor sends an object's
    /// fields in the declared order, so a key is nearly always found with one comparison.
    #[inline]
    fn from_name_after(name: &str, next: usize) -> Option<Self> {
        match Self::NAMES.get(next) {
            Some(&expected) if expected == name => Some(Self::ALL[next]),
            _ => Self::from_name(name),
        }
    }
}

/// The JSON name of a field (`r#type` is `type`).
const fn wire_name(field: &'static str) -> &'static str {
    match field.as_bytes() {
        [b'r', b'#', rest @ ..] => match std::str::from_utf8(rest) {
            Ok(name) => name,
            Err(_) => field,
        },
        _ => field,
    }
}

/// A key of a wire object: a known field, or the name of an unknown one.
enum Key<F> {
    Known(F),
    Unknown(String),
}

/// Reads a key as a [`Key`] without copying a known one; `next` is the field expected (the one
/// after the last known field read).
struct KeySeed<F> {
    next: usize,
    field: PhantomData<F>,
}

impl<F> KeySeed<F> {
    fn after(next: usize) -> Self {
        KeySeed {
            next,
            field: PhantomData,
        }
    }
}

impl<'de, F: FieldName> DeserializeSeed<'de> for KeySeed<F> {
    type Value = Key<F>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_identifier(self)
    }
}

impl<'de, F: FieldName> Visitor<'de> for KeySeed<F> {
    type Value = Key<F>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a field name")
    }

    fn visit_str<E: de::Error>(self, name: &str) -> Result<Self::Value, E> {
        Ok(match F::from_name_after(name, self.next) {
            Some(field) => Key::Known(field),
            None => Key::Unknown(name.to_owned()),
        })
    }

    fn visit_string<E: de::Error>(self, name: String) -> Result<Self::Value, E> {
        Ok(match F::from_name_after(&name, self.next) {
            Some(field) => Key::Known(field),
            None => Key::Unknown(name),
        })
    }
}

/// Reads an optional field leniently (see the module docs). `null` and values that cannot be
/// read as `T` are `None`.
pub fn lenient<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Loose,
{
    T::deserialize_loose(deserializer)
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
    fn a_repeated_key_never_erases_a_value_read_before() {
        let person: Person = serde_json::from_str(
            r#"{"email": {"email": "eva@acme.io", "revealed": true}, "email": null,
                "first_name": "Eva", "first_name": [1, 2]}"#,
        )
        .unwrap();
        assert_eq!(
            person.email.and_then(|e| e.email).as_deref(),
            Some("eva@acme.io")
        );
        assert_eq!(person.first_name.as_deref(), Some("Eva"));
    }

    #[test]
    fn fields_are_read_in_any_order() {
        // In the declared order (the vendor's), in reverse, and shuffled with an unknown field
        // and a repeated key among the known ones: the same person.
        let declared = r#"{"person_id": "p1", "first_name": "Eva", "last_name": "Kim",
            "full_name": "Eva Kim", "linkedin_url": "https://x", "headline": "CFO",
            "skills": ["a"], "email": {"status": "VERIFIED", "revealed": true, "email": "e@k.io"}}"#;
        let reversed = r#"{"email": {"email": "e@k.io", "revealed": true, "status": "VERIFIED"},
            "skills": ["a"], "headline": "CFO", "linkedin_url": "https://x",
            "full_name": "Eva Kim", "last_name": "Kim", "first_name": "Eva", "person_id": "p1"}"#;
        let shuffled = r#"{"person_id": "p1", "headline": "CFO", "new": 1, "first_name": "Eva",
            "last_name": "Kim", "person_id": "p2", "full_name": "Eva Kim", "skills": ["a"],
            "linkedin_url": "https://x", "email": {"revealed": true, "email": "e@k.io",
            "status": "VERIFIED"}}"#;
        let declared: Person = serde_json::from_str(declared).unwrap();
        assert_eq!(declared.person_id.as_deref(), Some("p1"));
        assert_eq!(declared.email.as_ref().unwrap().revealed, Some(true));
        assert_eq!(serde_json::from_str::<Person>(reversed).unwrap(), declared);
        let mut shuffled: Person = serde_json::from_str(shuffled).unwrap();
        assert_eq!(shuffled.extra.remove("new"), Some(json!(1)));
        assert_eq!(
            shuffled.person_id.as_deref(),
            Some("p2"),
            "the last value wins"
        );
        shuffled.person_id = declared.person_id.clone();
        assert_eq!(shuffled, declared);
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
    fn text_is_read_as_leniently_as_a_value_in_one_pass() {
        // Every odd shape a field may take, read straight from the text and from a `Value`:
        // the same struct, with the readings the `Loose` impls give.
        let text = r#"{
            "company_id": 17, "name": true, "website": 1.5, "domain": null,
            "description": ["a"], "description_seo": {"x": 1}, "r#type": "raw", "type": "PRIVATE",
            "employee_count": "  42 ", "employee_count_on_prospeo": 12.0, "founded": "1999.0",
            "linkedin_id": -12, "revenue_range_printed": 1e30,
            "other_websites": "not a list", "sic_codes": [1, "2", null, 3.5, [4], {"5": 5}],
            "naics_codes": [], "keywords": null,
            "location": {"country": "FR", "city": 7, "raw_address": null, "zip": "75001"},
            "email_tech": {"catch_all_domain": "YES", "mx_provider": false},
            "phone_hq": [1, 2],
            "revenue_range": {"min": 18446744073709551615, "max": -9007199254740993},
            "attributes": {"is_b2b": 1, "has_demo": 2, "has_free_trial": "no", "has_pricing": 1.0,
                           "has_downloadable": "0", "has_mobile_apps": false},
            "funding": {"count": "3", "total_funding": 9.5, "funding_events": [
                {"amount": "100", "stage": "Seed", "raised_at": 2021}, "junk", null, {}]},
            "technology": {"count": 2, "technology_list": [{"name": "x", "category": 3}, 4]},
            "job_postings": "none",
            "brand_new": {"nested": [1, {"a": null}]},
            "name": "the last one wins"
        }"#;
        let from_text: Company = serde_json::from_str(text).unwrap();
        let value: Value = serde_json::from_str(text).unwrap();
        let from_value = <Company as Loose>::from_value(value.clone()).unwrap();
        assert_eq!(from_text, from_value);
        assert_eq!(from_text.company_id.as_deref(), Some("17"));
        assert_eq!(from_text.name.as_deref(), Some("the last one wins"));
        assert_eq!(from_text.website.as_deref(), Some("1.5"));
        assert_eq!(from_text.r#type.as_deref(), Some("PRIVATE"));
        assert_eq!(from_text.extra["r#type"], json!("raw"));
        assert_eq!(from_text.extra["brand_new"], value["brand_new"]);
        assert_eq!(from_text.revenue_range_printed.as_deref(), Some("1e+30"));
        assert_eq!(from_text.employee_count, Some(42));
        assert_eq!(from_text.employee_count_on_prospeo, Some(12));
        assert_eq!(from_text.founded, Some(1999));
        assert_eq!(from_text.other_websites, None);
        assert_eq!(from_text.sic_codes.as_ref().unwrap(), &["1", "2", "3.5"]);
        assert_eq!(from_text.phone_hq, None);
        assert_eq!(from_text.job_postings, None);
        let location = from_text.location.as_ref().unwrap();
        assert_eq!(location.city.as_deref(), Some("7"));
        assert_eq!(location.extra["zip"], json!("75001"));
        let range = from_text.revenue_range.as_ref().unwrap();
        assert_eq!((range.min, range.max), (None, Some(-9_007_199_254_740_993)));
        let attributes = from_text.attributes.as_ref().unwrap();
        assert_eq!(
            (
                attributes.is_b2b,
                attributes.has_demo,
                attributes.has_free_trial,
                attributes.has_pricing,
                attributes.has_downloadable
            ),
            (Some(true), None, Some(false), None, Some(false))
        );
        let funding = from_text.funding.as_ref().unwrap();
        assert_eq!((funding.count, funding.total_funding), (Some(3), None));
        let events = funding.funding_events.as_ref().unwrap();
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].raised_at.as_deref(), Some("2021"));
        assert_eq!(events[1], FundingEvent::default());
        // A wire object that is not an object: an error when it is the whole document, `None`
        // as a field.
        assert!(serde_json::from_str::<Company>("[1]").is_err());
        assert_eq!(<Company as Loose>::from_value(json!("x")), None);
        // What is written back reads back the same.
        let written = serde_json::to_vec(&from_text).unwrap();
        assert_eq!(
            serde_json::from_slice::<Company>(&written).unwrap(),
            from_text
        );
    }

    fn compact_read<T: compact::Compact>(bytes: &[u8]) -> Result<T, String> {
        let mut input = compact::Reader::new(bytes, compact::Layout::Current)?;
        let value = T::take(&mut input)?;
        match input.is_empty() {
            true => Ok(value),
            false => Err("bytes are left".into()),
        }
    }

    fn compact_round_trip<T: compact::Compact + PartialEq + fmt::Debug>(value: &T) -> T {
        let mut out = compact::Writer::default();
        value.put(&mut out);
        let bytes = out.finish();
        // Any cut of the bytes is an error, never a panic.
        for cut in 0..bytes.len() {
            assert!(compact_read::<T>(&bytes[..cut]).is_err());
        }
        compact_read(&bytes).unwrap()
    }

    #[test]
    fn the_compact_form_keeps_every_field_and_the_unknown_ones() {
        let company = json!({
            "company_id": "c1", "name": "Zoë & Co \"quoted\"", "type": "PRIVATE",
            "employee_count": -42, "founded": 1999, "sic_codes": ["1", ""], "keywords": [],
            "location": {"country": "FR", "zip": "75001"},
            "attributes": {"is_b2b": true, "has_demo": false},
            "revenue_range": {"min": i64::MIN, "max": i64::MAX},
            "funding": {"funding_events": [{"amount": 100, "stage": "Seed"}, {}]},
            "technology": {"technology_list": [{"name": "x"}]},
            "brand_new": {"nested": [1, {"a": null}]}
        });
        let company: Company = serde_json::from_value(company).unwrap();
        assert_eq!(compact_round_trip(&company), company);
        let person = json!({
            "person_id": "p1", "skills": ["Rust"],
            "location": {"time_zone_offset": -7.5},
            "mobile": {"revealed": true, "mobile": "+33 6"},
            "job_history": [{"title": "CTO", "current": true, "start_year": 2020}],
            "email": {"email": "a@b.co", "confidence": 0.9}
        });
        let person: Person = serde_json::from_value(person).unwrap();
        assert_eq!(compact_round_trip(&person), person);
        assert_eq!(compact_round_trip(&Person::default()), Person::default());
        // A field an older version kept as unknown is read into its field by this one.
        let mut older = Company::default();
        older.extra.insert("name".into(), json!("Acme"));
        older.extra.insert("founded".into(), json!("1999"));
        older.extra.insert("later".into(), json!(1));
        let read = compact_round_trip(&older);
        assert_eq!(read.name.as_deref(), Some("Acme"));
        assert_eq!(read.founded, Some(1999));
        assert_eq!(read.extra.keys().collect::<Vec<_>>(), ["later"]);
        // Fields a newer version wrote (bits this version's fields do not take) do not decode.
        let mut newer = compact::Writer::default();
        newer.varint(1 << 40);
        assert!(compact_read::<CompanyLocation>(&newer.finish()).is_err());
    }

    #[test]
    fn extra_is_the_last_bit_whatever_the_fields_and_the_first_layout_still_reads() {
        use compact::{Compact, Layout, Reader, Writer};
        let mut location = CompanyLocation {
            country: Some("FR".into()),
            ..CompanyLocation::default()
        };
        location.extra.insert("zip".into(), json!("75001"));
        let fields = CompanyLocation::COMPACT_FIELDS.len() - 1;
        let bitmap = |bytes: &[u8], layout| Reader::new(bytes, layout).unwrap().varint().unwrap();
        let read = |bytes: &[u8], layout| {
            let mut input = Reader::new(bytes, layout)?;
            CompanyLocation::take(&mut input)
        };
        // Now: bit 63, so that a field appended later never takes it.
        let mut out = Writer::default();
        location.put(&mut out);
        let current = out.finish();
        assert_eq!(bitmap(&current, Layout::Current), compact::EXTRA_BIT | 1);
        assert_eq!(read(&current, Layout::Current), Ok(location.clone()));
        // The first build's: the bit after the last field; read as it was written, and an
        // error (not a wrong field) when read as the other.
        let mut out = Writer::first_layout();
        location.put(&mut out);
        let first = out.finish();
        assert_eq!(bitmap(&first, Layout::ExtraAfterFields), 1 << fields | 1);
        assert_eq!(read(&first, Layout::ExtraAfterFields), Ok(location.clone()));
        assert!(read(&first, Layout::Current).is_err());
        assert!(read(&current, Layout::ExtraAfterFields).is_err());
    }

    /// Stored cache values name fields by their place in these lists: a field is only ever
    /// added after the last one of its object, never moved, renamed or retyped. When this
    /// fails, the lists changed: if fields were only appended, add the old number to
    /// `EARLIER_FINGERPRINTS` (in `compact.rs`) and pin the new one here; otherwise every
    /// cached match written before will be asked again (and paid again). The first layout's
    /// number is the one its build wrote for these lists: it changes with them (its values
    /// then become misses, see `compact::first_layout_fingerprint`).
    #[test]
    fn the_compact_field_lists_do_not_change() {
        let lists = compact_schema().collect::<Vec<_>>();
        assert_eq!(compact::schema_fingerprint(), 2_981_779_710, "{lists:#?}");
        assert_eq!(
            compact::first_layout_fingerprint(),
            3_809_557_812,
            "{lists:#?}"
        );
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
