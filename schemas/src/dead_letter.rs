//! Dead letters that always fit on the bus.
//!
//! A dead letter carries the message it stands for; kept whole, a message just under the bus's
//! limit (NATS takes 1 MiB by default) gives a dead letter just over it, which the bus refuses, so
//! the message was retried forever. [`DeadLetter::bounded`] keeps at most
//! [`DeadLetter::MAX_ORIGINAL_BYTES`] of the original, with its full size and SHA-256 in `error`,
//! and cuts over-long strings, so that an encoded dead letter stays far under
//! [`MAX_EVENT_BYTES`](crate::MAX_EVENT_BYTES).

use sha2::{Digest, Sha256};

use crate::events::DeadLetter;

impl DeadLetter {
    /// Most bytes of the original message a dead letter keeps.
    pub const MAX_ORIGINAL_BYTES: usize = 256 << 10;
    /// Most bytes of `error` (before the note on a cut original).
    pub const MAX_ERROR_BYTES: usize = 16 << 10;
    /// Most bytes of each other string: stage, reason, topic, key, ids, source, trace headers.
    pub const MAX_FIELD_BYTES: usize = 1 << 10;
    /// Most ids kept in `derived_from`.
    pub const MAX_DERIVED_FROM: usize = 16;

    /// This dead letter with every field within its bound. An original longer than
    /// [`Self::MAX_ORIGINAL_BYTES`] keeps its first bytes, and `error` ends with
    /// `(original cut to K of N bytes, sha256 H)`, the full original's size and hash in hex.
    pub fn bounded(mut self) -> DeadLetter {
        cut(&mut self.error, Self::MAX_ERROR_BYTES);
        if self.original_bytes.len() > Self::MAX_ORIGINAL_BYTES {
            let hash = Sha256::digest(&self.original_bytes);
            let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
            self.error.push_str(&format!(
                " (original cut to {} of {} bytes, sha256 {hex})",
                Self::MAX_ORIGINAL_BYTES,
                self.original_bytes.len()
            ));
            self.original_bytes.truncate(Self::MAX_ORIGINAL_BYTES);
            self.original_bytes.shrink_to_fit();
        }
        for s in [
            &mut self.stage,
            &mut self.reason,
            &mut self.original_topic,
            &mut self.meta.source,
        ] {
            cut(s, Self::MAX_FIELD_BYTES);
        }
        for s in [
            &mut self.original_key,
            &mut self.original_id,
            &mut self.meta.traceparent,
            &mut self.meta.tracestate,
        ]
        .into_iter()
        .flatten()
        {
            cut(s, Self::MAX_FIELD_BYTES);
        }
        self.meta.derived_from.truncate(Self::MAX_DERIVED_FROM);
        for s in &mut self.meta.derived_from {
            cut(s, Self::MAX_FIELD_BYTES);
        }
        self
    }

    /// Whether the original was cut by [`DeadLetter::bounded`] (its note is in `error`).
    pub fn original_cut(&self) -> bool {
        self.error.contains(" (original cut to ")
    }
}

/// Cuts `s` to at most `max` bytes, on a character boundary, marking the cut with `…`.
fn cut(s: &mut String, max: usize) {
    if s.len() <= max {
        return;
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
    s.push('…');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{encode, AnyEvent, EventKind, Meta, MAX_EVENT_BYTES};

    fn letter(original: Vec<u8>, error: String, key: String) -> DeadLetter {
        DeadLetter {
            meta: Meta::derived(EventKind::DeadLetter, "stage", &[], "x", 1, 1),
            stage: "stage".into(),
            reason: "decode_error".into(),
            error,
            original_topic: "news.articles.x".into(),
            original_key: Some(key),
            original_id: None,
            original_bytes: original,
            attempts: 1,
        }
    }

    #[test]
    fn a_bounded_dead_letter_of_any_message_fits_the_bus() {
        // Just under NATS's 1 MiB: the dead letter kept whole would not fit.
        let original: Vec<u8> = (0..(1usize << 20) - 100).map(|i| (i % 251) as u8).collect();
        let whole = letter(original.clone(), "bad magic".into(), "k".into());
        assert!(encode(&whole).unwrap().len() > 1 << 20);
        let dl = letter(original.clone(), "é".repeat(100_000), "ü".repeat(5_000)).bounded();
        let bytes = encode(&dl).unwrap();
        assert!(bytes.len() < MAX_EVENT_BYTES / 3, "{} bytes", bytes.len());
        assert_eq!(dl.original_bytes, original[..DeadLetter::MAX_ORIGINAL_BYTES]);
        let hex: String = Sha256::digest(&original)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert!(
            dl.error.ends_with(&format!(
                " (original cut to 262144 of {} bytes, sha256 {hex})",
                original.len()
            )),
            "{}",
            &dl.error[dl.error.len() - 200..]
        );
        assert!(dl.original_cut());
        assert!(dl.error.starts_with("éé"));
        assert!(dl
            .original_key
            .as_ref()
            .is_some_and(|k| k.len() <= DeadLetter::MAX_FIELD_BYTES));
        // It decodes back as it is.
        assert_eq!(AnyEvent::decode(&bytes).unwrap(), AnyEvent::DeadLetter(dl));
    }

    #[test]
    fn a_small_dead_letter_is_kept_as_it_is() {
        let dl = letter(b"\x00\x01 not avro".to_vec(), "bad magic".into(), "k".into());
        assert_eq!(dl.clone().bounded(), dl);
        assert!(!dl.original_cut());
    }
}
