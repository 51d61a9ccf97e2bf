//! The person and company objects, declared once: one line a field, giving its name, the Arrow
//! type it becomes and where the typed wire struct keeps its value.
//!
//! The output schema, the arrow-json decoder schema (see `decoder.rs`) and the direct column
//! builders (see `columns.rs`) all follow from these tables.

use datafusion::arrow::array::{ArrayRef, StructArray};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Fields, TimeUnit};
use datafusion::arrow::error::ArrowError;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::vendor::wire::{
    Company, CompanyAttributes, CompanyEmailTech, CompanyFunding, CompanyJobPostings,
    CompanyLocation, CompanyPhoneHq, CompanyTechnology, FundingEvent, JobHistoryEntry, Person,
    PersonEmail, PersonLocation, PersonMobile, RevenueRange, Technology,
};

/// A typed object of the wire model: what the tables read values from.
pub(super) trait WireObject: Serialize + Sized + 'static {
    /// The fields `vendor/wire.rs` does not know (yet), serialised in place.
    fn extra(&self) -> &Map<String, Value>;
}

macro_rules! wire_objects {
    ($($object:ty),* $(,)?) => {
        $(impl WireObject for $object {
            fn extra(&self) -> &Map<String, Value> {
                &self.extra
            }
        })*
    };
}

wire_objects!(
    Person,
    PersonEmail,
    PersonMobile,
    PersonLocation,
    JobHistoryEntry,
    Company,
    CompanyLocation,
    CompanyEmailTech,
    CompanyPhoneHq,
    RevenueRange,
    CompanyAttributes,
    CompanyFunding,
    FundingEvent,
    CompanyTechnology,
    Technology,
    CompanyJobPostings,
);

/// The Arrow type a declared field becomes, and how its value is read from the typed object `T`.
pub(super) enum Kind<T: 'static> {
    Utf8(fn(&T) -> Option<&str>),
    Int64(fn(&T) -> Option<i64>),
    Float64(fn(&T) -> Option<f64>),
    Boolean(fn(&T) -> Option<bool>),
    /// An ISO-8601 string with a zone, as UTC milliseconds.
    TimestampUtc(fn(&T) -> Option<&str>),
    /// An ISO-8601 string without a zone, as wall-clock milliseconds (no time zone).
    TimestampNaive(fn(&T) -> Option<&str>),
    /// A list of strings.
    Utf8List(fn(&T) -> Option<&[String]>),
    /// A nested object: flattened into one column per field (a `Struct` inside a list).
    Object(&'static dyn NestedObject<T>),
    /// A list of objects: one `List<Struct>` column.
    ObjectList(&'static dyn NestedList<T>),
}

impl<T> Clone for Kind<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for Kind<T> {}

/// Which values of an object with a `revealed` flag come out null.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Masking {
    /// Always as received.
    None,
    /// Null unless the sibling `revealed` is true: masked mobile numbers are `*`s
    /// (reference line 89), and an unknown `revealed` must not leak them either.
    UnlessRevealed,
    /// Null when the sibling `revealed` is false (the email: only an explicit "not revealed"
    /// hides it).
    WhenUnrevealed,
}

impl Masking {
    /// Whether a value is shown, given the sibling flag: `None` when the object has no flag,
    /// `Some(flag)` otherwise (the flag itself may be null).
    pub(super) fn shows(self, revealed: Option<Option<bool>>) -> bool {
        match (self, revealed) {
            (Masking::None, _) | (Masking::WhenUnrevealed, None) => true,
            // No flag to read: never let a masked number through.
            (Masking::UnlessRevealed, None) => false,
            (Masking::UnlessRevealed, Some(flag)) => flag == Some(true),
            (Masking::WhenUnrevealed, Some(flag)) => flag != Some(false),
        }
    }
}

/// The sibling field that [`Masking`] reads.
pub(super) const REVEALED: &str = "revealed";

/// One declared field of an object of type `T`.
pub(super) struct FieldSpec<T: 'static> {
    pub(super) name: &'static str,
    pub(super) kind: Kind<T>,
    pub(super) masking: Masking,
}

impl<T> Clone for FieldSpec<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for FieldSpec<T> {}

impl<T> FieldSpec<T> {
    /// The (unflattened) Arrow type of the field.
    pub(super) fn data_type(&self) -> DataType {
        match self.kind {
            Kind::Utf8(_) => DataType::Utf8,
            Kind::Int64(_) => DataType::Int64,
            Kind::Float64(_) => DataType::Float64,
            Kind::Boolean(_) => DataType::Boolean,
            Kind::TimestampUtc(_) => DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
            Kind::TimestampNaive(_) => DataType::Timestamp(TimeUnit::Millisecond, None),
            Kind::Utf8List(_) => DataType::new_list(DataType::Utf8, true),
            Kind::Object(object) => DataType::Struct(object.fields()),
            Kind::ObjectList(list) => DataType::new_list(DataType::Struct(list.fields()), true),
        }
    }
}

/// Open builders of the flattened columns of some objects (of a type that holds them, `T`),
/// appended to piece by piece.
pub(super) trait FlatAppend<'a, T> {
    /// Whether `parent`, or an object below it that these builders read, keeps a field the
    /// tables declare in `extra` (the wire type does not know it yet): only the decoder reads
    /// it.
    fn declared_in_extra(&self, parent: &T) -> bool;
    /// Appends the values of one piece of rows.
    fn append(&mut self, parents: &[Option<&'a T>]);
    /// The columns of the rows appended since the last finish, into `out` (in the order of
    /// [`flat_fields`], only the wanted ones); the builders start over, empty.
    fn finish(&mut self, out: &mut [Option<ArrayRef>]);
}

/// An open builder of one (unflattened) column read from objects of type `T`.
pub(super) trait ColumnAppend<'a, T> {
    /// As [`FlatAppend::declared_in_extra`].
    fn declared_in_extra(&self, parent: &T) -> bool;
    /// Appends the values of one piece of rows.
    fn append(&mut self, parents: &[Option<&'a T>]);
    /// The column of the rows appended since the last finish; the builder starts over, empty.
    fn finish(&mut self) -> ArrayRef;
}

/// A nested object field of `T`, seen without its own type.
pub(super) trait NestedObject<T>: Sync {
    /// Its fields, as one `Struct`.
    fn fields(&self) -> Fields;
    /// Its flattened output fields, named `path + "_" + field`.
    fn flat_fields(&self, path: &str, out: &mut Vec<Field>);
    /// How many flattened output columns it has.
    fn width(&self) -> usize;
    /// Its flattened, masked columns from the struct the decoder made of it.
    fn decoded_columns(
        &self,
        object: &StructArray,
        out: &mut Vec<ArrayRef>,
    ) -> Result<(), ArrowError>;
    /// Open builders of its flattened, masked columns `fields` (in the order of [`flat_fields`])
    /// that are `wanted`, read from the parents; sized for `rows` rows.
    fn flat_builder<'a>(
        &self,
        fields: &[FieldRef],
        wanted: &[bool],
        rows: usize,
    ) -> Box<dyn FlatAppend<'a, T> + 'a>;
    /// An open builder of its one `Struct` column `field`, read from the parents.
    fn struct_builder<'a>(&self, field: &Field, rows: usize) -> Box<dyn ColumnAppend<'a, T> + 'a>;
    /// Whether a masked field of it, or of an object below it, has no `revealed` flag beside it.
    #[cfg(test)]
    fn masked_without_flag(&self) -> bool;
}

/// A list-of-objects field of `T`, seen without its items' type.
pub(super) trait NestedList<T>: Sync {
    /// The fields of one item.
    fn fields(&self) -> Fields;
    /// An open builder of its `List<Struct>` column `field`, read from the parents.
    fn list_builder<'a>(&self, field: &Field, rows: usize) -> Box<dyn ColumnAppend<'a, T> + 'a>;
    /// Whether a masked field of an item has no `revealed` flag beside it.
    #[cfg(test)]
    fn masked_without_flag(&self) -> bool;
}

/// The object of type `C` that a `T` holds, and the table declaring it.
pub(super) struct One<T: 'static, C: 'static>(
    pub(super) fn(&T) -> Option<&C>,
    pub(super) &'static [FieldSpec<C>],
);

/// The list of objects of type `C` that a `T` holds, and the table declaring one item.
pub(super) struct Many<T: 'static, C: 'static>(
    pub(super) fn(&T) -> Option<&[C]>,
    pub(super) &'static [FieldSpec<C>],
);

/// The nested Arrow fields of an object; every field nullable.
pub(super) fn struct_fields<C>(specs: &[FieldSpec<C>]) -> Fields {
    specs
        .iter()
        .map(|spec| Field::new(spec.name, spec.data_type(), true))
        .collect()
}

/// The flattened output fields of an object whose columns start with `path`.
pub(super) fn flat_fields<C>(specs: &[FieldSpec<C>], path: &str, out: &mut Vec<Field>) {
    for spec in specs {
        let name = format!("{path}_{}", spec.name);
        match spec.kind {
            Kind::Object(object) => object.flat_fields(&name, out),
            _ => out.push(Field::new(name, spec.data_type(), true)),
        }
    }
}

/// How many flattened output columns an object has.
pub(super) fn width<C>(specs: &[FieldSpec<C>]) -> usize {
    specs
        .iter()
        .map(|spec| match spec.kind {
            Kind::Object(object) => object.width(),
            _ => 1,
        })
        .sum()
}

/// Whether a masked field has no `revealed` flag beside it, in `specs` or below.
#[cfg(test)]
pub(super) fn masked_without_flag<C>(specs: &[FieldSpec<C>]) -> bool {
    let masks = specs.iter().any(|s| s.masking != Masking::None);
    let flag = specs
        .iter()
        .any(|s| s.name == REVEALED && matches!(s.kind, Kind::Boolean(_)));
    (masks && !flag)
        || specs.iter().any(|spec| match spec.kind {
            Kind::Object(nested) => nested.masked_without_flag(),
            Kind::ObjectList(nested) => nested.masked_without_flag(),
            _ => false,
        })
}

/// The getter of the object's `revealed` flag, if it declares one.
pub(super) fn revealed_flag<C>(specs: &[FieldSpec<C>]) -> Option<fn(&C) -> Option<bool>> {
    specs.iter().find_map(|spec| match spec.kind {
        Kind::Boolean(get) if spec.name == REVEALED => Some(get),
        _ => None,
    })
}

const fn field<T>(name: &'static str, kind: Kind<T>) -> FieldSpec<T> {
    FieldSpec {
        name,
        kind,
        masking: Masking::None,
    }
}
const fn utf8<T>(name: &'static str, get: fn(&T) -> Option<&str>) -> FieldSpec<T> {
    field(name, Kind::Utf8(get))
}
const fn masked_utf8<T>(
    name: &'static str,
    masking: Masking,
    get: fn(&T) -> Option<&str>,
) -> FieldSpec<T> {
    FieldSpec {
        name,
        kind: Kind::Utf8(get),
        masking,
    }
}
const fn int64<T>(name: &'static str, get: fn(&T) -> Option<i64>) -> FieldSpec<T> {
    field(name, Kind::Int64(get))
}
const fn float64<T>(name: &'static str, get: fn(&T) -> Option<f64>) -> FieldSpec<T> {
    field(name, Kind::Float64(get))
}
const fn boolean<T>(name: &'static str, get: fn(&T) -> Option<bool>) -> FieldSpec<T> {
    field(name, Kind::Boolean(get))
}
const fn timestamp_utc<T>(name: &'static str, get: fn(&T) -> Option<&str>) -> FieldSpec<T> {
    field(name, Kind::TimestampUtc(get))
}
const fn timestamp_naive<T>(name: &'static str, get: fn(&T) -> Option<&str>) -> FieldSpec<T> {
    field(name, Kind::TimestampNaive(get))
}
const fn utf8_list<T>(name: &'static str, get: fn(&T) -> Option<&[String]>) -> FieldSpec<T> {
    field(name, Kind::Utf8List(get))
}
const fn object<T, C: WireObject>(name: &'static str, object: &'static One<T, C>) -> FieldSpec<T> {
    field(name, Kind::Object(object))
}
const fn object_list<T, C: WireObject>(
    name: &'static str,
    list: &'static Many<T, C>,
) -> FieldSpec<T> {
    field(name, Kind::ObjectList(list))
}

/// The person object (reference/prospeo-api.md, "The person object", lines 82-92).
pub(super) const PERSON: &[FieldSpec<Person>] = &[
    utf8("person_id", |p| p.person_id.as_deref()),
    utf8("first_name", |p| p.first_name.as_deref()),
    utf8("last_name", |p| p.last_name.as_deref()),
    utf8("full_name", |p| p.full_name.as_deref()),
    utf8("linkedin_url", |p| p.linkedin_url.as_deref()),
    utf8("headline", |p| p.headline.as_deref()),
    utf8("current_job_title", |p| p.current_job_title.as_deref()),
    utf8("current_job_key", |p| p.current_job_key.as_deref()),
    utf8("linkedin_member_id", |p| p.linkedin_member_id.as_deref()),
    timestamp_utc("last_job_change_detected_at", |p| {
        p.last_job_change_detected_at.as_deref()
    }),
    utf8_list("skills", |p| p.skills.as_deref()),
    object("email", &One(|p| p.email.as_ref(), PERSON_EMAIL)),
    object("mobile", &One(|p| p.mobile.as_ref(), PERSON_MOBILE)),
    object("location", &One(|p| p.location.as_ref(), PERSON_LOCATION)),
    object_list(
        "job_history",
        &Many(|p| p.job_history.as_deref(), JOB_HISTORY_ENTRY),
    ),
];

const PERSON_EMAIL: &[FieldSpec<PersonEmail>] = &[
    utf8("status", |e| e.status.as_deref()),
    boolean(REVEALED, |e| e.revealed),
    masked_utf8("email", Masking::WhenUnrevealed, |e| e.email.as_deref()),
    utf8("verification_method", |e| e.verification_method.as_deref()),
    utf8("email_mx_provider", |e| e.email_mx_provider.as_deref()),
];

const PERSON_MOBILE: &[FieldSpec<PersonMobile>] = &[
    utf8("status", |m| m.status.as_deref()),
    boolean(REVEALED, |m| m.revealed),
    masked_utf8("mobile", Masking::UnlessRevealed, |m| m.mobile.as_deref()),
    masked_utf8("mobile_national", Masking::UnlessRevealed, |m| {
        m.mobile_national.as_deref()
    }),
    masked_utf8("mobile_international", Masking::UnlessRevealed, |m| {
        m.mobile_international.as_deref()
    }),
    utf8("mobile_country", |m| m.mobile_country.as_deref()),
    utf8("mobile_country_code", |m| m.mobile_country_code.as_deref()),
];

const PERSON_LOCATION: &[FieldSpec<PersonLocation>] = &[
    utf8("country", |l| l.country.as_deref()),
    utf8("country_code", |l| l.country_code.as_deref()),
    utf8("state", |l| l.state.as_deref()),
    utf8("city", |l| l.city.as_deref()),
    utf8("time_zone", |l| l.time_zone.as_deref()),
    float64("time_zone_offset", |l| l.time_zone_offset),
];

const JOB_HISTORY_ENTRY: &[FieldSpec<JobHistoryEntry>] = &[
    utf8("title", |j| j.title.as_deref()),
    utf8("company_name", |j| j.company_name.as_deref()),
    utf8("logo_url", |j| j.logo_url.as_deref()),
    boolean("current", |j| j.current),
    int64("start_year", |j| j.start_year),
    int64("start_month", |j| j.start_month),
    int64("end_year", |j| j.end_year),
    int64("end_month", |j| j.end_month),
    int64("duration_in_months", |j| j.duration_in_months),
    utf8_list("departments", |j| j.departments.as_deref()),
    utf8("seniority", |j| j.seniority.as_deref()),
    utf8("company_id", |j| j.company_id.as_deref()),
    utf8("job_key", |j| j.job_key.as_deref()),
];

/// The company object (reference/prospeo-api.md, "The company object", lines 94-112).
pub(super) const COMPANY: &[FieldSpec<Company>] = &[
    utf8("company_id", |c| c.company_id.as_deref()),
    utf8("name", |c| c.name.as_deref()),
    utf8("website", |c| c.website.as_deref()),
    utf8("domain", |c| c.domain.as_deref()),
    utf8("description", |c| c.description.as_deref()),
    utf8("description_seo", |c| c.description_seo.as_deref()),
    utf8("description_ai", |c| c.description_ai.as_deref()),
    utf8("type", |c| c.r#type.as_deref()),
    utf8("industry", |c| c.industry.as_deref()),
    utf8("employee_range", |c| c.employee_range.as_deref()),
    utf8("linkedin_url", |c| c.linkedin_url.as_deref()),
    utf8("twitter_url", |c| c.twitter_url.as_deref()),
    utf8("facebook_url", |c| c.facebook_url.as_deref()),
    utf8("instagram_url", |c| c.instagram_url.as_deref()),
    utf8("youtube_url", |c| c.youtube_url.as_deref()),
    utf8("crunchbase_url", |c| c.crunchbase_url.as_deref()),
    utf8("linkedin_id", |c| c.linkedin_id.as_deref()),
    utf8("revenue_range_printed", |c| {
        c.revenue_range_printed.as_deref()
    }),
    utf8("logo_url", |c| c.logo_url.as_deref()),
    int64("employee_count", |c| c.employee_count),
    int64("employee_count_on_prospeo", |c| c.employee_count_on_prospeo),
    int64("founded", |c| c.founded),
    utf8_list("other_websites", |c| c.other_websites.as_deref()),
    utf8_list("sic_codes", |c| c.sic_codes.as_deref()),
    utf8_list("naics_codes", |c| c.naics_codes.as_deref()),
    utf8_list("keywords", |c| c.keywords.as_deref()),
    object("location", &One(|c| c.location.as_ref(), COMPANY_LOCATION)),
    object(
        "email_tech",
        &One(|c| c.email_tech.as_ref(), COMPANY_EMAIL_TECH),
    ),
    object("phone_hq", &One(|c| c.phone_hq.as_ref(), COMPANY_PHONE_HQ)),
    object(
        "revenue_range",
        &One(|c| c.revenue_range.as_ref(), REVENUE_RANGE),
    ),
    object(
        "attributes",
        &One(|c| c.attributes.as_ref(), COMPANY_ATTRIBUTES),
    ),
    object("funding", &One(|c| c.funding.as_ref(), COMPANY_FUNDING)),
    object(
        "technology",
        &One(|c| c.technology.as_ref(), COMPANY_TECHNOLOGY),
    ),
    object(
        "job_postings",
        &One(|c| c.job_postings.as_ref(), COMPANY_JOB_POSTINGS),
    ),
];

const COMPANY_LOCATION: &[FieldSpec<CompanyLocation>] = &[
    utf8("country", |l| l.country.as_deref()),
    utf8("country_code", |l| l.country_code.as_deref()),
    utf8("state", |l| l.state.as_deref()),
    utf8("city", |l| l.city.as_deref()),
    utf8("raw_address", |l| l.raw_address.as_deref()),
];

const COMPANY_EMAIL_TECH: &[FieldSpec<CompanyEmailTech>] = &[
    utf8("domain", |e| e.domain.as_deref()),
    utf8("mx_provider", |e| e.mx_provider.as_deref()),
    boolean("catch_all_domain", |e| e.catch_all_domain),
];

const COMPANY_PHONE_HQ: &[FieldSpec<CompanyPhoneHq>] = &[
    utf8("phone_hq", |p| p.phone_hq.as_deref()),
    utf8("phone_hq_national", |p| p.phone_hq_national.as_deref()),
    utf8("phone_hq_international", |p| {
        p.phone_hq_international.as_deref()
    }),
    utf8("phone_hq_country", |p| p.phone_hq_country.as_deref()),
    utf8("phone_hq_country_code", |p| {
        p.phone_hq_country_code.as_deref()
    }),
];

/// Whole US dollars, up to ~1e10 (reference line 104): 64-bit.
const REVENUE_RANGE: &[FieldSpec<RevenueRange>] =
    &[int64("min", |r| r.min), int64("max", |r| r.max)];

const COMPANY_ATTRIBUTES: &[FieldSpec<CompanyAttributes>] = &[
    boolean("is_b2b", |a| a.is_b2b),
    boolean("has_demo", |a| a.has_demo),
    boolean("has_free_trial", |a| a.has_free_trial),
    boolean("has_downloadable", |a| a.has_downloadable),
    boolean("has_mobile_apps", |a| a.has_mobile_apps),
    boolean("has_online_reviews", |a| a.has_online_reviews),
    boolean("has_pricing", |a| a.has_pricing),
];

const COMPANY_FUNDING: &[FieldSpec<CompanyFunding>] = &[
    int64("count", |f| f.count),
    int64("total_funding", |f| f.total_funding),
    utf8("total_funding_printed", |f| {
        f.total_funding_printed.as_deref()
    }),
    timestamp_naive("latest_funding_date", |f| f.latest_funding_date.as_deref()),
    utf8("latest_funding_stage", |f| {
        f.latest_funding_stage.as_deref()
    }),
    object_list(
        "funding_events",
        &Many(|f| f.funding_events.as_deref(), FUNDING_EVENT),
    ),
];

const FUNDING_EVENT: &[FieldSpec<FundingEvent>] = &[
    int64("amount", |e| e.amount),
    utf8("amount_printed", |e| e.amount_printed.as_deref()),
    timestamp_naive("raised_at", |e| e.raised_at.as_deref()),
    utf8("stage", |e| e.stage.as_deref()),
    utf8("link", |e| e.link.as_deref()),
];

const COMPANY_TECHNOLOGY: &[FieldSpec<CompanyTechnology>] = &[
    int64("count", |t| t.count),
    utf8_list("technology_names", |t| t.technology_names.as_deref()),
    object_list(
        "technology_list",
        &Many(|t| t.technology_list.as_deref(), TECHNOLOGY),
    ),
];

const TECHNOLOGY: &[FieldSpec<Technology>] = &[
    utf8("name", |t| t.name.as_deref()),
    utf8("category", |t| t.category.as_deref()),
];

const COMPANY_JOB_POSTINGS: &[FieldSpec<CompanyJobPostings>] = &[
    int64("active_count", |j| j.active_count),
    utf8_list("active_titles", |j| j.active_titles.as_deref()),
];
