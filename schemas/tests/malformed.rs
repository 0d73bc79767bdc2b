//! Bad bytes give a clear error, never a panic.

use auroraq_schemas::*;
use proptest::prelude::*;

#[test]
fn clear_errors_for_bad_headers() {
    assert!(matches!(AnyEvent::decode(b""), Err(CodecError::TooShort(0))));
    assert!(matches!(
        AnyEvent::decode(b"{\"json\": true}"),
        Err(CodecError::BadMagic(_))
    ));
    let mut unknown = MAGIC.to_vec();
    unknown.extend_from_slice(&42u64.to_le_bytes());
    assert!(matches!(
        AnyEvent::decode(&unknown),
        Err(CodecError::UnknownSchema(42))
    ));
}

#[test]
fn truncated_and_padded_bodies_are_refused() {
    let bytes = encode(&samples::trade(7)).unwrap();
    for cut in HEADER_LEN..bytes.len() {
        assert!(
            decode::<TradeTick>(&bytes[..cut]).is_err(),
            "cut at {cut} must fail"
        );
    }
    let mut padded = bytes.clone();
    padded.push(0);
    assert!(matches!(
        decode::<TradeTick>(&padded),
        Err(CodecError::Trailing(1))
    ));
}

#[test]
fn wrong_kind_is_refused() {
    let bytes = encode(&samples::trade(7)).unwrap();
    match decode::<Kline>(&bytes) {
        Err(CodecError::WrongKind { expected, found }) => {
            assert_eq!((expected, found), ("Kline", "TradeTick"));
        }
        other => panic!("{other:?}"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]
    #[test]
    fn random_bodies_never_panic(body in proptest::collection::vec(any::<u8>(), 0..300), kind in 0usize..EventKind::ALL.len()) {
        let k = EventKind::ALL[kind];
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&k.fingerprint().to_le_bytes());
        bytes.extend_from_slice(&body);
        let _ = AnyEvent::decode(&bytes);
    }

    #[test]
    fn flipped_bytes_never_panic(pos in 0usize..400, val in any::<u8>()) {
        for ev in samples::all() {
            let mut bytes = ev.encode().unwrap();
            let p = pos % bytes.len();
            bytes[p] = val;
            let _ = AnyEvent::decode(&bytes);
        }
    }
}

/// Every sample, plus variants whose last field is a null union branch or a set one, so that
/// cutting the last byte removes a whole value (the case apache-avro reads as a default).
fn every_kind() -> Vec<AnyEvent> {
    let mut out = samples::all();
    for ev in samples::all() {
        match ev {
            AnyEvent::Article(a) => {
                let mut none = a.clone();
                none.ts_crawled = None;
                let mut some = a;
                some.ts_crawled = Some(1_700_000_002_000_000);
                out.push(AnyEvent::Article(none));
                out.push(AnyEvent::Article(some));
            }
            AnyEvent::MarkPrice(m) => {
                // Its last field, next_funding_time, is ["null", long]: the sample sets it.
                let mut none = m;
                none.next_funding_time = None;
                none.funding_rate = None;
                out.push(AnyEvent::MarkPrice(none));
            }
            _ => {}
        }
    }
    out
}

#[test]
fn every_truncation_of_every_kind_is_refused() {
    for ev in every_kind() {
        let bytes = ev.encode().unwrap();
        assert_eq!(AnyEvent::decode(&bytes).unwrap(), ev);
        for cut in HEADER_LEN..bytes.len() {
            match AnyEvent::decode(&bytes[..cut]) {
                Err(CodecError::Malformed { .. }) => {}
                other => panic!("{} cut to {cut} of {} bytes: {other:?}", ev.kind(), bytes.len()),
            }
        }
    }
}

#[test]
fn an_article_missing_its_last_byte_is_refused() {
    // The case: a valid Article body missing its last byte was stored with ts_crawled NULL.
    for ev in every_kind() {
        let AnyEvent::Article(_) = &ev else { continue };
        let bytes = ev.encode().unwrap();
        let err = decode::<Article>(&bytes[..bytes.len() - 1]).unwrap_err();
        assert!(err.to_string().contains("truncated"), "{err}");
    }
}

#[test]
fn trailing_bytes_after_every_kind_are_refused() {
    for ev in every_kind() {
        let mut bytes = ev.encode().unwrap();
        bytes.extend_from_slice(&[0, 0, 0]);
        assert!(
            matches!(AnyEvent::decode(&bytes), Err(CodecError::Trailing(3))),
            "{}",
            ev.kind()
        );
    }
}

/// The body offsets of an encoded event's header fields (every schema starts with the same
/// `Meta` fields: event_id, source, ts_event, ts_ingest, ts_processed, derived_from, ...).
struct Layout {
    event_id_len: usize,
    ts_processed: usize,
    derived_from: usize,
}

fn varint_end(b: &[u8], mut p: usize) -> usize {
    while b[p] & 0x80 != 0 {
        p += 1;
    }
    p + 1
}

fn zz(b: &[u8], p: usize) -> i64 {
    let mut v = 0u64;
    for (i, x) in b[p..varint_end(b, p)].iter().enumerate() {
        v |= u64::from(x & 0x7f) << (7 * i);
    }
    (v >> 1) as i64 ^ -((v & 1) as i64)
}

fn layout(bytes: &[u8]) -> Layout {
    let event_id_len = HEADER_LEN;
    let mut p = event_id_len;
    for _ in 0..2 {
        let len = zz(bytes, p) as usize;
        p = varint_end(bytes, p) + len;
    }
    p = varint_end(bytes, p);
    p = varint_end(bytes, p);
    let ts_processed = p;
    p = varint_end(bytes, p);
    if bytes[ts_processed] == 2 {
        p = varint_end(bytes, p);
    }
    Layout {
        event_id_len,
        ts_processed,
        derived_from: p,
    }
}

fn splice(bytes: &[u8], at: usize, old_len: usize, new: &[u8]) -> Vec<u8> {
    let mut out = bytes[..at].to_vec();
    out.extend_from_slice(new);
    out.extend_from_slice(&bytes[at + old_len..]);
    out
}

fn refused(bytes: &[u8], what: &str) -> String {
    match AnyEvent::decode(bytes) {
        Err(e @ CodecError::Malformed { .. }) => e.to_string(),
        other => panic!("{what}: {other:?}"),
    }
}

#[test]
fn every_malformed_class_is_refused_in_real_messages() {
    for ev in every_kind() {
        let bytes = ev.encode().unwrap();
        let l = layout(&bytes);
        let k = ev.kind();
        // The event id's length (32 chars: one byte, 0x40) written in two bytes: overlong.
        assert_eq!(bytes[l.event_id_len], 0x40, "{k}");
        let e = refused(&splice(&bytes, l.event_id_len, 1, &[0xc0, 0x00]), "overlong");
        assert!(e.contains("overlong"), "{k}: {e}");
        // More than 64 bits.
        let e = refused(
            &splice(&bytes, l.event_id_len, 1, &[0xff; 11]),
            "varint > 64 bits",
        );
        assert!(e.contains("longer than 64 bits"), "{k}: {e}");
        // A negative length (-1), and a huge one (500 MiB).
        let e = refused(&splice(&bytes, l.event_id_len, 1, &[0x01]), "negative length");
        assert!(e.contains("negative length"), "{k}: {e}");
        let e = refused(
            &splice(&bytes, l.event_id_len, 1, &[0x80, 0x80, 0x80, 0xf4, 0x03]),
            "huge length",
        );
        assert!(e.contains("runs past the end"), "{k}: {e}");
        // ts_processed is ["null", long]: index 2 and index -1 do not exist.
        let old = varint_end(&bytes, l.ts_processed) - l.ts_processed;
        assert_eq!(old, 1, "{k}");
        for bad in [&[0x04u8][..], &[0x01]] {
            let e = refused(&splice(&bytes, l.ts_processed, 1, bad), "union index");
            assert!(e.contains("union index"), "{k}: {e}");
        }
        // derived_from's block count: a billion items, and i64::MIN.
        let count_len = varint_end(&bytes, l.derived_from) - l.derived_from;
        let e = refused(
            &splice(&bytes, l.derived_from, count_len, &[0x80, 0xa8, 0xd6, 0xb9, 0x07]),
            "huge block count",
        );
        assert!(e.contains("block count"), "{k}: {e}");
        let mut min = vec![0xff; 9];
        min.push(0x01);
        let e = refused(
            &splice(&bytes, l.derived_from, count_len, &min),
            "i64::MIN block count",
        );
        assert!(e.contains("block count"), "{k}: {e}");
        // A negative (sized) block count whose size does not match its items.
        let n = zz(&bytes, l.derived_from);
        if n > 0 {
            let sized = [((2 * n - 1) as u8), 0x02]; // -n items in 1 byte
            let e = refused(&splice(&bytes, l.derived_from, 1, &sized), "sized block");
            assert!(e.contains("gives its size"), "{k}: {e}");
        }
    }
}
