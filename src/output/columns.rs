//! Columns built straight from the typed wire structs, only those a query reads.
//!
//! The builders of a batch's columns stay open while its rows are appended piece by piece (see
//! `PIECE_ROWS` in `mod.rs`): within a piece each column takes its values in one pass over the
//! piece's rows, and the finished columns need no joining.
//!
//! Values are the ones the arrow-json decoder (`decoder.rs`) makes of the same structs:
//! timestamps go through the same parser (`string_to_datetime`), and one that does not parse is
//! null; a null object has null fields. The tests in `mod.rs` hold the two paths to that.

use std::ops::Range;
use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, BooleanBuilder, Float64Builder, Int64Builder, ListArray, NullBufferBuilder,
    StringArray, StructArray, TimestampMillisecondBuilder,
};
use datafusion::arrow::buffer::{Buffer, NullBuffer, OffsetBuffer};
use datafusion::arrow::compute::kernels::cast_utils::string_to_datetime;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Fields};

use super::fields::{FieldSpec, Kind, Masking, WireObject, revealed_flag};

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
    /// [`flat_fields`](super::fields::flat_fields), only the wanted ones); the builders start
    /// over, empty.
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
        FlatColumns {
            specs,
            revealed: revealed_flag(specs),
            slots,
            shown: Vec::new(),
        }
    }
}

impl<'a, C: WireObject> FlatAppend<'a, C> for FlatColumns<'a, C> {
    fn declared_in_extra(&self, object: &C) -> bool {
        declares(self.specs, object)
            || self.slots.iter().any(|slot| match slot {
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
}

impl<'a, C: WireObject> StructColumns<'a, C> {
    fn new(specs: &'static [FieldSpec<C>], fields: &Fields, rows: usize) -> Self {
        let columns = specs
            .iter()
            .zip(fields.iter())
            .map(|(spec, field)| Column::new(spec, field, rows))
            .collect();
        StructColumns {
            specs,
            fields: fields.clone(),
            columns,
        }
    }

    fn declared_in_extra(&self, object: &C) -> bool {
        declares(self.specs, object)
            || self
                .columns
                .iter()
                .any(|column| column.declared_in_extra(object))
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
    nulls: NullBufferBuilder,
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
            nulls: NullBufferBuilder::new(rows),
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
        Arc::new(self.columns.finish(self.nulls.finish()))
    }
}

/// The lists of objects of type `C` that `get` reads from a `T`, as one `List<Struct>` column,
/// its offsets and items appended to directly.
pub(super) struct ListColumn<'a, T: 'static, C: 'static> {
    get: fn(&T) -> Option<&[C]>,
    /// The list's item field.
    item: FieldRef,
    offsets: Vec<i32>,
    nulls: NullBufferBuilder,
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
            nulls: NullBufferBuilder::new(rows),
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
                    self.nulls.append_non_null();
                }
                None => self.nulls.append_null(),
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
            self.nulls.finish(),
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
    Int64(fn(&C) -> Option<i64>, Int64Builder),
    Float64(fn(&C) -> Option<f64>, Float64Builder),
    Boolean(fn(&C) -> Option<bool>, BooleanBuilder),
    Timestamp(fn(&C) -> Option<&str>, TimestampMillisecondBuilder),
    Utf8List(fn(&C) -> Option<&[String]>, Utf8ListBuilder),
    /// An object (a `Struct`) or a list of objects.
    Nested(Box<dyn ColumnAppend<'a, C> + 'a>),
}

impl<'a, C: WireObject> Column<'a, C> {
    /// The builder of `spec`'s column, whose field is `field`, sized for `rows` rows.
    fn new(spec: &FieldSpec<C>, field: &Field, rows: usize) -> Self {
        match spec.kind {
            Kind::Utf8(get) => Column::Utf8(get, Utf8Builder::new(rows)),
            Kind::Int64(get) => Column::Int64(get, Int64Builder::with_capacity(rows)),
            Kind::Float64(get) => Column::Float64(get, Float64Builder::with_capacity(rows)),
            Kind::Boolean(get) => Column::Boolean(get, BooleanBuilder::with_capacity(rows)),
            Kind::TimestampUtc(get) | Kind::TimestampNaive(get) => {
                let DataType::Timestamp(_, zone) = field.data_type() else {
                    unreachable!("a timestamp field: {field}")
                };
                let builder = TimestampMillisecondBuilder::with_capacity(rows)
                    .with_timezone_opt(zone.clone());
                Column::Timestamp(get, builder)
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
                    builder.append_option(row.and_then(get));
                }
            }
            Column::Float64(get, builder) => {
                let get = *get;
                for row in rows {
                    builder.append_option(row.and_then(get));
                }
            }
            Column::Boolean(get, builder) => {
                let get = *get;
                for row in rows {
                    builder.append_option(row.and_then(get));
                }
            }
            Column::Timestamp(get, builder) => {
                let get = *get;
                for row in rows {
                    builder.append_option(row.and_then(get).and_then(timestamp));
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
            Column::Timestamp(_, builder) => Arc::new(builder.finish()),
            Column::Utf8List(_, builder) => Arc::new(builder.finish()),
            Column::Nested(nested) => nested.finish(),
        }
    }
}

/// Milliseconds since the epoch, read as the arrow-json decoder reads a timestamp string: a
/// value with an offset is converted to UTC, one without is taken as UTC wall-clock time, and one
/// that does not parse is null.
fn timestamp(text: &str) -> Option<i64> {
    string_to_datetime(&chrono::Utc, text)
        .ok()
        .map(|at| at.timestamp_millis())
}

/// A `Utf8` column's offsets, bytes and validity, appended to value by value.
struct Utf8Builder {
    offsets: Vec<i32>,
    values: Vec<u8>,
    nulls: NullBufferBuilder,
}

impl Utf8Builder {
    /// Bytes reserved a row up front; the buffer grows from there.
    const BYTES_PER_ROW: usize = 16;

    fn new(rows: usize) -> Self {
        let mut offsets = Vec::with_capacity(rows + 1);
        offsets.push(0);
        Utf8Builder {
            offsets,
            values: Vec::with_capacity(rows * Self::BYTES_PER_ROW),
            nulls: NullBufferBuilder::new(rows),
        }
    }

    fn append(&mut self, value: Option<&str>) {
        match value {
            Some(value) => {
                self.values.extend_from_slice(value.as_bytes());
                self.nulls.append_non_null();
            }
            None => self.nulls.append_null(),
        }
        self.offsets.push(offset(self.values.len()));
    }

    fn finish(&mut self) -> StringArray {
        let offsets = std::mem::replace(&mut self.offsets, vec![0]);
        let values = std::mem::take(&mut self.values);
        // SAFETY: the offsets start at 0, never decrease and end at the length of `values`
        // (each is the length of `values` after a whole `&str` was appended, checked to fit an
        // i32); so `values` is UTF-8 and every offset falls on a character boundary. The
        // validity has one entry a value.
        unsafe {
            StringArray::new_unchecked(
                OffsetBuffer::new_unchecked(offsets.into()),
                Buffer::from_vec(values),
                self.nulls.finish(),
            )
        }
    }
}

/// A `List<Utf8>` column: offsets and validity of the lists, and their strings.
struct Utf8ListBuilder {
    /// The list's item field.
    item: FieldRef,
    offsets: Vec<i32>,
    nulls: NullBufferBuilder,
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
            nulls: NullBufferBuilder::new(rows),
            // About four strings a list: skills, keywords.
            values: Utf8Builder::new(4 * rows),
            count: 0,
        }
    }

    fn append(&mut self, list: Option<&[String]>) {
        match list {
            Some(list) => {
                for value in list {
                    self.values.append(Some(value));
                }
                self.count += list.len();
                self.nulls.append_non_null();
            }
            None => self.nulls.append_null(),
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
            self.nulls.finish(),
        )
    }
}
