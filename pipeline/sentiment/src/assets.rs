//! Asset linking: which assets an article is about, from a configurable alias table matched
//! against its title, body, feed keywords and tickers.

use std::collections::{BTreeMap, BTreeSet};

/// Aliases per asset symbol. Matching is case-insensitive on whole words.
#[derive(Clone, Debug)]
pub struct AliasTable {
    /// asset → aliases (lower case)
    aliases: BTreeMap<String, Vec<String>>,
    /// Assets for articles that name none (see [`AliasTable::with_fallback`]).
    fallback: Vec<String>,
}

impl Default for AliasTable {
    /// The assets AuroraQ's agents trade, with the names the news uses for them.
    fn default() -> Self {
        let mut t = BTreeMap::new();
        for (asset, names) in [
            ("BTC", &["bitcoin", "btc", "xbt"][..]),
            ("ETH", &["ethereum", "ether", "eth"][..]),
            ("SOL", &["solana"][..]),
            ("AAPL", &["apple", "aapl", "iphone"][..]),
            ("MSFT", &["microsoft", "msft"][..]),
            ("GOOGL", &["google", "alphabet", "googl", "goog"][..]),
            ("AMZN", &["amazon", "amzn"][..]),
            ("IBM", &["ibm"][..]),
            ("SPX", &["s&p 500", "s&p", "spx", "wall street"][..]),
        ] {
            t.insert(asset.to_owned(), names.iter().map(|s| s.to_string()).collect());
        }
        AliasTable {
            aliases: t,
            fallback: Vec::new(),
        }
    }
}

impl AliasTable {
    pub fn new(aliases: BTreeMap<String, Vec<String>>) -> Self {
        let aliases = aliases
            .into_iter()
            .map(|(k, v)| {
                (
                    k.to_ascii_uppercase(),
                    v.into_iter().map(|a| a.to_lowercase()).collect(),
                )
            })
            .collect();
        AliasTable {
            aliases,
            fallback: Vec::new(),
        }
    }

    /// Attributes articles that name no asset to `assets`. Empty in real use; the embedded demo
    /// job sets it because its bundled news predates its bundled prices (see the README).
    pub fn with_fallback(mut self, assets: Vec<String>) -> Self {
        self.fallback = assets;
        self
    }

    /// The assets named in the texts, or by a ticker or keyword equal to an asset or alias.
    /// The assets an article is about: its title and text, feed keywords and tickers.
    /// None found: the fallback assets, if any.
    pub fn link_article(&self, a: &auroraq_schemas::Article) -> Vec<String> {
        let texts: Vec<&str> = a
            .title
            .iter()
            .map(String::as_str)
            .chain([a.text.as_str()])
            .collect();
        let found = self.link(&texts, &a.keywords, &a.tickers);
        if found.is_empty() {
            self.fallback.clone()
        } else {
            found
        }
    }

    pub fn link(&self, texts: &[&str], keywords: &[String], tickers: &[String]) -> Vec<String> {
        let mut found = BTreeSet::new();
        let tokens: Vec<String> = texts.iter().map(|t| format!(" {} ", words(t))).collect();
        let tags: Vec<String> = keywords.iter().chain(tickers).map(|k| words(k)).collect();
        for (asset, names) in &self.aliases {
            let asset_lc = asset.to_lowercase();
            let hit_tag = tags
                .iter()
                .any(|t| *t == asset_lc || names.iter().any(|n| words(n) == *t));
            let hit_text = names.iter().any(|n| {
                let needle = format!(" {} ", words(n));
                tokens.iter().any(|t| t.contains(&needle))
            });
            if hit_tag || hit_text {
                found.insert(asset.clone());
            }
        }
        found.into_iter().collect()
    }
}

/// Lower-case words separated by single spaces ('&' kept, for S&P).
fn words(s: &str) -> String {
    let mapped: String = s
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || c == '&' {
                c.to_lowercase().next().unwrap_or(c)
            } else {
                ' '
            }
        })
        .collect();
    mapped.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_by_alias_ticker_and_keyword() {
        let t = AliasTable::default();
        assert_eq!(t.link(&["Bitcoin tops $60,000"], &[], &[]), vec!["BTC"]);
        assert_eq!(t.link(&["XBT futures open"], &[], &[]), vec!["BTC"]);
        assert_eq!(
            t.link(&["Quarterly results"], &[], &["AAPL".into()]),
            vec!["AAPL"]
        );
        assert_eq!(t.link(&["Markets"], &["Ethereum".into()], &[]), vec!["ETH"]);
        assert_eq!(
            t.link(&["Apple and Microsoft rally; the S&P 500 gains"], &[], &[]),
            vec!["AAPL", "MSFT", "SPX"]
        );
        // Whole words only: 'pineapple' is not Apple, 'bitcoins' is not a listed alias.
        assert!(t.link(&["pineapple prices"], &[], &[]).is_empty());
    }
}
