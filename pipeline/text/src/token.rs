//! The word tokeniser shared by [`crate::keywords`] and [`crate::scenario`].
//!
//! The text is lower-cased ([`str::to_lowercase`]); a token is a maximal run of alphanumeric
//! characters ([`char::is_alphanumeric`]), so punctuation, symbols, apostrophes and hyphens
//! separate tokens (`U.S.-China` gives `u`, `s`, `china`; `Bitcoin's` gives `bitcoin`, `s`).
//! `scripts/model/build_keyword_background.py` implements the same rule in Python.

use std::collections::BTreeMap;

/// A lower-cased text and the byte ranges of its tokens.
pub(crate) struct Tokens {
    lower: String,
    spans: Vec<(usize, usize)>,
}

impl Tokens {
    pub(crate) fn new(text: &str) -> Self {
        let lower = text.to_lowercase();
        let mut spans = Vec::new();
        let mut start = None;
        for (i, c) in lower.char_indices() {
            match (c.is_alphanumeric(), start) {
                (true, None) => start = Some(i),
                (false, Some(s)) => {
                    spans.push((s, i));
                    start = None;
                }
                _ => {}
            }
        }
        if let Some(s) = start {
            spans.push((s, lower.len()));
        }
        Tokens { lower, spans }
    }

    pub(crate) fn len(&self) -> usize {
        self.spans.len()
    }

    /// The `i`-th token; empty past the end.
    pub(crate) fn get(&self, i: usize) -> &str {
        self.spans
            .get(i)
            .and_then(|&(s, e)| self.lower.get(s..e))
            .unwrap_or("")
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &str> + '_ {
        (0..self.len()).map(|i| self.get(i))
    }

    /// Every distinct token with the positions where it occurs (ascending), sorted by token.
    pub(crate) fn index(&self) -> BTreeMap<&str, Vec<usize>> {
        let mut index: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for (i, t) in self.iter().enumerate() {
            index.entry(t).or_default().push(i);
        }
        index
    }
}

/// Whether a token is number-like: all characters numeric (`2025`, `٢٠٢٥`), or ASCII digits followed
/// by at most two ASCII letters (`97k`, `10th`, `2x`).
pub(crate) fn is_number_like(tok: &str) -> bool {
    if tok.chars().all(char::is_numeric) {
        return true;
    }
    let digits = tok.bytes().take_while(u8::is_ascii_digit).count();
    let rest = &tok.as_bytes()[digits..];
    digits > 0 && rest.len() <= 2 && rest.iter().all(u8::is_ascii_lowercase)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(s: &str) -> Vec<String> {
        Tokens::new(s).iter().map(str::to_owned).collect()
    }

    #[test]
    fn splits_on_non_alphanumerics() {
        assert_eq!(
            toks("Bitcoin's U.S.-China $97K rally—ETFs: +5%"),
            ["bitcoin", "s", "u", "s", "china", "97k", "rally", "etfs", "5"]
        );
        assert_eq!(toks(""), Vec::<String>::new());
        assert_eq!(toks("  ...  "), Vec::<String>::new());
        assert_eq!(toks("Größe Ärger"), ["größe", "ärger"]);
        assert_eq!(toks("比特币 ETF 获批"), ["比特币", "etf", "获批"]);
        assert_eq!(toks("snake_case"), ["snake", "case"]);
    }

    #[test]
    fn number_like() {
        for t in ["2025", "97k", "10th", "2x", "1bn", "٢٠٢٥", "½"] {
            assert!(is_number_like(t), "{t}");
        }
        for t in ["q2", "1inch", "21shares", "btc", "usd1", "3abc"] {
            assert!(!is_number_like(t), "{t}");
        }
    }

    #[test]
    fn index_lists_positions() {
        let t = Tokens::new("a b a");
        let idx = t.index();
        assert_eq!(idx.get("a"), Some(&vec![0, 2]));
        assert_eq!(idx.get("b"), Some(&vec![1]));
        assert_eq!(t.get(7), "");
    }
}
