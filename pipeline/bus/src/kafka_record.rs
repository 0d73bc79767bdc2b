//! The value of a Kafka record the bus writes: a short frame (the AuroraQ topic, the message id
//! and the publish time) followed by the message's payload, unchanged.
//!
//! ```text
//! offset  size  field
//!      0     4  magic: 0xAA 'a' 'q' 0x01 (the last byte is the layout's version)
//!      4     8  publish time, Unix µs, i64 little-endian
//!     12     2  topic length T, u16 little-endian
//!     14     2  id length I, u16 little-endian (0: no id)
//!     16     T  the AuroraQ topic, UTF-8
//!   16+T     I  the message id, UTF-8
//! 16+T+I     …  the payload (AuroraQ's events: Avro single-object encoding, 0xC3 0x01 …)
//! ```
//!
//! Why not headers: librdkafka parses a record's headers into a list of its own on first
//! access (an allocation for the list, one per header, a copy of each name and value, all freed
//! with the message), which cost about 14 % of the Kafka consumer's CPU in `bench bus --kafka`.
//! Reading the frame costs two bounds checks and a UTF-8 check of the topic and id. Records
//! written before this layout (the `aq` header, or the three `aq-topic`, `aq-id`, `aq-ts`
//! headers) and records of other producers are still read through their headers: a value that
//! does not start with the magic, or whose frame does not hold together, is not framed.

/// The first four bytes of a framed value: a marker no Avro single-object message starts with
/// (those start 0xC3 0x01), "aq", and the layout's version.
pub const MAGIC: [u8; 4] = [0xAA, b'a', b'q', 0x01];

/// Bytes of the frame before the topic.
const FIXED: usize = 16;

/// What a framed value holds.
#[derive(Debug, PartialEq, Eq)]
pub struct Framed<'a> {
    pub topic: &'a str,
    /// Empty when the publisher gave none.
    pub id: &'a str,
    /// Publish time, Unix µs.
    pub published_us: i64,
    pub payload: &'a [u8],
}

/// Why a message cannot be framed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("topic of {0} bytes: a Kafka record's frame holds at most 65,535")]
    TopicTooLong(usize),
    #[error("message id of {0} bytes: a Kafka record's frame holds at most 65,535")]
    IdTooLong(usize),
}

/// The topic's and the id's lengths as the frame holds them; an error when either is too long.
fn lengths(topic: &str, id: &str) -> Result<(u16, u16), FrameError> {
    let t = u16::try_from(topic.len()).map_err(|_| FrameError::TopicTooLong(topic.len()))?;
    let i = u16::try_from(id.len()).map_err(|_| FrameError::IdTooLong(id.len()))?;
    Ok((t, i))
}

/// Whether a message with this topic and id can be framed (a publisher checks a whole batch
/// before it sends any of it).
pub fn check(topic: &str, id: &str) -> Result<(), FrameError> {
    lengths(topic, id).map(drop)
}

/// Writes the frame and the payload into `out` (cleared first).
pub fn write(
    out: &mut Vec<u8>,
    topic: &str,
    id: &str,
    published_us: i64,
    payload: &[u8],
) -> Result<(), FrameError> {
    let (t, i) = lengths(topic, id)?;
    out.clear();
    out.reserve(FIXED + topic.len() + id.len() + payload.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&published_us.to_le_bytes());
    out.extend_from_slice(&t.to_le_bytes());
    out.extend_from_slice(&i.to_le_bytes());
    out.extend_from_slice(topic.as_bytes());
    out.extend_from_slice(id.as_bytes());
    out.extend_from_slice(payload);
    Ok(())
}

/// The frame of a record's value; None when the value is not framed (no magic, cut short, an
/// empty topic, or a topic or id that is not UTF-8).
pub fn read(value: &[u8]) -> Option<Framed<'_>> {
    let (fixed, rest) = value.split_first_chunk::<FIXED>()?;
    let (magic, fixed) = fixed.split_first_chunk::<4>()?;
    if *magic != MAGIC {
        return None;
    }
    let (time, lens) = fixed.split_first_chunk::<8>()?;
    let (t, i) = lens.split_first_chunk::<2>()?;
    let t = usize::from(u16::from_le_bytes(*t));
    let i = usize::from(u16::from_le_bytes(i.first_chunk::<2>().copied()?));
    if t == 0 || rest.len() < t + i {
        return None;
    }
    let (topic, rest) = rest.split_at(t);
    let (id, payload) = rest.split_at(i);
    Some(Framed {
        topic: std::str::from_utf8(topic).ok()?,
        id: std::str::from_utf8(id).ok()?,
        published_us: i64::from_le_bytes(*time),
        payload,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_what_is_not_a_frame() {
        let mut out = Vec::new();
        write(
            &mut out,
            "news.crypto.x",
            "e1",
            1_700_000_000_000_001,
            b"\xC3\x01avro",
        )
        .unwrap();
        assert_eq!(out.len(), 16 + 13 + 2 + 6);
        assert_eq!(&out[..4], &MAGIC);
        let f = read(&out).unwrap();
        assert_eq!(
            f,
            Framed {
                topic: "news.crypto.x",
                id: "e1",
                published_us: 1_700_000_000_000_001,
                payload: b"\xC3\x01avro",
            }
        );
        // No id and no payload; a negative time (before 1970) is kept as written.
        write(&mut out, "a.b", "", -5, b"").unwrap();
        assert_eq!(
            read(&out),
            Some(Framed {
                topic: "a.b",
                id: "",
                published_us: -5,
                payload: b""
            })
        );
        // Cut anywhere inside the frame: not framed.
        write(&mut out, "a.b", "id-é", 7, b"p").unwrap();
        for cut in 0..out.len() - 1 {
            assert_eq!(read(&out[..cut]), None, "cut at {cut}");
        }
        assert!(read(&out).is_some());
        // Another magic or version, an Avro message, an empty topic, bytes that are not UTF-8.
        let mut other = out.clone();
        other[3] = 2;
        assert_eq!(read(&other), None, "another version");
        assert_eq!(
            read(b"\xC3\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00x"),
            None
        );
        write(&mut out, "", "id", 1, b"p").unwrap();
        assert_eq!(read(&out), None, "an empty topic");
        write(&mut out, "a.b", "ab", 1, b"p").unwrap();
        let at = 16 + 3;
        out[at] = 0xFF;
        assert_eq!(read(&out), None, "an id that is not UTF-8");
        // Limits of the lengths.
        let long = "x".repeat(70_000);
        assert_eq!(
            write(&mut out, &long, "", 1, b""),
            Err(FrameError::TopicTooLong(70_000))
        );
        assert_eq!(
            write(&mut out, "a", &long, 1, b""),
            Err(FrameError::IdTooLong(70_000))
        );
        assert_eq!(check("a", &long), Err(FrameError::IdTooLong(70_000)));
        assert_eq!(check("a.b", "id"), Ok(()));
        let max = "y".repeat(65_535);
        write(&mut out, "a", &max, 1, b"z").unwrap();
        let f = read(&out).unwrap();
        assert_eq!((f.id.len(), f.payload), (65_535, &b"z"[..]));
    }
}
