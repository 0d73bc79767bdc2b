//! The typed codec (`auroraq_schemas::typed`, what `decode`, `AnyEvent::decode` and `encode` use
//! for the current schemas) against the generic apache-avro path (`decode_generic`,
//! `encode_generic`): the same events from the same bytes, the same refusals (the same
//! `Malformed` error at the same offset, trailing bytes alike) for every sample, every cut, every
//! byte changed and random bodies, and the same bytes from every event either path accepted.

use std::collections::BTreeMap;

use auroraq_schemas::*;
use proptest::prelude::*;

/// Both paths on `bytes`; panics unless they agree. Returns the typed path's answer.
fn agree(bytes: &[u8]) -> Result<AnyEvent, CodecError> {
    let typed = AnyEvent::decode(bytes);
    let generic = AnyEvent::decode_generic(bytes);
    match (&typed, &generic) {
        (Ok(a), Ok(b)) => {
            // Debug, not ==: a random body may hold a NaN, which is not equal to itself.
            assert_eq!(format!("{a:?}"), format!("{b:?}"), "bytes {bytes:02x?}");
            // And both writers give the same bytes for what was read.
            let typed_bytes = a.encode().unwrap();
            assert_eq!(typed_bytes, b.encode_generic().unwrap(), "bytes {bytes:02x?}");
        }
        // The same error, to the word (offsets included).
        (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string(), "bytes {bytes:02x?}"),
        _ => panic!("typed {typed:?}, generic {generic:?}, bytes {bytes:02x?}"),
    }
    typed
}

/// `decode::<E>` for the kind of `like` (the typed path through the `Event` trait).
fn decode_as(like: &AnyEvent, bytes: &[u8]) -> Result<AnyEvent, CodecError> {
    match like {
        AnyEvent::TradeTick(_) => decode::<TradeTick>(bytes).map(Into::into),
        AnyEvent::Kline(_) => decode::<Kline>(bytes).map(Into::into),
        AnyEvent::BookTicker(_) => decode::<BookTicker>(bytes).map(Into::into),
        AnyEvent::BookUpdate(_) => decode::<BookUpdate>(bytes).map(Into::into),
        AnyEvent::MarkPrice(_) => decode::<MarkPrice>(bytes).map(Into::into),
        AnyEvent::Liquidation(_) => decode::<Liquidation>(bytes).map(Into::into),
        AnyEvent::Article(_) => decode::<Article>(bytes).map(Into::into),
        AnyEvent::SentimentScore(_) => decode::<SentimentScore>(bytes).map(Into::into),
        AnyEvent::FusedSignal(_) => decode::<FusedSignal>(bytes).map(Into::into),
        AnyEvent::OrderIntent(_) => decode::<OrderIntent>(bytes).map(Into::into),
        AnyEvent::RiskDecision(_) => decode::<RiskDecision>(bytes).map(Into::into),
        AnyEvent::OrderUpdate(_) => decode::<OrderUpdate>(bytes).map(Into::into),
        AnyEvent::PortfolioSnapshot(_) => decode::<PortfolioSnapshot>(bytes).map(Into::into),
        AnyEvent::Alert(_) => decode::<Alert>(bytes).map(Into::into),
        AnyEvent::DeadLetter(_) => decode::<DeadLetter>(bytes).map(Into::into),
        AnyEvent::FeedStatus(_) => decode::<FeedStatus>(bytes).map(Into::into),
    }
}

fn d(s: &str) -> Dec {
    Dec::parse(s).unwrap()
}

/// Every sample, and variants of each that take the other union branches, empty and longer
/// arrays and maps, extreme numbers and non-ASCII text.
fn corpus() -> Vec<AnyEvent> {
    let mut out = samples::all();
    for ev in samples::all() {
        // The header's other branches, on every kind.
        let mut full = ev.clone();
        let m = full.meta_mut();
        m.ts_processed = Some(i64::MIN);
        m.ts_event = i64::MAX;
        m.ts_ingest = -1;
        m.derived_from = vec!["a".into(), String::new(), "ü€𝄞".repeat(40)];
        m.traceparent = None;
        m.tracestate = Some("congo=t61rcWkgMzE".into());
        out.push(full);
        let mut bare = ev.clone();
        let m = bare.meta_mut();
        m.ts_processed = None;
        m.derived_from.clear();
        m.traceparent = None;
        m.tracestate = None;
        m.event_id = String::new();
        out.push(bare);
        let flipped = match ev {
            AnyEvent::TradeTick(mut t) => {
                t.aggressor = Side::Unknown;
                t.aggregated = true;
                t.price = Dec::new(i64::MIN, 28);
                t.quantity = Dec::new(i64::MAX, 0);
                AnyEvent::TradeTick(t)
            }
            AnyEvent::Kline(mut k) => {
                k.quote_volume = None;
                k.trades = None;
                k.closed = false;
                AnyEvent::Kline(k)
            }
            AnyEvent::BookTicker(mut b) => {
                b.update_id = None;
                AnyEvent::BookTicker(b)
            }
            AnyEvent::BookUpdate(mut b) => {
                b.snapshot = true;
                b.bids = (0..300)
                    .map(|i| Level {
                        price: Dec::new(6_400_000 - i, 2),
                        quantity: Dec::new(i * 7, 8),
                    })
                    .collect();
                b.asks.clear();
                AnyEvent::BookUpdate(b)
            }
            AnyEvent::MarkPrice(mut m) => {
                // A delivery contract: no funding; no index or settle price given.
                m.index_price = None;
                m.estimated_settle_price = None;
                m.funding_rate = None;
                m.next_funding_time = None;
                m.mark_price = Dec::new(i64::MAX, 28);
                AnyEvent::MarkPrice(m)
            }
            AnyEvent::Liquidation(mut l) => {
                l.side = OrderSide::Buy;
                l.order_type = String::new();
                l.time_in_force = "GTX".into();
                l.status = "PARTIALLY_FILLED".into();
                l.last_filled_quantity = Dec::new(0, 0);
                l.average_price = Dec::new(i64::MIN, 0);
                l.trade_time = i64::MIN;
                AnyEvent::Liquidation(l)
            }
            AnyEvent::Article(mut a) => {
                a.title = None;
                a.url = None;
                a.origin = None;
                a.keywords = (0..70).map(|i| format!("k{i}")).collect();
                a.tickers.clear();
                a.ts_crawled = None;
                a.text = "Биткоин 比特币 ₿".repeat(100);
                AnyEvent::Article(a)
            }
            AnyEvent::SentimentScore(mut s) => {
                s.probabilities.clear();
                s.assets.clear();
                s.truncated = true;
                s.sentiment_score = f64::NEG_INFINITY;
                s.confidence = -0.0;
                AnyEvent::SentimentScore(s)
            }
            AnyEvent::FusedSignal(mut f) => {
                f.trend = Trend::Stable;
                f.scores_used = i32::MIN;
                f.sources_used = i32::MAX;
                f.weights_used = (0..100)
                    .map(|i| (format!("src{i}"), f64::from(i) / 3.0))
                    .collect();
                AnyEvent::FusedSignal(f)
            }
            AnyEvent::OrderIntent(mut o) => {
                o.side = OrderSide::Sell;
                o.quantity = None;
                o.notional = Some(d("1000"));
                o.limit_price = Some(d("-0.00000001"));
                AnyEvent::OrderIntent(o)
            }
            AnyEvent::RiskDecision(mut r) => {
                r.verdict = Verdict::Rejected;
                r.approved_quantity = None;
                r.checks.clear();
                AnyEvent::RiskDecision(r)
            }
            AnyEvent::OrderUpdate(mut o) => {
                o.status = OrderStatus::PartiallyFilled;
                o.venue_order_id = None;
                o.last_fill_price = None;
                o.last_fill_quantity = None;
                o.fee = None;
                o.fee_asset = None;
                o.reason = Some("partial".into());
                AnyEvent::OrderUpdate(o)
            }
            AnyEvent::PortfolioSnapshot(mut p) => {
                let pos = p.positions[0].clone();
                p.positions = vec![pos.clone(), pos.clone(), pos];
                p.performance.clear();
                AnyEvent::PortfolioSnapshot(p)
            }
            AnyEvent::Alert(mut a) => {
                a.severity = Severity::Critical;
                a.subject = None;
                a.attributes = BTreeMap::from([("a".into(), String::new()), ("b".into(), "ß".into())]);
                AnyEvent::Alert(a)
            }
            AnyEvent::DeadLetter(mut dl) => {
                dl.original_key = Some("k".into());
                dl.original_id = None;
                dl.original_bytes = (0..=255).collect();
                dl.attempts = -3;
                AnyEvent::DeadLetter(dl)
            }
            AnyEvent::FeedStatus(mut f) => {
                f.symbol = None;
                f.status = FeedState::RateLimited;
                f.attributes.clear();
                AnyEvent::FeedStatus(f)
            }
        };
        out.push(flipped);
    }
    out
}

#[test]
fn every_sample_decodes_the_same_on_both_paths() {
    let corpus = corpus();
    assert!(corpus.len() >= 4 * EventKind::ALL.len());
    for ev in &corpus {
        let bytes = ev.encode().unwrap();
        let typed = agree(&bytes).unwrap_or_else(|e| panic!("{}: {e}", ev.kind()));
        assert_eq!(&typed, ev);
        assert_eq!(decode_as(ev, &bytes).unwrap(), typed);
        // The typed path is the one taken for the current schemas.
        let (fp, _) = split_header(&bytes).unwrap();
        assert_eq!(typed::fast_kind(fp), Some(ev.kind()));
    }
}

#[test]
fn every_sample_encodes_to_the_same_bytes_on_both_paths() {
    for ev in corpus() {
        let typed = ev.encode().unwrap();
        assert_eq!(typed, ev.encode_generic().unwrap(), "{}", ev.kind());
        assert_eq!(&typed[2..HEADER_LEN], &ev.kind().fingerprint().to_le_bytes());
    }
    // A decimal whose mantissa passes 64 bits is refused by both.
    let mut t = samples::trade(1);
    t.price = Dec::parse("79228162514264337593543950335").unwrap();
    assert!(matches!(
        encode(&t),
        Err(CodecError::Encode {
            kind: "TradeTick",
            ..
        })
    ));
    assert!(matches!(
        encode_generic(&t),
        Err(CodecError::Encode {
            kind: "TradeTick",
            ..
        })
    ));
}

#[test]
fn every_cut_and_every_padding_is_refused_alike() {
    for ev in corpus() {
        let bytes = ev.encode().unwrap();
        for cut in 0..bytes.len() {
            assert!(agree(&bytes[..cut]).is_err(), "{} cut at {cut}", ev.kind());
            assert!(decode_as(&ev, &bytes[..cut]).is_err());
        }
        for pad in [&[0u8][..], &[2, 0, 0], &[0xff; 12]] {
            let mut b = bytes.clone();
            b.extend_from_slice(pad);
            assert!(
                matches!(agree(&b), Err(CodecError::Trailing(n)) if n == pad.len()),
                "{}",
                ev.kind()
            );
        }
    }
}

#[test]
fn every_byte_changed_is_read_alike() {
    // Every position of every sample, set to values that hit each check: varint continuation
    // and its end, negative and large zig-zag values, booleans and indexes out of range.
    for ev in samples::all() {
        let bytes = ev.encode().unwrap();
        for pos in HEADER_LEN..bytes.len() {
            for val in [
                0x00, 0x01, 0x02, 0x03, 0x04, 0x06, 0x0d, 0x40, 0x7f, 0x80, 0x81, 0xc0, 0xfe, 0xff,
            ] {
                let mut b = bytes.clone();
                b[pos] = val;
                let _ = agree(&b);
                // And with a byte inserted or removed there (everything after it shifts).
                let mut ins = bytes.clone();
                ins.insert(pos, val);
                let _ = agree(&ins);
            }
            let mut del = bytes.clone();
            del.remove(pos);
            let _ = agree(&del);
        }
    }
}

#[test]
fn sized_blocks_and_split_blocks_read_alike() {
    // derived_from written as a sized block (-n, size), and as one block per item.
    for ev in samples::all() {
        let mut ev = ev;
        ev.meta_mut().derived_from = vec!["ab".into(), "c".into()];
        let bytes = ev.encode().unwrap();
        let m = ev.meta();
        // Header fields before derived_from: two strings, two longs, the ts_processed union.
        let enc = |v: i64| {
            let mut z = ((v << 1) ^ (v >> 63)) as u64;
            let mut out = Vec::new();
            while z >= 0x80 {
                out.push((z as u8 & 0x7f) | 0x80);
                z >>= 7;
            }
            out.push(z as u8);
            out
        };
        let mut p = HEADER_LEN;
        for s in [&m.event_id, &m.source] {
            p += enc(s.len() as i64).len() + s.len();
        }
        p += enc(m.ts_event).len() + enc(m.ts_ingest).len();
        p += match m.ts_processed {
            Some(t) => 1 + enc(t).len(),
            None => 1,
        };
        // As written: count 2, "ab", "c", end.
        let items = b"\x04ab\x02c";
        assert_eq!(
            &bytes[p..p + 7],
            &[&[4u8][..], items, &[0]].concat()[..],
            "{}",
            ev.kind()
        );
        let rest = &bytes[p + 7..];
        let mut sized = bytes[..p].to_vec();
        sized.extend(enc(-2));
        sized.extend(enc(items.len() as i64));
        sized.extend_from_slice(items);
        sized.push(0);
        sized.extend_from_slice(rest);
        assert_eq!(agree(&sized).unwrap(), ev);
        let mut split = bytes[..p].to_vec();
        split.extend_from_slice(b"\x02\x04ab\x02\x02c\x00");
        split.extend_from_slice(rest);
        assert_eq!(agree(&split).unwrap(), ev);
        // A sized block whose size is one byte off either way.
        for size in [items.len() as i64 - 1, items.len() as i64 + 1] {
            let mut bad = bytes[..p].to_vec();
            bad.extend(enc(-2));
            bad.extend(enc(size));
            bad.extend_from_slice(items);
            bad.push(0);
            bad.extend_from_slice(rest);
            assert!(agree(&bad).is_err(), "{}", ev.kind());
        }
    }
}

#[test]
fn decimals_out_of_range_are_refused_alike() {
    // A TradeTick's price scale (an int after the unscaled long) set to 29 and to -1.
    let t = samples::trade(3);
    let bytes = encode(&t).unwrap();
    let scale = t.price.to_parts().unwrap().1 as u8;
    let pos = bytes
        .windows(2)
        .enumerate()
        .skip(HEADER_LEN + 60)
        .find(|(_, w)| w[0] == scale * 2)
        .map(|(i, _)| i)
        .unwrap();
    for bad in [58u8, 1] {
        let mut b = bytes.clone();
        b[pos] = bad;
        assert!(
            matches!(
                agree(&b),
                Err(CodecError::Body {
                    kind: "TradeTick",
                    ..
                })
            ),
            "{:?}",
            agree(&b)
        );
        // Malformed after the bad decimal still wins, as on the generic path (strict first).
        let mut cut = b.clone();
        cut.pop();
        assert!(matches!(agree(&cut), Err(CodecError::Malformed { .. })));
        let mut padded = b;
        padded.push(0);
        assert!(matches!(agree(&padded), Err(CodecError::Trailing(1))));
    }
}

#[test]
fn other_writer_schemas_take_the_generic_path() {
    // An unknown fingerprint is refused alike; a registered older schema is read by resolution
    // (tests/evolution.rs covers its values): the typed path never claims it.
    let mut unknown = MAGIC.to_vec();
    unknown.extend_from_slice(&7u64.to_le_bytes());
    assert!(matches!(agree(&unknown), Err(CodecError::UnknownSchema(7))));
    assert_eq!(typed::fast_kind(7), None);
    let v0 = include_str!("data/trade_tick.v0.avsc");
    let fp = registry().register(EventKind::TradeTick, v0).unwrap();
    assert_eq!(typed::fast_kind(fp), None);
    for k in EventKind::ALL {
        assert_eq!(typed::fast_fingerprint(*k), Some(k.fingerprint()));
    }
}

/// Mutations of a valid message: (position, operation, byte).
fn mutate(bytes: &[u8], ops: &[(usize, u8, u8)]) -> Vec<u8> {
    let mut b = bytes.to_vec();
    for &(pos, op, val) in ops {
        if b.len() <= HEADER_LEN {
            break;
        }
        let p = HEADER_LEN + pos % (b.len() - HEADER_LEN);
        match op % 4 {
            0 => b[p] = val,
            1 => b.insert(p, val),
            2 => {
                b.remove(p);
            }
            _ => b[p] ^= 1 << (val % 8),
        }
    }
    b
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn random_bodies_are_read_alike(
        body in proptest::collection::vec(any::<u8>(), 0..400),
        kind in 0usize..EventKind::ALL.len(),
    ) {
        let k = EventKind::ALL[kind];
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&k.fingerprint().to_le_bytes());
        bytes.extend_from_slice(&body);
        let _ = agree(&bytes);
    }

    #[test]
    fn mutated_messages_are_read_alike(
        which in 0usize..1000,
        ops in proptest::collection::vec((any::<usize>(), any::<u8>(), any::<u8>()), 1..6),
    ) {
        let corpus = corpus();
        let ev = &corpus[which % corpus.len()];
        let bytes = mutate(&ev.encode().unwrap(), &ops);
        let _ = agree(&bytes);
    }
}
