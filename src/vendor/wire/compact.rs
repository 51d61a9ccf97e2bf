//! A compact binary form of the person and company objects, for the response cache.
//!
//! JSON costs most of a cache write and most of a re-run: every key written and matched again,
//! every string escaped and scanned, every number printed and parsed. This form writes what the
//! types already know, field by field:
//!
//! - an object: a varint bitmap of the fields present (bit `i` is the `i`-th field as
//!   declared; bit 63, [`EXTRA_BIT`], is `extra`), then each present field in order, then
//!   `extra` as the JSON text of its map (fields this version does not know: rare, small);
//! - a string: its byte length as a varint; its bytes go to the value's string section, after
//!   everything else, so that a reader checks all the text of a value as UTF-8 at once (SIMD)
//!   instead of string by string;
//! - an integer: a zigzag varint; a float: 8 bytes little-endian; a boolean: one byte; a list:
//!   a varint count and the items.
//!
//! A value is the length of its structure (varint), the structure, then the string section.
//! Fields are named by their place, so a field's place and type never change: a new field goes
//! after the last one ([`schema_fingerprint`] pins the lists; a value written under other
//! lists does not decode unless [`layout_of`] lists them as earlier ones). Reading
//! never panics and never allocates more than the input could hold: damaged bytes are an
//! `Err`.

use serde_json::{Map, Value};

/// A value in the compact form.
pub trait Compact: Sized {
    /// Appends the value.
    fn put(&self, out: &mut Writer);
    /// Reads a value from the front of `input`.
    fn take(input: &mut Reader<'_>) -> Result<Self, String>;
}

/// The bit of an object's bitmap that says its `extra` follows: the last of the 64, whatever
/// the object's number of fields, so that a field appended later never takes it.
pub const EXTRA_BIT: u64 = 1 << 63;

/// Where a value marks an object's `extra`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Layout {
    /// At [`EXTRA_BIT`].
    #[default]
    Current,
    /// At the bit after the object's last field: the first values of this form, written under
    /// [`first_layout_fingerprint`] (read only while the field lists are those they were
    /// written under: a field appended since would take that bit).
    ExtraAfterFields,
}

impl Layout {
    /// The bit that marks `extra` in an object whose fields take the bits below `after_fields`.
    pub fn extra_bit(self, after_fields: u64) -> u64 {
        match self {
            Layout::Current => EXTRA_BIT,
            Layout::ExtraAfterFields => after_fields,
        }
    }
}

/// A value being written: its structure and its string section.
#[derive(Debug, Default)]
pub struct Writer {
    structure: Vec<u8>,
    text: Vec<u8>,
    layout: Layout,
}

impl Writer {
    /// A writer with room for `bytes` of structure and of text each.
    pub fn with_capacity(bytes: usize) -> Self {
        Writer {
            structure: Vec::with_capacity(bytes),
            text: Vec::with_capacity(bytes),
            layout: Layout::Current,
        }
    }

    /// A writer of the first layout, as the first build of this form wrote.
    #[cfg(test)]
    pub(crate) fn first_layout() -> Self {
        Writer {
            layout: Layout::ExtraAfterFields,
            ..Writer::default()
        }
    }

    /// The layout this writer writes.
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// Appends an unsigned LEB128 varint to the structure.
    pub fn varint(&mut self, value: u64) {
        put_varint(&mut self.structure, value);
    }

    /// Appends one byte to the structure.
    pub fn byte(&mut self, byte: u8) {
        self.structure.push(byte);
    }

    /// Appends bytes to the structure, with their length.
    pub fn bytes(&mut self, bytes: &[u8]) {
        self.varint(bytes.len() as u64);
        self.structure.extend_from_slice(bytes);
    }

    /// Appends a string: its length to the structure, its bytes to the string section.
    pub fn text(&mut self, text: &str) {
        self.varint(text.len() as u64);
        self.text.extend_from_slice(text.as_bytes());
    }

    /// The value: the structure's length, the structure, the string section.
    pub fn finish(self) -> Vec<u8> {
        let mut out = Vec::with_capacity(10 + self.structure.len() + self.text.len());
        put_varint(&mut out, self.structure.len() as u64);
        out.extend_from_slice(&self.structure);
        out.extend_from_slice(&self.text);
        out
    }
}

/// What is left to read of a value.
pub struct Reader<'a> {
    structure: &'a [u8],
    text: &'a str,
    layout: Layout,
}

impl<'a> Reader<'a> {
    /// A reader over a value [`Writer::finish`] made in `layout`; `Err` when its string
    /// section is not UTF-8 or its structure's length is past the end.
    pub fn new(value: &'a [u8], layout: Layout) -> Result<Self, String> {
        let mut head = Reader {
            structure: value,
            text: "",
            layout,
        };
        let n = head.length()?;
        let (structure, text) = head.structure.split_at(n);
        let text = simdutf8::basic::from_utf8(text).map_err(|_| "the text is not UTF-8")?;
        Ok(Reader {
            structure,
            text,
            layout,
        })
    }

    /// The layout of the value.
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// Whether every byte was read.
    pub fn is_empty(&self) -> bool {
        self.structure.is_empty() && self.text.is_empty()
    }

    /// The next `n` bytes of the structure.
    fn take_bytes(&mut self, n: usize) -> Result<&'a [u8], String> {
        if n > self.structure.len() {
            return Err(format!("{n} bytes wanted, {} left", self.structure.len()));
        }
        let (head, rest) = self.structure.split_at(n);
        self.structure = rest;
        Ok(head)
    }

    /// The next byte of the structure.
    pub fn byte(&mut self) -> Result<u8, String> {
        Ok(self.take_bytes(1)?[0])
    }

    /// The next bytes of the structure [`Writer::bytes`] wrote.
    pub fn bytes(&mut self) -> Result<&'a [u8], String> {
        let n = self.length()?;
        self.take_bytes(n)
    }

    /// The next string [`Writer::text`] wrote.
    pub fn text(&mut self) -> Result<&'a str, String> {
        let n = usize::try_from(self.varint()?).unwrap_or(usize::MAX);
        // `get` checks that the cut falls between characters (the section is UTF-8 already).
        let text = self
            .text
            .get(..n)
            .ok_or("a string is past the end or cuts a character")?;
        self.text = &self.text[n..];
        Ok(text)
    }

    /// The next unsigned LEB128 varint.
    pub fn varint(&mut self) -> Result<u64, String> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let Some((&byte, rest)) = self.structure.split_first() else {
                return Err("a number is cut off".into());
            };
            self.structure = rest;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err("a number is longer than 64 bits".into())
    }

    /// A varint count of items, checked against the structure left: every item takes at
    /// least one byte of it.
    pub fn count(&mut self) -> Result<usize, String> {
        let n = self.varint()?;
        match usize::try_from(n) {
            Ok(n) if n <= self.structure.len() => Ok(n),
            _ => Err(format!("a count of {n} is past the end")),
        }
    }

    /// A varint length of bytes, checked against what is left, so that a damaged length never
    /// allocates more than the input could hold.
    pub fn length(&mut self) -> Result<usize, String> {
        let n = self.varint()?;
        match usize::try_from(n) {
            Ok(n) if n <= self.structure.len() + self.text.len() => Ok(n),
            _ => Err(format!("a length of {n} is past the end")),
        }
    }
}

/// Appends `value` as an unsigned LEB128 varint.
fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push(value as u8 | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

impl Compact for String {
    fn put(&self, out: &mut Writer) {
        out.text(self);
    }

    fn take(input: &mut Reader<'_>) -> Result<Self, String> {
        input.text().map(str::to_owned)
    }
}

impl Compact for i64 {
    fn put(&self, out: &mut Writer) {
        out.varint(((self << 1) ^ (self >> 63)) as u64);
    }

    fn take(input: &mut Reader<'_>) -> Result<Self, String> {
        let n = input.varint()?;
        Ok((n >> 1) as i64 ^ -((n & 1) as i64))
    }
}

impl Compact for f64 {
    fn put(&self, out: &mut Writer) {
        out.structure.extend_from_slice(&self.to_le_bytes());
    }

    fn take(input: &mut Reader<'_>) -> Result<Self, String> {
        let bytes = input.take_bytes(8)?;
        // JSON has no NaN nor infinity: the lenient reader never makes one.
        Some(f64::from_le_bytes(bytes.try_into().expect("eight bytes")))
            .filter(|f| f.is_finite())
            .ok_or_else(|| "a number is not finite".into())
    }
}

impl Compact for bool {
    fn put(&self, out: &mut Writer) {
        out.byte(u8::from(*self));
    }

    fn take(input: &mut Reader<'_>) -> Result<Self, String> {
        match input.byte()? {
            0 => Ok(false),
            1 => Ok(true),
            b => Err(format!("{b} is not a boolean")),
        }
    }
}

impl<T: Compact> Compact for Vec<T> {
    fn put(&self, out: &mut Writer) {
        out.varint(self.len() as u64);
        for item in self {
            item.put(out);
        }
    }

    fn take(input: &mut Reader<'_>) -> Result<Self, String> {
        let n = input.count()?;
        // Room for a usual list only: a damaged count must not reserve gigabytes up front.
        let mut items = Vec::with_capacity(n.min(64));
        for _ in 0..n {
            items.push(T::take(input)?);
        }
        Ok(items)
    }
}

/// Appends an optional value by reference, as `Option<T>`'s [`Compact::take`] reads it.
pub fn put_option<T: Compact>(out: &mut Writer, value: Option<&T>) {
    match value {
        None => out.byte(0),
        Some(value) => {
            out.byte(1);
            value.put(out);
        }
    }
}

impl<T: Compact> Compact for Option<T> {
    fn put(&self, out: &mut Writer) {
        put_option(out, self.as_ref());
    }

    fn take(input: &mut Reader<'_>) -> Result<Self, String> {
        match bool::take(input)? {
            false => Ok(None),
            true => T::take(input).map(Some),
        }
    }
}

/// Appends an object's unknown fields as the JSON text of their map.
pub(super) fn put_extra(out: &mut Writer, extra: &Map<String, Value>) {
    // A map of JSON values always serialises.
    let json = serde_json::to_vec(extra).expect("a JSON map serialises");
    out.bytes(&json);
}

/// Reads an object's unknown fields.
pub(super) fn take_extra(input: &mut Reader<'_>) -> Result<Map<String, Value>, String> {
    serde_json::from_slice(input.bytes()?).map_err(|e| format!("unknown fields: {e}"))
}

/// Fingerprints of earlier field lists (of the current layout) whose values this version still
/// reads. When a field is appended to a wire object, the fingerprint before it goes here:
/// values written under it read as they are (their bitmaps lack the new field's bit; `extra`
/// keeps bit 63). A field moved, renamed or retyped cannot be listed: its values would read
/// wrong.
const EARLIER_FINGERPRINTS: &[u32] = &[];

/// The layout of a value written under the field lists `fingerprint` names; `None` when this
/// version does not read it.
pub fn layout_of(fingerprint: u32) -> Option<Layout> {
    if fingerprint == schema_fingerprint() || EARLIER_FINGERPRINTS.contains(&fingerprint) {
        Some(Layout::Current)
    } else if fingerprint == first_layout_fingerprint() {
        Some(Layout::ExtraAfterFields)
    } else {
        None
    }
}

/// The compact form's field lists (every wire object's field names and types, in order) and
/// its layout, as a number: a value written under other lists does not decode (see
/// [`layout_of`]).
pub fn schema_fingerprint() -> u32 {
    use std::sync::OnceLock;
    static FINGERPRINT: OnceLock<u32> = OnceLock::new();
    *FINGERPRINT
        .get_or_init(|| fingerprint(std::iter::once("extra:63").chain(super::compact_schema())))
}

/// The fingerprint the first build of this form wrote for the current field lists (the lists
/// alone; its `extra` was the bit after an object's last field). Its values read only while
/// the lists are the ones they were written under: once a field is appended this fingerprint
/// changes, and those values become misses instead of being read wrong.
pub fn first_layout_fingerprint() -> u32 {
    use std::sync::OnceLock;
    static FINGERPRINT: OnceLock<u32> = OnceLock::new();
    *FINGERPRINT.get_or_init(|| fingerprint(super::compact_schema()))
}

/// FNV-1a of `names`, each followed by `;`: stable across builds and platforms (std's hasher
/// is not). Whitespace is left out: `stringify!` may space a type differently in another
/// compiler version.
fn fingerprint(names: impl Iterator<Item = &'static str>) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for name in names {
        let bytes = name.as_bytes().iter().chain(b";");
        for &byte in bytes.filter(|b| !b.is_ascii_whitespace()) {
            hash ^= u32::from(byte);
            hash = hash.wrapping_mul(0x0100_0193);
        }
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value_of<T: Compact>(value: &T) -> Vec<u8> {
        let mut out = Writer::default();
        value.put(&mut out);
        out.finish()
    }

    fn round_trip<T: Compact + PartialEq + std::fmt::Debug>(value: T) {
        let bytes = value_of(&value);
        let mut input = Reader::new(&bytes, Layout::Current).unwrap();
        assert_eq!(T::take(&mut input).unwrap(), value);
        assert!(input.is_empty());
    }

    fn read<T: Compact>(bytes: &[u8]) -> Result<T, String> {
        T::take(&mut Reader::new(bytes, Layout::Current)?)
    }

    #[test]
    fn scalars_round_trip() {
        for n in [0, 1, -1, 63, -64, 64, i64::MAX, i64::MIN, 1_234_567_890_123] {
            round_trip(n);
        }
        for f in [0.0, -7.5, 5.5, f64::MAX] {
            round_trip(f);
        }
        assert!(read::<f64>(&value_of(&f64::NAN)).is_err());
        round_trip(true);
        round_trip(false);
        round_trip(String::new());
        round_trip("Zoë Ångström 東京".to_string());
        round_trip(vec!["a".to_string(), String::new(), "é".to_string()]);
        round_trip(Some(vec![3i64, -4]));
        round_trip(None::<String>);
    }

    #[test]
    fn damaged_bytes_are_errors_not_panics_or_huge_allocations() {
        // A count far past the end.
        let mut out = Writer::default();
        out.varint(u64::MAX / 2);
        let huge = out.finish();
        assert!(read::<Vec<i64>>(&huge).is_err());
        assert!(read::<String>(&huge).is_err());
        // A count the structure cannot hold, though the text could.
        let mut out = Writer::default();
        out.varint(1000);
        out.text("x".repeat(5000).as_str());
        assert!(read::<Vec<String>>(&out.finish()).is_err());
        // Cut off anywhere.
        let bytes = value_of(&vec!["hello".to_string(), "wörld".to_string()]);
        for cut in 0..bytes.len() {
            assert!(read::<Vec<String>>(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        // A string that cuts a character in two.
        let mut out = Writer::default();
        out.varint(1);
        out.text.extend_from_slice("é".as_bytes());
        assert!(read::<String>(&out.finish()).is_err());
        // Not UTF-8; not a boolean; a number longer than 64 bits.
        let mut out = Writer::default();
        out.varint(2);
        out.text.extend_from_slice(&[0xff, 0xfe]);
        assert!(read::<String>(&out.finish()).is_err());
        assert!(read::<bool>(&[1, 2]).is_err());
        assert!(
            read::<i64>(&[
                11, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01
            ])
            .is_err()
        );
        assert!(read::<f64>(&[3, 1, 2, 3]).is_err());
    }
}
