//! Keywords: the salient financial terms of a text.
//!
//! [`keywords`] (or [`KeywordExtractor::extract`]) ranks the terms of a text and returns the best
//! `max` of them. It is deterministic: the same text gives the same terms in the same order.
//!
//! ```
//! use auroraq_text::keywords::keywords;
//! let k = keywords("Much-Awaited Fed Rate Cut May Not Come Before Q4, ING Says", 3);
//! assert_eq!(k, ["rate cut", "fed", "ing"]); // finance terms, then the rarest word (the bank)
//! ```
//!
//! # Terms
//!
//! The text is tokenised (lower-cased; a token is a maximal run of alphanumeric characters, so
//! `All-Time High` gives `all time high` and `Bitcoin's` gives `bitcoin`, `s`). The terms are
//!
//! - the **lexicon phrases** found in the token sequence: the entries of several words of the
//!   finance lexicon (`rate cut`, `all time high`, `shiba inu`), matched on consecutive tokens,
//!   stop-words included;
//! - the **words**: tokens of at least two characters that are not stop-words
//!   (`data/stopwords.txt`) and not number-like (all numeric, like `2025`, or ASCII digits and at most
//!   two letters, like `97k` or `10th`), and at most 40 characters long. A word that is part of a lexicon phrase found in the text is
//!   hidden (everywhere in the text): `rate cut` is returned, never `rate` or `cut` beside it.
//!
//! A term is returned as written by the tokeniser: lower-case, its words separated by one space.
//! No term is returned twice.
//!
//! # Score
//!
//! ```text
//! score(t) = boost(t) + (1 + ln count(t)) · idf(t) / idf_max
//! idf(t)   = ln((N + 1) / (df(t) + 1)) + 1          idf_max = idf at df = 1
//! ```
//!
//! - `boost` is 2.0 for a lexicon term of kind `finance` (events, macro, market and legal terms:
//!   `etf`, `sec`, `hack`, `rate cut`, `earnings`, ...), 1.0 for kind `asset` (crypto asset names and
//!   tickers: `bitcoin`, `btc`, `xrp`, ...), 0 otherwise (`data/finance_lexicon.tsv`);
//! - `count` is how often the term occurs in the text;
//! - `N` and `df` come from the background table `data/background_df.tsv`: the number of background
//!   documents and how many of them contain the term (33,068 documents: the crypto news headlines of
//!   `data/crypto/` and the Financial PhraseBank training split `data/fpb/train.csv`, built by
//!   `scripts/model/build_keyword_background.py`; terms with df < 2 are left out, and a term missing
//!   from it counts as df = 1).
//!
//! So, in a short text, lexicon finance terms come first, then asset names, then the other words
//! from the rarest (a name, `huione`) to the most common (`price`). Terms are ranked by score, highest
//! first, ties broken by the term (byte order).
//!
//! The tables are embedded in the binary; [`KeywordExtractor::new`] parses them (about a
//! millisecond), and [`keywords`] uses one built on first use. Extraction runs in time linear in
//! the text (plus sorting its distinct terms).

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::OnceLock;

use crate::token::{is_number_like, Tokens};

/// The embedded background document-frequency table: `#documents\tN`, then `term\tdf` lines.
pub const BACKGROUND_DF: &str = include_str!("../data/background_df.tsv");
/// The embedded finance lexicon: `term\tkind` lines, kind `finance` or `asset`, `#` comments.
pub const FINANCE_LEXICON: &str = include_str!("../data/finance_lexicon.tsv");
/// The embedded stop-words: one a line, `#` comments.
pub const STOPWORDS: &str = include_str!("../data/stopwords.txt");

/// Words longer than this (in characters) are never keywords (a megabyte of `a` is no term).
pub const MAX_WORD_CHARS: usize = 40;

/// Boost of a lexicon term of kind `finance`.
pub const FINANCE_BOOST: f64 = 2.0;
/// Boost of a lexicon term of kind `asset`.
pub const ASSET_BOOST: f64 = 1.0;

/// The best `max` keywords of `text`, with the embedded tables (see the [module docs](self)).
pub fn keywords(text: &str, max: usize) -> Vec<String> {
    KeywordExtractor::shared().extract(text, max)
}

/// The lower-cased tokens of `text`, as the extractor sees them (stop-words included).
pub fn tokenize(text: &str) -> Vec<String> {
    Tokens::new(text).iter().map(str::to_owned).collect()
}

/// A term and its score.
#[derive(Clone, Debug, PartialEq)]
pub struct Keyword {
    pub term: String,
    pub score: f64,
}

/// What a lexicon term is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TermKind {
    /// Events, macro, market and legal terms; boost [`FINANCE_BOOST`].
    Finance,
    /// Crypto asset names and tickers; boost [`ASSET_BOOST`].
    Asset,
}

impl TermKind {
    fn boost(self) -> f64 {
        match self {
            TermKind::Finance => FINANCE_BOOST,
            TermKind::Asset => ASSET_BOOST,
        }
    }
}

/// A malformed table given to [`KeywordExtractor::from_tables`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableError {
    /// Which table: `background`, `lexicon` or `stopwords`.
    pub table: &'static str,
    /// 1-based line number.
    pub line: usize,
    pub message: String,
}

impl fmt::Display for TableError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} table, line {}: {}", self.table, self.line, self.message)
    }
}

impl std::error::Error for TableError {}

/// A keyword extractor: the background table, the lexicon and the stop-words, parsed.
///
/// Build it once ([`KeywordExtractor::new`] or [`KeywordExtractor::shared`]); [`extract`] takes
/// `&self`, and the extractor is `Send + Sync`.
///
/// [`extract`]: KeywordExtractor::extract
#[derive(Clone, Debug)]
pub struct KeywordExtractor {
    documents: u64,
    df: HashMap<String, u64>,
    lexicon: HashMap<String, TermKind>,
    /// Lexicon phrases (terms of several words) by their first word: (words, term).
    phrases: HashMap<String, Vec<(Vec<String>, String)>>,
    stopwords: HashSet<String>,
    idf_max: f64,
}

impl Default for KeywordExtractor {
    fn default() -> Self {
        Self::new()
    }
}

impl KeywordExtractor {
    /// An extractor with the embedded tables ([`BACKGROUND_DF`], [`FINANCE_LEXICON`],
    /// [`STOPWORDS`]).
    pub fn new() -> Self {
        // The embedded tables are checked by this crate's tests; should one ever fail to parse, an
        // extractor with no background and no lexicon still ranks words by count.
        Self::from_tables(BACKGROUND_DF, FINANCE_LEXICON, STOPWORDS)
            .unwrap_or_else(|_| Self::build(1, HashMap::new(), HashMap::new(), HashSet::new()))
    }

    /// One extractor with the embedded tables, built on first use and shared.
    pub fn shared() -> &'static KeywordExtractor {
        static SHARED: OnceLock<KeywordExtractor> = OnceLock::new();
        SHARED.get_or_init(KeywordExtractor::new)
    }

    /// An extractor with other tables, in the formats of the embedded ones.
    pub fn from_tables(background: &str, lexicon: &str, stopwords: &str) -> Result<Self, TableError> {
        let (documents, df) = parse_background(background)?;
        let lexicon = parse_lexicon(lexicon)?;
        let stopwords = stopwords
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(str::to_lowercase)
            .collect();
        Ok(Self::build(documents, df, lexicon, stopwords))
    }

    fn build(
        documents: u64,
        df: HashMap<String, u64>,
        lexicon: HashMap<String, TermKind>,
        stopwords: HashSet<String>,
    ) -> Self {
        let mut phrases: HashMap<String, Vec<(Vec<String>, String)>> = HashMap::new();
        for term in lexicon.keys() {
            let words: Vec<String> = term.split(' ').map(str::to_owned).collect();
            if words.len() > 1 {
                phrases
                    .entry(words[0].clone())
                    .or_default()
                    .push((words, term.clone()));
            }
        }
        for list in phrases.values_mut() {
            list.sort_by(|a, b| a.1.cmp(&b.1));
        }
        let mut x = KeywordExtractor {
            documents,
            df,
            lexicon,
            phrases,
            stopwords,
            idf_max: 1.0,
        };
        x.idf_max = x.idf(1);
        x
    }

    /// Number of documents of the background table.
    pub fn documents(&self) -> u64 {
        self.documents
    }

    /// Background document frequency of a term (0 if the table lacks it).
    pub fn document_frequency(&self, term: &str) -> u64 {
        self.df.get(term).copied().unwrap_or(0)
    }

    /// The lexicon's kind of a term, if it is in the lexicon.
    pub fn lexicon_kind(&self, term: &str) -> Option<TermKind> {
        self.lexicon.get(term).copied()
    }

    /// Whether a word is a stop-word.
    pub fn is_stopword(&self, word: &str) -> bool {
        self.stopwords.contains(word)
    }

    /// The best `max` keywords of `text`.
    pub fn extract(&self, text: &str, max: usize) -> Vec<String> {
        self.extract_scored(text, max)
            .into_iter()
            .map(|k| k.term)
            .collect()
    }

    /// The best `max` keywords of `text`, with their scores, best first.
    pub fn extract_scored(&self, text: &str, max: usize) -> Vec<Keyword> {
        if max == 0 {
            return Vec::new();
        }
        let tokens = Tokens::new(text);
        let mut counts: HashMap<&str, u64> = HashMap::new();
        let mut hidden: HashSet<&str> = HashSet::new();
        for i in 0..tokens.len() {
            let tok = tokens.get(i);
            if let Some(list) = self.phrases.get(tok) {
                for (words, term) in list {
                    let found = words
                        .iter()
                        .enumerate()
                        .all(|(k, w)| tokens.get(i + k) == w.as_str());
                    if found {
                        *counts.entry(term.as_str()).or_insert(0) += 1;
                        hidden.extend(words.iter().map(String::as_str));
                    }
                }
            }
            if self.is_candidate_word(tok) {
                *counts.entry(tok).or_insert(0) += 1;
            }
        }
        let mut scored: Vec<Keyword> = counts
            .into_iter()
            .filter(|(term, _)| term.contains(' ') || !hidden.contains(term))
            .map(|(term, count)| Keyword {
                term: term.to_owned(),
                score: self.score(term, count),
            })
            .collect();
        scored.sort_by(|a, b| b.score.total_cmp(&a.score).then_with(|| a.term.cmp(&b.term)));
        scored.truncate(max);
        scored
    }

    /// Whether a token may be a keyword on its own: 2 to [`MAX_WORD_CHARS`] characters, not a
    /// stop-word, not number-like (a lexicon word always may).
    pub fn is_candidate_word(&self, tok: &str) -> bool {
        if self.lexicon.contains_key(tok) {
            return true;
        }
        let chars = tok.chars().take(MAX_WORD_CHARS + 1).count();
        (2..=MAX_WORD_CHARS).contains(&chars) && !self.stopwords.contains(tok) && !is_number_like(tok)
    }

    fn idf(&self, df: u64) -> f64 {
        ((self.documents as f64 + 1.0) / (df as f64 + 1.0)).ln() + 1.0
    }

    fn score(&self, term: &str, count: u64) -> f64 {
        let boost = self.lexicon.get(term).map_or(0.0, |k| k.boost());
        let df = self.df.get(term).copied().unwrap_or(1).max(1);
        let tf = 1.0 + (count.max(1) as f64).ln();
        boost + tf * self.idf(df) / self.idf_max
    }
}

fn parse_background(table: &str) -> Result<(u64, HashMap<String, u64>), TableError> {
    let err = |line: usize, message: &str| TableError {
        table: "background",
        line,
        message: message.to_owned(),
    };
    let mut lines = table.lines();
    let documents = lines
        .next()
        .and_then(|l| l.strip_prefix("#documents\t"))
        .and_then(|n| n.trim().parse::<u64>().ok())
        .filter(|&n| n > 0)
        .ok_or_else(|| err(1, "expected `#documents<TAB>N` with N > 0"))?;
    let mut df = HashMap::new();
    for (i, line) in lines.enumerate() {
        if line.is_empty() {
            continue;
        }
        let (term, n) = line
            .split_once('\t')
            .ok_or_else(|| err(i + 2, "expected `term<TAB>df`"))?;
        let n: u64 = n.trim().parse().map_err(|_| err(i + 2, "df is not a number"))?;
        if term.is_empty() {
            return Err(err(i + 2, "empty term"));
        }
        df.insert(term.to_owned(), n);
    }
    Ok((documents, df))
}

fn parse_lexicon(table: &str) -> Result<HashMap<String, TermKind>, TableError> {
    let mut lexicon = HashMap::new();
    for (i, line) in table.lines().enumerate() {
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let err = |message: String| TableError {
            table: "lexicon",
            line: i + 1,
            message,
        };
        let (term, kind) = line
            .split_once('\t')
            .ok_or_else(|| err("expected `term<TAB>kind`".to_owned()))?;
        let kind = match kind.trim() {
            "finance" => TermKind::Finance,
            "asset" => TermKind::Asset,
            other => return Err(err(format!("unknown kind `{other}` (finance or asset)"))),
        };
        // Written as the tokeniser would write it, whatever the file's spelling.
        let tokens = Tokens::new(term);
        let words: Vec<&str> = tokens.iter().collect();
        if words.is_empty() {
            return Err(err(format!("term `{term}` has no word")));
        }
        lexicon.insert(words.join(" "), kind);
    }
    Ok(lexicon)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_tables_parse() {
        let (documents, df) = parse_background(BACKGROUND_DF).expect("background table");
        assert_eq!(documents, 33_068);
        assert!(df.len() > 5_000, "{}", df.len());
        assert!(df.values().all(|&n| n >= 2 && n <= documents));
        let lexicon = parse_lexicon(FINANCE_LEXICON).expect("lexicon");
        assert!(lexicon.len() > 200);
        let x = KeywordExtractor::new();
        assert_eq!(x.documents(), 33_068);
        assert!(x.document_frequency("etf") > 1_000);
        assert_eq!(x.lexicon_kind("rate cut"), Some(TermKind::Finance));
        assert_eq!(x.lexicon_kind("btc"), Some(TermKind::Asset));
        assert!(x.is_stopword("the"));
        // No lexicon word is hidden by the stop-words or the number rule.
        for term in lexicon.keys().filter(|t| !t.contains(' ')) {
            assert!(!x.is_stopword(term), "{term}");
            assert!(!is_number_like(term), "{term}");
        }
    }

    #[test]
    fn lexicon_terms_come_first() {
        let x = KeywordExtractor::new();
        let k = x.extract("Huione fined as SEC weighs Bitcoin ETF approval", 10);
        // Finance terms (boost 2) first, then the asset, then the other words.
        assert_eq!(
            &k[..3],
            ["approval", "sec", "etf"].map(String::from).as_slice(),
            "{k:?}"
        );
        assert_eq!(k[3], "bitcoin");
        assert!(
            k.contains(&"huione".to_owned()) && k.contains(&"fined".to_owned()),
            "{k:?}"
        );
        assert!(!k.iter().any(|t| t == "as"));
    }

    #[test]
    fn phrases_hide_their_words() {
        let x = KeywordExtractor::new();
        let k = x.extract(
            "Fed rate cut odds rise; the rate outlook and All-Time High talk",
            20,
        );
        assert!(k.contains(&"rate cut".to_owned()), "{k:?}");
        assert!(k.contains(&"all time high".to_owned()), "{k:?}");
        for w in ["rate", "cut", "time", "high"] {
            assert!(!k.contains(&w.to_owned()), "{w} in {k:?}");
        }
        // All three are finance terms: the rarest in the background first.
        assert_eq!(&k[..3], ["rate cut", "all time high", "fed"], "{k:?}");
    }

    #[test]
    fn counts_and_ties() {
        let x = KeywordExtractor::from_tables("#documents\t10\n", "", "").expect("tables");
        // Same df (missing), so the more frequent term first, then byte order.
        assert_eq!(x.extract("zeta beta beta alpha", 10), ["beta", "alpha", "zeta"]);
        assert_eq!(x.extract("zeta beta beta alpha", 1), ["beta"]);
        assert!(x.extract("zeta", 0).is_empty());
    }

    #[test]
    fn bad_tables_are_errors() {
        assert!(KeywordExtractor::from_tables("", "", "").is_err());
        assert!(KeywordExtractor::from_tables("#documents\t0\n", "", "").is_err());
        assert!(KeywordExtractor::from_tables("#documents\t5\nterm\n", "", "").is_err());
        assert!(KeywordExtractor::from_tables("#documents\t5\nterm\tx\n", "", "").is_err());
        let e = KeywordExtractor::from_tables("#documents\t5\n", "etf\tstock\n", "").unwrap_err();
        assert_eq!((e.table, e.line), ("lexicon", 1));
        assert!(KeywordExtractor::from_tables("#documents\t5\n", "--\tasset\n", "").is_err());
    }

    #[test]
    fn extractor_is_send_sync() {
        fn check<T: Send + Sync>() {}
        check::<KeywordExtractor>();
    }
}
