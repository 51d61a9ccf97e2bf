//! Enrichment outcomes → Arrow columns.
//!
//! The person and company objects are declared once, as the tables `PERSON` and `COMPANY`
//! below (one line a field). Both the output schema and the decoding follow from them:
//!
//! 1. The tables give a nested Arrow schema `{person: Struct, company: Struct}`. arrow-json's
//!    [`Decoder`](datafusion::arrow::json::reader::Decoder) is built on it and fed the typed wire
//!    structs directly with `Decoder::serialize` (no JSON text in between). The decoder parses
//!    the ISO timestamp strings, and it runs with `ignore_type_conflicts`, so a value that does
//!    not fit its declared type becomes null instead of failing the batch: the records are paid
//!    for, one odd value must not cost the others.
//! 2. Struct-valued fields (nested objects) are flattened into top-level columns named
//!    `prefix + "person_" / "company_" + path joined by "_"`, e.g. `prospeo_person_email_email`,
//!    `prospeo_company_revenue_range_min`. Lists stay lists: `prospeo_person_job_history` is a
//!    `List<Struct>`.
//! 3. Masked values are nulled (see `Masking`), then the status columns are appended:
//!    `prospeo_status`, `prospeo_error`, `prospeo_cost`, `prospeo_free_enrichment`.
//!
//! The schema depends only on the prefix, never on the data: ETL jobs downstream rely on it being
//! the same on every run. Every enrichment column is nullable ("every property may be null; whole
//! sub-objects may be null", reference/prospeo-api.md line 82); status and cost never are.
//!
//! Timestamps: `last_job_change_detected_at` carries a zone (`2024-08-27T21:18:29.577Z`,
//! reference line 84) and becomes `Timestamp(Millisecond, "UTC")`. `latest_funding_date` and
//! funding events' `raised_at` carry none (`2021-01-01T00:00:00`, reference line 107); they become
//! `Timestamp(Millisecond, None)`, the wall-clock value as given, since inventing a zone the
//! vendor did not state would be a guess (a value that does carry an offset is converted to UTC).
//!
//! Adding a field the vendor starts sending is one line in the tables. The wire types keep
//! unknown fields in `extra` and serialise them back in place, so a declared field is decoded
//! even before `api/wire.rs` learns it (reference line 114: "a client must accept unknown
//! fields and not lose them").

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Int64Array, RecordBatch, StringArray, StructArray,
};
use datafusion::arrow::compute::{not, nullif};
use datafusion::arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::json::ReaderBuilder;
use serde::Serialize;

use crate::api::outcome::RecordOutcome;
use crate::api::wire::{Company, Person};

/// The default prefix of every output column.
pub const DEFAULT_PREFIX: &str = "prospeo_";

/// Rows decoded at a time. The decoder walks its row-ordered tape once per column; past a few
/// hundred rows the tape no longer stays in cache and an 8,192-row batch decodes at half the
/// speed of 512-row pieces, even counting the copy that joins the pieces (measured with
/// `cargo bench --bench flatten` and this constant raised to 8,192).
const DECODE_CHUNK_ROWS: usize = 512;

/// The Arrow type a declared field decodes to.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Utf8,
    Int64,
    Float64,
    Boolean,
    /// An ISO-8601 string with a zone, as UTC milliseconds.
    TimestampUtc,
    /// An ISO-8601 string without a zone, as wall-clock milliseconds (no time zone).
    TimestampNaive,
    /// A list of strings.
    Utf8List,
    /// A nested object: flattened into one column per field.
    Object(&'static [FieldSpec]),
    /// A list of objects: one `List<Struct>` column.
    ObjectList(&'static [FieldSpec]),
}

/// Which values of an object with a `revealed` flag come out null.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Masking {
    /// Always as received.
    None,
    /// Null unless the sibling `revealed` is true: masked mobile numbers are `*`s
    /// (reference line 89), and an unknown `revealed` must not leak them either.
    UnlessRevealed,
    /// Null when the sibling `revealed` is false (the email: only an explicit "not revealed"
    /// hides it).
    WhenUnrevealed,
}

/// The sibling field that [`Masking`] reads.
const REVEALED: &str = "revealed";

/// One declared field of the person or company object.
#[derive(Debug, Clone, Copy)]
struct FieldSpec {
    name: &'static str,
    kind: Kind,
    masking: Masking,
}

impl FieldSpec {
    const fn masked(self, masking: Masking) -> FieldSpec {
        FieldSpec { masking, ..self }
    }

    fn data_type(&self) -> DataType {
        match self.kind {
            Kind::Utf8 => DataType::Utf8,
            Kind::Int64 => DataType::Int64,
            Kind::Float64 => DataType::Float64,
            Kind::Boolean => DataType::Boolean,
            Kind::TimestampUtc => DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
            Kind::TimestampNaive => DataType::Timestamp(TimeUnit::Millisecond, None),
            Kind::Utf8List => DataType::new_list(DataType::Utf8, true),
            Kind::Object(fields) => DataType::Struct(struct_fields(fields)),
            Kind::ObjectList(fields) => {
                DataType::new_list(DataType::Struct(struct_fields(fields)), true)
            }
        }
    }
}

const fn field(name: &'static str, kind: Kind) -> FieldSpec {
    FieldSpec {
        name,
        kind,
        masking: Masking::None,
    }
}
const fn utf8(name: &'static str) -> FieldSpec {
    field(name, Kind::Utf8)
}
const fn int64(name: &'static str) -> FieldSpec {
    field(name, Kind::Int64)
}
const fn float64(name: &'static str) -> FieldSpec {
    field(name, Kind::Float64)
}
const fn boolean(name: &'static str) -> FieldSpec {
    field(name, Kind::Boolean)
}
const fn timestamp_utc(name: &'static str) -> FieldSpec {
    field(name, Kind::TimestampUtc)
}
const fn timestamp_naive(name: &'static str) -> FieldSpec {
    field(name, Kind::TimestampNaive)
}
const fn utf8_list(name: &'static str) -> FieldSpec {
    field(name, Kind::Utf8List)
}
const fn object(name: &'static str, fields: &'static [FieldSpec]) -> FieldSpec {
    field(name, Kind::Object(fields))
}
const fn object_list(name: &'static str, fields: &'static [FieldSpec]) -> FieldSpec {
    field(name, Kind::ObjectList(fields))
}

/// The person object (reference/prospeo-api.md, "The person object", lines 82-92).
const PERSON: &[FieldSpec] = &[
    utf8("person_id"),
    utf8("first_name"),
    utf8("last_name"),
    utf8("full_name"),
    utf8("linkedin_url"),
    utf8("headline"),
    utf8("current_job_title"),
    utf8("current_job_key"),
    utf8("linkedin_member_id"),
    timestamp_utc("last_job_change_detected_at"),
    utf8_list("skills"),
    object("email", PERSON_EMAIL),
    object("mobile", PERSON_MOBILE),
    object("location", PERSON_LOCATION),
    object_list("job_history", JOB_HISTORY_ENTRY),
];

const PERSON_EMAIL: &[FieldSpec] = &[
    utf8("status"),
    boolean(REVEALED),
    utf8("email").masked(Masking::WhenUnrevealed),
    utf8("verification_method"),
    utf8("email_mx_provider"),
];

const PERSON_MOBILE: &[FieldSpec] = &[
    utf8("status"),
    boolean(REVEALED),
    utf8("mobile").masked(Masking::UnlessRevealed),
    utf8("mobile_national").masked(Masking::UnlessRevealed),
    utf8("mobile_international").masked(Masking::UnlessRevealed),
    utf8("mobile_country"),
    utf8("mobile_country_code"),
];

const PERSON_LOCATION: &[FieldSpec] = &[
    utf8("country"),
    utf8("country_code"),
    utf8("state"),
    utf8("city"),
    utf8("time_zone"),
    float64("time_zone_offset"),
];

const JOB_HISTORY_ENTRY: &[FieldSpec] = &[
    utf8("title"),
    utf8("company_name"),
    utf8("logo_url"),
    boolean("current"),
    int64("start_year"),
    int64("start_month"),
    int64("end_year"),
    int64("end_month"),
    int64("duration_in_months"),
    utf8_list("departments"),
    utf8("seniority"),
    utf8("company_id"),
    utf8("job_key"),
];

/// The company object (reference/prospeo-api.md, "The company object", lines 94-112).
const COMPANY: &[FieldSpec] = &[
    utf8("company_id"),
    utf8("name"),
    utf8("website"),
    utf8("domain"),
    utf8("description"),
    utf8("description_seo"),
    utf8("description_ai"),
    utf8("type"),
    utf8("industry"),
    utf8("employee_range"),
    utf8("linkedin_url"),
    utf8("twitter_url"),
    utf8("facebook_url"),
    utf8("instagram_url"),
    utf8("youtube_url"),
    utf8("crunchbase_url"),
    utf8("linkedin_id"),
    utf8("revenue_range_printed"),
    utf8("logo_url"),
    int64("employee_count"),
    int64("employee_count_on_prospeo"),
    int64("founded"),
    utf8_list("other_websites"),
    utf8_list("sic_codes"),
    utf8_list("naics_codes"),
    utf8_list("keywords"),
    object("location", COMPANY_LOCATION),
    object("email_tech", COMPANY_EMAIL_TECH),
    object("phone_hq", COMPANY_PHONE_HQ),
    object("revenue_range", REVENUE_RANGE),
    object("attributes", COMPANY_ATTRIBUTES),
    object("funding", COMPANY_FUNDING),
    object("technology", COMPANY_TECHNOLOGY),
    object("job_postings", COMPANY_JOB_POSTINGS),
];

const COMPANY_LOCATION: &[FieldSpec] = &[
    utf8("country"),
    utf8("country_code"),
    utf8("state"),
    utf8("city"),
    utf8("raw_address"),
];

const COMPANY_EMAIL_TECH: &[FieldSpec] = &[
    utf8("domain"),
    utf8("mx_provider"),
    boolean("catch_all_domain"),
];

const COMPANY_PHONE_HQ: &[FieldSpec] = &[
    utf8("phone_hq"),
    utf8("phone_hq_national"),
    utf8("phone_hq_international"),
    utf8("phone_hq_country"),
    utf8("phone_hq_country_code"),
];

/// Whole US dollars, up to ~1e10 (reference line 104): 64-bit.
const REVENUE_RANGE: &[FieldSpec] = &[int64("min"), int64("max")];

const COMPANY_ATTRIBUTES: &[FieldSpec] = &[
    boolean("is_b2b"),
    boolean("has_demo"),
    boolean("has_free_trial"),
    boolean("has_downloadable"),
    boolean("has_mobile_apps"),
    boolean("has_online_reviews"),
    boolean("has_pricing"),
];

const COMPANY_FUNDING: &[FieldSpec] = &[
    int64("count"),
    int64("total_funding"),
    utf8("total_funding_printed"),
    timestamp_naive("latest_funding_date"),
    utf8("latest_funding_stage"),
    object_list("funding_events", FUNDING_EVENT),
];

const FUNDING_EVENT: &[FieldSpec] = &[
    int64("amount"),
    utf8("amount_printed"),
    timestamp_naive("raised_at"),
    utf8("stage"),
    utf8("link"),
];

const COMPANY_TECHNOLOGY: &[FieldSpec] = &[
    int64("count"),
    utf8_list("technology_names"),
    object_list("technology_list", TECHNOLOGY),
];

const TECHNOLOGY: &[FieldSpec] = &[utf8("name"), utf8("category")];

const COMPANY_JOB_POSTINGS: &[FieldSpec] = &[int64("active_count"), utf8_list("active_titles")];

/// The nested Arrow fields of an object; every field nullable.
fn struct_fields(specs: &[FieldSpec]) -> Fields {
    specs
        .iter()
        .map(|spec| Field::new(spec.name, spec.data_type(), true))
        .collect()
}

/// The flattened output fields of an object whose columns start with `path`.
fn flat_fields(specs: &[FieldSpec], path: &str, out: &mut Vec<Field>) {
    for spec in specs {
        let name = format!("{path}_{}", spec.name);
        match spec.kind {
            Kind::Object(children) => flat_fields(children, &name, out),
            _ => out.push(Field::new(name, spec.data_type(), true)),
        }
    }
}

/// The decoded columns of `object` (declared by `specs`), flattened and masked, in the order of
/// [`flat_fields`]. A null object has null children (arrow-json leaves them unset), so no null
/// propagation is needed here.
fn flat_columns(
    specs: &[FieldSpec],
    object: &StructArray,
    out: &mut Vec<ArrayRef>,
) -> Result<(), ArrowError> {
    let revealed = object
        .column_by_name(REVEALED)
        .and_then(|c| c.as_boolean_opt());
    for (spec, column) in specs.iter().zip(object.columns()) {
        match spec.kind {
            Kind::Object(children) => flat_columns(children, column.as_struct(), out)?,
            _ => out.push(mask(spec.masking, column, revealed)?),
        }
    }
    Ok(())
}

/// Nulls the values of `column` that `masking` hides, given the sibling `revealed` flags.
fn mask(
    masking: Masking,
    column: &ArrayRef,
    revealed: Option<&BooleanArray>,
) -> Result<ArrayRef, ArrowError> {
    let hidden = match (masking, revealed) {
        (Masking::None, _) | (Masking::WhenUnrevealed, None) => return Ok(column.clone()),
        // No flag to read: never let a masked number through.
        (Masking::UnlessRevealed, None) => BooleanArray::from(vec![true; column.len()]),
        (Masking::UnlessRevealed, Some(revealed)) => {
            let shown = match revealed.nulls() {
                Some(valid) => revealed.values() & valid.inner(),
                None => revealed.values().clone(),
            };
            BooleanArray::new(!&shown, None)
        }
        // A null flag stays null in `not`, and `nullif` passes a null condition through.
        (Masking::WhenUnrevealed, Some(revealed)) => not(revealed)?,
    };
    nullif(column, &hidden)
}

/// What one output row decodes from. Generic so that a test can feed a value that fails to
/// serialise; in production `P` is [`Person`] and `C` is [`Company`].
#[derive(Serialize)]
struct Row<'a, P, C> {
    person: Option<&'a P>,
    company: Option<&'a C>,
}

impl<P, C> Clone for Row<'_, P, C> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<P, C> Copy for Row<'_, P, C> {}

/// The declared output of an enrichment: its Arrow schema and the step that turns
/// [`RecordOutcome`]s into a [`RecordBatch`] of that schema.
///
/// Built once per prefix; cloning is cheap. The schema is the same whatever the data.
#[derive(Debug, Clone)]
pub struct OutputSchema {
    prefix: String,
    /// The flattened output: person columns, company columns, status columns.
    schema: SchemaRef,
    /// What the decoder reads: `{person: Struct, company: Struct}`.
    decoded: SchemaRef,
}

impl Default for OutputSchema {
    fn default() -> Self {
        OutputSchema::new(DEFAULT_PREFIX)
    }
}

impl OutputSchema {
    /// The output whose every column name starts with `prefix` (e.g. [`DEFAULT_PREFIX`]).
    pub fn new(prefix: &str) -> Self {
        let mut fields = Vec::new();
        flat_fields(PERSON, &format!("{prefix}person"), &mut fields);
        flat_fields(COMPANY, &format!("{prefix}company"), &mut fields);
        fields.extend([
            Field::new(format!("{prefix}status"), DataType::Utf8, false),
            Field::new(format!("{prefix}error"), DataType::Utf8, true),
            Field::new(format!("{prefix}cost"), DataType::Int64, false),
            Field::new(format!("{prefix}free_enrichment"), DataType::Boolean, true),
        ]);
        let decoded = Schema::new(vec![
            Field::new("person", DataType::Struct(struct_fields(PERSON)), true),
            Field::new("company", DataType::Struct(struct_fields(COMPANY)), true),
        ]);
        OutputSchema {
            prefix: prefix.to_string(),
            schema: Arc::new(Schema::new(fields)),
            decoded: Arc::new(decoded),
        }
    }

    /// The prefix of every column name.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The output schema, in order: the person's fields, the company's fields, then
    /// `status`, `error`, `cost`, `free_enrichment`.
    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// The names of [`Self::schema`]'s columns, in order.
    pub fn column_names(&self) -> Vec<String> {
        self.schema
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect()
    }

    /// A batch of this schema with no rows.
    pub fn empty_batch(&self) -> RecordBatch {
        RecordBatch::new_empty(self.schema.clone())
    }

    /// One row per outcome, in order. Only matches carry person and company values; a value
    /// that does not fit its declared type is null. An error here means a bug in this module,
    /// not bad data.
    pub fn flatten(&self, outcomes: &[RecordOutcome]) -> Result<RecordBatch, ArrowError> {
        if outcomes.is_empty() {
            return Ok(self.empty_batch());
        }
        if outcomes.len() > DECODE_CHUNK_ROWS {
            let parts = outcomes
                .chunks(DECODE_CHUNK_ROWS)
                .map(|c| self.flatten(c))
                .collect::<Result<Vec<_>, _>>()?;
            return datafusion::arrow::compute::concat_batches(&self.schema, &parts);
        }
        let rows: Vec<Row<'_, Person, Company>> = outcomes
            .iter()
            .map(|outcome| match outcome {
                RecordOutcome::Matched(m) => Row {
                    person: m.person.as_ref(),
                    company: m.company.as_ref(),
                },
                _ => Row {
                    person: None,
                    company: None,
                },
            })
            .collect();
        let decoded = self.decode_salvaging(&rows)?;

        let mut columns = Vec::with_capacity(self.schema.fields().len());
        flat_columns(PERSON, decoded.column(0).as_struct(), &mut columns)?;
        flat_columns(COMPANY, decoded.column(1).as_struct(), &mut columns)?;
        columns.extend(status_columns(outcomes));
        RecordBatch::try_new(self.schema.clone(), columns)
    }

    /// Decodes `rows`; should that fail, decodes again without the objects that fail on their
    /// own, so that one bad object costs its own columns only.
    fn decode_salvaging<P: Serialize, C: Serialize>(
        &self,
        rows: &[Row<'_, P, C>],
    ) -> Result<RecordBatch, ArrowError> {
        let error = match self.decode(rows) {
            Ok(batch) => return Ok(batch),
            Err(error) => error,
        };
        let decodes = |row: Row<'_, P, C>| self.decode(&[row]).is_ok();
        let mut dropped = 0usize;
        let salvaged: Vec<Row<'_, P, C>> = rows
            .iter()
            .map(|&row| {
                if decodes(row) {
                    return row;
                }
                let person = row.person.filter(|&p| {
                    decodes(Row {
                        person: Some(p),
                        company: None,
                    })
                });
                let company = row.company.filter(|&c| {
                    decodes(Row {
                        person: None,
                        company: Some(c),
                    })
                });
                dropped += usize::from(person.is_none() && row.person.is_some())
                    + usize::from(company.is_none() && row.company.is_some());
                Row { person, company }
            })
            .collect();
        tracing::warn!(
            %error,
            dropped,
            "enrichment output: objects that could not be decoded are written as nulls"
        );
        self.decode(&salvaged)
    }

    /// Decodes `rows` into a batch of `{person, company}`.
    fn decode<P: Serialize, C: Serialize>(
        &self,
        rows: &[Row<'_, P, C>],
    ) -> Result<RecordBatch, ArrowError> {
        let mut decoder = ReaderBuilder::new(self.decoded.clone())
            .with_batch_size(rows.len().max(1))
            // Unknown fields (kept in the wire types' `extra`) are skipped, not errors.
            .with_strict_mode(false)
            // A value of the wrong type, or an unparsable timestamp, becomes null.
            .with_ignore_type_conflicts(true)
            .build_decoder()?;
        decoder.serialize(rows)?;
        match decoder.flush()? {
            Some(batch) => Ok(batch),
            None => Ok(RecordBatch::new_empty(self.decoded.clone())),
        }
    }
}

/// `status`, `error`, `cost`, `free_enrichment`.
fn status_columns(outcomes: &[RecordOutcome]) -> [ArrayRef; 4] {
    let status = StringArray::from_iter_values(outcomes.iter().map(|o| o.status().as_str()));
    let error: StringArray = outcomes.iter().map(RecordOutcome::error).collect();
    let cost = Int64Array::from_iter_values(outcomes.iter().map(RecordOutcome::cost));
    let free_enrichment: BooleanArray = outcomes
        .iter()
        .map(|o| match o {
            RecordOutcome::Matched(m) => Some(m.free_enrichment),
            _ => None,
        })
        .collect();
    [
        Arc::new(status),
        Arc::new(error),
        Arc::new(cost),
        Arc::new(free_enrichment),
    ]
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::time::{Duration, SystemTime};

    use datafusion::arrow::array::{ListArray, TimestampMillisecondArray};
    use datafusion::arrow::datatypes::{Float64Type, Int64Type};
    use serde_json::{Map, Value, json};

    use super::*;
    use crate::api::outcome::{DeferReason, Match};
    use crate::api::wire::{
        CompanyAttributes, CompanyFunding, CompanyLocation, CompanyTechnology, FundingEvent,
        JobHistoryEntry, PersonEmail, PersonLocation, PersonMobile, RevenueRange, Technology,
    };

    fn s(value: &str) -> Option<String> {
        Some(value.to_string())
    }

    fn strings(values: &[&str]) -> Option<Vec<String>> {
        Some(values.iter().map(|v| v.to_string()).collect())
    }

    fn person() -> Person {
        Person {
            person_id: s("p-1"),
            first_name: s("Eva"),
            last_name: s("Kiegler"),
            full_name: s("Eva Kiegler"),
            linkedin_url: s("https://www.linkedin.com/in/evakiegler"),
            headline: s("CEO at Intercom"),
            current_job_title: s("CEO"),
            last_job_change_detected_at: s("2024-08-27T21:18:29.577Z"),
            skills: strings(&["SaaS", "Leadership"]),
            email: Some(PersonEmail {
                status: s("VERIFIED"),
                revealed: Some(true),
                email: s("eva@intercom.com"),
                verification_method: s("SMTP"),
                ..Default::default()
            }),
            mobile: Some(PersonMobile {
                status: s("VERIFIED"),
                revealed: Some(true),
                mobile: s("+14155550123"),
                mobile_national: s("(415) 555-0123"),
                mobile_international: s("+1 415-555-0123"),
                mobile_country: s("United States"),
                mobile_country_code: s("US"),
                ..Default::default()
            }),
            location: Some(PersonLocation {
                country: s("United States"),
                city: s("San Francisco"),
                time_zone_offset: Some(-7.0),
                ..Default::default()
            }),
            job_history: Some(vec![
                JobHistoryEntry {
                    title: s("CEO"),
                    company_name: s("Intercom"),
                    current: Some(true),
                    start_year: Some(2020),
                    start_month: Some(3),
                    duration_in_months: Some(54),
                    departments: strings(&["Executive", "Founder"]),
                    company_id: s("c-1"),
                    ..Default::default()
                },
                JobHistoryEntry {
                    title: s("VP Sales"),
                    current: Some(false),
                    end_year: Some(2020),
                    ..Default::default()
                },
            ]),
            ..Default::default()
        }
    }

    fn company() -> Company {
        Company {
            company_id: s("c-1"),
            name: s("Intercom"),
            website: s("https://intercom.com"),
            r#type: s("Private"),
            employee_count: Some(1200),
            founded: Some(2011),
            keywords: strings(&["customer service", "ai"]),
            location: Some(CompanyLocation {
                country: s("United States"),
                city: s("San Francisco"),
                ..Default::default()
            }),
            revenue_range: Some(RevenueRange {
                min: Some(1_000_000_000),
                max: Some(9_999_999_999),
                ..Default::default()
            }),
            attributes: Some(CompanyAttributes {
                is_b2b: Some(true),
                has_demo: Some(false),
                ..Default::default()
            }),
            funding: Some(CompanyFunding {
                count: Some(2),
                total_funding: Some(240_000_000),
                latest_funding_date: s("2021-01-01T00:00:00"),
                funding_events: Some(vec![FundingEvent {
                    amount: Some(125_000_000),
                    raised_at: s("2018-03-27T00:00:00"),
                    stage: s("Series D"),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            technology: Some(CompanyTechnology {
                count: Some(40),
                technology_names: strings(&["React"]),
                technology_list: Some(vec![Technology {
                    name: s("React"),
                    category: s("JavaScript frameworks"),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn matched(person: Option<Person>, company: Option<Company>) -> RecordOutcome {
        RecordOutcome::Matched(Box::new(Match {
            person,
            company,
            free_enrichment: false,
            cost: 1,
        }))
    }

    fn column<'a>(batch: &'a RecordBatch, name: &str) -> &'a ArrayRef {
        batch
            .column_by_name(name)
            .unwrap_or_else(|| panic!("no column {name}"))
    }

    fn utf8_at(batch: &RecordBatch, name: &str, row: usize) -> Option<String> {
        let array = column(batch, name).as_string::<i32>();
        array.is_valid(row).then(|| array.value(row).to_string())
    }

    fn i64_at(batch: &RecordBatch, name: &str, row: usize) -> Option<i64> {
        let array = column(batch, name).as_primitive::<Int64Type>();
        array.is_valid(row).then(|| array.value(row))
    }

    fn bool_at(batch: &RecordBatch, name: &str, row: usize) -> Option<bool> {
        let array = column(batch, name).as_boolean();
        array.is_valid(row).then(|| array.value(row))
    }

    fn list_of_strings(array: &ListArray, row: usize) -> Vec<String> {
        let values = array.value(row);
        values
            .as_string::<i32>()
            .iter()
            .map(|v| v.unwrap().to_string())
            .collect()
    }

    fn millis(iso: &str) -> i64 {
        chrono::DateTime::parse_from_rfc3339(iso)
            .unwrap()
            .timestamp_millis()
    }

    #[test]
    fn the_schema_declares_typed_flattened_columns() {
        let schema = OutputSchema::default().schema();
        let type_of = |name: &str| schema.field_with_name(name).unwrap().data_type().clone();
        for name in [
            "prospeo_person_email_email",
            "prospeo_person_mobile_mobile",
            "prospeo_company_location_country",
            "prospeo_company_type",
            "prospeo_company_phone_hq_phone_hq",
        ] {
            assert_eq!(type_of(name), DataType::Utf8, "{name}");
        }
        assert_eq!(type_of("prospeo_person_mobile_revealed"), DataType::Boolean);
        assert_eq!(
            type_of("prospeo_company_revenue_range_min"),
            DataType::Int64
        );
        assert_eq!(
            type_of("prospeo_person_location_time_zone_offset"),
            DataType::Float64
        );
        assert_eq!(
            type_of("prospeo_person_last_job_change_detected_at"),
            DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))
        );
        assert_eq!(
            type_of("prospeo_company_funding_latest_funding_date"),
            DataType::Timestamp(TimeUnit::Millisecond, None)
        );
        assert_eq!(
            type_of("prospeo_person_skills"),
            DataType::new_list(DataType::Utf8, true)
        );
        let DataType::List(element) = type_of("prospeo_company_funding_funding_events") else {
            panic!("funding events are a list");
        };
        let DataType::Struct(event) = element.data_type() else {
            panic!("funding events are a list of structs");
        };
        assert_eq!(
            event.find("raised_at").unwrap().1.data_type(),
            &DataType::Timestamp(TimeUnit::Millisecond, None)
        );
        assert!(matches!(
            type_of("prospeo_person_job_history"),
            DataType::List(f) if matches!(f.data_type(), DataType::Struct(_))
        ));
        assert!(matches!(
            type_of("prospeo_company_technology_technology_list"),
            DataType::List(_)
        ));

        // Status columns last; only status and cost are non-nullable.
        let names = OutputSchema::default().column_names();
        assert_eq!(
            names[names.len() - 4..],
            [
                "prospeo_status",
                "prospeo_error",
                "prospeo_cost",
                "prospeo_free_enrichment"
            ]
        );
        assert_eq!(names[0], "prospeo_person_person_id");
        let non_nullable: Vec<_> = schema
            .fields()
            .iter()
            .filter(|f| !f.is_nullable())
            .map(|f| f.name().as_str())
            .collect();
        assert_eq!(non_nullable, ["prospeo_status", "prospeo_cost"]);
        assert_eq!(
            names.iter().collect::<HashSet<_>>().len(),
            names.len(),
            "column names are unique"
        );
        assert_eq!(names.len(), 93);
    }

    #[test]
    fn another_prefix_renames_every_column() {
        let default = OutputSchema::default().column_names();
        let other = OutputSchema::new("p_").column_names();
        assert_eq!(default.len(), other.len());
        for (a, b) in default.iter().zip(&other) {
            assert!(b.starts_with("p_") && !b.starts_with("prospeo_"), "{b}");
            assert_eq!(a.strip_prefix(DEFAULT_PREFIX), b.strip_prefix("p_"));
        }
        assert!(other.contains(&"p_company_revenue_range_min".to_string()));
    }

    #[test]
    fn the_schema_does_not_depend_on_the_data() {
        let output = OutputSchema::default();
        let none = output
            .flatten(&[RecordOutcome::NotMatched, RecordOutcome::NotMatched])
            .unwrap();
        let full = output
            .flatten(&[matched(Some(person()), Some(company()))])
            .unwrap();
        let empty = output.flatten(&[]).unwrap();
        assert_eq!(none.schema(), full.schema());
        assert_eq!(empty.schema(), full.schema());
        assert_eq!(full.schema(), output.schema());
        assert_eq!(output.empty_batch().num_rows(), 0);
        assert_eq!(empty.num_rows(), 0);
        assert_eq!(none.num_rows(), 2);
    }

    #[test]
    fn a_match_fills_the_right_columns() {
        let batch = OutputSchema::default()
            .flatten(&[matched(Some(person()), Some(company()))])
            .unwrap();
        assert_eq!(batch.num_rows(), 1);
        let p = |field: &str| format!("prospeo_person_{field}");
        let c = |field: &str| format!("prospeo_company_{field}");

        assert_eq!(utf8_at(&batch, &p("full_name"), 0), s("Eva Kiegler"));
        assert_eq!(utf8_at(&batch, &p("email_email"), 0), s("eva@intercom.com"));
        assert_eq!(utf8_at(&batch, &p("email_status"), 0), s("VERIFIED"));
        assert_eq!(utf8_at(&batch, &p("location_city"), 0), s("San Francisco"));
        assert_eq!(utf8_at(&batch, &p("headline"), 0), s("CEO at Intercom"));
        assert_eq!(utf8_at(&batch, &p("current_job_key"), 0), None);
        assert_eq!(utf8_at(&batch, &c("type"), 0), s("Private"));
        assert_eq!(
            utf8_at(&batch, &c("location_country"), 0),
            s("United States")
        );
        assert_eq!(
            i64_at(&batch, &c("revenue_range_max"), 0),
            Some(9_999_999_999)
        );
        assert_eq!(
            i64_at(&batch, &c("revenue_range_min"), 0),
            Some(1_000_000_000)
        );
        assert_eq!(i64_at(&batch, &c("employee_count"), 0), Some(1200));
        assert_eq!(
            i64_at(&batch, &c("funding_total_funding"), 0),
            Some(240_000_000)
        );
        assert_eq!(i64_at(&batch, &c("employee_count_on_prospeo"), 0), None);
        let offset = column(&batch, &p("location_time_zone_offset")).as_primitive::<Float64Type>();
        assert_eq!(offset.value(0), -7.0);
        assert_eq!(bool_at(&batch, &c("attributes_is_b2b"), 0), Some(true));
        assert_eq!(bool_at(&batch, &c("attributes_has_demo"), 0), Some(false));
        assert_eq!(bool_at(&batch, &c("attributes_has_pricing"), 0), None);
        assert_eq!(bool_at(&batch, &p("email_revealed"), 0), Some(true));

        let changed = column(&batch, &p("last_job_change_detected_at"))
            .as_any()
            .downcast_ref::<TimestampMillisecondArray>()
            .unwrap();
        assert_eq!(changed.value(0), millis("2024-08-27T21:18:29.577Z"));
        let funded = column(&batch, &c("funding_latest_funding_date"))
            .as_primitive::<datafusion::arrow::datatypes::TimestampMillisecondType>();
        assert_eq!(funded.value(0), millis("2021-01-01T00:00:00Z"));

        let skills = column(&batch, &p("skills")).as_list::<i32>();
        assert_eq!(list_of_strings(skills, 0), ["SaaS", "Leadership"]);
        let keywords = column(&batch, &c("keywords")).as_list::<i32>();
        assert_eq!(list_of_strings(keywords, 0), ["customer service", "ai"]);

        let history = column(&batch, &p("job_history")).as_list::<i32>();
        let jobs = history.value(0);
        let jobs = jobs.as_struct();
        assert_eq!(jobs.len(), 2);
        let titles = jobs.column_by_name("title").unwrap().as_string::<i32>();
        assert_eq!((titles.value(0), titles.value(1)), ("CEO", "VP Sales"));
        let current = jobs.column_by_name("current").unwrap().as_boolean();
        assert_eq!((current.value(0), current.value(1)), (true, false));
        let start = jobs
            .column_by_name("start_year")
            .unwrap()
            .as_primitive::<Int64Type>();
        assert_eq!(start.value(0), 2020);
        assert!(start.is_null(1));
        let departments = jobs.column_by_name("departments").unwrap().as_list::<i32>();
        assert_eq!(list_of_strings(departments, 0), ["Executive", "Founder"]);
        assert!(departments.is_null(1));

        let events = column(&batch, &c("funding_funding_events")).as_list::<i32>();
        let events = events.value(0);
        let events = events.as_struct();
        let amount = events
            .column_by_name("amount")
            .unwrap()
            .as_primitive::<Int64Type>();
        assert_eq!(amount.value(0), 125_000_000);
        let raised = events
            .column_by_name("raised_at")
            .unwrap()
            .as_primitive::<datafusion::arrow::datatypes::TimestampMillisecondType>();
        assert_eq!(raised.value(0), millis("2018-03-27T00:00:00Z"));
        let technologies = column(&batch, &c("technology_technology_list")).as_list::<i32>();
        let technologies = technologies.value(0);
        let category = technologies
            .as_struct()
            .column_by_name("category")
            .unwrap()
            .as_string::<i32>();
        assert_eq!(category.value(0), "JavaScript frameworks");
    }

    #[test]
    fn large_batches_keep_their_order() {
        let outcomes: Vec<RecordOutcome> = (0..DECODE_CHUNK_ROWS * 2 + 7)
            .map(|i| {
                let mut person = person();
                person.person_id = Some(format!("p-{i}"));
                match i % 3 {
                    0 => RecordOutcome::NotMatched,
                    _ => matched(Some(person), Some(company())),
                }
            })
            .collect();
        let batch = OutputSchema::default().flatten(&outcomes).unwrap();
        assert_eq!(batch.num_rows(), outcomes.len());
        assert_eq!(batch.schema(), OutputSchema::default().schema());
        for row in 0..outcomes.len() {
            let expected = (row % 3 != 0).then(|| format!("p-{row}"));
            assert_eq!(utf8_at(&batch, "prospeo_person_person_id", row), expected);
        }
    }

    #[test]
    fn masked_numbers_come_out_null() {
        let masked_mobile = |revealed: Option<bool>| {
            let mut person = person();
            let mobile = person.mobile.as_mut().unwrap();
            mobile.revealed = revealed;
            mobile.mobile = s("+1415*******");
            mobile.mobile_national = s("(415) ***-****");
            mobile.mobile_international = s("+1 415-***-****");
            person
        };
        let mut hidden_email = person();
        hidden_email.email.as_mut().unwrap().revealed = Some(false);
        let mut unknown_email = person();
        unknown_email.email.as_mut().unwrap().revealed = None;

        let batch = OutputSchema::default()
            .flatten(&[
                matched(Some(masked_mobile(Some(false))), None),
                matched(Some(masked_mobile(None)), None),
                matched(Some(person()), None),
                matched(Some(hidden_email), None),
                matched(Some(unknown_email), None),
            ])
            .unwrap();
        for number in ["mobile", "mobile_national", "mobile_international"] {
            let name = format!("prospeo_person_mobile_{number}");
            assert_eq!(utf8_at(&batch, &name, 0), None, "{name}");
            assert_eq!(utf8_at(&batch, &name, 1), None, "{name}");
            assert!(utf8_at(&batch, &name, 2).is_some(), "{name}");
        }
        assert_eq!(
            utf8_at(&batch, "prospeo_person_mobile_mobile", 2),
            s("+14155550123")
        );
        let revealed = |row| bool_at(&batch, "prospeo_person_mobile_revealed", row);
        assert_eq!(
            (revealed(0), revealed(1), revealed(2)),
            (Some(false), None, Some(true))
        );
        // What is not a number stays: the status says why the number is missing.
        assert_eq!(
            utf8_at(&batch, "prospeo_person_mobile_status", 0),
            s("VERIFIED")
        );
        assert_eq!(
            utf8_at(&batch, "prospeo_person_mobile_mobile_country_code", 0),
            s("US")
        );

        let email = |row| utf8_at(&batch, "prospeo_person_email_email", row);
        assert_eq!(email(3), None);
        assert_eq!(email(4), s("eva@intercom.com"));
        assert_eq!(email(2), s("eva@intercom.com"));
        assert_eq!(
            bool_at(&batch, "prospeo_person_email_revealed", 3),
            Some(false)
        );
    }

    #[test]
    fn every_masked_field_has_a_revealed_flag_beside_it() {
        fn check(specs: &[FieldSpec]) {
            let masks = specs.iter().any(|s| s.masking != Masking::None);
            let flag = specs
                .iter()
                .any(|s| s.name == REVEALED && matches!(s.kind, Kind::Boolean));
            assert!(!masks || flag);
            for spec in specs {
                if let Kind::Object(children) | Kind::ObjectList(children) = spec.kind {
                    check(children);
                }
            }
        }
        check(PERSON);
        check(COMPANY);
    }

    #[test]
    fn status_columns_for_every_outcome() {
        let retry_at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let outcomes = [
            RecordOutcome::Matched(Box::new(Match {
                person: Some(person()),
                company: Some(company()),
                free_enrichment: true,
                cost: 0,
            })),
            RecordOutcome::Matched(Box::new(Match {
                person: Some(person()),
                company: None,
                free_enrichment: false,
                cost: 10,
            })),
            RecordOutcome::NotMatched,
            RecordOutcome::InvalidDatapoints,
            RecordOutcome::Failed {
                reason: "INTERNAL_ERROR after 3 attempts".into(),
            },
            RecordOutcome::Deferred {
                reason: DeferReason::DailyQuota,
                retry_at: Some(retry_at),
            },
        ];
        let batch = OutputSchema::default().flatten(&outcomes).unwrap();
        assert_eq!(batch.num_rows(), outcomes.len());
        let statuses: Vec<_> = (0..outcomes.len())
            .map(|row| utf8_at(&batch, "prospeo_status", row).unwrap())
            .collect();
        assert_eq!(
            statuses,
            [
                "matched",
                "matched",
                "not_matched",
                "invalid_datapoints",
                "failed",
                "deferred"
            ]
        );
        let errors: Vec<_> = (0..outcomes.len())
            .map(|row| utf8_at(&batch, "prospeo_error", row))
            .collect();
        assert_eq!(errors[..4], [None, None, None, None]);
        assert_eq!(errors[4], s("INTERNAL_ERROR after 3 attempts"));
        assert_eq!(errors[5], outcomes[5].error());
        assert!(
            errors[5]
                .as_deref()
                .unwrap()
                .contains("2023-11-14T22:13:20Z")
        );
        let costs = column(&batch, "prospeo_cost").as_primitive::<Int64Type>();
        assert_eq!(costs.null_count(), 0);
        assert_eq!(costs.values().to_vec(), [0, 10, 0, 0, 0, 0]);
        let free: Vec<_> = (0..outcomes.len())
            .map(|row| bool_at(&batch, "prospeo_free_enrichment", row))
            .collect();
        assert_eq!(free, [Some(true), Some(false), None, None, None, None]);

        // Only matches carry enrichment values.
        let full_name = |row| utf8_at(&batch, "prospeo_person_full_name", row);
        assert_eq!(full_name(0), s("Eva Kiegler"));
        for row in 2..outcomes.len() {
            assert_eq!(full_name(row), None);
            assert_eq!(utf8_at(&batch, "prospeo_company_name", row), None);
        }
    }

    #[test]
    fn values_that_do_not_fit_become_null() {
        let mut odd = person();
        odd.last_job_change_detected_at = s("last Tuesday");
        // A value of the wrong type can only come through `extra` (the wire types are
        // lenient), e.g. when a field is re-declared here before api/wire.rs learns it.
        odd.headline = None;
        odd.extra
            .insert("headline".into(), json!({"not": "a string"}));
        odd.location.as_mut().unwrap().time_zone_offset = None;
        odd.location
            .as_mut()
            .unwrap()
            .extra
            .insert("time_zone_offset".into(), json!("seven"));
        let mut company = company();
        company.funding.as_mut().unwrap().latest_funding_date = s("2021-13-45T99:00:00");
        company.revenue_range.as_mut().unwrap().max = None;
        company
            .revenue_range
            .as_mut()
            .unwrap()
            .extra
            .insert("max".into(), json!(1e30));

        let batch = OutputSchema::default()
            .flatten(&[
                matched(Some(odd), Some(company)),
                matched(Some(person()), None),
                matched(None, None),
            ])
            .unwrap();
        assert_eq!(batch.num_rows(), 3);
        let changed = column(&batch, "prospeo_person_last_job_change_detected_at");
        assert!(changed.is_null(0));
        assert!(changed.is_valid(1));
        assert_eq!(utf8_at(&batch, "prospeo_person_headline", 0), None);
        assert!(column(&batch, "prospeo_person_location_time_zone_offset").is_null(0));
        assert!(column(&batch, "prospeo_company_funding_latest_funding_date").is_null(0));
        assert_eq!(i64_at(&batch, "prospeo_company_revenue_range_max", 0), None);
        // The rest of the row is intact.
        assert_eq!(
            utf8_at(&batch, "prospeo_person_full_name", 0),
            s("Eva Kiegler")
        );
        assert_eq!(i64_at(&batch, "prospeo_company_founded", 0), Some(2011));

        // A missing company, or a match with no objects at all: nulls.
        for name in ["prospeo_company_name", "prospeo_company_location_country"] {
            assert!(column(&batch, name).is_null(1), "{name}");
            assert!(column(&batch, name).is_null(2), "{name}");
        }
        assert!(column(&batch, "prospeo_company_funding_funding_events").is_null(1));
        assert!(column(&batch, "prospeo_person_full_name").is_null(2));
        assert_eq!(utf8_at(&batch, "prospeo_status", 2), s("matched"));
    }

    #[test]
    fn unknown_fields_do_not_break_decoding() {
        let extra = |pairs: Value| -> Map<String, Value> { pairs.as_object().unwrap().clone() };
        let mut person = person();
        person.extra = extra(json!({
            "brand_new_field": {"a": [1, 2, {"b": null}]},
            "another": [true, "x", 3.5],
            "big": 18446744073709551615u64,
        }));
        person.mobile.as_mut().unwrap().extra = extra(json!({"carrier": "Verizon"}));
        person.job_history.as_mut().unwrap()[0].extra = extra(json!({"location": {"city": "SF"}}));
        let mut company = company();
        company.extra = extra(json!({"ai_summary": "…", "tags": [{"k": 1}]}));
        company
            .funding
            .as_mut()
            .unwrap()
            .funding_events
            .as_mut()
            .unwrap()[0]
            .extra = extra(json!({"investors": ["Index"]}));

        let batch = OutputSchema::default()
            .flatten(&[matched(Some(person), Some(company))])
            .unwrap();
        assert_eq!(
            utf8_at(&batch, "prospeo_person_full_name", 0),
            s("Eva Kiegler")
        );
        assert_eq!(
            utf8_at(&batch, "prospeo_person_mobile_mobile", 0),
            s("+14155550123")
        );
        assert_eq!(utf8_at(&batch, "prospeo_company_name", 0), s("Intercom"));
        assert_eq!(batch.schema(), OutputSchema::default().schema());
    }

    #[test]
    fn a_declared_field_is_read_from_extra_before_the_wire_type_knows_it() {
        // The wire types serialise `extra` in place, so a field added to the tables above is
        // decoded even while api/wire.rs still files it under `extra`.
        let mut person = person();
        person.headline = None;
        person.extra.insert("headline".into(), json!("From extra"));
        let batch = OutputSchema::default()
            .flatten(&[matched(Some(person), None)])
            .unwrap();
        assert_eq!(
            utf8_at(&batch, "prospeo_person_headline", 0),
            s("From extra")
        );
    }

    /// Serialising it fails, which the real wire types never do; stands in for whatever might.
    struct Unserialisable;

    impl Serialize for Unserialisable {
        fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
            Err(serde::ser::Error::custom("cannot be serialised"))
        }
    }

    #[test]
    fn an_object_that_fails_to_decode_costs_only_its_own_columns() {
        let output = OutputSchema::default();
        let company = company();
        let rows = [
            Row {
                person: Some(&Unserialisable),
                company: Some(&company),
            },
            Row {
                person: None,
                company: Some(&company),
            },
        ];
        let decoded = output.decode_salvaging(&rows).unwrap();
        assert_eq!(decoded.num_rows(), 2);
        let person = decoded.column(0).as_struct();
        let company = decoded.column(1).as_struct();
        assert!(person.is_null(0));
        assert!(company.is_valid(0) && company.is_valid(1));
        let names = company.column_by_name("name").unwrap().as_string::<i32>();
        assert_eq!(names.value(0), "Intercom");
    }
}
