//! Scenario tags: which kind of event a text is about.
//!
//! A [`Taxonomy`] is a list of tags, each with rules and a priority, and a fallback tag.
//! [`Taxonomy::tag`] returns the best tag of a text and the words that decided it;
//! [`Taxonomy::default`] is AuroraQ's taxonomy for crypto and financial news (below). A taxonomy
//! can be read from configuration (serde, e.g. an `[api.scenarios]` TOML table) and replaces the
//! default whole.
//!
//! ```
//! use auroraq_text::scenario::Taxonomy;
//! let taxonomy = Taxonomy::default();
//! let m = taxonomy.tag("Mobius Token smart contracts on BNB Chain exploited, $2.1M drained");
//! assert_eq!(m.tag, "security_incident");
//! assert_eq!(m.matched, ["exploited", "drained"]);
//! assert_eq!(taxonomy.tag("Bitcoin Pizza Day Is Now a $1.1B Celebration").tag, "other");
//! ```
//!
//! # Matching
//!
//! The text is tokenised as for [keywords](crate::keywords): lower-cased, a token is a maximal run
//! of alphanumeric characters (`All-Time High!` gives `all`, `time`, `high`).
//!
//! A **pattern** is one or more words separated by spaces; it matches where its words occur as
//! consecutive tokens. A word ending in `*` matches any token it begins (`hack*`: `hack`, `hacked`,
//! `hackers`); other words match a token exactly. Each word of a pattern is tokenised like the text
//! (lower-cased; `all-time` is the two words `all time`; `u.s.` is `u s`).
//!
//! A **rule** is a pattern, a weight (default 1), `requires` (patterns, at least one of which must
//! also occur somewhere in the text, if any are given) and `unless` (patterns none of which may
//! occur in the text). A rule counts once, however often its pattern occurs.
//!
//! # Scoring
//!
//! A tag's score is the sum of the weights of its rules that match. The tag with the highest score
//! wins; on equal scores, the tag with the higher `priority`; on equal priorities, the one listed
//! first. A text no rule matches gets the fallback tag (`other`) with score 0.
//! [`ScenarioMatch::matched`] lists the winning tag's matching text, as tokens joined by spaces
//! (the first occurrence of each matching rule's pattern, in rule order, without duplicates).
//!
//! # The default taxonomy
//!
//! Tags, from the highest priority (the winner between equal scores) down:
//!
//! | tag | priority | main rules (weight) |
//! | --- | ---: | --- |
//! | `security_incident` | 100 | `hack`/`hacked`/`hacker*`, `exploit*`, `stolen`, `theft*`, `drained`, `breach`, `ransomware`, `rug pull*` (2); `phishing`, `scam`, `attack`, `vulnerabilit*` (1) |
//! | `legal` | 90 | `lawsuit*`, `sue`/`sues`/`sued`, `court*`, `indict*`, `sentenc*`, `guilty`, `arrest*`, `prison*`, `doj`, `judge` (2); `charge*` with a legal co-term (2); `fraud*`, `launder*`, `seiz*`, `probe*`; `settle*`, `appeal*` with a legal co-term (1) |
//! | `listing_delisting` | 80 | `delist*` (3); `list`, `lists`, `listing*`, `listed` with an exchange co-term (`binance`, `upbit`, `exchange`, ...), `ipo*` (2); `trading pair*`, `goes public` (1) |
//! | `regulation` | 70 | `sec`, `cftc`, `regulat*`, `genius act`, `clarity act`, `mica`, `legislat*`, `lawmaker*`, `senate`, `sanction*`, `cbdc*` (2); `bill` with a co-term, `ban`, `tax`, `licen*`, `law`, `framework`, `government*`, `approv*` (1) |
//! | `etf_institutional` | 60 | `etf`, `etfs`, `etp`, `exchange traded` (4); `inflow*`, `outflow*`, `blackrock`, `institution*`, `bitcoin treasury`, `saylor`, `metaplanet`, `strategic reserve`, `wall street` (2); `buys`, `acquir*`, `purchas*` with an asset co-term, `holdings`, `treasury`, `corporate*`, `bank*` (1) |
//! | `earnings` | 55 | `earnings`, `revenue*`, `net income`, `net loss`, `net profit`, `eps` (2); `profit*`, `loss`, `results` with a company co-term, `q1`..`q4`, `quarter*` with an earnings co-term, `dividend*`, `guidance` (1) |
//! | `macro_rates` | 50 | `fed`, `fomc`, `powell`, `rate cut*`, `interest rate*`, `inflation`, `cpi`, `tariff*`, `recession`, `treasury yield*` (2); `jobs report`, `gdp`, `central bank*`, `trade war`, `economy`, `dollar`, `gold`, `stocks` (1) |
//! | `adoption_partnership` | 40 | `partner*`, `integrat*`, `adopt*`, `collaborat*`, `teams up` (2); `launch*`, `rolls out`, `accept*`, `pilot*`, `payment*`, `tokeniz*`, `raises` with a funding co-term (1) |
//! | `market_move` | 30 | `rally*`, `surge*`, `soar*`, `plunge*`, `crash*`, `all time high*`, `liquidat*`, `short squeeze`, `breakout`, `price prediction*` (1); `price*`, `drop*`, `rise`, `bull*`, `bear*`, `whale*`, `resistance`, `support`, `volatil*`, `market`, ... (0.5) |
//! | `other` | | the fallback |
//!
//! Specific events outweigh price talk: a headline that mentions an ETF is tagged
//! `etf_institutional` even when it also says the price surged. The full list is
//! [`TaxonomyConfig::default_config`] (serialise it to see every rule); `pipeline/text/README.md`
//! documents the configuration format. Over the 29,778 headlines of `data/crypto/` the default
//! taxonomy tags 14.5% `other` (see the `coverage_over_the_crypto_news_file` test).

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::token::Tokens;

/// The fallback tag of the default taxonomy.
pub const OTHER: &str = "other";

/// The result of [`Taxonomy::tag`].
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ScenarioMatch {
    /// The winning tag, or the fallback tag.
    pub tag: String,
    /// The winning tag's score: the sum of its matching rules' weights (0 for the fallback).
    pub score: f64,
    /// The text that matched the winning tag's rules, lower-cased tokens joined by spaces.
    pub matched: Vec<String>,
}

/// A taxonomy as configured: plain data, (de)serialisable. [`Taxonomy`] is its checked, compiled
/// form.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaxonomyConfig {
    /// The tag of a text no rule matches.
    #[serde(default = "default_fallback")]
    pub fallback: String,
    /// The tags, in order (the order breaks ties between equal priorities).
    #[serde(default)]
    pub tags: Vec<TagConfig>,
}

fn default_fallback() -> String {
    OTHER.to_owned()
}

/// A tag as configured.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TagConfig {
    pub name: String,
    /// Breaks ties between equal scores: the higher priority wins.
    #[serde(default)]
    pub priority: i32,
    pub rules: Vec<RuleConfig>,
}

/// A rule as configured. In configuration, a bare string is a rule of weight 1 with no co-terms.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(from = "RuleRepr")]
pub struct RuleConfig {
    /// Words separated by spaces; a word ending in `*` is a prefix.
    pub pattern: String,
    /// What a match adds to the tag's score (finite, > 0).
    pub weight: f64,
    /// If not empty, at least one of these patterns must occur in the text too.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub requires: Vec<String>,
    /// None of these patterns may occur in the text.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unless: Vec<String>,
}

impl RuleConfig {
    /// A rule of weight 1 with no co-terms.
    pub fn new(pattern: &str) -> Self {
        RuleConfig {
            pattern: pattern.to_owned(),
            weight: 1.0,
            requires: Vec::new(),
            unless: Vec::new(),
        }
    }

    /// The same rule with another weight.
    pub fn weight(mut self, weight: f64) -> Self {
        self.weight = weight;
        self
    }

    /// The same rule, requiring one of `co_terms` too.
    pub fn requires(mut self, co_terms: &[&str]) -> Self {
        self.requires = co_terms.iter().map(|s| (*s).to_owned()).collect();
        self
    }

    /// The same rule, not matching when one of `terms` occurs.
    pub fn unless(mut self, terms: &[&str]) -> Self {
        self.unless = terms.iter().map(|s| (*s).to_owned()).collect();
        self
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RuleRepr {
    Pattern(String),
    Full(FullRule),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FullRule {
    pattern: String,
    #[serde(default = "one")]
    weight: f64,
    #[serde(default)]
    requires: Vec<String>,
    #[serde(default)]
    unless: Vec<String>,
}

fn one() -> f64 {
    1.0
}

impl From<RuleRepr> for RuleConfig {
    fn from(r: RuleRepr) -> Self {
        match r {
            RuleRepr::Pattern(p) => RuleConfig::new(&p),
            RuleRepr::Full(f) => RuleConfig {
                pattern: f.pattern,
                weight: f.weight,
                requires: f.requires,
                unless: f.unless,
            },
        }
    }
}

/// Why a [`TaxonomyConfig`] is not a valid taxonomy.
#[derive(Clone, Debug, PartialEq)]
pub enum TaxonomyError {
    EmptyName,
    DuplicateTag(String),
    /// A tag is named like the fallback.
    TagIsFallback(String),
    /// A pattern (of the tag named) has no word.
    EmptyPattern {
        tag: String,
        pattern: String,
    },
    /// A rule's weight is not finite and positive.
    BadWeight {
        tag: String,
        pattern: String,
        weight: f64,
    },
}

impl fmt::Display for TaxonomyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TaxonomyError::EmptyName => write!(f, "a tag or the fallback has an empty name"),
            TaxonomyError::DuplicateTag(t) => write!(f, "tag `{t}` is defined twice"),
            TaxonomyError::TagIsFallback(t) => write!(f, "tag `{t}` is also the fallback tag"),
            TaxonomyError::EmptyPattern { tag, pattern } => {
                write!(f, "tag `{tag}`: pattern `{pattern}` has no word")
            }
            TaxonomyError::BadWeight { tag, pattern, weight } => {
                write!(
                    f,
                    "tag `{tag}`: rule `{pattern}` has weight {weight}, not a positive number"
                )
            }
        }
    }
}

impl std::error::Error for TaxonomyError {}

/// A word of a compiled pattern.
#[derive(Clone, Debug, PartialEq)]
enum Word {
    Exact(String),
    Prefix(String),
}

impl Word {
    fn matches(&self, tok: &str) -> bool {
        match self {
            Word::Exact(w) => tok == w,
            Word::Prefix(p) => tok.starts_with(p.as_str()),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
struct Pattern(Vec<Word>);

impl Pattern {
    fn compile(pattern: &str) -> Option<Pattern> {
        let mut words = Vec::new();
        for part in pattern.split_whitespace() {
            let (body, prefix) = match part.strip_suffix('*') {
                Some(body) => (body, true),
                None => (part, false),
            };
            let toks = Tokens::new(body);
            let n = toks.len();
            for (i, t) in toks.iter().enumerate() {
                words.push(if prefix && i + 1 == n {
                    Word::Prefix(t.to_owned())
                } else {
                    Word::Exact(t.to_owned())
                });
            }
        }
        (!words.is_empty()).then_some(Pattern(words))
    }

    /// The first position (in token order) where the pattern occurs.
    fn find(&self, text: &Text<'_>) -> Option<usize> {
        let (first, rest) = self.0.split_first()?;
        let starts: Box<dyn Iterator<Item = &Vec<usize>>> = match first {
            Word::Exact(w) => Box::new(text.index.get(w.as_str()).into_iter()),
            Word::Prefix(p) => Box::new(
                text.index
                    .range(p.as_str()..)
                    .take_while(|(t, _)| t.starts_with(p.as_str()))
                    .map(|(_, v)| v),
            ),
        };
        starts
            .filter_map(|positions| {
                positions.iter().copied().find(|&i| {
                    rest.iter()
                        .enumerate()
                        .all(|(k, w)| w.matches(text.tokens.get(i + 1 + k)))
                })
            })
            .min()
    }
}

/// A text, tokenised and indexed once for all the rules.
struct Text<'a> {
    tokens: &'a Tokens,
    index: BTreeMap<&'a str, Vec<usize>>,
}

#[derive(Clone, Debug)]
struct Rule {
    pattern: Pattern,
    weight: f64,
    requires: Vec<Pattern>,
    unless: Vec<Pattern>,
}

#[derive(Clone, Debug)]
struct Tag {
    name: String,
    priority: i32,
    rules: Vec<Rule>,
}

/// A checked, compiled taxonomy. Deserialises from (and serialises to) a [`TaxonomyConfig`];
/// build one with [`Taxonomy::default`] or [`Taxonomy::new`]. `Send + Sync`; [`Taxonomy::tag`]
/// takes `&self`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(try_from = "TaxonomyConfig", into = "TaxonomyConfig")]
pub struct Taxonomy {
    config: TaxonomyConfig,
    tags: Vec<Tag>,
}

impl Default for Taxonomy {
    fn default() -> Self {
        // The default configuration is checked by this crate's tests; were it ever invalid, a
        // taxonomy that tags everything `other` is the safe fallback.
        Taxonomy::new(TaxonomyConfig::default_config()).unwrap_or_else(|_| Taxonomy {
            config: TaxonomyConfig {
                fallback: OTHER.to_owned(),
                tags: Vec::new(),
            },
            tags: Vec::new(),
        })
    }
}

impl TryFrom<TaxonomyConfig> for Taxonomy {
    type Error = TaxonomyError;

    fn try_from(config: TaxonomyConfig) -> Result<Self, Self::Error> {
        Taxonomy::new(config)
    }
}

impl From<Taxonomy> for TaxonomyConfig {
    fn from(t: Taxonomy) -> Self {
        t.config
    }
}

impl Taxonomy {
    /// Checks and compiles a configuration.
    pub fn new(config: TaxonomyConfig) -> Result<Self, TaxonomyError> {
        if config.fallback.trim().is_empty() {
            return Err(TaxonomyError::EmptyName);
        }
        let mut tags: Vec<Tag> = Vec::with_capacity(config.tags.len());
        for t in &config.tags {
            if t.name.trim().is_empty() {
                return Err(TaxonomyError::EmptyName);
            }
            if t.name == config.fallback {
                return Err(TaxonomyError::TagIsFallback(t.name.clone()));
            }
            if tags.iter().any(|u| u.name == t.name) {
                return Err(TaxonomyError::DuplicateTag(t.name.clone()));
            }
            let compile = |p: &str| {
                Pattern::compile(p).ok_or_else(|| TaxonomyError::EmptyPattern {
                    tag: t.name.clone(),
                    pattern: p.to_owned(),
                })
            };
            let mut rules = Vec::with_capacity(t.rules.len());
            for r in &t.rules {
                if !(r.weight.is_finite() && r.weight > 0.0) {
                    return Err(TaxonomyError::BadWeight {
                        tag: t.name.clone(),
                        pattern: r.pattern.clone(),
                        weight: r.weight,
                    });
                }
                rules.push(Rule {
                    pattern: compile(&r.pattern)?,
                    weight: r.weight,
                    requires: r.requires.iter().map(|p| compile(p)).collect::<Result<_, _>>()?,
                    unless: r.unless.iter().map(|p| compile(p)).collect::<Result<_, _>>()?,
                });
            }
            tags.push(Tag {
                name: t.name.clone(),
                priority: t.priority,
                rules,
            });
        }
        Ok(Taxonomy { config, tags })
    }

    /// The configuration this taxonomy was built from.
    pub fn config(&self) -> &TaxonomyConfig {
        &self.config
    }

    /// The tag names, in configuration order, then the fallback.
    pub fn tag_names(&self) -> Vec<&str> {
        self.tags
            .iter()
            .map(|t| t.name.as_str())
            .chain(std::iter::once(self.config.fallback.as_str()))
            .collect()
    }

    /// The best tag of `text` (see the [module docs](self)).
    pub fn tag(&self, text: &str) -> ScenarioMatch {
        self.scores(text)
            .into_iter()
            .next()
            .unwrap_or_else(|| ScenarioMatch {
                tag: self.config.fallback.clone(),
                score: 0.0,
                matched: Vec::new(),
            })
    }

    /// Every tag with at least one matching rule, best first (the order [`Taxonomy::tag`] picks
    /// from); empty when nothing matches.
    pub fn scores(&self, text: &str) -> Vec<ScenarioMatch> {
        let tokens = Tokens::new(text);
        let text = Text {
            tokens: &tokens,
            index: tokens.index(),
        };
        let mut found: Vec<(usize, ScenarioMatch)> = Vec::new();
        for (order, tag) in self.tags.iter().enumerate() {
            let mut score = 0.0;
            let mut matched: Vec<String> = Vec::new();
            for rule in &tag.rules {
                let Some(at) = rule.pattern.find(&text) else {
                    continue;
                };
                if !rule.requires.is_empty() && !rule.requires.iter().any(|p| p.find(&text).is_some()) {
                    continue;
                }
                if rule.unless.iter().any(|p| p.find(&text).is_some()) {
                    continue;
                }
                score += rule.weight;
                let surface = (at..at + rule.pattern.0.len())
                    .map(|i| tokens.get(i))
                    .collect::<Vec<_>>()
                    .join(" ");
                if !matched.contains(&surface) {
                    matched.push(surface);
                }
            }
            if !matched.is_empty() {
                found.push((
                    order,
                    ScenarioMatch {
                        tag: tag.name.clone(),
                        score,
                        matched,
                    },
                ));
            }
        }
        found.sort_by(|(oa, a), (ob, b)| {
            b.score
                .total_cmp(&a.score)
                .then_with(|| self.tags[*ob].priority.cmp(&self.tags[*oa].priority))
                .then_with(|| oa.cmp(ob))
        });
        found.into_iter().map(|(_, m)| m).collect()
    }
}

/// Builds a tag's rules tersely: `w(2.0, "etf, etfs")` is two rules of weight 2.
fn w(weight: f64, patterns: &str) -> Vec<RuleConfig> {
    list(patterns)
        .into_iter()
        .map(|p| RuleConfig::new(p).weight(weight))
        .collect()
}

fn tag(name: &str, priority: i32, rules: Vec<Vec<RuleConfig>>) -> TagConfig {
    TagConfig {
        name: name.to_owned(),
        priority,
        rules: rules.into_iter().flatten().collect(),
    }
}

impl TaxonomyConfig {
    /// AuroraQ's default taxonomy (see the [module docs](self)).
    pub fn default_config() -> Self {
        TaxonomyConfig {
            fallback: OTHER.to_owned(),
            tags: default_tags(),
        }
    }
}

impl Default for TaxonomyConfig {
    fn default() -> Self {
        Self::default_config()
    }
}

/// Crypto assets, for rules about buying them.
const ASSETS: &[&str] = &[
    "btc", "bitcoin", "eth", "ether", "ethereum", "sol", "solana", "xrp",
];
/// Exchanges and trading venues, for listing rules.
const EXCHANGES: &[&str] = &[
    "binance",
    "coinbase",
    "upbit",
    "bithumb",
    "kraken",
    "okx",
    "bybit",
    "bitget",
    "kucoin",
    "mexc",
    "robinhood",
    "exchange",
    "exchanges",
    "htx",
    "crypto com",
    "gemini",
    "bitstamp",
    "lbank",
    "bitmart",
    "spot",
    "futures",
    "perpetual*",
    "trading",
    "nasdaq",
    "nyse",
];
/// Co-terms that make `charges`, `settles`, `appeal` legal.
const LEGAL_CO: &[&str] = &[
    "sec",
    "doj",
    "court",
    "lawsuit*",
    "case",
    "fraud*",
    "prosecutor*",
    "judge",
    "ftx",
    "suit",
    "criminal",
    "class action",
    "allegation*",
    "alleged",
    "regulator*",
    "cftc",
];
/// Co-terms that make `q2`, `quarter` a company's earnings.
const EARNINGS_CO: &[&str] = &[
    "earnings", "revenue*", "profit*", "loss", "losses", "results", "net", "income", "sales", "reports",
    "reported", "posts", "eps",
];
/// Co-terms that make `profit`, `loss`, `sales`, `results` a company's earnings.
const COMPANY_CO: &[&str] = &[
    "earnings", "revenue*", "q1", "q2", "q3", "q4", "quarter*", "annual", "fiscal", "net", "income",
    "reports", "reported", "posts", "shares", "stock",
];

fn default_tags() -> Vec<TagConfig> {
    vec![
        tag(
            "security_incident",
            100,
            vec![
                w(
                    2.0,
                    "hack, hacks, hacked, hacker*, hacking, exploit*, stolen, steal*, theft*, heist, \
                    drained, drainer*, draining, breach, data breach, security breach, attacker*, \
                    compromised, malware, ransomware, rug pull*, rugpull*, private keys, address poisoning, \
                    wrench attack*",
                ),
                w(
                    1.0,
                    "phishing, scam, scams, scammer*, vulnerabilit*, attack, attacks, lazarus",
                ),
                vec![RuleConfig::new("breach*").requires(&list("data, security, user*, customer*, systems"))],
            ],
        ),
        tag(
            "legal",
            90,
            vec![
                w(
                    2.0,
                    "lawsuit*, sue, sues, sued, suing, court*, indict*, sentenc*, guilty, arrest*, \
                    jail*, prison*, convict*, plead*, prosecut*, trial, verdict, class action*, extradit*, \
                    subpoena*, doj, department of justice, judge, jury, detain*, kidnap*, lawyer*, attorney*",
                ),
                vec![RuleConfig::new("charge*")
                    .weight(2.0)
                    .requires(LEGAL_CO)
                    .unless(&list("funding, fee*, surcharge"))],
                vec![RuleConfig::new("settle*").requires(LEGAL_CO)],
                vec![RuleConfig::new("appeal*").requires(LEGAL_CO)],
                w(
                    1.0,
                    "fraud*, ponzi, money laundering, launder*, seiz*, probe*, investigat*, police",
                ),
                vec![RuleConfig::new("legal").unless(&list("legal tender, legal clarity, legal framework"))],
            ],
        ),
        tag(
            "listing_delisting",
            80,
            vec![
                w(3.0, "delist*"),
                vec![RuleConfig::new("list")
                    .weight(2.0)
                    .requires(EXCHANGES)
                    .unless(&list("watch list, wish list"))],
                vec![RuleConfig::new("lists").weight(2.0).requires(EXCHANGES)],
                vec![RuleConfig::new("listing*").weight(2.0).requires(EXCHANGES)],
                vec![RuleConfig::new("listed")
                    .weight(2.0)
                    .requires(EXCHANGES)
                    .unless(&list(
                        "publicly listed, listed company, listed companies, listed firm*",
                    ))],
                w(2.0, "ipo*, launchpool"),
                w(1.0, "go public, goes public, going public, trading pair*"),
                vec![RuleConfig::new("adds support").requires(EXCHANGES)],
            ],
        ),
        tag(
            "regulation",
            70,
            vec![
                w(
                    2.0,
                    "sec, cftc, regulat*, genius act, clarity act, stablecoin act, mica, legislat*, \
                    lawmaker*, senator*, congress*, senate, white house, executive order, market structure, \
                    finma, fca, esma, fsa, aml, kyc, compliance, sanction*, cbdc*, policymaker*, \
                    legal tender, crypto czar",
                ),
                vec![RuleConfig::new("bill").requires(&list(
                    "stablecoin*, crypto, senate, house, congress, passes, law, signs",
                ))],
                w(1.0, "bills"),
                vec![RuleConfig::new("ban").unless(&list("bank*"))],
                w(
                    1.0,
                    "bans, banned, banning, tax, taxes, taxation, licen*, law, laws, framework",
                ),
                vec![RuleConfig::new("policy").unless(&list("monetary policy"))],
                w(
                    1.0,
                    "rules, government*, governor, crackdown, cracks down, oversight, watchdog, \
                    authorit*, approv*, treasury secretary, bessent, atkins, gensler, lummis, warren",
                ),
            ],
        ),
        tag(
            "etf_institutional",
            60,
            vec![
                w(4.0, "etf, etfs, etp, etps, exchange traded"),
                w(
                    2.0,
                    "inflow*, outflow*, blackrock, fidelity, grayscale, vaneck, bitwise, 21shares, \
                    ibit, institution*, bitcoin treasury, bitcoin treasuries, crypto treasury, \
                    ether treasury, ethereum treasury, eth treasury, treasury company, treasury companies, \
                    treasury firm*, treasury strategy, treasury reserve, saylor, microstrategy, mstr, \
                    metaplanet, semler, sharplink, bitmine, strategic reserve, bitcoin reserve, \
                    crypto reserve, sovereign wealth, pension*, hedge fund*, asset manager*, wall street",
                ),
                vec![RuleConfig::new("strategy").requires(&list(
                    "saylor, buys, acquires, adds, purchase*, holdings, shares, stock",
                ))],
                vec![RuleConfig::new("buys").requires(ASSETS).unless(&list("whale*"))],
                vec![RuleConfig::new("bought").requires(ASSETS).unless(&list("whale*"))],
                vec![RuleConfig::new("acquir*").requires(ASSETS)],
                vec![RuleConfig::new("purchas*")
                    .requires(ASSETS)
                    .unless(&list("whale*"))],
                w(1.0, "stash*, holdings, corporate*"),
                vec![RuleConfig::new("treasury").unless(&list(
                    "treasury department, treasury secretary, treasury yield*, us treasury, u s treasury",
                ))],
                w(
                    1.0,
                    "treasuries, cme, public compan*, publicly traded, publicly listed, listed compan*",
                ),
                vec![RuleConfig::new("bank*").unless(&list("central bank*, bankrupt*, bankman"))],
            ],
        ),
        tag(
            "earnings",
            55,
            vec![
                w(
                    2.0,
                    "earnings, revenue*, net income, net loss, net profit, eps, operating profit, \
                    quarterly results, financial results, net sales",
                ),
                vec![RuleConfig::new("profit*")
                    .requires(COMPANY_CO)
                    .unless(&list("take profit*, taking profit*, profit taking"))],
                vec![RuleConfig::new("q1").requires(EARNINGS_CO)],
                vec![RuleConfig::new("q2").requires(EARNINGS_CO)],
                vec![RuleConfig::new("q3").requires(EARNINGS_CO)],
                vec![RuleConfig::new("q4").requires(EARNINGS_CO)],
                vec![RuleConfig::new("quarter*").requires(EARNINGS_CO)],
                w(1.0, "dividend*, guidance, estimates"),
                vec![RuleConfig::new("loss").requires(COMPANY_CO)],
                vec![RuleConfig::new("sales").requires(COMPANY_CO)],
                vec![RuleConfig::new("results").requires(COMPANY_CO)],
            ],
        ),
        tag(
            "macro_rates",
            50,
            vec![
                w(
                    2.0,
                    "fed, fomc, federal reserve, powell, rate cut*, rate hike*, interest rate*, \
                    inflation, cpi, ppi, pce, tariff*, recession, monetary policy, jackson hole, \
                    stagflation, treasury yield*, bond yield*",
                ),
                w(
                    1.0,
                    "jobs report, payroll*, unemployment, gdp, central bank*, trade deal, trade war, \
                    ecb, boj, pboc, economy, economic, macro*, dollar, dxy, yields, bonds, national debt, \
                    deficit, fiscal, jobs, rates, geopolitic*, war, oil, gold, stocks, s p 500, nasdaq, \
                    equities",
                ),
            ],
        ),
        tag(
            "adoption_partnership",
            40,
            vec![
                w(
                    2.0,
                    "partner*, integrat*, adopt*, collaborat*, teams up, joins forces, alliance",
                ),
                w(
                    1.0,
                    "launch*, rolls out, roll out, accept*, pilot*, unveil*, introduc*, debut*, \
                    expand*, deploy*, payment*, enables, onboard*, acquisition, merger, mainnet, upgrade, \
                    tokeniz*, tokenis*, support for, now available, app, platform, service*, card, cards, \
                    wallet",
                ),
                vec![RuleConfig::new("raises")
                    .requires(&list("funding, round, seed, series, million, billion, capital"))],
            ],
        ),
        tag(
            "market_move",
            30,
            vec![
                w(
                    1.0,
                    "rally*, rallies, surge*, soar*, skyrocket*, spike*, jump*, plunge*, plummet*, \
                    crash*, tumble*, slump*, nosedive*, all time high*, ath, aths, record high*, new high*, \
                    liquidat*, short squeeze, sell off, selloff, breakout, correction, price analysis, \
                    price prediction*, technical analysis",
                ),
                w(
                    0.5,
                    "price*, drop*, dip, dips, slide*, sink*, fall, falls, falling, fell, rise, \
                    rises, rising, rose, climb*, gain*, loses, losses, decline*, rebound*, recover*, \
                    record, highs, lows, low, bull*, bear*, breaks, resistance, support, whale*, \
                    open interest, funding rate*, volatil*, momentum, market cap, chart*, prediction*, \
                    forecast*, target*, analyst*, trader*, outlook, consolidat*, accumulat*, reversal, \
                    breakdown, pump*, dump*, short*, long*, leverage*, volume, buy, sell, buying, selling, \
                    market, markets, cross, level*, zone, eyes, hits, tops, topping, reclaim*, holds, \
                    stalls, flips, retest*, transfer*, withdraw*, deposit*, moves, oversold, overbought, \
                    bounce*, peak*, bottom*, cycle, season",
                ),
                vec![RuleConfig::new("high")
                    .weight(0.5)
                    .unless(&list("all time high*, record high*, new high*"))],
            ],
        ),
    ]
}

/// Splits a comma-separated list of patterns.
fn list(patterns: &str) -> Vec<&str> {
    patterns
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(text: &str) -> String {
        Taxonomy::default().tag(text).tag
    }

    #[test]
    fn default_is_valid() {
        let tax = Taxonomy::new(TaxonomyConfig::default_config()).expect("default taxonomy");
        let names = tax.tag_names();
        for want in [
            "regulation",
            "security_incident",
            "etf_institutional",
            "macro_rates",
            "earnings",
            "listing_delisting",
            "legal",
            "adoption_partnership",
            "market_move",
            "other",
        ] {
            assert!(names.contains(&want), "{want} missing from {names:?}");
        }
    }

    #[test]
    fn nothing_matches_gives_fallback() {
        let m = Taxonomy::default().tag("");
        assert_eq!(
            m,
            ScenarioMatch {
                tag: "other".into(),
                score: 0.0,
                matched: vec![]
            }
        );
        assert_eq!(t("The quick brown fox"), "other");
    }

    #[test]
    fn patterns() {
        let p = Pattern::compile("All-Time hack*").expect("pattern");
        assert_eq!(
            p,
            Pattern(vec![
                Word::Exact("all".into()),
                Word::Exact("time".into()),
                Word::Prefix("hack".into())
            ])
        );
        assert!(Pattern::compile("  ").is_none());
        assert!(Pattern::compile("* $").is_none());
        let tokens = Tokens::new("an all time hacker and ALL-TIME HACKS");
        let text = Text {
            tokens: &tokens,
            index: tokens.index(),
        };
        assert_eq!(p.find(&text), Some(1));
        assert_eq!(
            Pattern::compile("time hacks").and_then(|p| p.find(&text)),
            Some(6)
        );
        assert_eq!(Pattern::compile("time hackers").and_then(|p| p.find(&text)), None);
    }

    fn config(tags: Vec<TagConfig>) -> TaxonomyConfig {
        TaxonomyConfig {
            fallback: "none".into(),
            tags,
        }
    }

    #[test]
    fn weights_priorities_and_order() {
        let a = TagConfig {
            name: "a".into(),
            priority: 1,
            rules: vec![RuleConfig::new("x"), RuleConfig::new("y")],
        };
        let b = TagConfig {
            name: "b".into(),
            priority: 2,
            rules: vec![RuleConfig::new("z").weight(2.0)],
        };
        let c = TagConfig {
            name: "c".into(),
            priority: 2,
            rules: vec![RuleConfig::new("w").weight(2.0)],
        };
        let tax = Taxonomy::new(config(vec![a, b, c])).expect("taxonomy");
        // Score: a = 2 (x, y), b = 2 (z): tie, b has the higher priority.
        let m = tax.tag("x y z");
        assert_eq!((m.tag.as_str(), m.score), ("b", 2.0));
        // b and c: same score, same priority: b is listed first.
        assert_eq!(tax.tag("w z").tag, "b");
        assert_eq!(tax.tag("w x").tag, "c");
        // A rule counts once however often it matches.
        assert_eq!(tax.tag("x x x x z").tag, "b");
        assert_eq!(tax.tag("nothing").tag, "none");
        let all = tax.scores("x y z w");
        assert_eq!(
            all.iter().map(|m| m.tag.as_str()).collect::<Vec<_>>(),
            ["b", "c", "a"]
        );
    }

    #[test]
    fn requires_and_unless() {
        let rule = RuleConfig::new("list*")
            .requires(&["binance", "coinbase"])
            .unless(&["watch list"]);
        let tax = Taxonomy::new(config(vec![TagConfig {
            name: "listing".into(),
            priority: 0,
            rules: vec![rule],
        }]))
        .expect("taxonomy");
        assert_eq!(tax.tag("Binance will list FOO").tag, "listing");
        assert_eq!(tax.tag("Binance will list FOO").matched, ["list"]);
        assert_eq!(tax.tag("Top 5 list of coins").tag, "none");
        assert_eq!(tax.tag("Coinbase adds FOO to its watch list").tag, "none");
    }

    #[test]
    fn invalid_configs() {
        let tag = |name: &str, pattern: &str, weight: f64| TagConfig {
            name: name.into(),
            priority: 0,
            rules: vec![RuleConfig::new(pattern).weight(weight)],
        };
        assert_eq!(
            Taxonomy::new(config(vec![tag("", "x", 1.0)])).err(),
            Some(TaxonomyError::EmptyName)
        );
        assert!(matches!(
            Taxonomy::new(config(vec![tag("a", "x", 1.0), tag("a", "y", 1.0)])),
            Err(TaxonomyError::DuplicateTag(_))
        ));
        assert!(matches!(
            Taxonomy::new(config(vec![tag("none", "x", 1.0)])),
            Err(TaxonomyError::TagIsFallback(_))
        ));
        assert!(matches!(
            Taxonomy::new(config(vec![tag("a", "--", 1.0)])),
            Err(TaxonomyError::EmptyPattern { .. })
        ));
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert!(matches!(
                Taxonomy::new(config(vec![tag("a", "x", bad)])),
                Err(TaxonomyError::BadWeight { .. })
            ));
        }
    }

    #[test]
    fn taxonomy_is_send_sync() {
        fn check<T: Send + Sync>() {}
        check::<Taxonomy>();
    }
}
