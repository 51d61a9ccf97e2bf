//! Enrichment outcomes → Arrow columns, only the columns a query reads.
//!
//! The person and company objects are declared once, as the tables `PERSON` and `COMPANY` in
//! `fields.rs` (one line a field: name, Arrow type, where the typed wire struct keeps it). Both
//! the output schema and the decoding follow from them:
//!
//! 1. Struct-valued fields (nested objects) are flattened into top-level columns named
//!    `prefix + "person_" / "company_" + path joined by "_"`, e.g. `prospeo_person_email_email`,
//!    `prospeo_company_revenue_range_min`. Lists stay lists: `prospeo_person_job_history` is a
//!    `List<Struct>`.
//! 2. The columns are built straight from the typed wire structs (`columns.rs`), only the columns
//!    of an [`OutputProjection`]: a query that reads only `prospeo_status` looks at no person or
//!    company at all. Their builders stay open over the whole batch while its rows are appended
//!    a few hundred at a time, each column in one pass over them. Masked values are nulled (see
//!    `Masking`).
//! 3. The status columns (`status.rs`) are appended: `prospeo_status`, `prospeo_error`,
//!    `prospeo_cost`, `prospeo_free_enrichment`.
//!
//! The schema depends only on the prefix, never on the data or the projection: ETL jobs
//! downstream rely on it being the same on every run. Every enrichment column is nullable
//! ("every property may be null; whole sub-objects may be null", reference/prospeo-api.md line
//! 82); status and cost never are.
//!
//! Timestamps: `last_job_change_detected_at` carries a zone (`2024-08-27T21:18:29.577Z`,
//! reference line 84) and becomes `Timestamp(Millisecond, "UTC")`. `latest_funding_date` and
//! funding events' `raised_at` carry none (`2021-01-01T00:00:00`, reference line 107); they become
//! `Timestamp(Millisecond, None)`, the wall-clock value as given, since inventing a zone the
//! vendor did not state would be a guess (a value that does carry an offset is converted to UTC).
//! A value that does not parse is null: the records are paid for, one odd value must not cost the
//! others.
//!
//! Adding a field the vendor starts sending is one line in the tables (its getter may return
//! `None` until `vendor/wire.rs` learns it). The wire types keep unknown fields in `extra` and
//! serialise them back in place, and a chunk in which some object keeps a declared field in
//! `extra` is decoded by arrow-json from that serialisation instead (`decoder.rs`), so the field
//! is read even before the wire type knows it (reference line 114: "a client must accept unknown
//! fields and not lose them"). The tests hold both paths to the same values.

mod columns;
mod decoder;
mod fields;
mod status;

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch, RecordBatchOptions};
use datafusion::arrow::compute::{concat, concat_batches};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Schema, SchemaRef};
use datafusion::arrow::error::ArrowError;

use crate::vendor::endpoint::Object;
use crate::vendor::outcome::{Match, RecordOutcome};
use crate::vendor::wire::{Company, Person};
use columns::FlatColumns;
use fields::{COMPANY, FlatAppend, PERSON, flat_fields, struct_fields, width};

/// The default prefix of every output column.
pub const DEFAULT_PREFIX: &str = "prospeo_";

/// Rows the decoder decodes at a time: past a few hundred rows its row-ordered tape no longer
/// stays in cache, and 512-row pieces joined afterwards are faster.
const DECODE_CHUNK_ROWS: usize = 512;

/// Rows appended to the direct builders at a time, each column in one pass over the piece:
/// past a few hundred rows the objects a column pass walks no longer stay in cache. The builders
/// stay open over the whole batch, so the pieces need no joining.
const PIECE_ROWS: usize = 512;

/// The declared output of an enrichment: its Arrow schema and the step that turns
/// [`RecordOutcome`]s into a [`RecordBatch`] of that schema, or of some of its columns.
///
/// Built once per prefix; cloning is cheap. The schema is the same whatever the data.
#[derive(Debug, Clone)]
pub struct OutputSchema {
    prefix: String,
    /// The flattened output: person columns, company columns, status columns.
    schema: SchemaRef,
    /// What the arrow-json decoder reads: `{person: Struct, company: Struct}`.
    decoded: SchemaRef,
    /// Every column: what [`Self::flatten`] builds.
    all: OutputProjection,
}

/// How the person and company columns are built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Path {
    /// Straight from the typed structs, this many rows at a time, except for a piece in which
    /// an object keeps a declared field in `extra`.
    Direct { piece_rows: usize },
    /// By the arrow-json decoder.
    Decoder,
}

/// Some columns of an [`OutputSchema`], in a given order: what
/// [`OutputSchema::flatten_projected`] builds, and nothing else.
#[derive(Debug, Clone)]
pub struct OutputProjection {
    /// Indices into the output schema, in output order.
    columns: Vec<usize>,
    /// For every column of the output schema, whether it is built.
    wanted: Vec<bool>,
    /// The projected schema.
    schema: SchemaRef,
}

impl OutputProjection {
    /// The projected columns' indices into [`OutputSchema::schema`], in output order.
    pub fn columns(&self) -> &[usize] {
        &self.columns
    }

    /// The schema of the batches [`OutputSchema::flatten_projected`] returns.
    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// Whether every column of the output schema is projected.
    pub fn is_all(&self) -> bool {
        self.wanted.iter().all(|&w| w)
    }

    /// The projected columns' names, in output order.
    pub fn column_names(&self) -> Vec<&str> {
        self.schema
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .collect()
    }
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
        fields.extend(status::fields(prefix));
        let schema = Arc::new(Schema::new(fields));
        let decoded = Schema::new(vec![
            Field::new("person", DataType::Struct(struct_fields(PERSON)), true),
            Field::new("company", DataType::Struct(struct_fields(COMPANY)), true),
        ]);
        let width = schema.fields().len();
        OutputSchema {
            prefix: prefix.to_string(),
            all: OutputProjection {
                columns: (0..width).collect(),
                wanted: vec![true; width],
                schema: schema.clone(),
            },
            schema,
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

    /// The columns of the output of an endpoint whose answers carry `objects` (see
    /// [`Endpoint::objects`](crate::api::Endpoint::objects)), as indices into [`Self::schema`]:
    /// the objects' columns, then the status columns. The person endpoint's are every column;
    /// the company endpoint's leave the person's out.
    pub fn columns_of(&self, objects: &[Object]) -> Vec<usize> {
        let person = width(PERSON);
        let company = person..person + width(COMPANY);
        let status = company.end..self.schema.fields().len();
        let mut columns = Vec::with_capacity(self.schema.fields().len());
        if objects.contains(&Object::Person) {
            columns.extend(0..person);
        }
        if objects.contains(&Object::Company) {
            columns.extend(company);
        }
        columns.extend(status);
        columns
    }

    /// A batch of this schema with no rows.
    pub fn empty_batch(&self) -> RecordBatch {
        RecordBatch::new_empty(self.schema.clone())
    }

    /// The columns `columns` (indices into [`Self::schema`]) in that order; an index may repeat.
    /// Fails on an index out of range.
    pub fn projection(&self, columns: &[usize]) -> Result<OutputProjection, ArrowError> {
        let schema = Arc::new(self.schema.project(columns)?);
        let mut wanted = vec![false; self.schema.fields().len()];
        for &column in columns {
            wanted[column] = true;
        }
        Ok(OutputProjection {
            columns: columns.to_vec(),
            wanted,
            schema,
        })
    }

    /// One row per outcome, in order, every column of [`Self::schema`]. Only matches carry person
    /// and company values; a value that does not fit its declared type is null. An error here
    /// means a bug in this module, not bad data.
    pub fn flatten(&self, outcomes: &[RecordOutcome]) -> Result<RecordBatch, ArrowError> {
        self.flatten_projected(&self.all, outcomes)
    }

    /// What [`Self::flatten`] makes of `outcomes`, but only the columns of `projection`: the
    /// others are never built, and when no person (company) column is projected no person
    /// (company) is looked at. Each built column holds the same values as in [`Self::flatten`].
    pub fn flatten_projected(
        &self,
        projection: &OutputProjection,
        outcomes: &[RecordOutcome],
    ) -> Result<RecordBatch, ArrowError> {
        self.flatten_with(
            projection,
            outcomes,
            Path::Direct {
                piece_rows: PIECE_ROWS,
            },
        )
    }

    /// What [`Self::flatten`] makes of `outcomes`, every object decoded by arrow-json, as
    /// before columns were built directly: kept so that `benches/flatten.rs` measures the two
    /// side by side and the tests compare their values. Not for production use.
    #[doc(hidden)]
    pub fn flatten_with_decoder(
        &self,
        outcomes: &[RecordOutcome],
    ) -> Result<RecordBatch, ArrowError> {
        self.flatten_with(&self.all, outcomes, Path::Decoder)
    }

    fn flatten_with(
        &self,
        projection: &OutputProjection,
        outcomes: &[RecordOutcome],
        path: Path,
    ) -> Result<RecordBatch, ArrowError> {
        if path == Path::Decoder && outcomes.len() > DECODE_CHUNK_ROWS {
            let parts = outcomes
                .chunks(DECODE_CHUNK_ROWS)
                .map(|c| self.flatten_with(projection, c, path))
                .collect::<Result<Vec<_>, _>>()?;
            return concat_batches(&projection.schema, &parts);
        }
        let total = self.schema.fields().len();
        let mut built: Vec<Option<ArrayRef>> = vec![None; total];
        let (objects, status_columns) = built.split_at_mut(total - status::WIDTH);
        let (objects_wanted, status_wanted) = projection
            .wanted
            .split_at(projection.wanted.len() - status::WIDTH);
        if objects_wanted.contains(&true) {
            match path {
                Path::Direct { piece_rows } => {
                    self.object_columns(outcomes, objects_wanted, objects, piece_rows)?
                }
                Path::Decoder => {
                    let (persons, companies) = objects_of(outcomes, objects_wanted);
                    self.decoded_columns(&persons, &companies, objects_wanted, objects)?
                }
            }
        }
        status::columns(outcomes, status_wanted, status_columns);
        let columns = projection
            .columns
            .iter()
            .map(|&i| built[i].clone().expect("every projected column is built"))
            .collect();
        RecordBatch::try_new_with_options(
            projection.schema.clone(),
            columns,
            &RecordBatchOptions::new().with_row_count(Some(outcomes.len())),
        )
    }

    /// The person and company columns that are `wanted`, into `out`: built straight from the
    /// typed structs `piece_rows` rows at a time into builders kept open over the whole batch,
    /// except for a piece in which some object keeps a declared field in `extra`, which the
    /// decoder reads (and whose columns are then joined to the others').
    fn object_columns(
        &self,
        outcomes: &[RecordOutcome],
        wanted: &[bool],
        out: &mut [Option<ArrayRef>],
        piece_rows: usize,
    ) -> Result<(), ArrowError> {
        let mut direct = DirectColumns::new(
            &self.schema.fields()[..wanted.len()],
            wanted,
            outcomes.len(),
        );
        // The columns of the pieces so far, when one had to be decoded.
        let mut parts: Vec<Vec<Option<ArrayRef>>> = Vec::new();
        let mut persons = Vec::with_capacity(piece_rows.min(outcomes.len()));
        let mut companies = Vec::with_capacity(piece_rows.min(outcomes.len()));
        for piece in outcomes.chunks(piece_rows) {
            direct.objects(piece, &mut persons, &mut companies);
            if !direct.declared_in_extra(&persons, &companies) {
                direct.append(&persons, &companies);
                continue;
            }
            if direct.rows > 0 {
                parts.push(direct.finish(wanted.len()));
            }
            let mut decoded = vec![None; wanted.len()];
            self.decoded_columns(&persons, &companies, wanted, &mut decoded)?;
            parts.push(decoded);
        }
        if parts.is_empty() {
            direct.finish_into(out);
            return Ok(());
        }
        if direct.rows > 0 {
            parts.push(direct.finish(wanted.len()));
        }
        for (i, out) in out.iter_mut().enumerate() {
            if wanted[i] {
                let pieces: Vec<&dyn Array> = parts
                    .iter()
                    .map(|part| part[i].as_deref().expect("every wanted column is built"))
                    .collect();
                *out = Some(concat(&pieces)?);
            }
        }
        Ok(())
    }

    /// The wanted person and company columns of these objects, by the arrow-json decoder.
    fn decoded_columns(
        &self,
        persons: &[Option<&Person>],
        companies: &[Option<&Company>],
        wanted: &[bool],
        out: &mut [Option<ArrayRef>],
    ) -> Result<(), ArrowError> {
        let rows: Vec<decoder::Row<'_, Person, Company>> = persons
            .iter()
            .zip(companies)
            .map(|(&person, &company)| decoder::Row { person, company })
            .collect();
        let decoded = decoder::decode_salvaging(&self.decoded, &rows)?;
        let mut columns = Vec::with_capacity(out.len());
        decoder::flat_columns(PERSON, decoded.column(0).as_struct(), &mut columns)?;
        decoder::flat_columns(COMPANY, decoded.column(1).as_struct(), &mut columns)?;
        for ((out, column), &wanted) in out.iter_mut().zip(columns).zip(wanted) {
            if wanted {
                *out = Some(column);
            }
        }
        Ok(())
    }
}

fn matched(outcome: &RecordOutcome) -> Option<&Match> {
    match outcome {
        RecordOutcome::Matched(m) => Some(m),
        _ => None,
    }
}

/// The persons and companies of `outcomes`, `None` for a table none of whose columns is wanted
/// (`wanted`: the person and company columns).
fn objects_of<'a>(
    outcomes: &'a [RecordOutcome],
    wanted: &[bool],
) -> (Vec<Option<&'a Person>>, Vec<Option<&'a Company>>) {
    let (person_wanted, company_wanted) = wanted.split_at(width(PERSON));
    let wants_person = person_wanted.contains(&true);
    let wants_company = company_wanted.contains(&true);
    outcomes
        .iter()
        .map(|o| {
            let m = matched(o);
            (
                m.filter(|_| wants_person).and_then(|m| m.person.as_ref()),
                m.filter(|_| wants_company).and_then(|m| m.company.as_ref()),
            )
        })
        .unzip()
}

/// Open builders of the wanted person and company columns of a batch, appended to piece by
/// piece.
struct DirectColumns<'a> {
    person: Option<FlatColumns<'a, Person>>,
    company: Option<FlatColumns<'a, Company>>,
    /// Rows appended since the last finish.
    rows: usize,
}

impl<'a> DirectColumns<'a> {
    /// The builders of the `wanted` columns among `fields` (the person and company columns of
    /// the output schema), sized for `rows` rows.
    fn new(fields: &[FieldRef], wanted: &[bool], rows: usize) -> Self {
        let person_width = width(PERSON);
        let (person_fields, company_fields) = fields.split_at(person_width);
        let (person_wanted, company_wanted) = wanted.split_at(person_width);
        DirectColumns {
            person: person_wanted
                .contains(&true)
                .then(|| FlatColumns::new(PERSON, person_fields, person_wanted, rows)),
            company: company_wanted
                .contains(&true)
                .then(|| FlatColumns::new(COMPANY, company_fields, company_wanted, rows)),
            rows: 0,
        }
    }

    /// The persons and companies of `piece` into `persons` and `companies` (emptied first);
    /// `None` for a table none of whose columns is wanted.
    fn objects(
        &self,
        piece: &'a [RecordOutcome],
        persons: &mut Vec<Option<&'a Person>>,
        companies: &mut Vec<Option<&'a Company>>,
    ) {
        let (wants_person, wants_company) = (self.person.is_some(), self.company.is_some());
        persons.clear();
        persons.extend(piece.iter().map(|o| {
            matched(o)
                .filter(|_| wants_person)
                .and_then(|m| m.person.as_ref())
        }));
        companies.clear();
        companies.extend(piece.iter().map(|o| {
            matched(o)
                .filter(|_| wants_company)
                .and_then(|m| m.company.as_ref())
        }));
    }

    /// Whether some object the builders read keeps a declared field in `extra`.
    fn declared_in_extra(
        &self,
        persons: &[Option<&Person>],
        companies: &[Option<&Company>],
    ) -> bool {
        fn any<T>(columns: &Option<FlatColumns<'_, T>>, objects: &[Option<&T>]) -> bool
        where
            T: fields::WireObject,
        {
            columns.as_ref().is_some_and(|columns| {
                objects
                    .iter()
                    .flatten()
                    .any(|&object| columns.declared_in_extra(object))
            })
        }
        any(&self.person, persons) || any(&self.company, companies)
    }

    fn append(&mut self, persons: &[Option<&'a Person>], companies: &[Option<&'a Company>]) {
        if let Some(columns) = &mut self.person {
            columns.append(persons);
        }
        if let Some(columns) = &mut self.company {
            columns.append(companies);
        }
        self.rows += persons.len();
    }

    /// The columns of the rows appended so far, into `out` (the person and company columns);
    /// the builders start over, empty.
    fn finish_into(&mut self, out: &mut [Option<ArrayRef>]) {
        let (person_out, company_out) = out.split_at_mut(width(PERSON));
        if let Some(columns) = &mut self.person {
            columns.finish(person_out);
        }
        if let Some(columns) = &mut self.company {
            columns.finish(company_out);
        }
        self.rows = 0;
    }

    /// As [`Self::finish_into`], into a new vector of `width` columns.
    fn finish(&mut self, width: usize) -> Vec<Option<ArrayRef>> {
        let mut out = vec![None; width];
        self.finish_into(&mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::time::{Duration, SystemTime};

    use datafusion::arrow::array::Array;
    use datafusion::arrow::array::{ListArray, TimestampMillisecondArray};
    use datafusion::arrow::datatypes::{Float64Type, Int64Type, TimeUnit};
    use serde::Serialize;
    use serde_json::{Map, Value, json};

    use super::*;
    use crate::vendor::outcome::{DeferReason, Match};
    use crate::vendor::wire::{
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
        assert!(!fields::masked_without_flag(PERSON));
        assert!(!fields::masked_without_flag(COMPANY));
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
        // lenient), e.g. when a field is re-declared here before vendor/wire.rs learns it.
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
        // decoded even while vendor/wire.rs still files it under `extra`.
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
            decoder::Row {
                person: Some(&Unserialisable),
                company: Some(&company),
            },
            decoder::Row {
                person: None,
                company: Some(&company),
            },
        ];
        let decoded = decoder::decode_salvaging(&output.decoded, &rows).unwrap();
        assert_eq!(decoded.num_rows(), 2);
        let person = decoded.column(0).as_struct();
        let company = decoded.column(1).as_struct();
        assert!(person.is_null(0));
        assert!(company.is_valid(0) && company.is_valid(1));
        let names = company.column_by_name("name").unwrap().as_string::<i32>();
        assert_eq!(names.value(0), "Intercom");
    }

    /// Outcomes of every kind, with people and companies from the sandbox directory and the
    /// hand-made ones above, some of them masked, partial, or with odd values.
    fn varied_outcomes() -> Vec<RecordOutcome> {
        use crate::sandbox::generator::{GeneratorConfig, generate_directory};
        let directory = generate_directory(&GeneratorConfig {
            seed: 7,
            companies: 12,
            people: 60,
        });
        let mut outcomes: Vec<RecordOutcome> = directory
            .people()
            .iter()
            .enumerate()
            .map(|(i, person)| {
                let company = directory.company_of(person).cloned();
                match i % 9 {
                    0 => RecordOutcome::NotMatched,
                    1 => RecordOutcome::Failed {
                        reason: format!("INTERNAL_ERROR #{i}"),
                    },
                    2 => matched(None, company),
                    3 => matched(Some(person.clone()), None),
                    _ => RecordOutcome::Matched(Box::new(Match {
                        person: Some(person.clone()),
                        company,
                        free_enrichment: i % 2 == 0,
                        cost: (i % 3) as i64,
                    })),
                }
            })
            .collect();
        let mut hidden = person();
        hidden.email.as_mut().unwrap().revealed = Some(false);
        hidden.mobile.as_mut().unwrap().revealed = None;
        hidden.last_job_change_detected_at = s("2024-08-27T23:18:29+02:00");
        let mut sparse = person();
        sparse.email = None;
        sparse.location = None;
        sparse.skills = Some(vec![]);
        sparse.job_history = Some(vec![]);
        sparse.last_job_change_detected_at = s("last Tuesday");
        let mut unrevealed = person();
        unrevealed.mobile.as_mut().unwrap().revealed = Some(false);
        let mut odd_company = company();
        odd_company.funding.as_mut().unwrap().latest_funding_date = s("2021-13-45T99:00:00");
        odd_company.technology = None;
        odd_company.keywords = None;
        outcomes.extend([
            matched(Some(person()), Some(company())),
            matched(Some(hidden), Some(odd_company)),
            matched(Some(sparse), Some(Company::default())),
            matched(Some(unrevealed), None),
            matched(Some(Person::default()), None),
            RecordOutcome::InvalidDatapoints,
            RecordOutcome::Deferred {
                reason: DeferReason::DailyQuota,
                retry_at: None,
            },
        ]);
        outcomes
    }

    #[test]
    fn direct_columns_hold_the_values_the_decoder_makes() {
        let output = OutputSchema::default();
        let outcomes = varied_outcomes();
        // The direct path is the one under test: no object sends a field to the decoder.
        let width = output.schema().fields().len() - status::WIDTH;
        let wanted = vec![true; width];
        let (persons, companies) = objects_of(&outcomes, &wanted);
        let direct =
            DirectColumns::new(&output.schema().fields()[..width], &wanted, outcomes.len());
        assert!(!direct.declared_in_extra(&persons, &companies));
        let direct = output.flatten(&outcomes).unwrap();
        let decoded = output.flatten_with_decoder(&outcomes).unwrap();
        assert_eq!(direct.schema(), decoded.schema());
        for (i, field) in output.schema().fields().iter().enumerate() {
            assert_eq!(
                direct.column(i).to_data(),
                decoded.column(i).to_data(),
                "{}",
                field.name()
            );
        }
        // Masked numbers are null on both paths, and the data was varied enough to show it.
        let mobile = column(&direct, "prospeo_person_mobile_mobile");
        assert!(mobile.null_count() > 0 && mobile.null_count() < mobile.len());
    }

    /// [`varied_outcomes`], with fields the tables do not declare in the `extra` of every other
    /// match's objects, at every level (list items too).
    fn varied_outcomes_with_unknown_fields() -> Vec<RecordOutcome> {
        let mut outcomes = varied_outcomes();
        for outcome in outcomes.iter_mut().skip(1).step_by(2) {
            let RecordOutcome::Matched(m) = outcome else {
                continue;
            };
            if let Some(person) = &mut m.person {
                person
                    .extra
                    .insert("brand_new".into(), json!({"a": [1, 2]}));
                if let Some(mobile) = &mut person.mobile {
                    mobile.extra.insert("carrier".into(), json!("Verizon"));
                }
                for entry in person.job_history.iter_mut().flatten() {
                    entry.extra.insert("location".into(), json!({"city": "SF"}));
                }
            }
            if let Some(company) = &mut m.company {
                company.extra.insert("ai_summary".into(), json!("…"));
                let funding = company.funding.as_mut();
                for event in funding
                    .and_then(|f| f.funding_events.as_mut())
                    .into_iter()
                    .flatten()
                {
                    event.extra.insert("investors".into(), json!(["Index"]));
                }
                let technology = company.technology.as_mut();
                for item in technology
                    .and_then(|t| t.technology_list.as_mut())
                    .into_iter()
                    .flatten()
                {
                    item.extra.insert("version".into(), json!(3));
                }
            }
        }
        outcomes
    }

    #[test]
    fn builders_kept_open_across_pieces_make_the_batch_of_one_piece() {
        let output = OutputSchema::default();
        let outcomes = varied_outcomes_with_unknown_fields();
        let schema = output.schema();
        let index = |name: &str| schema.index_of(name).unwrap();
        let objects = schema.fields().len() - status::WIDTH;
        let subsets: Vec<Vec<usize>> = vec![
            (0..schema.fields().len()).collect(),
            (0..schema.fields().len()).rev().step_by(5).collect(),
            vec![
                index("prospeo_person_job_history"),
                index("prospeo_person_mobile_mobile"),
                index("prospeo_person_email_email"),
                index("prospeo_person_skills"),
                index("prospeo_person_last_job_change_detected_at"),
                index("prospeo_person_location_time_zone_offset"),
                index("prospeo_company_funding_funding_events"),
                index("prospeo_company_funding_latest_funding_date"),
                index("prospeo_company_technology_technology_list"),
                index("prospeo_company_attributes_has_demo"),
                index("prospeo_company_revenue_range_max"),
                index("prospeo_status"),
                index("prospeo_person_job_history"),
            ],
        ];
        let one_piece = Path::Direct {
            piece_rows: outcomes.len(),
        };
        let all = output
            .flatten_with(&output.all, &outcomes, one_piece)
            .unwrap();
        // Every kind of column, with values and with nulls.
        for (i, field) in schema.fields().iter().enumerate().take(objects) {
            let column = all.column(i);
            assert!(
                column.null_count() > 0 && column.null_count() < column.len(),
                "{}",
                field.name()
            );
        }
        assert_eq!(all, output.flatten_with_decoder(&outcomes).unwrap());
        for columns in subsets {
            let projection = output.projection(&columns).unwrap();
            let expected = output
                .flatten_with(&projection, &outcomes, one_piece)
                .unwrap();
            assert_eq!(expected, all.project(&columns).unwrap(), "{columns:?}");
            for piece_rows in [1, 2, 7, 64, outcomes.len() + 1] {
                let batch = output
                    .flatten_with(&projection, &outcomes, Path::Direct { piece_rows })
                    .unwrap();
                assert_eq!(batch, expected, "{piece_rows} rows a piece, {columns:?}");
            }
            // Row by row, joined.
            let rows = outcomes
                .chunks(1)
                .map(|row| output.flatten_projected(&projection, row))
                .collect::<Result<Vec<_>, _>>()
                .unwrap();
            let joined = concat_batches(&projection.schema(), &rows).unwrap();
            assert_eq!(joined, expected, "{columns:?}");
        }
    }

    #[test]
    fn a_piece_with_a_declared_field_in_extra_is_decoded_in_place() {
        let output = OutputSchema::default();
        let mut outcomes = varied_outcomes_with_unknown_fields();
        let persons: Vec<usize> = (0..outcomes.len())
            .filter(|&i| matches!(&outcomes[i], RecordOutcome::Matched(m) if m.person.is_some()))
            .collect();
        // One person in the middle keeps `headline` in `extra`, a later one a job's `title`.
        let (headline_at, title_at) = (persons[persons.len() / 2], persons[persons.len() * 3 / 4]);
        let RecordOutcome::Matched(m) = &mut outcomes[headline_at] else {
            unreachable!()
        };
        let person = m.person.as_mut().unwrap();
        person.headline = None;
        person.extra.insert("headline".into(), json!("From extra"));
        let RecordOutcome::Matched(m) = &mut outcomes[title_at] else {
            unreachable!()
        };
        let person = m.person.as_mut().unwrap();
        let history = person.job_history.get_or_insert_with(Vec::new);
        history.push(JobHistoryEntry::default());
        let entry = history.last_mut().unwrap();
        entry
            .extra
            .insert("title".into(), json!("Title from extra"));

        let expected = output.flatten_with_decoder(&outcomes).unwrap();
        assert_eq!(
            utf8_at(&expected, "prospeo_person_headline", headline_at),
            s("From extra")
        );
        let history = column(&expected, "prospeo_person_job_history").as_list::<i32>();
        let titles = history.value(title_at);
        let titles = titles
            .as_struct()
            .column_by_name("title")
            .unwrap()
            .as_string::<i32>();
        assert_eq!(titles.value(titles.len() - 1), "Title from extra");
        for piece_rows in [1, 5, 16, outcomes.len()] {
            let batch = output
                .flatten_with(&output.all, &outcomes, Path::Direct { piece_rows })
                .unwrap();
            assert_eq!(batch, expected, "{piece_rows} rows a piece");
            let columns = [
                output.schema().index_of("prospeo_status").unwrap(),
                output
                    .schema()
                    .index_of("prospeo_person_job_history")
                    .unwrap(),
                output.schema().index_of("prospeo_person_headline").unwrap(),
                output.schema().index_of("prospeo_company_name").unwrap(),
            ];
            let projection = output.projection(&columns).unwrap();
            let batch = output
                .flatten_with(&projection, &outcomes, Path::Direct { piece_rows })
                .unwrap();
            assert_eq!(batch, expected.project(&columns).unwrap(), "{piece_rows}");
        }
    }

    #[test]
    fn a_projection_builds_the_same_values_as_the_full_flatten() {
        let output = OutputSchema::default();
        let outcomes = varied_outcomes();
        let full = output.flatten(&outcomes).unwrap();
        let index = |name: &str| output.schema().index_of(name).unwrap();
        let status_columns = ["prospeo_status", "prospeo_cost"].map(index).to_vec();
        let all_status: Vec<usize> = (full.num_columns() - status::WIDTH..full.num_columns())
            .rev()
            .collect();
        let subsets: Vec<Vec<usize>> = vec![
            vec![],
            status_columns,
            all_status,
            vec![index("prospeo_person_email_email")],
            vec![
                index("prospeo_person_mobile_mobile"),
                index("prospeo_error"),
            ],
            vec![
                index("prospeo_company_funding_funding_events"),
                index("prospeo_person_full_name"),
                index("prospeo_person_full_name"),
            ],
            vec![
                index("prospeo_company_revenue_range_max"),
                index("prospeo_person_last_job_change_detected_at"),
                index("prospeo_person_job_history"),
                index("prospeo_company_technology_technology_list"),
                index("prospeo_company_funding_latest_funding_date"),
                index("prospeo_free_enrichment"),
            ],
            (0..full.num_columns()).step_by(3).collect(),
            (0..full.num_columns()).rev().collect(),
        ];
        for columns in subsets {
            let projection = output.projection(&columns).unwrap();
            let expected = full.project(&columns).unwrap();
            // Flattened whole, and in pieces the size of a bulk request.
            let projected = output.flatten_projected(&projection, &outcomes).unwrap();
            assert_eq!(projected, expected, "{columns:?}");
            assert_eq!(projected.num_rows(), outcomes.len());
            for chunk in outcomes.chunks(50) {
                let batch = output.flatten_projected(&projection, chunk).unwrap();
                assert_eq!(batch.schema(), projection.schema());
                assert_eq!(batch.num_rows(), chunk.len());
            }
        }
    }

    #[test]
    fn a_projection_has_the_full_schemas_fields() {
        let output = OutputSchema::default();
        let columns = [output.schema().fields().len() - 1, 0, 17];
        let projection = output.projection(&columns).unwrap();
        assert_eq!(
            projection.schema().as_ref(),
            &output.schema().project(&columns).unwrap()
        );
        assert_eq!(projection.columns(), columns);
        assert!(!projection.is_all());
        let all: Vec<usize> = (0..output.schema().fields().len()).collect();
        assert!(output.projection(&all).unwrap().is_all());
        assert!(output.projection(&[all.len()]).is_err());
        let empty = output
            .flatten_projected(
                &output.projection(&[]).unwrap(),
                &[RecordOutcome::NotMatched],
            )
            .unwrap();
        assert_eq!((empty.num_rows(), empty.num_columns()), (1, 0));
    }

    #[test]
    fn a_declared_field_in_extra_is_read_by_a_projection_too() {
        let output = OutputSchema::default();
        let mut person = person();
        person.headline = None;
        person.extra.insert("headline".into(), json!("From extra"));
        let outcomes = [matched(Some(person), Some(company()))];
        let columns = [
            output.schema().index_of("prospeo_person_headline").unwrap(),
            output.schema().index_of("prospeo_company_name").unwrap(),
        ];
        let batch = output
            .flatten_projected(&output.projection(&columns).unwrap(), &outcomes)
            .unwrap();
        assert_eq!(
            utf8_at(&batch, "prospeo_person_headline", 0),
            s("From extra")
        );
        assert_eq!(utf8_at(&batch, "prospeo_company_name", 0), s("Intercom"));
    }
}
