//! Market symbols to assets (`BTCUSDT` → `BTC`), and the normalization of assets named by scores.

use std::collections::HashMap;

use crate::config::SymbolConfig;

/// Maps exchange symbols and score assets to the asset names fusion keys its state by.
#[derive(Clone, Debug)]
pub struct SymbolMap {
    aliases: HashMap<String, String>,
    /// Longest first.
    suffixes: Vec<String>,
}

impl Default for SymbolMap {
    fn default() -> Self {
        SymbolMap::new(&SymbolConfig::default())
    }
}

impl SymbolMap {
    pub fn new(cfg: &SymbolConfig) -> Self {
        let aliases = cfg
            .aliases
            .iter()
            .map(|(k, v)| (k.trim().to_ascii_uppercase(), v.trim().to_ascii_uppercase()))
            .collect();
        let mut suffixes: Vec<String> = cfg
            .quote_suffixes
            .iter()
            .map(|s| s.trim().to_ascii_uppercase())
            .filter(|s| !s.is_empty())
            .collect();
        suffixes.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        suffixes.dedup();
        SymbolMap { aliases, suffixes }
    }

    /// The asset a market symbol trades: an alias if one is configured for the whole symbol;
    /// else the part before a separator (`BTC-USD`, `BTC/USDT`, `BTC_USDT`, `BTC:USDT`), with a
    /// known quote suffix stripped (`BTCUSDT` → `BTC`, `ETHBTC` → `ETH`). `None` for an empty
    /// symbol.
    pub fn asset_of_symbol(&self, symbol: &str) -> Option<String> {
        let s = symbol.trim().to_ascii_uppercase();
        if s.is_empty() {
            return None;
        }
        if let Some(a) = self.aliases.get(&s) {
            return Some(a.clone());
        }
        let base = s
            .split(['-', '/', '_', ':', '.'])
            .find(|p| !p.is_empty())
            .unwrap_or(&s)
            .to_owned();
        let stripped = self
            .suffixes
            .iter()
            .find(|q| base.len() > q.len() && base.ends_with(q.as_str()))
            .map(|q| base[..base.len() - q.len()].to_owned())
            .unwrap_or(base);
        Some(self.aliases.get(&stripped).cloned().unwrap_or(stripped))
    }

    /// The asset a score names, normalized: trimmed, upper-cased, aliased. `None` if empty.
    pub fn asset_of_score(&self, asset: &str) -> Option<String> {
        let a = asset.trim().to_ascii_uppercase();
        if a.is_empty() {
            return None;
        }
        Some(self.aliases.get(&a).cloned().unwrap_or(a))
    }
}

/// FNV-1a, 64 bits: the stable hash that routes assets to workers and processes.
pub fn fnv1a(s: &str) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in s.as_bytes() {
        h ^= *b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_mapping() {
        let m = SymbolMap::default();
        let cases = [
            ("BTCUSDT", "BTC"),
            ("btcusdt", "BTC"),
            ("ETHBTC", "ETH"),
            ("BTC-USD", "BTC"),
            ("BTC/USDT", "BTC"),
            ("SOL_USDC", "SOL"),
            ("ETHFDUSD", "ETH"),
            ("BTCUSDT_PERP", "BTC"),
            ("USDT", "USDT"),
            ("USDCUSDT", "USDC"),
            ("BTC", "BTC"),
            ("DOGEEUR", "DOGE"),
        ];
        for (sym, asset) in cases {
            assert_eq!(m.asset_of_symbol(sym).as_deref(), Some(asset), "{sym}");
        }
        assert_eq!(m.asset_of_symbol("  "), None);
    }

    #[test]
    fn aliases_and_custom_suffixes() {
        let mut cfg = SymbolConfig::default();
        cfg.aliases.insert("xbtusd".into(), "btc".into());
        cfg.aliases.insert("XBT".into(), "BTC".into());
        cfg.quote_suffixes = vec!["PERP".into()];
        let m = SymbolMap::new(&cfg);
        assert_eq!(m.asset_of_symbol("XBTUSD").as_deref(), Some("BTC"));
        assert_eq!(
            m.asset_of_symbol("XBTPERP").as_deref(),
            Some("BTC"),
            "stripped, then aliased"
        );
        assert_eq!(
            m.asset_of_symbol("BTCUSDT").as_deref(),
            Some("BTCUSDT"),
            "USDT not configured"
        );
        assert_eq!(m.asset_of_score(" xbt ").as_deref(), Some("BTC"));
        assert_eq!(m.asset_of_score("eth").as_deref(), Some("ETH"));
    }
}
