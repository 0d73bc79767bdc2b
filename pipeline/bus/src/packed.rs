//! Messages read off a networked bus, packed into buffers shared between consecutive records.
//!
//! Decoding a record into an [`OutMessage`](crate::OutMessage) costs four allocations (topic, key,
//! id, payload) and a fifth for the `Arc` that the delivery and the member's in-flight record
//! share, each freed later on another thread. A [`Packer`] instead copies a record's text and
//! payload into the free end of one buffer, a [`CHUNK`] shared by the records after it, and hands
//! out a [`Packed`]: one reference-counted slice of that buffer. One allocation serves many
//! records, and a clone is one reference count (taken on the reader's core and given back on
//! the subscriber's or the member's: each count is an atomic operation on a line the cores
//! pass between them).
//!
//! The cost: a chunk is freed when the last message in it goes, so a subscriber that keeps one
//! delivery of a chunk unacked keeps the whole chunk (at most [`CHUNK`] bytes per held delivery,
//! bounded by the subscription's `max_in_flight`).

use bytes::{Bytes, BytesMut};

/// Bytes a [`Packer`] allocates at once: about 60 records of 250 bytes. A record that does not
/// fit in what is left of a chunk starts a new one (of its own size when it is larger).
pub(crate) const CHUNK: usize = 16 * 1024;

/// A received message: topic, id, key and payload one after the other in one slice.
#[derive(Clone, Debug)]
pub(crate) struct Packed {
    record: Bytes,
    topic_end: usize,
    id_end: usize,
    /// Where the payload starts (the key is between `id_end` and here).
    key_end: usize,
    /// Whether the message has a key (possibly empty).
    keyed: bool,
}

impl Packed {
    /// The text between two ends; the packer wrote whole strings there, so it is UTF-8 (an empty
    /// text if it were not). Checked again on each access (the crate has no `unsafe`): a pass
    /// over a few dozen ASCII bytes, against the second reference count per record that keeping
    /// the text in a `ByteString` of its own cost.
    fn text(&self, start: usize, end: usize) -> &str {
        self.record
            .get(start..end)
            .and_then(|b| std::str::from_utf8(b).ok())
            .unwrap_or_default()
    }

    pub(crate) fn topic(&self) -> &str {
        self.text(0, self.topic_end)
    }

    pub(crate) fn id(&self) -> &str {
        self.text(self.topic_end, self.id_end)
    }

    pub(crate) fn key(&self) -> Option<&str> {
        self.keyed.then(|| self.text(self.id_end, self.key_end))
    }

    pub(crate) fn payload(&self) -> &[u8] {
        self.record.get(self.key_end..).unwrap_or_default()
    }

    /// The payload as its own handle on the chunk (a reference count, no copy).
    pub(crate) fn payload_bytes(&self) -> Bytes {
        self.record.slice(self.key_end.min(self.record.len())..)
    }
}

/// Packs the records one reader reads into shared chunks.
#[derive(Default)]
pub(crate) struct Packer {
    /// The free end of the current chunk.
    free: BytesMut,
}

impl Packer {
    pub(crate) fn pack(&mut self, topic: &str, id: &str, key: Option<&str>, payload: &[u8]) -> Packed {
        let key_end = topic.len() + id.len() + key.map_or(0, str::len);
        let need = key_end + payload.len();
        if self.free.capacity() < need {
            self.free = BytesMut::with_capacity(need.max(CHUNK));
        }
        for part in [topic, id, key.unwrap_or_default()] {
            self.free.extend_from_slice(part.as_bytes());
        }
        self.free.extend_from_slice(payload);
        Packed {
            record: self.free.split().freeze(),
            topic_end: topic.len(),
            id_end: topic.len() + id.len(),
            key_end,
            keyed: key.is_some(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packs_records_into_shared_chunks_and_reads_them_back() {
        let mut p = Packer::default();
        let mut out = Vec::new();
        for i in 0..200 {
            let payload = vec![i as u8; 100 + i];
            let key = (i % 3 != 0).then(|| format!("k{i}"));
            let m = p.pack(
                &format!("news.crypto.{i}"),
                &format!("id-{i}"),
                key.as_deref(),
                &payload,
            );
            out.push((i, key, payload, m));
        }
        for (i, key, payload, m) in &out {
            assert_eq!(m.topic(), format!("news.crypto.{i}"));
            assert_eq!(m.id(), format!("id-{i}"));
            assert_eq!(m.key(), key.as_deref());
            assert_eq!(m.payload(), &payload[..]);
        }
        // An empty key is a key; a record larger than a chunk gets a chunk of its own.
        let big = vec![7u8; CHUNK * 2];
        let m = p.pack("t", "", Some(""), &big);
        assert_eq!((m.topic(), m.id(), m.key()), ("t", "", Some("")));
        assert_eq!(m.payload().len(), CHUNK * 2);
        // Records after it start a new chunk.
        let n = p.pack("ü.topic", "ïd", None, b"x");
        assert_eq!(
            (n.topic(), n.id(), n.key(), n.payload()),
            ("ü.topic", "ïd", None, &b"x"[..])
        );
        // Clones and the payload's own handle share the buffer: the payload's pointer is the same.
        let c = out[5].3.clone();
        assert_eq!(c.payload().as_ptr(), out[5].3.payload().as_ptr());
        assert_eq!(c.payload_bytes().as_ptr(), c.payload().as_ptr());
        assert_eq!(&c.payload_bytes()[..], &out[5].2[..]);
    }
}
