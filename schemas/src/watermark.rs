//! Watermarks: a producer's event-time progress on one topic partition.
//!
//! A [`Watermark`] says "no event with `available_at` ≤ `watermark` follows from `producer` on
//! `topic`, partition `partition`". It is a bus message of its own kind (`watermark.avsc`), sent
//! on the very topic partition it speaks for, so that it reaches every consumer of that
//! partition in order with the data. It is not an event: it has no [`crate::Meta`], is no
//! [`crate::AnyEvent`] and is never stored; stages merge their inputs by it
//! (`auroraq_stage::merge`), sinks count and skip it.
//!
//! On the wire it is Avro single-object encoded like every event (`C3 01`, the schema's
//! CRC-64-AVRO fingerprint, the body), so [`is_watermark`] tells it from an event by its first
//! ten bytes.

use std::sync::OnceLock;

use apache_avro::Schema;

use crate::codec::{fingerprint, split_header, CodecError, HEADER_LEN, MAGIC};
use crate::meta::Micros;

/// The watermark schema's text.
pub const AVSC: &str = include_str!("../avro/watermark.avsc");

/// A producer's event-time progress on one topic partition (see the module docs).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Watermark {
    /// The concrete topic it speaks for.
    pub topic: String,
    /// The bus partition it speaks for.
    pub partition: i32,
    /// T: nothing with `available_at` ≤ T follows; [`Watermark::END`] when the producer ended.
    pub watermark: Micros,
    /// Who sends it.
    pub producer: String,
    /// The producer's wall clock when it sent it.
    pub ts_wall: Micros,
}

struct Compiled {
    schema: Schema,
    fingerprint: u64,
}

fn compiled() -> &'static Compiled {
    static C: OnceLock<Compiled> = OnceLock::new();
    C.get_or_init(|| {
        // The bundled schema is checked by the tests; a parse failure is a build defect.
        #[allow(clippy::expect_used)]
        let schema = Schema::parse_str(AVSC).expect("watermark.avsc parses");
        let fingerprint = fingerprint(&schema);
        Compiled { schema, fingerprint }
    })
}

/// The watermark schema's CRC-64-AVRO fingerprint (the single-object header's).
pub fn watermark_fingerprint() -> u64 {
    compiled().fingerprint
}

/// The parsed watermark schema.
pub fn watermark_schema() -> &'static Schema {
    &compiled().schema
}

/// Whether a bus payload is a watermark (by its single-object header; the body is not read).
pub fn is_watermark(bytes: &[u8]) -> bool {
    bytes.len() >= HEADER_LEN
        && bytes[..2] == MAGIC
        && bytes[2..HEADER_LEN] == watermark_fingerprint().to_le_bytes()
}

fn put_long(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8 & 0x7f) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_long(out, s.len() as i64);
    out.extend_from_slice(s.as_bytes());
}

struct Reader<'a> {
    b: &'a [u8],
}

impl Reader<'_> {
    // Only called on a body `strict::check` has passed: every read below is in bounds.
    fn long(&mut self) -> i64 {
        let mut z: u64 = 0;
        let mut shift = 0;
        while let Some((&byte, rest)) = self.b.split_first() {
            self.b = rest;
            z |= u64::from(byte & 0x7f) << shift;
            shift += 7;
            if byte & 0x80 == 0 || shift >= 64 {
                break;
            }
        }
        (z >> 1) as i64 ^ -((z & 1) as i64)
    }

    fn string(&mut self) -> String {
        let n = usize::try_from(self.long()).unwrap_or(0).min(self.b.len());
        let (s, rest) = self.b.split_at(n);
        self.b = rest;
        String::from_utf8_lossy(s).into_owned()
    }
}

impl Watermark {
    /// The watermark of a producer that has ended: nothing more follows.
    pub const END: Micros = Micros::MAX;

    /// Single-object encoding: header, then the Avro body (what apache-avro writes, byte for byte).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + 32 + self.topic.len() + self.producer.len());
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&watermark_fingerprint().to_le_bytes());
        put_str(&mut out, &self.topic);
        put_long(&mut out, i64::from(self.partition));
        put_long(&mut out, self.watermark);
        put_str(&mut out, &self.producer);
        put_long(&mut out, self.ts_wall);
        out
    }

    /// Reads a single-object encoded watermark; refuses another kind, bad bytes and trailing bytes.
    pub fn decode(bytes: &[u8]) -> Result<Watermark, CodecError> {
        let (fp, body) = split_header(bytes)?;
        if fp != watermark_fingerprint() {
            return Err(CodecError::UnknownSchema(fp));
        }
        let c = compiled();
        // The schema is one flat record: no named types to look up.
        let used = crate::strict::check(&c.schema, &crate::strict::Names::new(), body).map_err(|source| {
            CodecError::Malformed {
                kind: "Watermark",
                source,
            }
        })?;
        if used < body.len() {
            return Err(CodecError::Trailing(body.len() - used));
        }
        let mut r = Reader { b: body };
        let topic = r.string();
        let partition = r.long() as i32;
        let watermark = r.long();
        let producer = r.string();
        let ts_wall = r.long();
        Ok(Watermark {
            topic,
            partition,
            watermark,
            producer,
            ts_wall,
        })
    }

    /// The message id: one per producer, topic partition and T (a re-send de-duplicates).
    pub fn id(&self) -> String {
        format!(
            "wm|{}|{}|{}|{}",
            self.producer, self.topic, self.partition, self.watermark
        )
    }
}
