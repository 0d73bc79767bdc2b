use auroraq_schemas::*;

#[test]
fn every_kind_round_trips() {
    let samples = samples::all();
    assert_eq!(samples.len(), EventKind::ALL.len(), "one sample per kind");
    for ev in samples {
        let bytes = ev.encode().unwrap_or_else(|e| panic!("{:?}: {e}", ev.kind()));
        assert_eq!(&bytes[..2], &MAGIC);
        let (fp, _) = split_header(&bytes).unwrap();
        assert_eq!(fp, ev.kind().fingerprint());
        let back = AnyEvent::decode(&bytes).unwrap_or_else(|e| panic!("{:?}: {e}", ev.kind()));
        assert_eq!(back, ev);
    }
}
