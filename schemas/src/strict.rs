//! A strict check of an Avro binary body against its writer schema, run before `apache-avro`
//! decodes it.
//!
//! `apache-avro` (0.22) is lenient where a bus reader must not be: at the end of its input it reads
//! a missing union as its first branch (`null`), a missing string and a missing boolean as `null`,
//! so a body cut short decodes with its last fields defaulted (an `Article` missing its last byte
//! was stored with `ts_crawled` NULL); a length or block count of a few bytes makes it allocate up
//! to 512 MiB before it finds the bytes are not there; and it takes varints of more than 64 bits.
//! [`check`] walks the body as the writer schema lays it out and refuses all of that: every value
//! must be whole, varints at most 64 bits and in their shortest form, lengths and block counts
//! non-negative (a negative block count is the spec's sized block: its size must match) and within
//! the bytes left, union and enum indexes in range, booleans 0 or 1, strings UTF-8, ints 32-bit.
//! It returns how many bytes the value took, so the caller refuses trailing bytes too.

use std::collections::HashMap;

use crate::typed::{blocks, Cursor, Reader};
use apache_avro::schema::{InnerDecimalSchema, Name, Schema, UuidSchema};

/// Deepest nesting of records, arrays, maps and unions a body may have (bounds the recursion of
/// recursive schemas).
pub const MAX_DEPTH: usize = 64;

/// Most items an array or map whose items take no bytes (`null`s, empty records) may hold.
pub const MAX_EMPTY_ITEMS: u64 = 1 << 16;

/// Why an Avro body does not match its writer schema. Offsets count from the body's first byte
/// (after the single-object header).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    #[error("the body ends at byte {at} inside {what}: it is truncated")]
    Truncated { at: usize, what: &'static str },
    #[error("varint at byte {at} is longer than 64 bits")]
    VarintOverflow { at: usize },
    #[error("varint at byte {at} is overlong (not in its shortest form)")]
    OverlongVarint { at: usize },
    #[error("int at byte {at} is {value}, outside 32 bits")]
    IntRange { at: usize, value: i64 },
    #[error("negative length {len} at byte {at}")]
    NegativeLength { at: usize, len: i64 },
    #[error("length {len} at byte {at} runs past the end of the body ({left} bytes left)")]
    LengthPastEnd { at: usize, len: i64, left: usize },
    #[error("block count {count} at byte {at} cannot fit in the {left} bytes left")]
    BlockCount { at: usize, count: i64, left: usize },
    #[error("block at byte {at} gives its size as {size} bytes, its items took {actual}")]
    BlockSize { at: usize, size: i64, actual: usize },
    #[error("union index {index} at byte {at}: the union has {variants} branches")]
    UnionIndex { at: usize, index: i64, variants: usize },
    #[error("enum index {index} at byte {at}: the enum has {symbols} symbols")]
    EnumIndex { at: usize, index: i64, symbols: usize },
    #[error("boolean at byte {at} is {byte:#04x}, not 0 or 1")]
    Boolean { at: usize, byte: u8 },
    #[error("string at byte {at} is not UTF-8")]
    Utf8 { at: usize },
    #[error("the schema names {0}, which it does not define")]
    UnknownName(String),
    #[error("values nested deeper than {MAX_DEPTH} levels")]
    TooDeep,
}

/// Named types of a schema by full name (what `apache_avro::schema::ResolvedSchema::get_names`
/// gives).
pub type Names<'s> = HashMap<Name, &'s Schema>;

/// Checks that `body` starts with one whole, well-formed value of `schema`; returns the bytes it
/// took (fewer than `body.len()` means trailing bytes).
pub fn check(schema: &Schema, names: &Names<'_>, body: &[u8]) -> Result<usize, Malformed> {
    let mut w = Walk {
        r: Reader::new(body),
        names,
    };
    w.value(schema, None, 0)?;
    Ok(w.r.pos)
}

/// The check: a [`Reader`] (the typed codec's cursor, whose primitives do the byte-level checks)
/// walked along a schema.
struct Walk<'b, 'n, 's> {
    r: Reader<'b>,
    names: &'n Names<'s>,
}

impl<'b> Cursor<'b> for Walk<'b, '_, '_> {
    fn reader(&mut self) -> &mut Reader<'b> {
        &mut self.r
    }
}

impl<'s> Walk<'_, '_, 's> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&[u8], Malformed> {
        self.r.take(n, what)
    }

    fn long(&mut self) -> Result<i64, Malformed> {
        self.r.long()
    }

    fn int(&mut self) -> Result<i64, Malformed> {
        self.r.int().map(i64::from)
    }

    fn len(&mut self) -> Result<usize, Malformed> {
        self.r.len()
    }

    fn bytes(&mut self) -> Result<(), Malformed> {
        let n = self.len()?;
        self.take(n, "bytes").map(|_| ())
    }

    fn string(&mut self) -> Result<(), Malformed> {
        self.r.str_ref().map(|_| ())
    }

    fn resolve(&self, name: &Name, ns: Option<&str>) -> Result<(&'s Schema, Name), Malformed> {
        let full = name.fully_qualified_name(ns).into_owned();
        match self.names.get(&full) {
            Some(&s) => Ok((s, full)),
            None => Err(Malformed::UnknownName(full.fullname(None))),
        }
    }

    /// The fewest bytes a value of `schema` can take (a lower bound where recursion is cut).
    fn min_size(&self, schema: &Schema, ns: Option<&str>, depth: usize) -> u64 {
        if depth > MAX_DEPTH {
            return 0;
        }
        match schema {
            Schema::Null => 0,
            Schema::Float => 4,
            Schema::Double => 8,
            Schema::Fixed(f) | Schema::Duration(f) => f.size as u64,
            Schema::Decimal(d) => match &d.inner {
                InnerDecimalSchema::Fixed(f) => f.size as u64,
                InnerDecimalSchema::Bytes => 1,
            },
            Schema::Uuid(UuidSchema::Fixed(f)) => f.size as u64,
            Schema::Union(u) => {
                1 + u
                    .variants()
                    .iter()
                    .map(|v| self.min_size(v, ns, depth + 1))
                    .min()
                    .unwrap_or(0)
            }
            Schema::Record(r) => {
                let full = r.name.fully_qualified_name(ns);
                r.fields
                    .iter()
                    .map(|f| self.min_size(&f.schema, full.namespace(), depth + 1))
                    .fold(0u64, u64::saturating_add)
            }
            Schema::Ref { name } => match self.resolve(name, ns) {
                Ok((s, full)) => self.min_size(s, full.namespace(), depth + 1),
                Err(_) => 0,
            },
            // Everything else starts with at least one varint or byte.
            _ => 1,
        }
    }

    /// Array or map blocks: a count (negative: followed by the block's size in bytes), that many
    /// items, until a count of 0 (see [`crate::typed::blocks`]).
    fn blocks(
        &mut self,
        item_min: u64,
        mut item: impl FnMut(&mut Self) -> Result<(), Malformed>,
    ) -> Result<(), Malformed> {
        blocks(self, item_min, |w, _| item(w))
    }

    fn value(&mut self, schema: &Schema, ns: Option<&str>, depth: usize) -> Result<(), Malformed> {
        if depth > MAX_DEPTH {
            return Err(Malformed::TooDeep);
        }
        match schema {
            Schema::Null => Ok(()),
            Schema::Boolean => {
                let at = self.r.pos;
                let b = self.take(1, "a boolean")?[0];
                if b > 1 {
                    return Err(Malformed::Boolean { at, byte: b });
                }
                Ok(())
            }
            Schema::Int | Schema::Date | Schema::TimeMillis => self.int().map(|_| ()),
            Schema::Long
            | Schema::TimeMicros
            | Schema::TimestampMillis
            | Schema::TimestampMicros
            | Schema::TimestampNanos
            | Schema::LocalTimestampMillis
            | Schema::LocalTimestampMicros
            | Schema::LocalTimestampNanos => self.long().map(|_| ()),
            Schema::Float => self.take(4, "a float").map(|_| ()),
            Schema::Double => self.take(8, "a double").map(|_| ()),
            Schema::Bytes | Schema::BigDecimal | Schema::Uuid(UuidSchema::Bytes) => self.bytes(),
            Schema::String | Schema::Uuid(UuidSchema::String) => self.string(),
            Schema::Fixed(f) | Schema::Uuid(UuidSchema::Fixed(f)) | Schema::Duration(f) => {
                self.take(f.size, "a fixed").map(|_| ())
            }
            Schema::Decimal(d) => match &d.inner {
                InnerDecimalSchema::Fixed(f) => self.take(f.size, "a fixed decimal").map(|_| ()),
                InnerDecimalSchema::Bytes => self.bytes(),
            },
            Schema::Array(a) => {
                let min = self.min_size(&a.items, ns, depth + 1);
                self.blocks(min, |w| w.value(&a.items, ns, depth + 1))
            }
            Schema::Map(m) => {
                // A key is a string: at least its length byte.
                let min = 1 + self.min_size(&m.types, ns, depth + 1);
                self.blocks(min, |w| {
                    w.string()?;
                    w.value(&m.types, ns, depth + 1)
                })
            }
            Schema::Union(u) => {
                let at = self.r.pos;
                let index = self.long()?;
                let variants = u.variants();
                match usize::try_from(index).ok().and_then(|i| variants.get(i)) {
                    Some(v) => self.value(v, ns, depth + 1),
                    None => Err(Malformed::UnionIndex {
                        at,
                        index,
                        variants: variants.len(),
                    }),
                }
            }
            Schema::Record(r) => {
                let full = r.name.fully_qualified_name(ns);
                for f in &r.fields {
                    self.value(&f.schema, full.namespace(), depth + 1)?;
                }
                Ok(())
            }
            Schema::Enum(e) => {
                let at = self.r.pos;
                let index = self.int()?;
                if usize::try_from(index).map_or(true, |i| i >= e.symbols.len()) {
                    return Err(Malformed::EnumIndex {
                        at,
                        index,
                        symbols: e.symbols.len(),
                    });
                }
                Ok(())
            }
            Schema::Ref { name } => {
                let (s, full) = self.resolve(name, ns)?;
                self.value(s, full.namespace(), depth + 1)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use apache_avro::schema::ResolvedSchema;

    /// Checks `body` against the schema in `avsc`.
    fn run(avsc: &str, body: &[u8]) -> Result<usize, Malformed> {
        let schema = Schema::parse_str(avsc).expect("test schema parses");
        let resolved = ResolvedSchema::try_from(&schema).expect("test schema resolves");
        check(&schema, resolved.get_names(), body)
    }

    fn zz(v: i64) -> Vec<u8> {
        let mut z = ((v << 1) ^ (v >> 63)) as u64;
        let mut out = Vec::new();
        loop {
            if z < 0x80 {
                out.push(z as u8);
                return out;
            }
            out.push((z as u8 & 0x7f) | 0x80);
            z >>= 7;
        }
    }

    const LONG: &str = r#""long""#;
    const STRING: &str = r#""string""#;
    const INT: &str = r#""int""#;
    const INTS: &str = r#"{"type":"array","items":"int"}"#;
    const NULLS: &str = r#"{"type":"array","items":"null"}"#;
    const MAP: &str = r#"{"type":"map","values":"long"}"#;
    const UNION: &str = r#"["null","long"]"#;
    const ENUM: &str = r#"{"type":"enum","name":"E","symbols":["A","B"]}"#;

    #[test]
    fn well_formed_values_pass_and_report_their_length() {
        assert_eq!(run(LONG, &zz(i64::MIN)), Ok(10));
        assert_eq!(run(LONG, &zz(i64::MAX)), Ok(10));
        assert_eq!(run(LONG, &[0, 9]), Ok(1), "a trailing byte is left over");
        assert_eq!(run(STRING, b"\x06abc"), Ok(4));
        assert_eq!(run(INTS, &[4, 2, 4, 0]), Ok(4));
        // A negative count is a sized block: -2 items in 2 bytes.
        assert_eq!(run(INTS, &[3, 4, 2, 4, 0]), Ok(5));
        assert_eq!(run(NULLS, &[6, 0]), Ok(2));
        assert_eq!(run(MAP, &[2, 2, b'k', 4, 0]), Ok(5));
        assert_eq!(run(UNION, &[2, 8]), Ok(2));
        assert_eq!(run(ENUM, &[2]), Ok(1));
        let recursive = r#"{"type":"record","name":"L","fields":[{"name":"next","type":["null","L"]}]}"#;
        assert_eq!(run(recursive, &[2, 2, 0]), Ok(3));
    }

    #[test]
    fn overlong_and_oversized_varints_are_refused() {
        // 0 in two bytes.
        assert_eq!(run(LONG, &[0x80, 0x00]), Err(Malformed::OverlongVarint { at: 0 }));
        // 1 padded to ten bytes.
        let mut padded = vec![0x82];
        padded.extend([0x80; 8]);
        padded.push(0);
        assert_eq!(run(LONG, &padded), Err(Malformed::OverlongVarint { at: 0 }));
        // More than 64 bits: a tenth byte above 1, or an eleventh byte.
        let mut big = vec![0xff; 9];
        big.push(0x02);
        assert_eq!(run(LONG, &big), Err(Malformed::VarintOverflow { at: 0 }));
        let eleven = vec![0xff; 11];
        assert_eq!(run(LONG, &eleven), Err(Malformed::VarintOverflow { at: 0 }));
        // An overlong length prefix is refused too.
        assert_eq!(
            run(STRING, b"\x86\x00abc"),
            Err(Malformed::OverlongVarint { at: 0 })
        );
        assert_eq!(
            run(INT, &zz(i64::from(i32::MAX) + 1)),
            Err(Malformed::IntRange {
                at: 0,
                value: i64::from(i32::MAX) + 1
            })
        );
    }

    #[test]
    fn negative_and_huge_lengths_are_refused() {
        assert_eq!(
            run(STRING, &zz(-1)),
            Err(Malformed::NegativeLength { at: 0, len: -1 })
        );
        let mut huge = zz(500 << 20);
        huge.extend(b"abc");
        assert!(matches!(
            run(STRING, &huge),
            Err(Malformed::LengthPastEnd { len, left: 3, .. }) if len == 500 << 20
        ));
        assert!(matches!(
            run(r#""bytes""#, &zz(i64::MAX)),
            Err(Malformed::LengthPastEnd { .. })
        ));
        assert_eq!(run(STRING, b"\x04\xff\xfe"), Err(Malformed::Utf8 { at: 1 }));
    }

    #[test]
    fn negative_and_huge_block_counts_are_refused() {
        // Ten million ints claimed, three bytes follow.
        let mut body = zz(10_000_000);
        body.extend([2, 4, 0]);
        assert!(matches!(
            run(INTS, &body),
            Err(Malformed::BlockCount {
                count: 10_000_000,
                left: 3,
                ..
            })
        ));
        // i64::MIN has no positive count.
        let mut min = zz(i64::MIN);
        min.extend([0, 0]);
        assert!(matches!(run(INTS, &min), Err(Malformed::BlockCount { .. })));
        // A sized block whose size is negative, past the end, or not what its items took.
        let mut neg_size = zz(-1);
        neg_size.extend(zz(-5));
        neg_size.extend([2, 0]);
        assert!(matches!(
            run(INTS, &neg_size),
            Err(Malformed::NegativeLength { .. })
        ));
        let mut past = zz(-1);
        past.extend(zz(100));
        past.extend([2, 0]);
        assert!(matches!(run(INTS, &past), Err(Malformed::LengthPastEnd { .. })));
        let mut wrong = zz(-1);
        wrong.extend(zz(2));
        wrong.extend([2, 0, 0]);
        assert!(matches!(
            run(INTS, &wrong),
            Err(Malformed::BlockSize {
                size: 2,
                actual: 1,
                ..
            })
        ));
        // Items that take no bytes are capped.
        let mut nulls = zz(MAX_EMPTY_ITEMS as i64 + 1);
        nulls.push(0);
        assert!(matches!(run(NULLS, &nulls), Err(Malformed::BlockCount { .. })));
        // Maps too.
        let mut map = zz(1 << 40);
        map.push(0);
        assert!(matches!(run(MAP, &map), Err(Malformed::BlockCount { .. })));
    }

    #[test]
    fn bad_union_and_enum_indexes_and_booleans_are_refused() {
        assert_eq!(
            run(UNION, &zz(2)),
            Err(Malformed::UnionIndex {
                at: 0,
                index: 2,
                variants: 2
            })
        );
        assert_eq!(
            run(UNION, &zz(-1)),
            Err(Malformed::UnionIndex {
                at: 0,
                index: -1,
                variants: 2
            })
        );
        assert_eq!(
            run(ENUM, &zz(2)),
            Err(Malformed::EnumIndex {
                at: 0,
                index: 2,
                symbols: 2
            })
        );
        assert!(matches!(run(ENUM, &zz(-1)), Err(Malformed::EnumIndex { .. })));
        assert_eq!(
            run(r#""boolean""#, &[2]),
            Err(Malformed::Boolean { at: 0, byte: 2 })
        );
    }

    #[test]
    fn every_truncation_is_refused() {
        let record = r#"{"type":"record","name":"R","fields":[
            {"name":"s","type":"string"},{"name":"b","type":"boolean"},
            {"name":"d","type":"double"},{"name":"a","type":{"type":"array","items":"long"}},
            {"name":"u","type":["null","string"]}]}"#;
        let mut body = b"\x04hi\x01".to_vec();
        body.extend(1.5f64.to_le_bytes());
        body.extend([4, 2, 4, 0, 2, 2, b'x']);
        assert_eq!(run(record, &body), Ok(body.len()));
        for cut in 0..body.len() {
            assert!(
                matches!(
                    run(record, &body[..cut]),
                    Err(Malformed::Truncated { .. }
                        | Malformed::LengthPastEnd { .. }
                        | Malformed::BlockCount { .. })
                ),
                "cut at {cut}: {:?}",
                run(record, &body[..cut])
            );
        }
    }

    #[test]
    fn recursion_is_bounded() {
        let recursive = r#"{"type":"record","name":"L","fields":[{"name":"next","type":["null","L"]}]}"#;
        let deep = vec![2u8; 10_000];
        assert_eq!(run(recursive, &deep), Err(Malformed::TooDeep));
    }
}
