//! The arrow-json path: the typed objects serialised onto a decoder built on the nested schema
//! `{person: Struct, company: Struct}`, whose struct columns are then flattened and masked.
//!
//! It is slower than building columns directly (`columns.rs`) but reads what the typed structs
//! cannot: a field the tables declare while `vendor/wire.rs` still files it under `extra` (the wire
//! types serialise `extra` in place). [`OutputSchema::flatten`](super::OutputSchema::flatten)
//! takes it for a chunk in which some object keeps a declared field in `extra`.
//!
//! The decoder runs with `ignore_type_conflicts`, so a value that does not fit its declared type
//! becomes null instead of failing the batch: the records are paid for, one odd value must not
//! cost the others.

use datafusion::arrow::array::{Array, ArrayRef, AsArray, BooleanArray, RecordBatch, StructArray};
use datafusion::arrow::compute::{not, nullif};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::json::ReaderBuilder;
use serde::Serialize;

use super::fields::{FieldSpec, Kind, Masking, REVEALED};

/// What one output row decodes from. Generic so that a test can feed a value that fails to
/// serialise; in production `P` is [`Person`](crate::vendor::wire::Person) and `C` is
/// [`Company`](crate::vendor::wire::Company).
#[derive(Serialize)]
pub(super) struct Row<'a, P, C> {
    pub(super) person: Option<&'a P>,
    pub(super) company: Option<&'a C>,
}

impl<P, C> Clone for Row<'_, P, C> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<P, C> Copy for Row<'_, P, C> {}

/// Decodes `rows` into a batch of `decoded`; should that fail, decodes again without the
/// objects that fail on their own, so that one bad object costs its own columns only.
pub(super) fn decode_salvaging<P: Serialize, C: Serialize>(
    decoded: &SchemaRef,
    rows: &[Row<'_, P, C>],
) -> Result<RecordBatch, ArrowError> {
    let error = match decode(decoded, rows) {
        Ok(batch) => return Ok(batch),
        Err(error) => error,
    };
    let decodes = |row: Row<'_, P, C>| decode(decoded, &[row]).is_ok();
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
    decode(decoded, &salvaged)
}

/// Decodes `rows` into a batch of `decoded` (`{person, company}`).
fn decode<P: Serialize, C: Serialize>(
    decoded: &SchemaRef,
    rows: &[Row<'_, P, C>],
) -> Result<RecordBatch, ArrowError> {
    let mut decoder = ReaderBuilder::new(decoded.clone())
        .with_batch_size(rows.len().max(1))
        // Unknown fields (kept in the wire types' `extra`) are skipped, not errors.
        .with_strict_mode(false)
        // A value of the wrong type, or an unparsable timestamp, becomes null.
        .with_ignore_type_conflicts(true)
        .build_decoder()?;
    decoder.serialize(rows)?;
    match decoder.flush()? {
        Some(batch) => Ok(batch),
        None => Ok(RecordBatch::new_empty(decoded.clone())),
    }
}

/// The decoded columns of `object` (declared by `specs`), flattened and masked, in the order of
/// [`flat_fields`](super::fields::flat_fields). A null object has null children (arrow-json
/// leaves them unset), so no null propagation is needed here.
pub(super) fn flat_columns<C>(
    specs: &[FieldSpec<C>],
    object: &StructArray,
    out: &mut Vec<ArrayRef>,
) -> Result<(), ArrowError> {
    let revealed = object
        .column_by_name(REVEALED)
        .and_then(|c| c.as_boolean_opt());
    for (spec, column) in specs.iter().zip(object.columns()) {
        match spec.kind {
            Kind::Object(nested) => nested.decoded_columns(column.as_struct(), out)?,
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
