//! Columns built straight from the typed wire structs, only those a query reads.
//!
//! The builders of a batch's columns stay open while its rows are appended piece by piece (see
//! `PIECE_ROWS` in `mod.rs`): within a piece each column takes its values in one pass over the
//! piece's rows, and the finished columns need no joining.
//!
//! Values are the ones the arrow-json decoder (`decoder.rs`) makes of the same structs:
//! timestamps get that parser's values (`string_to_datetime`'s; the vendor's usual forms are read
//! by a shorter path held equal to it), and one that does not parse is null; a null object has
//! null fields. The tests in `mod.rs` hold the two paths to that.

use std::ops::Range;
use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, BooleanArray, ListArray, PrimitiveArray, StringArray, StructArray,
};
use datafusion::arrow::buffer::{BooleanBuffer, Buffer, NullBuffer, OffsetBuffer};
use datafusion::arrow::compute::kernels::cast_utils::string_to_datetime;
use datafusion::arrow::datatypes::{
    ArrowPrimitiveType, Float64Type, Int64Type, TimestampMillisecondType,
};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Fields};
use datafusion::arrow::error::ArrowError;

use super::decoder;
#[cfg(test)]
use super::fields::masked_without_flag;
use super::fields::{
    ColumnAppend, FieldSpec, FlatAppend, Kind, Many, Masking, NestedList, NestedObject, One,
    WireObject, flat_fields, revealed_flag, struct_fields, width,
};

/// Whether `object` keeps a field of `specs` in `extra`.
fn declares<C: WireObject>(specs: &[FieldSpec<C>], object: &C) -> bool {
    let extra = object.extra();
    !extra.is_empty() && specs.iter().any(|spec| extra.contains_key(spec.name))
}

/// The open builders of the flattened, masked columns of objects of type `C` (declared by
/// `specs`); only the wanted ones exist.
pub(super) struct FlatColumns<'a, C: 'static> {
    specs: &'static [FieldSpec<C>],
    revealed: Option<fn(&C) -> Option<bool>>,
    slots: Vec<Slot<'a, C>>,
    /// The slots that read objects below `C`: what [`FlatAppend::declared_in_extra`] asks.
    nested: Vec<usize>,
    /// Scratch: the objects of a piece whose masked value shows.
    shown: Vec<Option<&'a C>>,
}

enum Slot<'a, C: 'static> {
    /// One column at `at` among the flattened columns.
    Column {
        at: usize,
        masking: Masking,
        column: Column<'a, C>,
    },
    /// A nested object's flattened columns, at `at`.
    Object {
        at: Range<usize>,
        columns: Box<dyn FlatAppend<'a, C> + 'a>,
    },
}

impl<'a, C: WireObject> FlatColumns<'a, C> {
    /// The builders of the flattened columns `fields` (those of `specs`, in the order of
    /// [`flat_fields`](super::fields::flat_fields)) that are `wanted`, sized for `rows` rows.
    pub(super) fn new(
        specs: &'static [FieldSpec<C>],
        fields: &[FieldRef],
        wanted: &[bool],
        rows: usize,
    ) -> Self {
        let mut slots = Vec::new();
        let mut at = 0;
        for spec in specs {
            match spec.kind {
                Kind::Object(object) => {
                    let range = at..at + object.width();
                    if wanted[range.clone()].contains(&true) {
                        let columns = object.flat_builder(
                            &fields[range.clone()],
                            &wanted[range.clone()],
                            rows,
                        );
                        slots.push(Slot::Object {
                            at: range.clone(),
                            columns,
                        });
                    }
                    at = range.end;
                }
                _ => {
                    if wanted[at] {
                        slots.push(Slot::Column {
                            at,
                            masking: spec.masking,
                            column: Column::new(spec, &fields[at], rows),
                        });
                    }
                    at += 1;
                }
            }
        }
        let nested = (0..slots.len())
            .filter(|&i| {
                matches!(
                    slots[i],
                    Slot::Object { .. }
                        | Slot::Column {
                            column: Column::Nested(_),
                            ..
                        }
                )
            })
            .collect();
        FlatColumns {
            specs,
            revealed: revealed_flag(specs),
            slots,
            nested,
            shown: Vec::new(),
        }
    }
}

impl<'a, C: WireObject> FlatAppend<'a, C> for FlatColumns<'a, C> {
    fn declared_in_extra(&self, object: &C) -> bool {
        declares(self.specs, object)
            || self.nested.iter().any(|&i| match &self.slots[i] {
                Slot::Column { column, .. } => column.declared_in_extra(object),
                Slot::Object { columns, .. } => columns.declared_in_extra(object),
            })
    }

    fn append(&mut self, rows: &[Option<&'a C>]) {
        let FlatColumns {
            revealed,
            slots,
            shown,
            ..
        } = self;
        for slot in slots {
            match slot {
                Slot::Column {
                    masking: Masking::None,
                    column,
                    ..
                } => column.append(rows),
                Slot::Column {
                    masking, column, ..
                } => {
                    shown.clear();
                    shown.extend(rows.iter().map(|row| {
                        row.filter(|&object| masking.shows(revealed.map(|flag| flag(object))))
                    }));
                    column.append(shown);
                }
                Slot::Object { columns, .. } => columns.append(rows),
            }
        }
    }

    fn finish(&mut self, out: &mut [Option<ArrayRef>]) {
        for slot in &mut self.slots {
            match slot {
                Slot::Column { at, column, .. } => out[*at] = Some(column.finish()),
                Slot::Object { at, columns } => columns.finish(&mut out[at.clone()]),
            }
        }
    }
}

/// The flattened columns of the object of type `C` that `get` reads from a `T`.
pub(super) struct NestedFlat<'a, T: 'static, C: 'static> {
    get: fn(&T) -> Option<&C>,
    columns: FlatColumns<'a, C>,
    /// Scratch: the objects of a piece.
    objects: Vec<Option<&'a C>>,
}

impl<'a, T, C: WireObject> NestedFlat<'a, T, C> {
    pub(super) fn new(get: fn(&T) -> Option<&C>, columns: FlatColumns<'a, C>) -> Self {
        NestedFlat {
            get,
            columns,
            objects: Vec::new(),
        }
    }
}

impl<'a, T, C: WireObject> FlatAppend<'a, T> for NestedFlat<'a, T, C> {
    fn declared_in_extra(&self, parent: &T) -> bool {
        (self.get)(parent).is_some_and(|object| self.columns.declared_in_extra(object))
    }

    fn append(&mut self, parents: &[Option<&'a T>]) {
        let get = self.get;
        self.objects.clear();
        self.objects
            .extend(parents.iter().map(|parent| parent.and_then(get)));
        self.columns.append(&self.objects);
    }

    fn finish(&mut self, out: &mut [Option<ArrayRef>]) {
        self.columns.finish(out)
    }
}

/// The open builders of the fields of objects of type `C`, unflattened and unmasked: what a
/// struct (an object inside a list item, or a list item) is made of.
struct StructColumns<'a, C: 'static> {
    specs: &'static [FieldSpec<C>],
    fields: Fields,
    columns: Vec<Column<'a, C>>,
    /// The columns that read objects below `C`: what [`Self::declared_in_extra`] asks.
    nested: Vec<usize>,
}

impl<'a, C: WireObject> StructColumns<'a, C> {
    fn new(specs: &'static [FieldSpec<C>], fields: &Fields, rows: usize) -> Self {
        let columns: Vec<Column<'a, C>> = specs
            .iter()
            .zip(fields.iter())
            .map(|(spec, field)| Column::new(spec, field, rows))
            .collect();
        let nested = (0..columns.len())
            .filter(|&i| matches!(columns[i], Column::Nested(_)))
            .collect();
        StructColumns {
            specs,
            fields: fields.clone(),
            columns,
            nested,
        }
    }

    fn declared_in_extra(&self, object: &C) -> bool {
        declares(self.specs, object)
            || self
                .nested
                .iter()
                .any(|&i| self.columns[i].declared_in_extra(object))
    }

    fn append(&mut self, rows: &[Option<&'a C>]) {
        for column in &mut self.columns {
            column.append(rows);
        }
    }

    fn finish(&mut self, nulls: Option<NullBuffer>) -> StructArray {
        let columns = self.columns.iter_mut().map(Column::finish).collect();
        StructArray::new(self.fields.clone(), columns, nulls)
    }
}

/// The object of type `C` that `get` reads from a `T`, as one `Struct` column (null where the
/// object is), nothing flattened or masked: what an object inside a list item becomes.
pub(super) struct NestedStruct<'a, T: 'static, C: 'static> {
    get: fn(&T) -> Option<&C>,
    columns: StructColumns<'a, C>,
    nulls: Bits,
    /// Scratch: the objects of a piece.
    objects: Vec<Option<&'a C>>,
}

impl<'a, T, C: WireObject> NestedStruct<'a, T, C> {
    /// `field` is the column's, of type `Struct`.
    pub(super) fn new(
        get: fn(&T) -> Option<&C>,
        specs: &'static [FieldSpec<C>],
        field: &Field,
        rows: usize,
    ) -> Self {
        let DataType::Struct(fields) = field.data_type() else {
            unreachable!("an object's field is a struct: {field}")
        };
        NestedStruct {
            get,
            columns: StructColumns::new(specs, fields, rows),
            nulls: Bits::new(rows),
            objects: Vec::new(),
        }
    }
}

impl<'a, T, C: WireObject> ColumnAppend<'a, T> for NestedStruct<'a, T, C> {
    fn declared_in_extra(&self, parent: &T) -> bool {
        (self.get)(parent).is_some_and(|object| self.columns.declared_in_extra(object))
    }

    fn append(&mut self, parents: &[Option<&'a T>]) {
        let get = self.get;
        self.objects.clear();
        self.objects
            .extend(parents.iter().map(|parent| parent.and_then(get)));
        for object in &self.objects {
            self.nulls.append(object.is_some());
        }
        self.columns.append(&self.objects);
    }

    fn finish(&mut self) -> ArrayRef {
        Arc::new(self.columns.finish(self.nulls.finish_nulls()))
    }
}

/// The lists of objects of type `C` that `get` reads from a `T`, as one `List<Struct>` column,
/// its offsets and items appended to directly.
pub(super) struct ListColumn<'a, T: 'static, C: 'static> {
    get: fn(&T) -> Option<&[C]>,
    /// The list's item field.
    item: FieldRef,
    offsets: Vec<i32>,
    nulls: Bits,
    items: StructColumns<'a, C>,
    /// Scratch: the items of a piece.
    scratch: Vec<Option<&'a C>>,
}

impl<'a, T, C: WireObject> ListColumn<'a, T, C> {
    /// `field` is the column's, of type `List<Struct>`.
    pub(super) fn new(
        get: fn(&T) -> Option<&[C]>,
        specs: &'static [FieldSpec<C>],
        field: &Field,
        rows: usize,
    ) -> Self {
        let item = list_item(field);
        let DataType::Struct(fields) = item.data_type() else {
            unreachable!("a list of objects holds structs: {field}")
        };
        // About two items a row: job history, funding events; technologies are more.
        let items = StructColumns::new(specs, fields, 2 * rows);
        let mut offsets = Vec::with_capacity(rows + 1);
        offsets.push(0);
        ListColumn {
            get,
            item,
            offsets,
            nulls: Bits::new(rows),
            items,
            scratch: Vec::new(),
        }
    }
}

impl<'a, T, C: WireObject> ColumnAppend<'a, T> for ListColumn<'a, T, C> {
    fn declared_in_extra(&self, parent: &T) -> bool {
        (self.get)(parent)
            .is_some_and(|items| items.iter().any(|item| self.items.declared_in_extra(item)))
    }

    fn append(&mut self, parents: &[Option<&'a T>]) {
        let get = self.get;
        let base = *self.offsets.last().expect("offsets start with 0") as usize;
        self.scratch.clear();
        for parent in parents {
            match parent.and_then(get) {
                Some(list) => {
                    self.scratch.extend(list.iter().map(Some));
                    self.nulls.append(true);
                }
                None => self.nulls.append(false),
            }
            self.offsets.push(offset(base + self.scratch.len()));
        }
        self.items.append(&self.scratch);
    }

    fn finish(&mut self) -> ArrayRef {
        let offsets = std::mem::replace(&mut self.offsets, vec![0]);
        Arc::new(ListArray::new(
            self.item.clone(),
            OffsetBuffer::new(offsets.into()),
            Arc::new(self.items.finish(None)),
            self.nulls.finish_nulls(),
        ))
    }
}

/// The item field of a list field.
fn list_item(field: &Field) -> FieldRef {
    match field.data_type() {
        DataType::List(item) => item.clone(),
        _ => unreachable!("a list field: {field}"),
    }
}

/// An offset into a column's values or items.
fn offset(at: usize) -> i32 {
    i32::try_from(at).expect("fewer than 2^31 bytes or list items in a column")
}

/// An open builder of one (unflattened, unmasked) column of one field of objects of type `C`.
enum Column<'a, C: 'static> {
    Utf8(fn(&C) -> Option<&str>, Utf8Builder),
    Int64(fn(&C) -> Option<i64>, Primitive<Int64Type>),
    Float64(fn(&C) -> Option<f64>, Primitive<Float64Type>),
    Boolean(fn(&C) -> Option<bool>, Booleans),
    Timestamp(
        fn(&C) -> Option<&str>,
        Primitive<TimestampMillisecondType>,
        Option<Arc<str>>,
    ),
    Utf8List(fn(&C) -> Option<&[String]>, Utf8ListBuilder),
    /// An object (a `Struct`) or a list of objects.
    Nested(Box<dyn ColumnAppend<'a, C> + 'a>),
}

impl<'a, C: WireObject> Column<'a, C> {
    /// The builder of `spec`'s column, whose field is `field`, sized for `rows` rows.
    fn new(spec: &FieldSpec<C>, field: &Field, rows: usize) -> Self {
        match spec.kind {
            Kind::Utf8(get) => Column::Utf8(get, Utf8Builder::new(rows)),
            Kind::Int64(get) => Column::Int64(get, Primitive::new(rows)),
            Kind::Float64(get) => Column::Float64(get, Primitive::new(rows)),
            Kind::Boolean(get) => Column::Boolean(get, Booleans::new(rows)),
            Kind::TimestampUtc(get) | Kind::TimestampNaive(get) => {
                let DataType::Timestamp(_, zone) = field.data_type() else {
                    unreachable!("a timestamp field: {field}")
                };
                Column::Timestamp(get, Primitive::new(rows), zone.clone())
            }
            Kind::Utf8List(get) => Column::Utf8List(get, Utf8ListBuilder::new(field, rows)),
            Kind::Object(object) => Column::Nested(object.struct_builder(field, rows)),
            Kind::ObjectList(list) => Column::Nested(list.list_builder(field, rows)),
        }
    }

    fn declared_in_extra(&self, object: &C) -> bool {
        match self {
            Column::Nested(nested) => nested.declared_in_extra(object),
            _ => false,
        }
    }

    fn append(&mut self, rows: &[Option<&'a C>]) {
        match self {
            Column::Utf8(get, builder) => {
                let get = *get;
                for row in rows {
                    builder.append(row.and_then(get));
                }
            }
            Column::Int64(get, builder) => {
                let get = *get;
                for row in rows {
                    builder.append(row.and_then(get));
                }
            }
            Column::Float64(get, builder) => {
                let get = *get;
                for row in rows {
                    builder.append(row.and_then(get));
                }
            }
            Column::Boolean(get, builder) => {
                let get = *get;
                for row in rows {
                    builder.append(row.and_then(get));
                }
            }
            Column::Timestamp(get, builder, _) => {
                let get = *get;
                for row in rows {
                    builder.append(row.and_then(get).and_then(timestamp));
                }
            }
            Column::Utf8List(get, builder) => {
                let get = *get;
                for row in rows {
                    builder.append(row.and_then(get));
                }
            }
            Column::Nested(nested) => nested.append(rows),
        }
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            Column::Utf8(_, builder) => Arc::new(builder.finish()),
            Column::Int64(_, builder) => Arc::new(builder.finish()),
            Column::Float64(_, builder) => Arc::new(builder.finish()),
            Column::Boolean(_, builder) => Arc::new(builder.finish()),
            Column::Timestamp(_, builder, zone) => {
                Arc::new(builder.finish().with_timezone_opt(zone.clone()))
            }
            Column::Utf8List(_, builder) => Arc::new(builder.finish()),
            Column::Nested(nested) => nested.finish(),
        }
    }
}

/// Milliseconds since the epoch, read as the arrow-json decoder reads a timestamp string: a
/// value with an offset is converted to UTC, one without is taken as UTC wall-clock time, and one
/// that does not parse is null.
fn timestamp(text: &str) -> Option<i64> {
    plain_timestamp(text.as_bytes()).or_else(|| {
        string_to_datetime(&chrono::Utc, text)
            .ok()
            .map(|at| at.timestamp_millis())
    })
}

/// The forms the vendor sends, `YYYY-MM-DDTHH:MM:SS`, then optionally `.` and 1 to 9 digits,
/// then optionally `Z`, read without arrow's general parser (which sets up a parser for every
/// value: a few percent of flattening); `None` for anything else, including an impossible date
/// or time, which the general parser then reads or refuses. Where this gives a value, it is the
/// general parser's (a test holds the two together).
fn plain_timestamp(text: &[u8]) -> Option<i64> {
    let [
        y0,
        y1,
        y2,
        y3,
        b'-',
        m0,
        m1,
        b'-',
        d0,
        d1,
        b'T',
        h0,
        h1,
        b':',
        n0,
        n1,
        b':',
        s0,
        s1,
        rest @ ..,
    ] = text
    else {
        return None;
    };
    let number = |digits: &[u8]| {
        digits.iter().try_fold(0u32, |n, &c| {
            c.is_ascii_digit().then(|| n * 10 + u32::from(c - b'0'))
        })
    };
    let year = number(&[*y0, *y1, *y2, *y3])?;
    let (month, day) = (number(&[*m0, *m1])?, number(&[*d0, *d1])?);
    let (hour, minute, second) = (
        number(&[*h0, *h1])?,
        number(&[*n0, *n1])?,
        number(&[*s0, *s1])?,
    );
    let (fraction, zone) = match rest {
        [b'.', digits @ ..] => {
            let n = digits.iter().take_while(|c| c.is_ascii_digit()).count();
            if !(1..=9).contains(&n) {
                return None;
            }
            digits.split_at(n)
        }
        _ => (&[][..], rest),
    };
    if !(zone.is_empty() || zone == b"Z") || hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let days = days_since_epoch(i64::from(year), month, day)?;
    let mut millis = 0;
    for at in 0..3 {
        millis = millis * 10 + fraction.get(at).map_or(0, |c| i64::from(c - b'0'));
    }
    let seconds = i64::from(hour * 3600 + minute * 60 + second);
    Some((days * 86_400 + seconds) * 1000 + millis)
}

/// Days from 1970-01-01 to the proleptic Gregorian date `year-month-day`; `None` when there is
/// no such day. Howard Hinnant's `days_from_civil`: years counted from March, so that a leap
/// day ends its year.
fn days_since_epoch(year: i64, month: u32, day: u32) -> Option<i64> {
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let days_in_month = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return None,
    };
    if !(1..=days_in_month).contains(&day) {
        return None;
    }
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let day_of_year = (153 * i64::from((month + 9) % 12) + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    Some(era * 146_097 + day_of_era - 719_468)
}

/// A `Utf8` column's offsets, bytes and validity, appended to value by value.
struct Utf8Builder {
    offsets: Vec<i32>,
    values: Vec<u8>,
    nulls: Bits,
}

impl Utf8Builder {
    /// Bytes reserved a row up front; the buffer grows from there. Sizing it exactly (a pass
    /// over the piece summing the lengths) cost more instructions than the growth saves. 32
    /// saved 1.5% of flattening's instructions, but a finished array keeps its buffer's
    /// capacity: every text column, mostly null or short ones too, would hold twice the bytes
    /// for as long as its batch lives (a whole table, in Python's `enrich`).
    const BYTES_PER_ROW: usize = 16;

    fn new(rows: usize) -> Self {
        Utf8Builder {
            nulls: Bits::new(rows),
            ..Utf8Builder::values_only(rows)
        }
    }

    /// A builder for values that are never null ([`Self::append_valid`]): no room for a
    /// validity.
    fn values_only(rows: usize) -> Self {
        let mut offsets = Vec::with_capacity(rows + 1);
        offsets.push(0);
        Utf8Builder {
            offsets,
            values: Vec::with_capacity(rows * Self::BYTES_PER_ROW),
            nulls: Bits::new(0),
        }
    }

    #[inline(always)]
    fn append(&mut self, value: Option<&str>) {
        match value {
            Some(value) => {
                self.values.extend_from_slice(value.as_bytes());
                self.nulls.append(true);
            }
            None => self.nulls.append(false),
        }
        self.offsets.push(offset(self.values.len()));
    }

    /// [`Self::append`] of a value, in a builder that never holds a null (a list's strings):
    /// no validity bit is kept, and `finish` gives no validity.
    #[inline(always)]
    fn append_valid(&mut self, value: &str) {
        debug_assert_eq!(self.nulls.len, 0, "a builder of values only");
        self.values.extend_from_slice(value.as_bytes());
        self.offsets.push(offset(self.values.len()));
    }

    fn finish(&mut self) -> StringArray {
        let offsets = std::mem::replace(&mut self.offsets, vec![0]);
        let values = std::mem::take(&mut self.values);
        // SAFETY: the offsets start at 0, never decrease and end at the length of `values`
        // (each is the length of `values` after a whole `&str` was appended, checked to fit an
        // i32); so `values` is UTF-8 and every offset falls on a character boundary. The
        // validity has one entry a value, or is none when every value came through
        // `append_valid`.
        unsafe {
            StringArray::new_unchecked(
                OffsetBuffer::new_unchecked(offsets.into()),
                Buffer::from_vec(values),
                self.nulls.finish_nulls(),
            )
        }
    }
}

/// Bits appended one at a time into a plain byte vector (an ordinary allocation, where arrow's
/// builders ask for 64-byte aligned ones, which cost several times as much to allocate).
struct Bits {
    bits: Vec<u8>,
    len: usize,
    /// How many zeros.
    zeros: usize,
}

impl Bits {
    fn new(rows: usize) -> Self {
        Bits {
            bits: Vec::with_capacity(rows.div_ceil(8)),
            len: 0,
            zeros: 0,
        }
    }

    #[inline(always)]
    fn append(&mut self, bit: bool) {
        let at = self.len % 8;
        if at == 0 {
            self.bits.push(u8::from(bit));
        } else if let Some(last) = self.bits.last_mut() {
            *last |= u8::from(bit) << at;
        }
        self.len += 1;
        self.zeros += usize::from(!bit);
    }

    /// The bits so far; starts over, empty.
    fn finish(&mut self) -> BooleanBuffer {
        let len = std::mem::take(&mut self.len);
        self.zeros = 0;
        BooleanBuffer::new(Buffer::from_vec(std::mem::take(&mut self.bits)), 0, len)
    }

    /// The bits so far as a validity (`None` when every value is valid); starts over, empty.
    fn finish_nulls(&mut self) -> Option<NullBuffer> {
        if self.zeros == 0 {
            self.len = 0;
            self.bits.clear();
            return None;
        }
        let zeros = self.zeros;
        // SAFETY: `zeros` counts the zero bits appended since the last finish, which are the
        // buffer's (`NullBuffer::new` would count them again).
        Some(unsafe { NullBuffer::new_unchecked(self.finish(), zeros) })
    }
}

/// A primitive column's values and validity.
struct Primitive<T: ArrowPrimitiveType> {
    values: Vec<T::Native>,
    nulls: Bits,
}

impl<T: ArrowPrimitiveType> Primitive<T> {
    fn new(rows: usize) -> Self {
        Primitive {
            values: Vec::with_capacity(rows),
            nulls: Bits::new(rows),
        }
    }

    #[inline]
    fn append(&mut self, value: Option<T::Native>) {
        self.values.push(value.unwrap_or_default());
        self.nulls.append(value.is_some());
    }

    fn finish(&mut self) -> PrimitiveArray<T> {
        let values = std::mem::take(&mut self.values);
        PrimitiveArray::new(values.into(), self.nulls.finish_nulls())
    }
}

/// A `Boolean` column's values and validity.
struct Booleans {
    values: Bits,
    nulls: Bits,
}

impl Booleans {
    fn new(rows: usize) -> Self {
        Booleans {
            values: Bits::new(rows),
            nulls: Bits::new(rows),
        }
    }

    #[inline]
    fn append(&mut self, value: Option<bool>) {
        self.values.append(value.unwrap_or(false));
        self.nulls.append(value.is_some());
    }

    fn finish(&mut self) -> BooleanArray {
        BooleanArray::new(self.values.finish(), self.nulls.finish_nulls())
    }
}

/// A `List<Utf8>` column: offsets and validity of the lists, and their strings.
struct Utf8ListBuilder {
    /// The list's item field.
    item: FieldRef,
    offsets: Vec<i32>,
    nulls: Bits,
    values: Utf8Builder,
    /// Strings appended since the last finish.
    count: usize,
}

impl Utf8ListBuilder {
    /// `field` is the column's, of type `List<Utf8>`.
    fn new(field: &Field, rows: usize) -> Self {
        let mut offsets = Vec::with_capacity(rows + 1);
        offsets.push(0);
        Utf8ListBuilder {
            item: list_item(field),
            offsets,
            nulls: Bits::new(rows),
            // About four strings a list: skills, keywords.
            values: Utf8Builder::values_only(4 * rows),
            count: 0,
        }
    }

    #[inline]
    fn append(&mut self, list: Option<&[String]>) {
        match list {
            Some(list) => {
                for value in list {
                    self.values.append_valid(value);
                }
                self.count += list.len();
                self.nulls.append(true);
            }
            None => self.nulls.append(false),
        }
        self.offsets.push(offset(self.count));
    }

    fn finish(&mut self) -> ListArray {
        let offsets = std::mem::replace(&mut self.offsets, vec![0]);
        self.count = 0;
        ListArray::new(
            self.item.clone(),
            OffsetBuffer::new(offsets.into()),
            Arc::new(self.values.finish()),
            self.nulls.finish_nulls(),
        )
    }
}

/// The nested-object seam of `fields.rs`, built here: builders of the flattened or struct
/// columns, and the decoder's columns for the rare object it must read.
impl<T, C: WireObject> NestedObject<T> for One<T, C> {
    fn fields(&self) -> Fields {
        struct_fields(self.1)
    }

    fn flat_fields(&self, path: &str, out: &mut Vec<Field>) {
        flat_fields(self.1, path, out)
    }

    fn width(&self) -> usize {
        width(self.1)
    }

    fn decoded_columns(
        &self,
        object: &StructArray,
        out: &mut Vec<ArrayRef>,
    ) -> Result<(), ArrowError> {
        decoder::flat_columns(self.1, object, out)
    }

    fn flat_builder<'a>(
        &self,
        fields: &[FieldRef],
        wanted: &[bool],
        rows: usize,
    ) -> Box<dyn FlatAppend<'a, T> + 'a> {
        let columns = FlatColumns::new(self.1, fields, wanted, rows);
        Box::new(NestedFlat::new(self.0, columns))
    }

    fn struct_builder<'a>(&self, field: &Field, rows: usize) -> Box<dyn ColumnAppend<'a, T> + 'a> {
        Box::new(NestedStruct::new(self.0, self.1, field, rows))
    }

    #[cfg(test)]
    fn masked_without_flag(&self) -> bool {
        masked_without_flag(self.1)
    }
}

impl<T, C: WireObject> NestedList<T> for Many<T, C> {
    fn fields(&self) -> Fields {
        struct_fields(self.1)
    }

    fn list_builder<'a>(&self, field: &Field, rows: usize) -> Box<dyn ColumnAppend<'a, T> + 'a> {
        Box::new(ListColumn::new(self.0, self.1, field, rows))
    }

    #[cfg(test)]
    fn masked_without_flag(&self) -> bool {
        masked_without_flag(self.1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SplitMix64;

    /// Arrow's parser, as the decoder path reads a timestamp.
    fn general(text: &str) -> Option<i64> {
        string_to_datetime(&chrono::Utc, text)
            .ok()
            .map(|at| at.timestamp_millis())
    }

    #[test]
    fn the_vendors_timestamps_read_as_arrows_parser_reads_them_without_it() {
        for (text, millis) in [
            ("1970-01-01T00:00:00Z", 0),
            ("1970-01-01T00:00:01.5Z", 1_500),
            ("1969-12-31T23:59:59.250Z", -750),
            ("2024-02-29T23:59:59.999999999Z", 1_709_251_199_999),
            ("2000-02-29T00:00:00Z", 951_782_400_000),
            ("0000-02-29T00:00:00Z", -62_162_121_600_000),
            ("0000-01-01T00:00:00Z", -62_167_219_200_000),
            ("2021-06-01T00:00:00", 1_622_505_600_000),
        ] {
            assert_eq!(plain_timestamp(text.as_bytes()), Some(millis), "{text}");
            assert_eq!(general(text), Some(millis), "{text}");
        }
        // Not the plain form, or not a time: left to the general parser.
        for text in [
            "2023-02-29T00:00:00Z",
            "1900-02-29T00:00:00Z",
            "2100-02-29T00:00:00Z",
            "2024-13-01T00:00:00Z",
            "2024-01-01T24:00:00Z",
            "2024-01-01T23:59:60Z",
            "2024-01-01T00:00:00.Z",
            "2024-01-01T00:00:00.1234567890Z",
            "2024-01-01T00:00:00+02:00",
            "2024-01-01 00:00:00",
            "2024-01-01",
            "last Tuesday",
        ] {
            assert_eq!(plain_timestamp(text.as_bytes()), None, "{text}");
        }
        assert_eq!(
            timestamp("2024-01-01T02:00:00+02:00"),
            Some(1_704_067_200_000)
        );
        assert_eq!(timestamp("last Tuesday"), None);
    }

    #[test]
    fn wherever_the_plain_reading_gives_a_time_it_is_arrows() {
        let mut rng = SplitMix64::new(11);
        let mut read = 0;
        let number = |rng: &mut SplitMix64, low: i64, high: i64, width: usize| {
            format!("{:0width$}", rng.range(low, high))
        };
        for _ in 0..50_000 {
            let date = format!(
                "{}-{}-{}",
                number(&mut rng, 0, 9999, 4),
                number(&mut rng, 0, 13, 2),
                number(&mut rng, 0, 32, 2)
            );
            let time = format!(
                "{}:{}:{}",
                number(&mut rng, 0, 25, 2),
                number(&mut rng, 0, 60, 2),
                number(&mut rng, 0, 61, 2)
            );
            let digits = rng.index(12);
            let fraction = match digits {
                0 => String::new(),
                n => format!(
                    ".{}",
                    &number(&mut rng, 0, 999_999_999, 9).repeat(2)[..n - 1]
                ),
            };
            let zone = *rng.pick(&["", "Z", "z", "+00:00", "-03:30", " "]);
            let text = format!("{date}T{time}{fraction}{zone}");
            if let Some(millis) = plain_timestamp(text.as_bytes()) {
                assert_eq!(Some(millis), general(&text), "{text}");
                read += 1;
            }
        }
        assert!(read > 5_000, "the plain reading took {read} of 50,000");
    }
}
