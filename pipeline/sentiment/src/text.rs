//! Text preparation: what the model reads of an article.

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

/// Removes HTML tags, scripts and styles, decodes common entities and normalises whitespace.
pub fn strip_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let lower = s.to_ascii_lowercase();
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < s.len() {
        let tag_start = bytes[i] == b'<'
            && bytes
                .get(i + 1)
                .is_some_and(|b| b.is_ascii_alphabetic() || matches!(b, b'/' | b'!' | b'?'));
        if tag_start {
            // Skip the contents of script and style elements entirely.
            let skip_to = ["script", "style"].iter().find_map(|tag| {
                let open = format!("<{tag}");
                lower[i..].starts_with(&open).then(|| {
                    let close = format!("</{tag}>");
                    lower[i..]
                        .find(&close)
                        .map(|j| i + j + close.len())
                        .unwrap_or(s.len())
                })
            });
            if let Some(j) = skip_to {
                i = j;
                out.push(' ');
                continue;
            }
            match s[i..].find('>') {
                Some(j) => {
                    i += j + 1;
                    out.push(' ');
                    continue;
                }
                None => {
                    // A lone '<' is text.
                    out.push('<');
                    i += 1;
                    continue;
                }
            }
        }
        if bytes[i] == b'&' {
            if let Some(j) = s[i..].find(';').filter(|j| *j <= 10) {
                let ent = &s[i + 1..i + j];
                let decoded = match ent {
                    "amp" => Some('&'),
                    "lt" => Some('<'),
                    "gt" => Some('>'),
                    "quot" => Some('"'),
                    "apos" | "#39" => Some('\''),
                    "nbsp" => Some(' '),
                    _ => ent
                        .strip_prefix("#x")
                        .and_then(|h| u32::from_str_radix(h, 16).ok())
                        .or_else(|| ent.strip_prefix('#').and_then(|d| d.parse().ok()))
                        .and_then(char::from_u32),
                };
                if let Some(c) = decoded {
                    out.push(c);
                    i += j + 1;
                    continue;
                }
            }
        }
        let c = s[i..].chars().next().unwrap_or(' ');
        out.push(c);
        i += c.len_utf8();
    }
    normalise_whitespace(&out)
}

/// Collapses runs of whitespace (including control characters) into single spaces.
pub fn normalise_whitespace(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for w in s
        .split(|c: char| c.is_whitespace() || c.is_control())
        .filter(|w| !w.is_empty())
    {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(w);
    }
    out
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
    fn strips_markup() {
        let html = "<p>Shares <b>rose</b> 5%&nbsp;on&#160;Tuesday &amp; more</p><script>var x = '<b>';</script><style>p{}</style>\n\n end";
        assert_eq!(strip_html(html), "Shares rose 5% on Tuesday & more end");
        assert_eq!(strip_html("a < b and c > d"), "a < b and c > d");
        assert_eq!(strip_html("x<br/>y<!-- c -->z"), "x y z");
        assert_eq!(strip_html("x &unknown; y"), "x &unknown; y");
    }

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
