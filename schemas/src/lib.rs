//! AuroraQ's event types.
//!
//! One Avro schema per event type lives in `schemas/avro/*.avsc`; this crate gives a typed struct
//! for each ([`events`]), the header every event carries ([`Meta`]), exact decimals ([`Dec`]) and
//! the single-object codec ([`encode`], [`decode`], [`AnyEvent::decode`]) with its registry of
//! writer schemas. It knows no transport: buses carry the bytes it produces.

pub mod codec;
pub mod dead_letter;
pub mod decimal;
pub mod events;
pub mod holding;
pub mod json;
pub mod meta;
pub mod routing;
#[cfg(any(test, feature = "samples"))]
pub mod samples;
pub mod strict;
pub mod trace;
pub mod typed;
pub mod watermark;

pub use codec::{
    decode, decode_generic, encode, encode_generic, fingerprint, registry, split_header, AnyEvent,
    CodecError, Event, EventKind, Incoming, Registry, UnknownKind, HEADER_LEN, MAGIC, MAX_EVENT_BYTES,
};
pub use decimal::{Dec, DecError};
pub use events::*;
pub use holding::Holding;
pub use meta::{event_id, now_micros, Meta, Micros};
pub use routing::FillClass;
pub use trace::TraceContext;
pub use watermark::{is_watermark, Watermark};
