//! The status columns: `status`, `error`, `cost`, `free_enrichment`. They come from the outcome
//! alone, so a query that reads only them decodes no person or company.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, BooleanArray, Int64Array, StringArray};
use datafusion::arrow::datatypes::{DataType, Field};

use crate::vendor::outcome::RecordOutcome;

/// How many status columns there are.
pub(super) const WIDTH: usize = 4;

/// The status fields, named `prefix + name`. Status and cost are never null.
pub(super) fn fields(prefix: &str) -> [Field; WIDTH] {
    [
        Field::new(format!("{prefix}status"), DataType::Utf8, false),
        Field::new(format!("{prefix}error"), DataType::Utf8, true),
        Field::new(format!("{prefix}cost"), DataType::Int64, false),
        Field::new(format!("{prefix}free_enrichment"), DataType::Boolean, true),
    ]
}

/// The status columns of `outcomes` that are `wanted`, into `out` (both in [`fields`] order).
pub(super) fn columns(outcomes: &[RecordOutcome], wanted: &[bool], out: &mut [Option<ArrayRef>]) {
    let builders: [fn(&[RecordOutcome]) -> ArrayRef; WIDTH] =
        [status, error, cost, free_enrichment];
    for ((build, &wanted), out) in builders.iter().zip(wanted).zip(out) {
        if wanted {
            *out = Some(build(outcomes));
        }
    }
}

fn status(outcomes: &[RecordOutcome]) -> ArrayRef {
    Arc::new(StringArray::from_iter_values(
        outcomes.iter().map(|o| o.status().as_str()),
    ))
}

fn error(outcomes: &[RecordOutcome]) -> ArrayRef {
    Arc::new(
        outcomes
            .iter()
            .map(RecordOutcome::error)
            .collect::<StringArray>(),
    )
}

fn cost(outcomes: &[RecordOutcome]) -> ArrayRef {
    Arc::new(Int64Array::from_iter_values(
        outcomes.iter().map(RecordOutcome::cost),
    ))
}

fn free_enrichment(outcomes: &[RecordOutcome]) -> ArrayRef {
    Arc::new(
        outcomes
            .iter()
            .map(|o| match o {
                RecordOutcome::Matched(m) => Some(m.free_enrichment),
                _ => None,
            })
            .collect::<BooleanArray>(),
    )
}
