//! Text preparation: what the model reads of an article.
//!
//! The clean-up itself ([`strip_html`], [`normalise_whitespace`]) lives in `auroraq-text`, shared
//! with the news connectors; it is re-exported here.

pub use auroraq_text::{normalise_whitespace, strip_html};

/// Texts longer than this (in characters) are cut before tokenising, and flagged.
pub const MAX_CHARS: usize = 10_000;

/// A text ready for the tokenizer.
#[derive(Clone, Debug, PartialEq)]
pub struct Prepared {
    pub text: String,
    /// Cut at [`MAX_CHARS`].
    pub truncated: bool,
}

/// Why an article has nothing to score.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum TextError {
    #[error("empty text: no title and no body after removing markup and whitespace")]
    Empty,
    #[error("text has no letters or digits ({0} characters of symbols)")]
    NoWords(usize),
}

/// Title plus body, markup removed, whitespace normalised, cut at [`MAX_CHARS`].
pub fn prepare(title: Option<&str>, body: &str) -> Result<Prepared, TextError> {
    let title = title.map(strip_html).unwrap_or_default();
    let body = strip_html(body);
    let mut text = match (title.is_empty(), body.is_empty()) {
        (true, true) => return Err(TextError::Empty),
        (false, true) => title,
        (true, false) => body,
        (false, false) => {
            // Feeds often repeat the title as the body's first sentence.
            if body.starts_with(&title) {
                body
            } else {
                let sep = if title.ends_with(['.', '!', '?', ':']) {
                    " "
                } else {
                    ". "
                };
                format!("{title}{sep}{body}")
            }
        }
    };
    if !text.chars().any(char::is_alphanumeric) {
        return Err(TextError::NoWords(text.chars().count()));
    }
    let mut truncated = false;
    if let Some((cut, _)) = text.char_indices().nth(MAX_CHARS) {
        text.truncate(cut);
        truncated = true;
    }
    Ok(Prepared { text, truncated })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joins_title_and_body() {
        assert_eq!(
            prepare(Some("Profit up"), "Net profit rose.").unwrap().text,
            "Profit up. Net profit rose."
        );
        assert_eq!(
            prepare(Some("Profit up"), "Profit up 10% in Q3").unwrap().text,
            "Profit up 10% in Q3"
        );
        assert_eq!(prepare(None, "<p>Body only</p>").unwrap().text, "Body only");
    }

    #[test]
    fn refuses_empty_and_symbol_only() {
        assert_eq!(prepare(None, "  <br/> \n"), Err(TextError::Empty));
        assert_eq!(prepare(Some(""), ""), Err(TextError::Empty));
        assert!(matches!(prepare(None, "!!! ---"), Err(TextError::NoWords(_))));
    }

    #[test]
    fn cuts_huge_texts() {
        let long = "word ".repeat(5000);
        let p = prepare(None, &long).unwrap();
        assert!(p.truncated);
        assert_eq!(p.text.chars().count(), MAX_CHARS);
        let p = prepare(None, "short").unwrap();
        assert!(!p.truncated);
        // Multi-byte characters are cut on a character boundary.
        let p = prepare(None, &"é".repeat(MAX_CHARS + 5)).unwrap();
        assert_eq!(p.text.chars().count(), MAX_CHARS);
    }
}
