//! The watermark kind: a fixed test vector, agreement with apache-avro, and refusals.
//! (Run with `--features samples`, as the other tests of this crate.)

use auroraq_schemas::watermark::{watermark_fingerprint, watermark_schema};
use auroraq_schemas::{is_watermark, AnyEvent, CodecError, Watermark};

fn sample() -> Watermark {
    Watermark {
        topic: "market.klines.coinbase.btc_usd".into(),
        partition: 3,
        watermark: 1_718_000_000_000_000,
        producer: "replay".into(),
        ts_wall: -1,
    }
}

/// The bytes of [`sample`], written out by hand from the Avro spec (zig-zag varints, strings as
/// length + UTF-8), after the single-object header.
const BODY: &[u8] = &[
    0x3c, b'm', b'a', b'r', b'k', b'e', b't', b'.', b'k', b'l', b'i', b'n', b'e', b's', b'.', b'c', b'o',
    b'i', b'n', b'b', b'a', b's', b'e', b'.', b'b', b't', b'c', b'_', b'u', b's',
    b'd', // topic (30 chars)
    0x06, // partition 3
    0x80, 0x80, 0xcb, 0xbb, 0xe1, 0xa0, 0x8d, 0x06, // 1_718_000_000_000_000
    0x0c, b'r', b'e', b'p', b'l', b'a', b'y', // producer
    0x01, // ts_wall -1
];

#[test]
fn test_vector() {
    let bytes = sample().encode();
    assert_eq!(&bytes[..2], &[0xC3, 0x01]);
    assert_eq!(&bytes[2..10], &watermark_fingerprint().to_le_bytes());
    assert_eq!(&bytes[10..], BODY);
    assert_eq!(Watermark::decode(&bytes).expect("decodes"), sample());
    assert!(is_watermark(&bytes));
}

#[test]
fn apache_avro_writes_and_reads_the_same_bytes() {
    use apache_avro::types::{Record, Value};
    let w = Watermark {
        watermark: Watermark::END,
        ts_wall: i64::MIN,
        partition: -7,
        ..sample()
    };
    let schema = watermark_schema();
    let mut rec = Record::new(schema).expect("a record schema");
    rec.put("topic", w.topic.clone());
    rec.put("partition", w.partition);
    rec.put("watermark", Value::TimestampMicros(w.watermark));
    rec.put("producer", w.producer.clone());
    rec.put("ts_wall", Value::TimestampMicros(w.ts_wall));
    #[allow(deprecated)]
    let body = apache_avro::to_avro_datum(schema, rec).expect("apache-avro writes it");
    let ours = w.encode();
    assert_eq!(&ours[10..], &body[..]);
    assert_eq!(Watermark::decode(&ours).expect("decodes"), w);
}

#[test]
fn events_are_not_watermarks_and_bad_bytes_are_refused() {
    for ev in auroraq_schemas::samples::all() {
        let bytes = ev.encode().expect("encodes");
        assert!(!is_watermark(&bytes), "{:?}", ev.kind());
        assert!(matches!(
            Watermark::decode(&bytes),
            Err(CodecError::UnknownSchema(_))
        ));
    }
    let bytes = sample().encode();
    // Not an event either: a reader of events does not take it for one.
    assert!(AnyEvent::decode(&bytes).is_err());
    // Truncated anywhere in the body, or with trailing bytes: refused.
    for cut in 10..bytes.len() {
        assert!(Watermark::decode(&bytes[..cut]).is_err(), "cut at {cut}");
    }
    let mut long = bytes.clone();
    long.push(0);
    assert!(matches!(Watermark::decode(&long), Err(CodecError::Trailing(1))));
    assert!(!is_watermark(&bytes[..9]));
}
