//! Input column names → the matching datapoints of an endpoint: the nine of Bulk Enrich Person
//! from lead and contact exports, the four of Bulk Enrich Company from account exports.
//!
//! Headers are compared *folded*: lower case, letters and digits only, so "First Name",
//! "first_name", "FIRST-NAME" and "firstName" are one name. A column maps when its folded name
//! is a datapoint's own name or one of the aliases in the endpoint's table (`ALIASES` for persons,
//! `COMPANY_ALIASES` for companies). Look-alikes ("Email Status",
//! "Company Phone", "LinkedIn Followers") are deliberately not aliases, so they never map: a
//! wrong column sent as a datapoint costs a match, while a missed column is one `--map` away.
//!
//! Explicit mappings (`--map 'Column=datapoint'`, `MAP {'Column': 'datapoint'}`) override the
//! detection. Every decision, and every column that looked like a datapoint but is not used, is
//! kept with its reason so `EXPLAIN` and the binary can show it.

use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayAccessor, ArrayRef, AsArray, RecordBatch};
use datafusion::arrow::compute::{CastOptions, can_cast_types, cast_with_options};
use datafusion::arrow::datatypes::{DataType, Schema};
use datafusion::arrow::error::ArrowError;

use crate::datapoints::{Datapoint, Datapoints};
use crate::vendor::endpoint::Endpoint;

/// Header aliases per datapoint, most preferred first, written as they appear in exports (they
/// are folded before comparison). A datapoint's own name ("first_name", "Company Website", ...)
/// always matches and beats every alias, so it is not repeated here.
///
/// Left out on purpose: "Email Status", "Email Confidence", "Secondary Email", "Personal Email",
/// "Company Name for Emails", "Company Phone", "Company Size", "Company Address", "Title",
/// "LinkedIn Followers", "LinkedIn Bio" (HubSpot: the bio text, not a URL), "Sales Navigator URL"
/// (not a public profile URL) and CRM record ids ("Record ID", "Apollo Contact Id").
const ALIASES: &[(Datapoint, &[&str])] = &[
    (
        Datapoint::FirstName,
        &[
            "Given Name",
            "fname",
            "Forename",
            "Contact First Name",
            "Lead First Name",
        ],
    ),
    (
        Datapoint::LastName,
        &[
            "Surname",
            "Family Name",
            "lname",
            "Contact Last Name",
            "Lead Last Name",
        ],
    ),
    (
        Datapoint::FullName,
        &[
            "Name",
            "Contact Name",
            "Person Name",
            "Lead Name",
            "Contact Full Name",
        ],
    ),
    (
        Datapoint::LinkedinUrl,
        &[
            "Person Linkedin Url",  // Apollo
            "LinkedIn Profile URL", // Sales Navigator exports
            "LinkedIn Profile",
            "LinkedIn",
            "Contact LinkedIn URL",
            "LinkedIn Profile Link",
            "Profile URL", // Sales Navigator exports
            "LI Profile",
        ],
    ),
    (
        Datapoint::Email,
        &[
            "Work Email",
            "Business Email",
            "Primary Email",
            "Email Address",
            "Work Email Address",
            "Contact Email",
        ],
    ),
    (
        Datapoint::CompanyName,
        &[
            "Company",           // Apollo, Sales Navigator
            "Account Name",      // Salesforce
            "Company / Account", // Salesforce lead reports
            "Organization Name",
            "Organization",
            "Organisation",
            "Current Company",
            "Employer",
            "Account",
            "Associated Company", // HubSpot contacts
        ],
    ),
    (
        Datapoint::CompanyWebsite,
        &[
            "Company Domain",
            "Company Domain Name", // HubSpot
            "Company Website URL",
            "Company URL",
            "Account Website",
            "Organization Domain",
            "Organization Website",
            "Website",     // Apollo, Salesforce
            "Website URL", // HubSpot
            "Domain",
        ],
    ),
    (
        Datapoint::CompanyLinkedinUrl,
        &[
            "Company LinkedIn",
            "Company LinkedIn Profile",
            "Company LinkedIn Page",
            "LinkedIn Company Page", // HubSpot companies
            "Organization LinkedIn URL",
            "Organization LinkedIn",
            "Account LinkedIn URL",
        ],
    ),
    (Datapoint::PersonId, &["Prospeo Person ID", "Prospeo ID"]),
];

/// Header aliases per datapoint of a company record, as account exports (HubSpot companies,
/// Salesforce accounts, Apollo accounts) write them (Apollo's "Company Linkedin Url" is the
/// datapoint's own name). An account export's "Name" is the company's. A bare "LinkedIn" or
/// "LinkedIn URL" is a person's profile as often as a company's page, so neither maps.
/// `company_id` never maps by its own name: a table's `company_id` is most often its own key
/// (a CRM's, a database's), which the vendor has never seen; only "Prospeo Company ID" and
/// this crate's output column `prospeo_company_company_id` map, or an explicit mapping.
///
/// Left out on purpose: "Parent Account", "Parent Company", "Company Phone", "Phone",
/// "Account Owner", "Company Owner", "Account ID", "Record ID", "Company ID" and the sizes,
/// industries and addresses of the export.
const COMPANY_ALIASES: &[(Datapoint, &[&str])] = &[
    (
        Datapoint::CompanyName,
        &[
            "Account Name", // Salesforce
            "Company",      // Apollo
            "Name",         // HubSpot companies
            "Organization Name",
            "Organization",
            "Organisation",
            "Account",
            "Business Name",
        ],
    ),
    (
        Datapoint::CompanyWebsite,
        &[
            "Company Domain Name", // HubSpot companies
            "Website",             // Salesforce, Apollo
            "Website URL",         // HubSpot companies
            "Domain",
            "Company Domain",
            "Company Website URL",
            "Company URL",
            "Account Website",
            "Organization Domain",
            "Organization Website",
            "Primary Domain",
        ],
    ),
    (
        Datapoint::CompanyLinkedinUrl,
        &[
            "LinkedIn Company Page", // HubSpot companies
            "Company LinkedIn",
            "Company LinkedIn Page",
            "Company LinkedIn Profile",
            "LinkedIn Page",
            "Organization LinkedIn URL",
            "Account LinkedIn URL",
        ],
    ),
    (
        Datapoint::CompanyId,
        // The vendor's id, as this crate's own output names it: a company enriched before.
        &["Prospeo Company ID", "prospeo_company_company_id"],
    ),
];

/// The alias table of an endpoint.
fn aliases_of(endpoint: Endpoint) -> &'static [(Datapoint, &'static [&'static str])] {
    match endpoint {
        Endpoint::BulkEnrichPerson => ALIASES,
        Endpoint::BulkEnrichCompany => COMPANY_ALIASES,
    }
}

/// How many aliases the error message shows per datapoint.
const ALIASES_SHOWN: usize = 4;

/// A header folded for comparison: lower case, letters and digits only.
fn fold(name: &str) -> String {
    name.chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect()
}

/// The datapoint a header names by itself, and its rank: 0 for the datapoint's own name, then
/// 1 + the alias's position in the endpoint's table.
fn auto_detect(endpoint: Endpoint, header: &str) -> Option<(Datapoint, usize)> {
    let folded = fold(header);
    if folded.is_empty() {
        return None;
    }
    aliases_of(endpoint)
        .iter()
        .find_map(|(datapoint, aliases)| {
            // A table's own `company_id` (or a CRM's "Company ID") is not the vendor's id: it
            // maps only by an alias or explicitly.
            let own_name = *datapoint != Datapoint::CompanyId && fold(datapoint.as_str()) == folded;
            if own_name {
                return Some((*datapoint, 0));
            }
            aliases
                .iter()
                .position(|alias| fold(alias) == folded)
                .map(|position| (*datapoint, position + 1))
        })
}

/// How a column came to be mapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MappingSource {
    /// Its header, folded, is the datapoint's name ("Email", "First Name", "company_name").
    Exact,
    /// Its header, folded, is one of the datapoint's aliases ("Work Email", "Account Name").
    Alias,
    /// The caller mapped it.
    Explicit,
}

impl fmt::Display for MappingSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MappingSource::Exact => "exact name",
            MappingSource::Alias => "alias",
            MappingSource::Explicit => "explicit",
        })
    }
}

/// An input column that feeds a datapoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MappedColumn {
    /// The column's name in the input.
    pub column: String,
    /// The column's index in the schema given to [`ColumnMapping::detect`].
    pub index: usize,
    /// The datapoint its values are sent as.
    pub datapoint: Datapoint,
    /// Why it was mapped.
    pub source: MappingSource,
}

/// An input column that looked like a datapoint, or was ignored explicitly, and is not used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IgnoredColumn {
    /// The column's name in the input.
    pub column: String,
    /// Why it is not used, and how to use it instead.
    pub reason: String,
}

/// Why the input's columns could not be mapped or read.
#[derive(Debug, thiserror::Error)]
pub enum MappingError {
    /// No column of the input names a datapoint, and no explicit mapping maps one.
    #[error(
        "no column of the input maps to a Prospeo {} datapoint\n  the input's columns: {}\n  accepted names (case, spaces and punctuation do not matter):\n{}\n  {HOW_TO_MAP}",
        .endpoint.noun(),
        quoted_list(.columns),
        accepted_names(*.endpoint)
    )]
    NoMappableColumn {
        /// The input's columns.
        columns: Vec<String>,
        /// The endpoint whose datapoints were looked for.
        endpoint: Endpoint,
    },
    /// An explicit mapping maps a column to a datapoint the endpoint does not take.
    #[error(
        "the mapping maps column {column:?} to {datapoint}, which {} does not take; its datapoints are {}",
        .endpoint.path(),
        .endpoint.datapoints().iter().map(|d| d.as_str()).collect::<Vec<_>>().join(", ")
    )]
    NotOfEndpoint {
        /// The column's name in the mapping.
        column: String,
        /// The datapoint it was mapped to.
        datapoint: Datapoint,
        /// The endpoint.
        endpoint: Endpoint,
    },
    /// An explicit mapping names a column that the input does not have.
    #[error(
        "the mapping names column {column:?}, which the input does not have (names match exactly, then ignoring case); the input's columns are: {}",
        quoted_list(.columns)
    )]
    UnknownColumn {
        /// The name in the mapping.
        column: String,
        /// The input's columns.
        columns: Vec<String>,
    },
    /// An explicit mapping names a column only up to case, and several columns match.
    #[error(
        "the mapping names column {column:?}, which matches several input columns when case is ignored: {}; write the column's name exactly",
        quoted_list(.candidates)
    )]
    AmbiguousColumn {
        /// The name in the mapping.
        column: String,
        /// The input's columns that match it ignoring case.
        candidates: Vec<String>,
    },
    /// A mapped column has a type that has no single text value per row.
    #[error(
        "column {column:?} (mapped to {datapoint}) is {data_type}, which cannot be read as text; convert it in SQL first, map another column, or ignore this one with MAP {{{}: ''}} or --map '{column}='",
        sql_string(.column)
    )]
    UnsupportedType {
        /// The column's name.
        column: String,
        /// The datapoint it was mapped to.
        datapoint: Datapoint,
        /// Its type.
        data_type: DataType,
    },
    /// Reading a mapped column of a batch as text failed (e.g. a binary column that is not
    /// UTF-8, or a batch that does not have the mapped columns).
    #[error("cannot read column {0:?} as text: {1}")]
    Arrow(String, #[source] ArrowError),
}

const HOW_TO_MAP: &str = "map a column explicitly: in SQL with named_struct('map', MAP {'Your Column': 'email'}) or SET prospeo.map = 'Your Column=email'; on the command line with --map 'Your Column=email'";

/// `text` as an SQL string literal.
fn sql_string(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

fn quoted_list(names: &[String]) -> String {
    if names.is_empty() {
        return "(none)".to_string();
    }
    names
        .iter()
        .map(|n| format!("{n:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// One line per datapoint: its name and its first aliases.
fn accepted_names(endpoint: Endpoint) -> String {
    aliases_of(endpoint)
        .iter()
        .map(|(datapoint, aliases)| {
            let shown: Vec<String> = aliases
                .iter()
                .take(ALIASES_SHOWN)
                .map(|a| format!("{a:?}"))
                .collect();
            let more = if aliases.len() > ALIASES_SHOWN {
                ", ..."
            } else {
                ""
            };
            format!("    {datapoint} (or {}{more})", shown.join(", "))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The mapping decisions for one input schema: which columns feed which datapoints, and which
/// datapoint-like columns are not used and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnMapping {
    /// In schema order.
    mapped: Vec<MappedColumn>,
    /// In schema order.
    ignored: Vec<IgnoredColumn>,
}

impl ColumnMapping {
    /// Maps the columns of `schema` to datapoints.
    ///
    /// `explicit` overrides the detection: `(column, Some(d))` maps the column to `d` (taking
    /// `d` away from any detected column), `(column, None)` never maps the column. Its column
    /// names match exactly first, then ignoring case; when a column is named twice, the later
    /// entry wins, and so does the later of two columns mapped to one datapoint.
    ///
    /// Among detected columns that name the same datapoint, the datapoint's own name beats an
    /// alias, an earlier alias in `ALIASES` beats a later one, and then the first column in
    /// the schema wins; the others are reported in [`ColumnMapping::ignored`].
    pub fn detect(
        schema: &Schema,
        explicit: &[(String, Option<Datapoint>)],
    ) -> Result<ColumnMapping, MappingError> {
        ColumnMapping::detect_for(Endpoint::BulkEnrichPerson, schema, explicit)
    }

    /// [`ColumnMapping::detect`] for the datapoints of `endpoint`, by its alias table. An
    /// explicit mapping to a datapoint the endpoint does not take is an error.
    pub fn detect_for(
        endpoint: Endpoint,
        schema: &Schema,
        explicit: &[(String, Option<Datapoint>)],
    ) -> Result<ColumnMapping, MappingError> {
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        let all_columns = || names.iter().map(|n| n.to_string()).collect::<Vec<_>>();

        // Explicit entries by column index, each column once (its last entry), in the order
        // of their last mention.
        let mut explicit_by_index: Vec<(usize, Option<Datapoint>)> = Vec::new();
        for (column, datapoint) in explicit {
            if let Some(datapoint) = *datapoint
                && !endpoint.datapoints().contains(&datapoint)
            {
                return Err(MappingError::NotOfEndpoint {
                    column: column.clone(),
                    datapoint,
                    endpoint,
                });
            }
            let index = find_column(&names, column)?;
            explicit_by_index.retain(|(i, _)| *i != index);
            explicit_by_index.push((index, *datapoint));
        }

        let mut mapped: Vec<MappedColumn> = Vec::new();
        let mut ignored: Vec<(usize, IgnoredColumn)> = Vec::new();
        let ignore = |ignored: &mut Vec<(usize, IgnoredColumn)>, index: usize, reason: String| {
            ignored.push((
                index,
                IgnoredColumn {
                    column: names[index].to_string(),
                    reason,
                },
            ));
        };

        for &(index, datapoint) in &explicit_by_index {
            let Some(datapoint) = datapoint else {
                ignore(&mut ignored, index, "ignored by the mapping".to_string());
                continue;
            };
            if let Some(earlier) = mapped.iter().position(|m| m.datapoint == datapoint) {
                let earlier = mapped.remove(earlier);
                ignore(
                    &mut ignored,
                    earlier.index,
                    format!(
                        "the mapping maps {datapoint} to {:?} too, and the later mapping wins",
                        names[index]
                    ),
                );
            }
            mapped.push(MappedColumn {
                column: names[index].to_string(),
                index,
                datapoint,
                source: MappingSource::Explicit,
            });
        }

        // Detected candidates, best first: by rank, then schema order.
        let mut candidates: Vec<(usize, usize, Datapoint)> = names
            .iter()
            .enumerate()
            .filter(|(index, _)| !explicit_by_index.iter().any(|(i, _)| i == index))
            .filter_map(|(index, name)| {
                auto_detect(endpoint, name).map(|(d, rank)| (rank, index, d))
            })
            .collect();
        candidates.sort_by_key(|&(rank, index, _)| (rank, index));
        let mut ranks: Vec<(Datapoint, usize)> = Vec::new();
        for (rank, index, datapoint) in candidates {
            if let Some(winner) = mapped.iter().find(|m| m.datapoint == datapoint) {
                let why = match (winner.source, ranks.iter().find(|(d, _)| *d == datapoint)) {
                    (MappingSource::Explicit, _) => "mapped explicitly",
                    (_, Some(&(_, winner_rank))) if winner_rank < rank => {
                        if winner_rank == 0 {
                            "its exact name beats an alias"
                        } else {
                            "a preferred alias"
                        }
                    }
                    _ => "the same name, earlier in the input",
                };
                ignore(
                    &mut ignored,
                    index,
                    format!(
                        "{datapoint} already comes from {:?} ({why}); map this column explicitly to use it instead",
                        winner.column
                    ),
                );
                continue;
            }
            ranks.push((datapoint, rank));
            mapped.push(MappedColumn {
                column: names[index].to_string(),
                index,
                datapoint,
                source: if rank == 0 {
                    MappingSource::Exact
                } else {
                    MappingSource::Alias
                },
            });
        }

        if mapped.is_empty() {
            return Err(MappingError::NoMappableColumn {
                columns: all_columns(),
                endpoint,
            });
        }
        mapped.sort_by_key(|m| m.index);
        for m in &mapped {
            let data_type = schema.field(m.index).data_type();
            if !readable_as_text(data_type) {
                return Err(MappingError::UnsupportedType {
                    column: m.column.clone(),
                    datapoint: m.datapoint,
                    data_type: data_type.clone(),
                });
            }
        }
        ignored.sort_by_key(|(index, _)| *index);
        Ok(ColumnMapping {
            mapped,
            ignored: ignored.into_iter().map(|(_, i)| i).collect(),
        })
    }

    /// The mapped columns, in schema order.
    pub fn mapped(&self) -> &[MappedColumn] {
        &self.mapped
    }

    /// The columns that looked like a datapoint, or were ignored explicitly, and are not used,
    /// in schema order.
    pub fn ignored(&self) -> &[IgnoredColumn] {
        &self.ignored
    }

    /// The input columns enrichment reads, in schema order (the order
    /// [`ColumnMapping::datapoints_projected`] expects).
    pub fn column_indices(&self) -> Vec<usize> {
        self.mapped.iter().map(|m| m.index).collect()
    }

    /// The datapoints of every row of `batch`, which has the schema given to
    /// [`ColumnMapping::detect`]. Nulls and empty (or blank) strings are absent; values are not
    /// normalised (see [`Datapoints::normalized`]).
    pub fn datapoints(&self, batch: &RecordBatch) -> Result<Vec<Datapoints>, MappingError> {
        let mut out = vec![Datapoints::default(); batch.num_rows()];
        for m in &self.mapped {
            let column = batch.columns().get(m.index).ok_or_else(|| {
                missing_column(m, format!("the batch has {} columns", batch.num_columns()))
            })?;
            read_column(m, column, &mut out)?;
        }
        Ok(out)
    }

    /// The same as [`ColumnMapping::datapoints`], for a batch that holds only the mapped
    /// columns, in [`ColumnMapping::column_indices`] order (the input after a projection).
    pub fn datapoints_projected(
        &self,
        batch: &RecordBatch,
    ) -> Result<Vec<Datapoints>, MappingError> {
        if batch.num_columns() != self.mapped.len() {
            let m = &self.mapped[batch.num_columns().min(self.mapped.len() - 1)];
            return Err(missing_column(
                m,
                format!(
                    "the projected batch has {} columns, the mapping {}",
                    batch.num_columns(),
                    self.mapped.len()
                ),
            ));
        }
        let mut out = vec![Datapoints::default(); batch.num_rows()];
        for (m, column) in self.mapped.iter().zip(batch.columns()) {
            read_column(m, column, &mut out)?;
        }
        Ok(out)
    }
}

/// Resolves an explicit mapping's column: exact name first, then ignoring case.
fn find_column(names: &[&str], column: &str) -> Result<usize, MappingError> {
    if let Some(index) = names.iter().position(|n| *n == column) {
        return Ok(index);
    }
    let matches: Vec<usize> = (0..names.len())
        .filter(|&i| names[i].to_lowercase() == column.to_lowercase())
        .collect();
    match matches.as_slice() {
        [index] => Ok(*index),
        [] => Err(MappingError::UnknownColumn {
            column: column.to_string(),
            columns: names.iter().map(|n| n.to_string()).collect(),
        }),
        several => Err(MappingError::AmbiguousColumn {
            column: column.to_string(),
            candidates: several.iter().map(|&i| names[i].to_string()).collect(),
        }),
    }
}

fn missing_column(m: &MappedColumn, detail: String) -> MappingError {
    MappingError::Arrow(
        m.column.clone(),
        ArrowError::InvalidArgumentError(format!(
            "the batch does not have the mapped columns: {detail}"
        )),
    )
}

/// Whether a column of this type has one text value per row: strings, and anything arrow casts
/// to a string value by value. Lists cast to "[a, b]", which is no datapoint, so they do not count.
fn readable_as_text(data_type: &DataType) -> bool {
    match data_type {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => true,
        DataType::Dictionary(_, values) => readable_as_text(values),
        DataType::RunEndEncoded(_, values) => readable_as_text(values.data_type()),
        DataType::List(_)
        | DataType::LargeList(_)
        | DataType::ListView(_)
        | DataType::LargeListView(_)
        | DataType::FixedSizeList(..)
        | DataType::Struct(_)
        | DataType::Map(..)
        | DataType::Union(..) => false,
        other => can_cast_types(other, &DataType::Utf8),
    }
}

/// Sets `m.datapoint` of every row of `out` from `column`: the column is cast to text once,
/// then read by index.
fn read_column(
    m: &MappedColumn,
    column: &ArrayRef,
    out: &mut [Datapoints],
) -> Result<(), MappingError> {
    let error = |source| MappingError::Arrow(m.column.clone(), source);
    if column.len() != out.len() {
        return Err(error(ArrowError::InvalidArgumentError(format!(
            "the column has {} values for {} rows",
            column.len(),
            out.len()
        ))));
    }
    let text = match column.data_type() {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => Arc::clone(column),
        // Not `safe`: a value that does not convert (bytes that are not UTF-8) is an error, not
        // a silently missing datapoint.
        _ => cast_with_options(
            column.as_ref(),
            &DataType::Utf8,
            &CastOptions {
                safe: false,
                ..CastOptions::default()
            },
        )
        .map_err(error)?,
    };
    match text.data_type() {
        DataType::Utf8 => fill(text.as_string::<i32>(), m.datapoint, out),
        DataType::LargeUtf8 => fill(text.as_string::<i64>(), m.datapoint, out),
        DataType::Utf8View => fill(text.as_string_view(), m.datapoint, out),
        other => {
            return Err(error(ArrowError::CastError(format!("{other} is not text"))));
        }
    }
    Ok(())
}

fn fill<'a>(
    values: impl ArrayAccessor<Item = &'a str>,
    datapoint: Datapoint,
    out: &mut [Datapoints],
) {
    for (row, datapoints) in out.iter_mut().enumerate() {
        if values.is_valid(row) {
            let value = values.value(row);
            if !value.trim().is_empty() {
                datapoints.set(datapoint, Some(value.to_string()));
            }
        }
    }
}

/// One line per mapped datapoint, `email <- "Work Email" (alias)`, in the order of
/// [`Datapoint::ALL`], then one line per ignored column with the reason.
impl fmt::Display for ColumnMapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut lines = Vec::new();
        for datapoint in Datapoint::ALL {
            for m in self.mapped.iter().filter(|m| m.datapoint == datapoint) {
                lines.push(format!("{datapoint} <- {:?} ({})", m.column, m.source));
            }
        }
        for i in &self.ignored {
            lines.push(format!("ignored {:?}: {}", i.column, i.reason));
        }
        f.write_str(&lines.join("\n"))
    }
}

/// Parses a `COLUMN=datapoint` mapping (`--map`, `SET prospeo.map`). It splits at the last
/// `=`, so a column name may itself contain `=` ("a=b=email" maps column "a=b"); a datapoint name
/// never does. An empty datapoint, `none` or `ignore` ignores the column.
pub fn parse_mapping_arg(arg: &str) -> Result<(String, Option<Datapoint>), String> {
    let Some((column, datapoint)) = arg.rsplit_once('=') else {
        return Err(format!(
            "`{arg}` is not COLUMN=datapoint: write e.g. '{0}=email' to map the column, or '{0}=' to ignore it",
            arg.trim()
        ));
    };
    let column = column.trim();
    if column.is_empty() {
        return Err(format!(
            "`{arg}` names no column: write COLUMN=datapoint, e.g. 'Work Email=email'"
        ));
    }
    let datapoint = datapoint.trim();
    if datapoint.is_empty()
        || datapoint.eq_ignore_ascii_case("none")
        || datapoint.eq_ignore_ascii_case("ignore")
    {
        return Ok((column.to_string(), None));
    }
    let datapoint = datapoint.parse().map_err(|e| {
        format!("`{arg}`: {e} (or nothing, 'none' or 'ignore' to ignore the column)")
    })?;
    Ok((column.to_string(), Some(datapoint)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{
        BinaryArray, DictionaryArray, Int64Array, LargeStringArray, StringArray, StringViewArray,
    };
    use datafusion::arrow::datatypes::{Field, Fields, Int32Type, Int64Type};

    use Datapoint::*;

    fn schema(names: &[&str]) -> Schema {
        Schema::new(
            names
                .iter()
                .map(|n| Field::new(*n, DataType::Utf8, true))
                .collect::<Vec<_>>(),
        )
    }

    fn detect(names: &[&str]) -> ColumnMapping {
        ColumnMapping::detect(&schema(names), &[]).unwrap()
    }

    fn decisions(mapping: &ColumnMapping) -> Vec<(&str, Datapoint)> {
        mapping
            .mapped()
            .iter()
            .map(|m| (m.column.as_str(), m.datapoint))
            .collect()
    }

    fn ignored(mapping: &ColumnMapping) -> Vec<&str> {
        mapping
            .ignored()
            .iter()
            .map(|i| i.column.as_str())
            .collect()
    }

    fn explicit(list: &[(&str, Option<Datapoint>)]) -> Vec<(String, Option<Datapoint>)> {
        list.iter().map(|(c, d)| (c.to_string(), *d)).collect()
    }

    const LOOK_ALIKES: &[&str] = &[
        "Email Status",
        "Email Confidence",
        "Secondary Email",
        "Company Phone",
        "Company Size",
        "Company Address",
        "Title",
        "LinkedIn Followers",
        "LinkedIn Bio",
    ];

    #[test]
    fn apollo_export() {
        let m = detect(&[
            "First Name",
            "Last Name",
            "Title",
            "Company",
            "Company Name for Emails",
            "Email",
            "Email Status",
            "Primary Email Source",
            "Email Confidence",
            "Seniority",
            "Mobile Phone",
            "# Employees",
            "Industry",
            "Person Linkedin Url",
            "Website",
            "Company Linkedin Url",
            "Facebook Url",
            "Company Address",
            "Company Phone",
            "Company Size",
            "Apollo Contact Id",
            "Secondary Email",
            "LinkedIn Followers",
        ]);
        assert_eq!(
            decisions(&m),
            [
                ("First Name", FirstName),
                ("Last Name", LastName),
                ("Company", CompanyName),
                ("Email", Email),
                ("Person Linkedin Url", LinkedinUrl),
                ("Website", CompanyWebsite),
                ("Company Linkedin Url", CompanyLinkedinUrl),
            ]
        );
        assert!(m.ignored().is_empty(), "{m}");
    }

    #[test]
    fn hubspot_export() {
        let m = detect(&[
            "Record ID",
            "First Name",
            "Last Name",
            "Email",
            "Phone Number",
            "Job Title",
            "Company Name",
            "Company Domain Name",
            "Website URL",
            "LinkedIn Bio",
            "Associated Company",
            "Lifecycle Stage",
        ]);
        assert_eq!(
            decisions(&m),
            [
                ("First Name", FirstName),
                ("Last Name", LastName),
                ("Email", Email),
                ("Company Name", CompanyName),
                ("Company Domain Name", CompanyWebsite),
            ]
        );
        assert_eq!(ignored(&m), ["Website URL", "Associated Company"]);
        assert_eq!(m.mapped()[3].source, MappingSource::Exact);
        assert_eq!(m.mapped()[4].source, MappingSource::Alias);
    }

    #[test]
    fn salesforce_exports() {
        let contacts = detect(&[
            "Contact ID",
            "First Name",
            "Last Name",
            "Title",
            "Email",
            "Account Name",
            "Website",
            "Lead Source",
        ]);
        assert_eq!(
            decisions(&contacts),
            [
                ("First Name", FirstName),
                ("Last Name", LastName),
                ("Email", Email),
                ("Account Name", CompanyName),
                ("Website", CompanyWebsite),
            ]
        );
        let leads = detect(&[
            "Lead ID",
            "First Name",
            "Last Name",
            "Company / Account",
            "Email",
        ]);
        assert!(decisions(&leads).contains(&("Company / Account", CompanyName)));
    }

    #[test]
    fn sales_navigator_export() {
        let m = detect(&[
            "First Name",
            "Last Name",
            "Title",
            "Company",
            "LinkedIn Profile URL",
            "Profile URL",
            "Company LinkedIn URL",
            "LinkedIn Followers",
        ]);
        assert_eq!(
            decisions(&m),
            [
                ("First Name", FirstName),
                ("Last Name", LastName),
                ("Company", CompanyName),
                ("LinkedIn Profile URL", LinkedinUrl),
                ("Company LinkedIn URL", CompanyLinkedinUrl),
            ]
        );
        assert_eq!(ignored(&m), ["Profile URL"]);
        assert_eq!(m.mapped()[4].source, MappingSource::Exact);
        // A tool's camelCase export of the same.
        let m = detect(&["firstName", "lastName", "companyName", "profileUrl"]);
        assert_eq!(
            decisions(&m),
            [
                ("firstName", FirstName),
                ("lastName", LastName),
                ("companyName", CompanyName),
                ("profileUrl", LinkedinUrl),
            ]
        );
    }

    #[test]
    fn look_alikes_never_map() {
        for name in LOOK_ALIKES {
            let err = ColumnMapping::detect(&schema(&[name]), &[]).unwrap_err();
            assert!(
                matches!(err, MappingError::NoMappableColumn { .. }),
                "{name}"
            );
        }
    }

    #[test]
    fn names_are_folded() {
        for name in [
            "First Name",
            "first_name",
            "FIRST-NAME",
            "firstName",
            " first.name ",
            "FirstName",
        ] {
            let m = detect(&[name]);
            assert_eq!(decisions(&m), [(name, FirstName)]);
            assert_eq!(m.mapped()[0].source, MappingSource::Exact);
        }
        for name in ["Work Email", "work_email", "WORK-EMAIL", "workEmail"] {
            let m = detect(&[name]);
            assert_eq!(decisions(&m), [(name, Email)]);
            assert_eq!(m.mapped()[0].source, MappingSource::Alias);
        }
        let m = detect(&[
            "LI Profile",
            "company_url",
            "prospeo id",
            "organization linkedin",
        ]);
        assert_eq!(
            decisions(&m),
            [
                ("LI Profile", LinkedinUrl),
                ("company_url", CompanyWebsite),
                ("prospeo id", PersonId),
                ("organization linkedin", CompanyLinkedinUrl),
            ]
        );
    }

    #[test]
    fn best_candidate_wins_and_the_others_are_reported() {
        // An exact name beats an alias, wherever it is.
        let m = detect(&["Work Email", "E-Mail", "firstName"]);
        assert_eq!(decisions(&m), [("E-Mail", Email), ("firstName", FirstName)]);
        assert_eq!(ignored(&m), ["Work Email"]);
        let reason = &m.ignored()[0].reason;
        assert!(
            reason.contains("email already comes from \"E-Mail\"") && reason.contains("exact"),
            "{reason}"
        );
        // An earlier alias beats a later one.
        let m = detect(&["Email Address", "Work Email"]);
        assert_eq!(decisions(&m), [("Work Email", Email)]);
        assert!(m.ignored()[0].reason.contains("preferred alias"), "{m}");
        // Equal names: the first column wins.
        let m = detect(&["email", "EMAIL"]);
        assert_eq!(decisions(&m), [("email", Email)]);
        assert_eq!(ignored(&m), ["EMAIL"]);
        assert!(m.ignored()[0].reason.contains("earlier"), "{m}");
    }

    #[test]
    fn explicit_mappings_override_detection() {
        let s = schema(&["Work Addr", "Email", "Notes", "Company"]);
        let m = ColumnMapping::detect(
            &s,
            &explicit(&[("Work Addr", Some(Email)), ("company", None)]),
        )
        .unwrap();
        assert_eq!(decisions(&m), [("Work Addr", Email)]);
        assert_eq!(m.mapped()[0].source, MappingSource::Explicit);
        assert_eq!(ignored(&m), ["Email", "Company"]);
        assert!(m.ignored()[0].reason.contains("mapped explicitly"), "{m}");
        assert_eq!(m.ignored()[1].reason, "ignored by the mapping");

        // An explicit None on the only candidate leaves nothing to map.
        let err = ColumnMapping::detect(&s, &explicit(&[("Email", None), ("Company", None)]))
            .unwrap_err();
        assert!(
            matches!(err, MappingError::NoMappableColumn { .. }),
            "{err}"
        );

        // The later of two entries for one column, or one datapoint, wins.
        let m = ColumnMapping::detect(
            &s,
            &explicit(&[
                ("Notes", Some(CompanyName)),
                ("Notes", Some(FullName)),
                ("Work Addr", Some(Email)),
                ("Email", Some(Email)),
            ]),
        )
        .unwrap();
        assert_eq!(
            decisions(&m),
            [
                ("Email", Email),
                ("Notes", FullName),
                ("Company", CompanyName)
            ]
        );
        assert_eq!(ignored(&m), ["Work Addr"]);
    }

    #[test]
    fn explicit_columns_match_exactly_then_ignoring_case() {
        let s = schema(&["email", "EMAIL", "Notes"]);
        let m = ColumnMapping::detect(&s, &explicit(&[("EMAIL", Some(Email))])).unwrap();
        assert_eq!(decisions(&m), [("EMAIL", Email)]);
        let m = ColumnMapping::detect(&s, &explicit(&[("NOTES", Some(FullName))])).unwrap();
        assert!(decisions(&m).contains(&("Notes", FullName)));
        let err = ColumnMapping::detect(&s, &explicit(&[("Email", Some(Email))])).unwrap_err();
        assert!(matches!(err, MappingError::AmbiguousColumn { .. }), "{err}");

        let err = ColumnMapping::detect(&s, &explicit(&[("Nope", Some(Email))]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("\"Nope\"") && err.contains("\"email\", \"EMAIL\", \"Notes\""),
            "{err}"
        );
    }

    #[test]
    fn no_mappable_column_lists_columns_accepted_names_and_what_to_do() {
        let err = ColumnMapping::detect(&schema(&["Notes", "Score"]), &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("\"Notes\", \"Score\""), "{err}");
        for datapoint in Datapoint::PERSON {
            assert!(err.contains(datapoint.as_str()), "{datapoint}: {err}");
        }
        assert!(!err.contains("company_id"), "{err}");
        assert!(err.contains("\"Work Email\""), "{err}");
        assert!(
            err.contains("MAP {'Your Column': 'email'}")
                && err.contains("--map 'Your Column=email'"),
            "{err}"
        );
    }

    #[test]
    fn display_shows_every_decision() {
        let s = schema(&["Notes", "Work Email", "Email Address", "First Name"]);
        let m = ColumnMapping::detect(&s, &explicit(&[("Notes", None)])).unwrap();
        let shown = m.to_string();
        assert_eq!(
            shown.lines().take(2).collect::<Vec<_>>(),
            [
                "first_name <- \"First Name\" (exact name)",
                "email <- \"Work Email\" (alias)"
            ],
            "{shown}"
        );
        assert!(
            shown.contains("ignored \"Notes\": ignored by the mapping"),
            "{shown}"
        );
        assert!(
            shown.contains("ignored \"Email Address\": email already comes from"),
            "{shown}"
        );
    }

    #[test]
    fn the_alias_tables_are_unambiguous() {
        for (endpoint, look_alikes) in [
            (Endpoint::BulkEnrichPerson, LOOK_ALIKES),
            (Endpoint::BulkEnrichCompany, COMPANY_LOOK_ALIKES),
        ] {
            let table = aliases_of(endpoint);
            // An account export's "LinkedIn URL" is the company's: only the table's own
            // datapoints' names are taken.
            let mut seen: Vec<String> = table.iter().map(|(d, _)| fold(d.as_str())).collect();
            for (datapoint, aliases) in table {
                for alias in *aliases {
                    let folded = fold(alias);
                    assert!(!folded.is_empty());
                    assert!(
                        !seen.contains(&folded),
                        "{alias} ({datapoint}) is listed twice"
                    );
                    assert_eq!(
                        auto_detect(endpoint, alias).map(|(d, _)| d),
                        Some(*datapoint)
                    );
                    seen.push(folded);
                }
            }
            for name in look_alikes {
                assert!(
                    !seen.contains(&fold(name))
                        || Datapoint::ALL
                            .iter()
                            .any(|d| fold(d.as_str()) == fold(name)),
                    "{name}"
                );
                assert_eq!(auto_detect(endpoint, name), None, "{name}");
            }
            let datapoints: Vec<Datapoint> = table.iter().map(|(d, _)| *d).collect();
            assert_eq!(datapoints, endpoint.datapoints(), "{endpoint:?}");
        }
    }

    /// Columns of account exports that are not the company's identity.
    const COMPANY_LOOK_ALIKES: &[&str] = &[
        "Parent Account",
        "Parent Company",
        "Company Phone",
        "Phone",
        "Account Owner",
        "Company Owner",
        "Account ID",
        "Company ID",
        "company_id",
        "LinkedIn",
        "LinkedIn URL",
        "linkedin_url",
        "Full Name",
        "Email",
        "Record ID",
        "Industry",
        "Number of Employees",
        "Annual Revenue",
        "Billing Address",
    ];

    /// The headers of account exports map to the company datapoints, never the look-alikes;
    /// person datapoints are not looked for.
    #[test]
    fn account_exports_map_to_the_company_datapoints() {
        let company = |names: &[&str]| {
            ColumnMapping::detect_for(Endpoint::BulkEnrichCompany, &schema(names), &[]).map(|m| {
                m.mapped()
                    .iter()
                    .map(|m| (m.column.clone(), m.datapoint))
                    .collect::<Vec<_>>()
            })
        };
        let owned = |pairs: &[(&str, Datapoint)]| {
            pairs
                .iter()
                .map(|(c, d)| (c.to_string(), *d))
                .collect::<Vec<_>>()
        };
        // HubSpot companies
        assert_eq!(
            company(&[
                "Record ID",
                "Name",
                "Company Domain Name",
                "LinkedIn Company Page",
                "Parent Company",
                "Phone Number",
                "Company owner",
            ])
            .unwrap(),
            owned(&[
                ("Name", Datapoint::CompanyName),
                ("Company Domain Name", Datapoint::CompanyWebsite),
                ("LinkedIn Company Page", Datapoint::CompanyLinkedinUrl),
            ])
        );
        // Salesforce accounts
        assert_eq!(
            company(&[
                "Account ID",
                "Account Name",
                "Parent Account",
                "Website",
                "Phone",
                "Industry",
            ])
            .unwrap(),
            owned(&[
                ("Account Name", Datapoint::CompanyName),
                ("Website", Datapoint::CompanyWebsite),
            ])
        );
        // Apollo accounts
        assert_eq!(
            company(&[
                "Company",
                "Website",
                "Company Linkedin Url",
                "# Employees",
                "Company Phone",
            ])
            .unwrap(),
            owned(&[
                ("Company", Datapoint::CompanyName),
                ("Website", Datapoint::CompanyWebsite),
                ("Company Linkedin Url", Datapoint::CompanyLinkedinUrl),
            ])
        );
        // The vendor's id maps from its own names; a table's `company_id` and a person's
        // columns do not.
        assert_eq!(
            company(&[
                "company_id",
                "prospeo_company_company_id",
                "Email",
                "First Name"
            ])
            .unwrap(),
            owned(&[("prospeo_company_company_id", Datapoint::CompanyId)])
        );
        assert!(company(&["company_id", "linkedin_url", "LinkedIn", "Full Name"]).is_err());
        let err = company(&["Email", "Company Phone"])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("company datapoint") && err.contains("\"Account Name\""),
            "{err}"
        );
        // A person input never maps company_id (the person endpoint does not take it).
        let person = ColumnMapping::detect(&schema(&["Email", "company_id"]), &[]).unwrap();
        assert_eq!(person.mapped().len(), 1);
        // Mapping to a datapoint the endpoint does not take says which it takes.
        let err = ColumnMapping::detect_for(
            Endpoint::BulkEnrichCompany,
            &schema(&["Mail", "Web"]),
            &explicit(&[("Mail", Some(Datapoint::Email))]),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("/bulk-enrich-company does not take")
                && err.contains("company_name, company_website, company_linkedin_url, company_id"),
            "{err}"
        );
    }

    /// Emails in every string encoding, beside an Int64 person_id.
    fn batch_with_emails(emails: ArrayRef) -> RecordBatch {
        let ids: ArrayRef = Arc::new(Int64Array::from(vec![Some(7), Some(8), None, Some(9)]));
        let notes: ArrayRef = Arc::new(StringArray::from(vec!["x"; 4]));
        let schema = Arc::new(Schema::new(vec![
            Field::new("Notes", DataType::Utf8, true),
            Field::new("Work Email", emails.data_type().clone(), true),
            Field::new("person_id", DataType::Int64, true),
        ]));
        RecordBatch::try_new(schema, vec![notes, emails, ids]).unwrap()
    }

    #[test]
    fn datapoints_from_every_string_type() {
        let values = [Some("a@b.co"), None, Some(""), Some(" C@D.co ")];
        let arrays: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(values.to_vec())),
            Arc::new(LargeStringArray::from(values.to_vec())),
            Arc::new(StringViewArray::from(values.to_vec())),
            Arc::new(values.into_iter().collect::<DictionaryArray<Int32Type>>()),
        ];
        for array in arrays {
            let data_type = array.data_type().clone();
            let batch = batch_with_emails(array);
            let m = ColumnMapping::detect(&batch.schema(), &[]).unwrap();
            assert_eq!(m.column_indices(), [1, 2], "{data_type}");
            let rows = m.datapoints(&batch).unwrap();
            let emails: Vec<Option<&str>> = rows.iter().map(|d| d.email.as_deref()).collect();
            // Not normalised here: that is the client's step.
            assert_eq!(
                emails,
                [Some("a@b.co"), None, None, Some(" C@D.co ")],
                "{data_type}"
            );
            let ids: Vec<Option<&str>> = rows.iter().map(|d| d.person_id.as_deref()).collect();
            assert_eq!(ids, [Some("7"), Some("8"), None, Some("9")], "{data_type}");
            assert!(rows.iter().all(|d| d.full_name.is_none()));
            let projected = batch.project(&m.column_indices()).unwrap();
            assert_eq!(
                m.datapoints_projected(&projected).unwrap(),
                rows,
                "{data_type}"
            );
        }
    }

    #[test]
    fn datapoints_from_other_encodings() {
        // A dictionary of numbers, cast value by value.
        let ids: ArrayRef = Arc::new(
            [Some("12"), None, Some("12")]
                .into_iter()
                .collect::<DictionaryArray<Int64Type>>(),
        );
        let schema = Arc::new(Schema::new(vec![Field::new(
            "prospeo_id",
            ids.data_type().clone(),
            true,
        )]));
        let batch = RecordBatch::try_new(schema.clone(), vec![ids]).unwrap();
        let rows = ColumnMapping::detect(&schema, &[])
            .unwrap()
            .datapoints(&batch)
            .unwrap();
        let ids: Vec<Option<&str>> = rows.iter().map(|d| d.person_id.as_deref()).collect();
        assert_eq!(ids, [Some("12"), None, Some("12")]);
    }

    #[test]
    fn batches_without_the_mapped_columns_are_errors() {
        let batch = batch_with_emails(Arc::new(StringArray::from(vec!["a@b.co"; 4])));
        let m = ColumnMapping::detect(&batch.schema(), &[]).unwrap();
        let err = m.datapoints_projected(&batch).unwrap_err();
        assert!(matches!(err, MappingError::Arrow(..)), "{err}");
        let err = m.datapoints(&batch.project(&[0]).unwrap()).unwrap_err();
        assert!(matches!(err, MappingError::Arrow(..)), "{err}");
    }

    #[test]
    fn columns_without_a_text_value_are_errors() {
        let list = DataType::List(Arc::new(Field::new_list_field(DataType::Utf8, true)));
        let strukt = DataType::Struct(Fields::from(vec![Field::new("a", DataType::Utf8, true)]));
        for data_type in [list, strukt] {
            let s = Schema::new(vec![Field::new("Email", data_type.clone(), true)]);
            let err = ColumnMapping::detect(&s, &[]).unwrap_err();
            assert!(
                matches!(&err, MappingError::UnsupportedType { column, .. } if column == "Email"),
                "{err}"
            );
            assert!(
                err.to_string()
                    .contains("MAP {'Email': ''} or --map 'Email='"),
                "{err}"
            );
            // Ignoring the column, or mapping another, gets past it.
            let s = Schema::new(vec![
                Field::new("Email", data_type, true),
                Field::new("Addr", DataType::Utf8, true),
            ]);
            let m = ColumnMapping::detect(&s, &explicit(&[("Addr", Some(Email))])).unwrap();
            assert_eq!(decisions(&m), [("Addr", Email)]);
        }
        // Binary that is not UTF-8 fails when read, naming the column.
        let bytes: ArrayRef = Arc::new(BinaryArray::from(vec![&[0xff_u8, 0xfe][..]]));
        let s = Arc::new(Schema::new(vec![Field::new(
            "email",
            DataType::Binary,
            true,
        )]));
        let m = ColumnMapping::detect(&s, &[]).unwrap();
        let batch = RecordBatch::try_new(s, vec![bytes]).unwrap();
        let err = m.datapoints(&batch).unwrap_err();
        assert!(err.to_string().contains("\"email\""), "{err}");
    }

    #[test]
    fn mapping_arguments_parse() {
        assert_eq!(
            parse_mapping_arg("Work Email=email"),
            Ok(("Work Email".into(), Some(Email)))
        );
        assert_eq!(parse_mapping_arg("Notes="), Ok(("Notes".into(), None)));
        assert_eq!(
            parse_mapping_arg("Notes=ignore"),
            Ok(("Notes".into(), None))
        );
        assert_eq!(
            parse_mapping_arg("Notes = None"),
            Ok(("Notes".into(), None))
        );
        assert_eq!(
            parse_mapping_arg("a=b=email"),
            Ok(("a=b".into(), Some(Email)))
        );
        assert_eq!(
            parse_mapping_arg("Company = COMPANY_NAME"),
            Ok(("Company".into(), Some(CompanyName)))
        );
        let err = parse_mapping_arg("Notes=phone").unwrap_err();
        assert!(
            err.contains("unknown datapoint `phone`") && err.contains("email"),
            "{err}"
        );
        assert!(
            parse_mapping_arg("no equals")
                .unwrap_err()
                .contains("'no equals=email'")
        );
        assert!(parse_mapping_arg("=email").is_err());
    }
}
