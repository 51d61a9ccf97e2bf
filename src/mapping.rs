//! Input column names → the nine matching datapoints.
//!
//! Headers are compared folded (lower case, letters and digits only), so "First Name",
//! "first_name" and "FIRST-NAME" are one name. A column maps when its folded name is a
//! datapoint's name or one of its aliases; look-alikes ("Email Status", "Company Phone") are not
//! aliases and so never map. Explicit mappings override detection.

use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use datafusion::arrow::compute::{can_cast_types, cast};
use datafusion::arrow::datatypes::{DataType, Schema};
use datafusion::arrow::error::ArrowError;

use crate::datapoints::{Datapoint, Datapoints};

/// Aliases per datapoint, in order of preference, folded. The datapoint's own name comes first
/// implicitly. Covers the header sets of Apollo, HubSpot, Salesforce and Sales Navigator exports.
const ALIASES: &[(Datapoint, &[&str])] = &[
    (
        Datapoint::FirstName,
        &[
            "firstname",
            "givenname",
            "fname",
            "forename",
            "contactfirstname",
        ],
    ),
    (
        Datapoint::LastName,
        &[
            "lastname",
            "surname",
            "familyname",
            "lname",
            "contactlastname",
        ],
    ),
    (
        Datapoint::FullName,
        &["fullname", "name", "contactname", "personname", "contact"],
    ),
    (
        Datapoint::LinkedinUrl,
        &[
            "linkedinurl",
            "personlinkedinurl",
            "linkedinprofileurl",
            "linkedinprofile",
            "linkedin",
            "profileurl",
            "linkedinbio",
            "liprofile",
            "contactlinkedinurl",
        ],
    ),
    (
        Datapoint::Email,
        &[
            "email",
            "workemail",
            "emailaddress",
            "businessemail",
            "workemailaddress",
            "contactemail",
            "primaryemail",
        ],
    ),
    (
        Datapoint::CompanyName,
        &[
            "companyname",
            "company",
            "accountname",
            "organization",
            "organisation",
            "organizationname",
            "account",
            "employer",
            "currentcompany",
        ],
    ),
    (
        Datapoint::CompanyWebsite,
        &[
            "companywebsite",
            "companydomain",
            "companydomainname",
            "domain",
            "website",
            "websiteurl",
            "companyurl",
            "accountwebsite",
            "organizationdomain",
            "organizationwebsite",
        ],
    ),
    (
        Datapoint::CompanyLinkedinUrl,
        &[
            "companylinkedinurl",
            "companylinkedin",
            "organizationlinkedinurl",
            "organizationlinkedin",
            "accountlinkedinurl",
        ],
    ),
    (
        Datapoint::PersonId,
        &["personid", "prospeoid", "prospeopersonid"],
    ),
];

/// A header folded for comparison: lower case, ASCII letters and digits only.
pub fn fold(name: &str) -> String {
    name.chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect()
}

/// How a column came to be mapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MappingSource {
    /// Its name is the datapoint's name.
    Exact,
    /// Its name is an alias of the datapoint.
    Alias,
    /// The caller mapped it.
    Explicit,
}

/// A column that feeds a datapoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MappedColumn {
    pub column: String,
    /// Index in the schema given to [`ColumnMapping::detect`].
    pub index: usize,
    pub datapoint: Datapoint,
    pub source: MappingSource,
}

/// A column that looked like a datapoint, or was named explicitly, and is not used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IgnoredColumn {
    pub column: String,
    pub reason: String,
}

/// Why a mapping could not be made.
#[derive(Debug, thiserror::Error)]
pub enum MappingError {
    #[error(
        "no column maps to a Prospeo datapoint. The input's columns are: {columns}. Accepted names (any case, spaces or punctuation): {accepted}. Map a column explicitly with named_struct('map', MAP {{'Your Column': 'email'}}) in SQL or --map 'Your Column=email' on the command line"
    )]
    NoMappableColumn { columns: String, accepted: String },
    #[error(
        "the mapping names column {column:?}, which the input does not have; its columns are: {columns}"
    )]
    UnknownColumn { column: String, columns: String },
    #[error("column {column:?} is {data_type}, which cannot be read as text")]
    UnsupportedType { column: String, data_type: DataType },
    #[error("cannot read column {column:?} as text: {source}")]
    Arrow { column: String, source: ArrowError },
}

/// The mapping decisions for one input schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnMapping {
    mapped: Vec<MappedColumn>,
    ignored: Vec<IgnoredColumn>,
}

fn quoted_list<'a>(names: impl Iterator<Item = &'a str>) -> String {
    names
        .map(|n| format!("{n:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn accepted_names() -> String {
    ALIASES
        .iter()
        .map(|(d, aliases)| {
            let examples: Vec<&str> = aliases.iter().take(3).copied().collect();
            format!("{d} ({})", examples.join(", "))
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// The datapoint a folded header names, and how strongly (0 = the datapoint's own name, then
/// the alias rank).
fn detect_one(folded: &str) -> Option<(Datapoint, usize)> {
    ALIASES.iter().find_map(|(datapoint, aliases)| {
        if fold(datapoint.as_str()) == folded {
            return Some((*datapoint, 0));
        }
        aliases
            .iter()
            .position(|a| *a == folded)
            .map(|rank| (*datapoint, rank + 1))
    })
}

impl ColumnMapping {
    /// Maps `schema`'s columns, with `explicit` overrides: `(column, Some(d))` maps the column
    /// to `d`, `(column, None)` ignores it.
    pub fn detect(
        schema: &Schema,
        explicit: &[(String, Option<Datapoint>)],
    ) -> Result<ColumnMapping, MappingError> {
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        let all_columns = || quoted_list(names.iter().copied());
        let mut ignored = Vec::new();
        let mut explicit_index: Vec<(usize, Option<Datapoint>)> = Vec::new();
        for (column, datapoint) in explicit {
            let index = names
                .iter()
                .position(|n| n == column)
                .or_else(|| names.iter().position(|n| n.eq_ignore_ascii_case(column)))
                .ok_or_else(|| MappingError::UnknownColumn {
                    column: column.clone(),
                    columns: all_columns(),
                })?;
            explicit_index.push((index, *datapoint));
        }
        let mut mapped: Vec<MappedColumn> = Vec::new();
        for &(index, datapoint) in &explicit_index {
            match datapoint {
                Some(datapoint) => {
                    mapped.retain(|m| m.datapoint != datapoint);
                    mapped.push(MappedColumn {
                        column: names[index].to_string(),
                        index,
                        datapoint,
                        source: MappingSource::Explicit,
                    });
                }
                None => ignored.push(IgnoredColumn {
                    column: names[index].to_string(),
                    reason: "ignored by the mapping".into(),
                }),
            }
        }
        // Candidates by strength, then schema order.
        let mut candidates: Vec<(usize, usize, Datapoint)> = names
            .iter()
            .enumerate()
            .filter(|(i, _)| !explicit_index.iter().any(|(e, _)| e == i))
            .filter_map(|(i, name)| detect_one(&fold(name)).map(|(d, rank)| (rank, i, d)))
            .collect();
        candidates.sort();
        for (rank, index, datapoint) in candidates {
            if let Some(winner) = mapped.iter().find(|m| m.datapoint == datapoint) {
                ignored.push(IgnoredColumn {
                    column: names[index].to_string(),
                    reason: format!("{datapoint} already comes from {:?}", winner.column),
                });
                continue;
            }
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
                accepted: accepted_names(),
            });
        }
        for m in &mapped {
            let data_type = schema.field(m.index).data_type();
            if !is_text(data_type) && !can_cast_types(data_type, &DataType::Utf8) {
                return Err(MappingError::UnsupportedType {
                    column: m.column.clone(),
                    data_type: data_type.clone(),
                });
            }
        }
        mapped.sort_by_key(|m| m.index);
        Ok(ColumnMapping { mapped, ignored })
    }

    /// The mapped columns, in schema order.
    pub fn mapped(&self) -> &[MappedColumn] {
        &self.mapped
    }

    /// Columns that looked like datapoints or were named explicitly, and are not used.
    pub fn ignored(&self) -> &[IgnoredColumn] {
        &self.ignored
    }

    /// The input columns enrichment reads, in schema order.
    pub fn column_indices(&self) -> Vec<usize> {
        self.mapped.iter().map(|m| m.index).collect()
    }

    /// The datapoints of every row of `batch`, which has the schema given to `detect`.
    pub fn datapoints(&self, batch: &RecordBatch) -> Result<Vec<Datapoints>, MappingError> {
        let columns: Vec<&ArrayRef> = self.mapped.iter().map(|m| batch.column(m.index)).collect();
        self.read(batch.num_rows(), &columns)
    }

    /// The same for a batch holding only the mapped columns, in `column_indices()` order.
    pub fn datapoints_projected(
        &self,
        batch: &RecordBatch,
    ) -> Result<Vec<Datapoints>, MappingError> {
        let columns: Vec<&ArrayRef> = batch.columns().iter().collect();
        self.read(batch.num_rows(), &columns)
    }

    fn read(&self, rows: usize, columns: &[&ArrayRef]) -> Result<Vec<Datapoints>, MappingError> {
        let mut out = vec![Datapoints::default(); rows];
        for (m, column) in self.mapped.iter().zip(columns) {
            let text = as_text(column).map_err(|source| MappingError::Arrow {
                column: m.column.clone(),
                source,
            })?;
            let strings = text.as_string::<i32>();
            for (row, datapoints) in out.iter_mut().enumerate() {
                if strings.is_valid(row) {
                    let value = strings.value(row);
                    if !value.trim().is_empty() {
                        datapoints.set(m.datapoint, Some(value.to_string()));
                    }
                }
            }
        }
        Ok(out)
    }
}

fn is_text(data_type: &DataType) -> bool {
    matches!(
        data_type,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
    ) || matches!(data_type, DataType::Dictionary(_, v) if is_text(v))
}

/// Any castable column as a `Utf8` array.
fn as_text(column: &ArrayRef) -> Result<ArrayRef, ArrowError> {
    if column.data_type() == &DataType::Utf8 {
        Ok(Arc::clone(column))
    } else {
        cast(column.as_ref(), &DataType::Utf8)
    }
}

impl fmt::Display for ColumnMapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for m in &self.mapped {
            let how = match m.source {
                MappingSource::Exact => "exact name",
                MappingSource::Alias => "alias",
                MappingSource::Explicit => "explicit",
            };
            writeln!(
                f,
                "  {:<21} <- {:?} ({how})",
                m.datapoint.as_str(),
                m.column
            )?;
        }
        for i in &self.ignored {
            writeln!(f, "  ignored {:?}: {}", i.column, i.reason)?;
        }
        Ok(())
    }
}

/// Parses `COLUMN=datapoint` (split at the last `=`); an empty datapoint, `none` or `ignore`
/// ignores the column.
pub fn parse_mapping_arg(arg: &str) -> Result<(String, Option<Datapoint>), String> {
    let (column, datapoint) = arg
        .rsplit_once('=')
        .ok_or_else(|| format!("`{arg}` is not COLUMN=datapoint"))?;
    let column = column.trim();
    if column.is_empty() {
        return Err(format!("`{arg}` names no column"));
    }
    let datapoint = datapoint.trim();
    if datapoint.is_empty()
        || datapoint.eq_ignore_ascii_case("none")
        || datapoint.eq_ignore_ascii_case("ignore")
    {
        return Ok((column.to_string(), None));
    }
    let datapoint = datapoint.parse().map_err(|e| format!("{e}"))?;
    Ok((column.to_string(), Some(datapoint)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{
        DictionaryArray, Int64Array, LargeStringArray, StringArray, StringViewArray,
    };
    use datafusion::arrow::datatypes::{Field, Int32Type};

    fn schema(names: &[&str]) -> Schema {
        Schema::new(
            names
                .iter()
                .map(|n| Field::new(*n, DataType::Utf8, true))
                .collect::<Vec<_>>(),
        )
    }

    fn decisions(mapping: &ColumnMapping) -> Vec<(String, Datapoint)> {
        mapping
            .mapped()
            .iter()
            .map(|m| (m.column.clone(), m.datapoint))
            .collect()
    }

    fn pairs(list: &[(&str, Datapoint)]) -> Vec<(String, Datapoint)> {
        list.iter().map(|(c, d)| (c.to_string(), *d)).collect()
    }

    #[test]
    fn crm_exports_map_without_look_alikes() {
        use Datapoint::*;
        let apollo = schema(&[
            "First Name",
            "Last Name",
            "Title",
            "Company",
            "Email",
            "Email Status",
            "Email Confidence",
            "Person Linkedin Url",
            "Website",
            "Company Linkedin Url",
            "Company Phone",
            "# Employees",
            "Company Size",
            "Company Address",
        ]);
        let m = ColumnMapping::detect(&apollo, &[]).unwrap();
        assert_eq!(
            decisions(&m),
            pairs(&[
                ("First Name", FirstName),
                ("Last Name", LastName),
                ("Company", CompanyName),
                ("Email", Email),
                ("Person Linkedin Url", LinkedinUrl),
                ("Website", CompanyWebsite),
                ("Company Linkedin Url", CompanyLinkedinUrl),
            ])
        );
        let hubspot = schema(&[
            "First Name",
            "Last Name",
            "Email",
            "Company Name",
            "Company Domain Name",
            "Phone Number",
        ]);
        let m = ColumnMapping::detect(&hubspot, &[]).unwrap();
        assert_eq!(m.mapped().len(), 5);
        let salesforce = schema(&[
            "First Name",
            "Last Name",
            "Email",
            "Account Name",
            "Website",
            "Lead Source",
        ]);
        let m = ColumnMapping::detect(&salesforce, &[]).unwrap();
        assert!(decisions(&m).contains(&("Account Name".into(), CompanyName)));
        let navigator = schema(&[
            "First Name",
            "Last Name",
            "Company",
            "LinkedIn Profile URL",
            "Company LinkedIn URL",
            "Title",
        ]);
        let m = ColumnMapping::detect(&navigator, &[]).unwrap();
        assert!(decisions(&m).contains(&("LinkedIn Profile URL".into(), LinkedinUrl)));
    }

    #[test]
    fn names_are_folded_and_the_best_candidate_wins() {
        let m =
            ColumnMapping::detect(&schema(&["E-MAIL ADDRESS", "email", "firstName"]), &[]).unwrap();
        assert_eq!(
            decisions(&m),
            pairs(&[
                ("email", Datapoint::Email),
                ("firstName", Datapoint::FirstName)
            ])
        );
        assert_eq!(m.mapped()[0].source, MappingSource::Exact);
        assert_eq!(m.ignored()[0].column, "E-MAIL ADDRESS");
        assert!(m.to_string().contains("email"), "{m}");
    }

    #[test]
    fn explicit_mappings_override() {
        let s = schema(&["Work Addr", "Email", "Notes"]);
        let m = ColumnMapping::detect(
            &s,
            &[
                ("Work Addr".into(), Some(Datapoint::Email)),
                ("email".into(), None),
            ],
        )
        .unwrap();
        assert_eq!(decisions(&m), pairs(&[("Work Addr", Datapoint::Email)]));
        assert_eq!(m.mapped()[0].source, MappingSource::Explicit);
        let err =
            ColumnMapping::detect(&s, &[("Nope".into(), Some(Datapoint::Email))]).unwrap_err();
        assert!(
            err.to_string().contains("\"Nope\"") && err.to_string().contains("\"Notes\""),
            "{err}"
        );
    }

    #[test]
    fn no_mappable_column_lists_columns_and_accepted_names() {
        let err = ColumnMapping::detect(&schema(&["Notes", "Score"]), &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("\"Notes\", \"Score\""), "{err}");
        assert!(err.contains("email") && err.contains("--map"), "{err}");
    }

    #[test]
    fn every_string_type_and_numbers_are_read() {
        let values = [Some("a@b.co"), None, Some(""), Some("c@d.co")];
        let arrays: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(values.to_vec())),
            Arc::new(LargeStringArray::from(values.to_vec())),
            Arc::new(StringViewArray::from(values.to_vec())),
            Arc::new(
                values
                    .iter()
                    .copied()
                    .collect::<DictionaryArray<Int32Type>>(),
            ),
        ];
        for array in arrays {
            let ids: ArrayRef = Arc::new(Int64Array::from(vec![Some(7), Some(8), None, Some(9)]));
            let schema = Arc::new(Schema::new(vec![
                Field::new("Email", array.data_type().clone(), true),
                Field::new("person_id", DataType::Int64, true),
            ]));
            let batch = RecordBatch::try_new(schema.clone(), vec![array.clone(), ids]).unwrap();
            let m = ColumnMapping::detect(&schema, &[]).unwrap();
            let rows = m.datapoints(&batch).unwrap();
            let emails: Vec<Option<&str>> = rows.iter().map(|d| d.email.as_deref()).collect();
            assert_eq!(
                emails,
                [Some("a@b.co"), None, None, Some("c@d.co")],
                "{}",
                array.data_type()
            );
            assert_eq!(rows[0].person_id.as_deref(), Some("7"));
            assert_eq!(rows[2].person_id, None);
            let projected = batch.project(&m.column_indices()).unwrap();
            assert_eq!(m.datapoints_projected(&projected).unwrap(), rows);
        }
    }

    #[test]
    fn mapping_arguments_parse() {
        assert_eq!(
            parse_mapping_arg("Work Email=email"),
            Ok(("Work Email".into(), Some(Datapoint::Email)))
        );
        assert_eq!(parse_mapping_arg("Notes="), Ok(("Notes".into(), None)));
        assert_eq!(
            parse_mapping_arg("a=b=email"),
            Ok(("a=b".into(), Some(Datapoint::Email)))
        );
        assert!(
            parse_mapping_arg("Notes=phone")
                .unwrap_err()
                .contains("unknown datapoint")
        );
        assert!(parse_mapping_arg("no equals").is_err());
    }
}
