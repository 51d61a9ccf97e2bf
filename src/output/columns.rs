//! Columns built straight from the typed wire structs: one pass over the rows per output
//! column, and only for the columns a query reads.
//!
//! Values are the ones the arrow-json decoder (`decoder.rs`) makes of the same structs:
//! timestamps go through the same parser (`string_to_datetime`), and one that does not parse is
//! null; a null object has null fields. The tests in `mod.rs` hold the two paths to that.

use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, BooleanArray, Float64Array, Int64Array, ListArray, StringArray, StructArray,
    TimestampMillisecondArray,
};
use datafusion::arrow::buffer::{NullBuffer, OffsetBuffer, ScalarBuffer};
use datafusion::arrow::compute::kernels::cast_utils::string_to_datetime;
use datafusion::arrow::datatypes::{DataType, Field};

use super::fields::{FieldSpec, Kind, Masking, WireObject, revealed_flag, struct_fields};

/// Some object keeps a field the tables declare in `extra` (the wire type does not know it
/// yet): only the decoder reads it, so the caller decodes the chunk instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct DeclaredInExtra;

/// Fails when one of `rows` keeps a field of `specs` in `extra`. Checked where the objects are
/// read anyway, so it costs no extra pass over cold memory.
fn check_extra<C: WireObject>(
    specs: &[FieldSpec<C>],
    rows: &[Option<&C>],
) -> Result<(), DeclaredInExtra> {
    let declared = |object: &&C| {
        let extra = object.extra();
        !extra.is_empty() && specs.iter().any(|spec| extra.contains_key(spec.name))
    };
    match rows.iter().flatten().any(declared) {
        true => Err(DeclaredInExtra),
        false => Ok(()),
    }
}

/// The flattened, masked columns of the objects `rows` (declared by `specs`), in the order of
/// [`flat_fields`](super::fields::flat_fields); only those `wanted` are built, into `out`.
pub(super) fn flat_columns<C: WireObject>(
    specs: &[FieldSpec<C>],
    rows: &[Option<&C>],
    wanted: &[bool],
    out: &mut [Option<ArrayRef>],
) -> Result<(), DeclaredInExtra> {
    check_extra(specs, rows)?;
    let revealed = revealed_flag(specs);
    let mut at = 0;
    for spec in specs {
        match spec.kind {
            Kind::Object(object) => {
                let width = object.width();
                let range = at..at + width;
                if wanted[range.clone()].contains(&true) {
                    object.flat_columns(rows, &wanted[range.clone()], &mut out[range])?;
                }
                at += width;
            }
            _ => {
                if wanted[at] {
                    out[at] = Some(if spec.masking == Masking::None {
                        column(spec, rows)?
                    } else {
                        let shown: Vec<Option<&C>> = rows
                            .iter()
                            .map(|row| {
                                row.filter(|&object| {
                                    spec.masking.shows(revealed.map(|flag| flag(object)))
                                })
                            })
                            .collect();
                        column(spec, &shown)?
                    });
                }
                at += 1;
            }
        }
    }
    Ok(())
}

/// The objects `rows` as one `Struct` column (null where the object is), nothing flattened or
/// masked: what an object inside a list item becomes.
pub(super) fn struct_column<C: WireObject>(
    specs: &[FieldSpec<C>],
    rows: &[Option<&C>],
) -> Result<ArrayRef, DeclaredInExtra> {
    let nulls = NullBuffer::from_iter(rows.iter().map(Option::is_some));
    let nulls = (nulls.null_count() > 0).then_some(nulls);
    Ok(Arc::new(struct_array(specs, rows, nulls)?))
}

/// The lists of objects that `get` reads from `parents`, as one `List<Struct>` column.
pub(super) fn list_column<T, C: WireObject>(
    specs: &[FieldSpec<C>],
    parents: &[Option<&T>],
    get: fn(&T) -> Option<&[C]>,
) -> Result<ArrayRef, DeclaredInExtra> {
    let mut offsets = Vec::with_capacity(parents.len() + 1);
    offsets.push(0i32);
    let mut items: Vec<Option<&C>> = Vec::new();
    let mut valid = Vec::with_capacity(parents.len());
    for parent in parents {
        let list = parent.and_then(get);
        if let Some(list) = list {
            items.extend(list.iter().map(Some));
        }
        valid.push(list.is_some());
        offsets.push(i32::try_from(items.len()).expect("fewer than 2^31 list items per batch"));
    }
    let values = struct_array(specs, &items, None)?;
    let nulls = NullBuffer::from(valid);
    let nulls = (nulls.null_count() > 0).then_some(nulls);
    let item = Field::new_list_field(DataType::Struct(values.fields().clone()), true);
    Ok(Arc::new(ListArray::new(
        Arc::new(item),
        OffsetBuffer::new(ScalarBuffer::from(offsets)),
        Arc::new(values),
        nulls,
    )))
}

fn struct_array<C: WireObject>(
    specs: &[FieldSpec<C>],
    rows: &[Option<&C>],
    nulls: Option<NullBuffer>,
) -> Result<StructArray, DeclaredInExtra> {
    check_extra(specs, rows)?;
    let columns = specs
        .iter()
        .map(|spec| column(spec, rows))
        .collect::<Result<_, _>>()?;
    Ok(StructArray::new(struct_fields(specs), columns, nulls))
}

/// One field of the objects `rows` as one (unflattened, unmasked) column.
fn column<C: WireObject>(
    spec: &FieldSpec<C>,
    rows: &[Option<&C>],
) -> Result<ArrayRef, DeclaredInExtra> {
    Ok(match spec.kind {
        Kind::Utf8(get) => strings(rows, get),
        Kind::Int64(get) => Arc::new(Int64Array::from_iter(
            rows.iter().map(|row| row.and_then(get)),
        )),
        Kind::Float64(get) => Arc::new(Float64Array::from_iter(
            rows.iter().map(|row| row.and_then(get)),
        )),
        Kind::Boolean(get) => Arc::new(BooleanArray::from_iter(
            rows.iter().map(|row| row.and_then(get)),
        )),
        Kind::TimestampUtc(get) => Arc::new(timestamps(rows, get).with_timezone("UTC")),
        Kind::TimestampNaive(get) => Arc::new(timestamps(rows, get)),
        Kind::Utf8List(get) => string_lists(rows, get),
        Kind::Object(object) => object.struct_column(rows)?,
        Kind::ObjectList(list) => list.list_column(rows)?,
    })
}

fn strings<C>(rows: &[Option<&C>], get: fn(&C) -> Option<&str>) -> ArrayRef {
    // Sized up front: one allocation for the offsets and one for the bytes.
    let bytes: usize = rows
        .iter()
        .map(|row| row.and_then(get).map_or(0, str::len))
        .sum();
    let mut builder = datafusion::arrow::array::StringBuilder::with_capacity(rows.len(), bytes);
    for row in rows {
        builder.append_option(row.and_then(get));
    }
    Arc::new(builder.finish()) as Arc<StringArray>
}

/// Milliseconds since the epoch, read as the arrow-json decoder reads a timestamp string: a
/// value with an offset is converted to UTC, one without is taken as UTC wall-clock time, and one
/// that does not parse is null.
fn timestamps<C>(rows: &[Option<&C>], get: fn(&C) -> Option<&str>) -> TimestampMillisecondArray {
    rows.iter()
        .map(|row| {
            let text = row.and_then(get)?;
            string_to_datetime(&chrono::Utc, text)
                .ok()
                .map(|at| at.timestamp_millis())
        })
        .collect()
}

fn string_lists<C>(rows: &[Option<&C>], get: fn(&C) -> Option<&[String]>) -> ArrayRef {
    let mut offsets = Vec::with_capacity(rows.len() + 1);
    offsets.push(0i32);
    let mut valid = Vec::with_capacity(rows.len());
    let mut count = 0usize;
    let mut bytes = 0usize;
    for row in rows {
        let list = row.and_then(get);
        if let Some(list) = list {
            count += list.len();
            bytes += list.iter().map(String::len).sum::<usize>();
        }
        valid.push(list.is_some());
        offsets.push(i32::try_from(count).expect("fewer than 2^31 list items per batch"));
    }
    let mut values = datafusion::arrow::array::StringBuilder::with_capacity(count, bytes);
    for list in rows.iter().filter_map(|row| row.and_then(get)) {
        for value in list {
            values.append_value(value);
        }
    }
    let nulls = NullBuffer::from(valid);
    let nulls = (nulls.null_count() > 0).then_some(nulls);
    Arc::new(ListArray::new(
        Arc::new(Field::new_list_field(DataType::Utf8, true)),
        OffsetBuffer::new(ScalarBuffer::from(offsets)),
        Arc::new(values.finish()),
        nulls,
    ))
}
