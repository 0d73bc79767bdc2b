//! Avro single-object encoding of events, and the registry of writer schemas.
//!
//! Every message on the bus is `C3 01` + the writer schema's 8-byte little-endian CRC-64-AVRO
//! (Rabin) fingerprint + the Avro binary datum, as the Avro specification's single-object encoding
//! defines. A reader looks the fingerprint up in the [`registry`] to find the writer schema and
//! resolves it against its own schema, so readers on a newer schema read data written with an
//! older one (schema evolution).
//!
//! Messages of a kind's current schema are read and written by the typed codec
//! ([`crate::typed`]: straight between bytes and structs, checking as strictly as
//! [`crate::strict`]); other writer schemas go through apache-avro ([`decode_generic`]).

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::{OnceLock, RwLock};

use apache_avro::rabin::Rabin;
use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::schema::ResolvedSchema;
use apache_avro::writer::datum::GenericDatumWriter;
use apache_avro::{from_value, Schema};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::events::*;
use crate::meta::Meta;

/// The two marker bytes that start every single-object-encoded message.
pub const MAGIC: [u8; 2] = [0xC3, 0x01];
/// Marker plus fingerprint.
pub const HEADER_LEN: usize = 10;
/// The largest encoded event AuroraQ publishes: the 1 MiB a NATS message takes by default, less
/// 16 KiB for the transport's headers. Producers turn larger events into dead letters (which
/// [`DeadLetter::bounded`] keeps far smaller).
pub const MAX_EVENT_BYTES: usize = (1 << 20) - (16 << 10);

/// Why bytes could not be turned into an event, or an event into bytes.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("message of {0} bytes is too short for a single-object header")]
    TooShort(usize),
    #[error("bad magic bytes {0:02x?}: not an Avro single-object message")]
    BadMagic([u8; 2]),
    #[error("unknown writer schema fingerprint {0:#018x}")]
    UnknownSchema(u64),
    #[error("message holds a {found} event, expected {expected}")]
    WrongKind {
        expected: &'static str,
        found: &'static str,
    },
    #[error("Avro body does not decode as {kind}: {source}")]
    Body {
        kind: &'static str,
        #[source]
        source: Box<apache_avro::Error>,
    },
    #[error("{0} bytes of trailing garbage after the Avro body")]
    Trailing(usize),
    /// The body does not match its writer schema: truncated, an overlong varint, a length or
    /// block count past the end, a bad union or enum index (see [`crate::strict`]).
    #[error("malformed {kind} body: {source}")]
    Malformed {
        kind: &'static str,
        #[source]
        source: crate::strict::Malformed,
    },
    #[error("cannot encode {kind}: {source}")]
    Encode {
        kind: &'static str,
        #[source]
        source: Box<apache_avro::Error>,
    },
    #[error("invalid schema: {0}")]
    Schema(#[source] Box<apache_avro::Error>),
}

macro_rules! event_kinds {
    ($( $variant:ident => $file:literal ),+ $(,)?) => {
        /// Every event type AuroraQ knows, one per `.avsc` file.
        ///
        /// Its name ([`EventKind::as_str`], the Avro record name, e.g. `"TradeTick"`) is what JSON,
        /// summaries and event ids use: it serialises as that string, and kinds order by it, so a map
        /// keyed by kind lists (and serialises) its keys in the same order as one keyed by name.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum EventKind { $( $variant ),+ }

        impl EventKind {
            /// Every kind, in declaration order (`ALL[k as usize] == k`).
            pub const ALL: &'static [EventKind] = &[ $( EventKind::$variant ),+ ];

            /// The record name, e.g. `"TradeTick"`: the kind's name in JSON, summaries and event ids.
            pub const fn as_str(self) -> &'static str {
                match self { $( EventKind::$variant => stringify!($variant) ),+ }
            }

            /// The record name, e.g. `TradeTick` (the same as [`EventKind::as_str`]).
            pub const fn name(self) -> &'static str {
                self.as_str()
            }

            /// The schema file's text (the current version).
            pub fn avsc(self) -> &'static str {
                match self { $( EventKind::$variant => include_str!(concat!("../avro/", $file)) ),+ }
            }

            /// The schema file's name under `schemas/avro/`.
            pub fn file_name(self) -> &'static str {
                match self { $( EventKind::$variant => $file ),+ }
            }
        }

        /// Any event, for consumers that take several kinds from one topic.
        #[derive(Clone, Debug, PartialEq)]
        pub enum AnyEvent { $( $variant($variant) ),+ }

        impl AnyEvent {
            pub fn kind(&self) -> EventKind {
                match self { $( AnyEvent::$variant(_) => EventKind::$variant ),+ }
            }
            pub fn meta(&self) -> &Meta {
                match self { $( AnyEvent::$variant(e) => &e.meta ),+ }
            }
            pub fn meta_mut(&mut self) -> &mut Meta {
                match self { $( AnyEvent::$variant(e) => &mut e.meta ),+ }
            }
            pub fn encode(&self) -> Result<Vec<u8>, CodecError> {
                match self { $( AnyEvent::$variant(e) => encode(e) ),+ }
            }
            /// [`AnyEvent::encode`] through apache-avro's serde writer ([`encode_generic`]).
            pub fn encode_generic(&self) -> Result<Vec<u8>, CodecError> {
                match self { $( AnyEvent::$variant(e) => encode_generic(e) ),+ }
            }
            /// The event as JSON: its fields plus `"kind"`, decimals as exact strings.
            pub fn to_json(&self) -> serde_json::Value {
                let mut v = match self { $( AnyEvent::$variant(e) => serde_json::to_value(e) ),+ }
                    .unwrap_or(serde_json::Value::Null);
                crate::json::decimals_to_strings(&mut v);
                if let serde_json::Value::Object(m) = &mut v {
                    m.insert("kind".into(), serde_json::Value::String(self.kind().name().into()));
                }
                v
            }
            /// Decodes a message of any known kind: written with a kind's current schema, straight
            /// into its struct ([`crate::typed`]); written with another registered schema, through
            /// [`AnyEvent::decode_generic`].
            pub fn decode(bytes: &[u8]) -> Result<AnyEvent, CodecError> {
                let (fp, body) = split_header(bytes)?;
                match crate::typed::fast_kind(fp) {
                    $( Some(EventKind::$variant) => {
                        crate::typed::decode_body::<$variant>(EventKind::$variant, body).map(AnyEvent::$variant)
                    } )+
                    None => Self::decode_generic(bytes),
                }
            }
            /// Decodes a message of any known kind through apache-avro's schema resolution and
            /// its `Value` tree (after the [`crate::strict`] check): what [`AnyEvent::decode`] does
            /// for writer schemas other than the current ones, and the reference its typed path is
            /// tested against.
            pub fn decode_generic(bytes: &[u8]) -> Result<AnyEvent, CodecError> {
                let (fp, _) = split_header(bytes)?;
                let kind = registry().kind_of(fp).ok_or(CodecError::UnknownSchema(fp))?;
                match kind {
                    $( EventKind::$variant => decode_generic::<$variant>(bytes).map(AnyEvent::$variant) ),+
                }
            }
        }

        $(
            impl Event for $variant {
                const KIND: EventKind = EventKind::$variant;
                fn meta(&self) -> &Meta { &self.meta }
                fn meta_mut(&mut self) -> &mut Meta { &mut self.meta }
                fn decode_current(body: &[u8]) -> Result<Self, CodecError> {
                    crate::typed::decode_body::<$variant>(Self::KIND, body)
                }
                fn encode_current(&self, out: &mut Vec<u8>) -> Result<(), CodecError> {
                    crate::typed::encode_body::<$variant>(Self::KIND, self, out)
                }
            }
            impl From<$variant> for AnyEvent {
                fn from(e: $variant) -> Self { AnyEvent::$variant(e) }
            }
        )+
    };
}

event_kinds! {
    TradeTick => "trade_tick.avsc",
    Kline => "kline.avsc",
    BookTicker => "book_ticker.avsc",
    BookUpdate => "book_update.avsc",
    MarkPrice => "mark_price.avsc",
    Liquidation => "liquidation.avsc",
    Article => "article.avsc",
    SentimentScore => "sentiment_score.avsc",
    FusedSignal => "fused_signal.avsc",
    OrderIntent => "order_intent.avsc",
    RiskDecision => "risk_decision.avsc",
    OrderUpdate => "order_update.avsc",
    PortfolioSnapshot => "portfolio_snapshot.avsc",
    Alert => "alert.avsc",
    DeadLetter => "dead_letter.avsc",
    FeedStatus => "feed_status.avsc",
}

impl PartialOrd for EventKind {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// By name, so that maps keyed by kind keep the key order that maps keyed by name had.
impl Ord for EventKind {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is no [`EventKind`]'s.
#[derive(Debug, thiserror::Error)]
#[error("unknown event kind {0:?}")]
pub struct UnknownKind(pub String);

impl std::str::FromStr for EventKind {
    type Err = UnknownKind;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        EventKind::ALL
            .iter()
            .copied()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| UnknownKind(s.to_owned()))
    }
}

impl Serialize for EventKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for EventKind {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = std::borrow::Cow::<'de, str>::deserialize(d)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}

impl EventKind {
    /// The parsed current schema.
    pub fn schema(self) -> &'static Schema {
        &registry().current(self).schema
    }

    /// CRC-64-AVRO fingerprint of the current schema's canonical form.
    pub fn fingerprint(self) -> u64 {
        registry().current(self).fingerprint
    }
}

/// Something a stage can take off the bus: one event type, or [`AnyEvent`].
pub trait Incoming: Sized + Send + 'static {
    fn decode_message(bytes: &[u8]) -> Result<Self, CodecError>;
    /// The decoded event's header (its id and trace context, for the stage runner's spans).
    fn incoming_meta(&self) -> &Meta;
}

impl<E: Event> Incoming for E {
    fn decode_message(bytes: &[u8]) -> Result<Self, CodecError> {
        decode::<E>(bytes)
    }
    fn incoming_meta(&self) -> &Meta {
        self.meta()
    }
}

impl Incoming for AnyEvent {
    fn decode_message(bytes: &[u8]) -> Result<Self, CodecError> {
        AnyEvent::decode(bytes)
    }
    fn incoming_meta(&self) -> &Meta {
        self.meta()
    }
}

/// A typed event: a struct that mirrors one `.avsc` file.
pub trait Event: Serialize + DeserializeOwned + Clone + Debug + Send + Sync + 'static {
    const KIND: EventKind;
    fn meta(&self) -> &Meta;
    fn meta_mut(&mut self) -> &mut Meta;
    /// Decodes a body (no header) written with this kind's current schema, straight into the
    /// struct ([`crate::typed`]). [`decode`] calls it when the fingerprint says so.
    #[doc(hidden)]
    fn decode_current(body: &[u8]) -> Result<Self, CodecError>;
    /// Appends the event's body (no header) in this kind's current schema ([`crate::typed`]).
    /// [`encode`] calls it when the kind has a typed writer for its current schema.
    #[doc(hidden)]
    fn encode_current(&self, out: &mut Vec<u8>) -> Result<(), CodecError>;
}

/// CRC-64-AVRO fingerprint of a schema's Parsing Canonical Form, as the single-object header holds it.
pub fn fingerprint(schema: &Schema) -> u64 {
    let fp = schema.fingerprint::<Rabin>();
    let mut le = [0u8; 8];
    le.copy_from_slice(&fp.bytes[..8]);
    u64::from_le_bytes(le)
}

/// Splits a message into its writer fingerprint and its Avro body.
pub fn split_header(bytes: &[u8]) -> Result<(u64, &[u8]), CodecError> {
    if bytes.len() < HEADER_LEN {
        return Err(CodecError::TooShort(bytes.len()));
    }
    if bytes[..2] != MAGIC {
        return Err(CodecError::BadMagic([bytes[0], bytes[1]]));
    }
    let mut le = [0u8; 8];
    le.copy_from_slice(&bytes[2..HEADER_LEN]);
    Ok((u64::from_le_bytes(le), &bytes[HEADER_LEN..]))
}

/// Encodes an event with its schema's single-object header: straight from the struct
/// ([`crate::typed`]) where the kind has a typed writer for its current schema, else through
/// [`encode_generic`] (the same bytes).
pub fn encode<E: Event>(event: &E) -> Result<Vec<u8>, CodecError> {
    let Some(fp) = crate::typed::fast_fingerprint(E::KIND) else {
        return encode_generic(event);
    };
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&fp.to_le_bytes());
    event.encode_current(&mut out)?;
    Ok(out)
}

/// Encodes an event through apache-avro's serde writer: what [`encode`] does for a kind without
/// a typed writer, and the reference its typed path is tested against.
pub fn encode_generic<E: Event>(event: &E) -> Result<Vec<u8>, CodecError> {
    let entry = registry().current(E::KIND);
    let kind = E::KIND.name();
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&entry.fingerprint.to_le_bytes());
    let built;
    let writer = match current_writer(E::KIND) {
        Some(w) => w,
        None => {
            built = GenericDatumWriter::builder(&entry.schema)
                .build()
                .map_err(|e| CodecError::Encode {
                    kind,
                    source: Box::new(e),
                })?;
            &built
        }
    };
    writer
        .write_ser(&mut out, event)
        .map_err(|e| CodecError::Encode {
            kind,
            source: Box::new(e),
        })?;
    Ok(out)
}

/// The writer of `kind`'s current schema, built once (building one resolves the schema's names,
/// which costs more than encoding a small event). `None` if it does not build: [`encode`] then
/// builds it again and reports why.
fn current_writer(kind: EventKind) -> Option<&'static GenericDatumWriter<'static>> {
    static WRITERS: OnceLock<Vec<Option<GenericDatumWriter<'static>>>> = OnceLock::new();
    WRITERS
        .get_or_init(|| {
            EventKind::ALL
                .iter()
                .map(|&k| {
                    GenericDatumWriter::builder(&registry().current(k).schema)
                        .build()
                        .ok()
                })
                .collect()
        })
        .get(kind as usize)?
        .as_ref()
}

/// Decodes a message into `E`. Written with `E`'s current schema, it reads straight into the
/// struct ([`crate::typed`], checking as strictly as [`crate::strict`]); written with another
/// registered schema of `E`'s kind, through [`decode_generic`].
pub fn decode<E: Event>(bytes: &[u8]) -> Result<E, CodecError> {
    let (fp, body) = split_header(bytes)?;
    if crate::typed::fast_fingerprint(E::KIND) == Some(fp) {
        return E::decode_current(body);
    }
    decode_generic(bytes)
}

/// Decodes a message into `E` through apache-avro, resolving the writer's schema (found by
/// fingerprint) against `E`'s: the [`crate::strict`] check, then a `Value` tree, then serde. What
/// [`decode`] does for writer schemas other than the current one (schema evolution), and the
/// reference its typed path is tested against.
pub fn decode_generic<E: Event>(bytes: &[u8]) -> Result<E, CodecError> {
    let (fp, mut body) = split_header(bytes)?;
    let reg = registry();
    let writer = reg.writer(fp).ok_or(CodecError::UnknownSchema(fp))?;
    if writer.kind != E::KIND {
        return Err(CodecError::WrongKind {
            expected: E::KIND.name(),
            found: writer.kind.name(),
        });
    }
    let kind = E::KIND.name();
    let reader = &reg.current(E::KIND).schema;
    let same = writer.fingerprint == reg.current(E::KIND).fingerprint;
    let body_err = |e| CodecError::Body {
        kind,
        source: Box::new(e),
    };
    let resolved = ResolvedSchema::try_from(&writer.schema).map_err(body_err)?;
    // apache-avro reads a body cut short with its last fields defaulted, and trusts lengths:
    // check the body's structure strictly first (it then decodes exactly these bytes).
    let used = crate::strict::check(&writer.schema, resolved.get_names(), body)
        .map_err(|source| CodecError::Malformed { kind, source })?;
    if used < body.len() {
        return Err(CodecError::Trailing(body.len() - used));
    }
    let datum_reader = GenericDatumReader::builder(&writer.schema)
        .resolved_writer_schemata(resolved)
        .maybe_reader_schema(if same { None } else { Some(reader) })
        .build()
        .map_err(body_err)?;
    let value = datum_reader.read_value(&mut body).map_err(body_err)?;
    if !body.is_empty() {
        return Err(CodecError::Trailing(body.len()));
    }
    from_value::<E>(&value).map_err(body_err)
}

/// A schema the registry knows, with the event kind it belongs to.
#[derive(Clone, Debug)]
pub struct RegisteredSchema {
    pub kind: EventKind,
    pub fingerprint: u64,
    pub schema: Schema,
}

/// Writer schemas by fingerprint: every current schema, plus older versions registered with
/// [`Registry::register`] so that data written with them stays readable.
pub struct Registry {
    current: HashMap<EventKind, &'static RegisteredSchema>,
    writers: RwLock<HashMap<u64, &'static RegisteredSchema>>,
}

impl Registry {
    fn new() -> Self {
        let mut current = HashMap::new();
        let mut writers = HashMap::new();
        for &kind in EventKind::ALL {
            // The schemas are compiled in and tested; a parse failure is a build defect.
            let schema = Schema::parse_str(kind.avsc())
                .unwrap_or_else(|e| panic!("bundled schema {} does not parse: {e}", kind.file_name()));
            let entry: &'static RegisteredSchema = Box::leak(Box::new(RegisteredSchema {
                kind,
                fingerprint: fingerprint(&schema),
                schema,
            }));
            current.insert(kind, entry);
            writers.insert(entry.fingerprint, entry);
        }
        Registry {
            current,
            writers: RwLock::new(writers),
        }
    }

    fn current(&self, kind: EventKind) -> &'static RegisteredSchema {
        self.current[&kind]
    }

    /// The writer schema with this fingerprint, if known.
    pub fn writer(&self, fp: u64) -> Option<&'static RegisteredSchema> {
        self.writers.read().ok()?.get(&fp).copied()
    }

    /// The event kind of a writer fingerprint, if known.
    pub fn kind_of(&self, fp: u64) -> Option<EventKind> {
        self.writer(fp).map(|w| w.kind)
    }

    /// Registers another (older or newer) writer schema of `kind`, so its messages decode.
    /// Returns its fingerprint. The schema must resolve against the current one.
    pub fn register(&self, kind: EventKind, avsc: &str) -> Result<u64, CodecError> {
        let schema = Schema::parse_str(avsc).map_err(|e| CodecError::Schema(Box::new(e)))?;
        let fp = fingerprint(&schema);
        let mut w = self.writers.write().unwrap_or_else(|p| p.into_inner());
        if let Some(existing) = w.get(&fp) {
            if existing.kind != kind {
                return Err(CodecError::WrongKind {
                    expected: kind.name(),
                    found: existing.kind.name(),
                });
            }
            return Ok(fp);
        }
        w.insert(
            fp,
            Box::leak(Box::new(RegisteredSchema {
                kind,
                fingerprint: fp,
                schema,
            })),
        );
        Ok(fp)
    }
}

/// The process-wide schema registry.
pub fn registry() -> &'static Registry {
    static REG: OnceLock<Registry> = OnceLock::new();
    REG.get_or_init(Registry::new)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_order_serialise_and_parse_by_name() {
        let mut by_kind: Vec<EventKind> = EventKind::ALL.to_vec();
        by_kind.sort();
        let mut by_name: Vec<&str> = EventKind::ALL.iter().map(|k| k.as_str()).collect();
        by_name.sort();
        assert_eq!(by_kind.iter().map(|k| k.as_str()).collect::<Vec<_>>(), by_name);
        for &k in EventKind::ALL {
            assert_eq!(k.as_str(), k.name());
            assert_eq!(k.as_str().parse::<EventKind>().unwrap(), k);
            let json = serde_json::to_string(&k).unwrap();
            assert_eq!(json, format!("\"{}\"", k.as_str()));
            assert_eq!(serde_json::from_str::<EventKind>(&json).unwrap(), k);
        }
        assert!("tradetick".parse::<EventKind>().is_err());
        // As map keys: the same JSON as a map keyed by name.
        let kinds: std::collections::BTreeMap<EventKind, u64> =
            EventKind::ALL.iter().map(|&k| (k, k as u64)).collect();
        let names: std::collections::BTreeMap<String, u64> = EventKind::ALL
            .iter()
            .map(|&k| (k.as_str().to_owned(), k as u64))
            .collect();
        let json = serde_json::to_string(&kinds).unwrap();
        assert_eq!(json, serde_json::to_string(&names).unwrap());
        assert_eq!(
            serde_json::from_str::<std::collections::BTreeMap<EventKind, u64>>(&json).unwrap(),
            kinds
        );
    }

    #[test]
    fn kinds_index_their_cached_writers() {
        for (i, &k) in EventKind::ALL.iter().enumerate() {
            assert_eq!(k as usize, i, "{k:?}");
            assert!(current_writer(k).is_some(), "{k:?}");
        }
    }
}
