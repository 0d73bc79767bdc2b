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
