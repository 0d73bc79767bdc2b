//! Keywords and scenario tags on real crypto news headlines.
//!
//! The headlines below are copied verbatim from `crypto_news_2025-05_2025-08.csv.gz` (the project's
//! shared data `../shared/data/crypto_news/`, bundled in the repository as `data/crypto/`; the two
//! files are byte-identical), columns `published_utc`, `source`, `headline`; the line number is the
//! file's (header = line 1). Headline text belongs to its publishers (see `data/README.md`).
//! The whole-file tests read the repository's copy.

use std::collections::{BTreeMap, HashSet};
use std::io::BufReader;
use std::time::{Duration, Instant};

use auroraq_text::keywords::{keywords, tokenize, KeywordExtractor};
use auroraq_text::scenario::{Taxonomy, TaxonomyConfig};

const CRYPTO_NEWS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../data/crypto/crypto_news_2025-05_2025-08.csv.gz"
);
const FPB_TRAIN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../data/fpb/train.csv");

/// (line, published_utc, source, headline, expected tag, terms the keywords must contain)
type Case = (
    u32,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static [&'static str],
);

const CASES: &[Case] = &[
    (
        360,
        "2025-05-08T18:33:17Z",
        "CoinDesk",
        "Senate Votes Against Advancing Stablecoin Bill, Delaying Process as Trump Concerns Fester",
        "regulation",
        &["stablecoin", "senate"],
    ),
    (
        491,
        "2025-05-12T08:48:49Z",
        "Cointelegraph",
        "Crypto custodian BitGo secures MiCA license in Germany",
        "regulation",
        &["mica", "license", "bitgo"],
    ),
    (
        459,
        "2025-05-11T09:26:18Z",
        "Cointelegraph",
        "Mobius Token smart contracts on BNB Chain exploited, $2.1M drained",
        "security_incident",
        &["exploited", "drained", "bnb"],
    ),
    (
        319,
        "2025-05-08T07:31:13Z",
        "Cointelegraph",
        "60K Bitcoin addresses leaked as LockBit ransomware gang gets hacked",
        "security_incident",
        &["ransomware", "hacked", "lockbit"],
    ),
    (
        6491,
        "2025-06-02T09:01:11Z",
        "Cointelegraph",
        "BitoPro confirms $11.5M exploit, says withdrawals unaffected",
        "security_incident",
        &["exploit", "bitopro"],
    ),
    (
        143,
        "2025-05-05T19:00:45Z",
        "Cointelegraph",
        "VanEck files for BNB ETF, first in US",
        "etf_institutional",
        &["etf", "vaneck", "bnb"],
    ),
    (
        1546,
        "2025-05-20T08:08:49Z",
        "coindesk",
        "Bitcoin ETF Inflows Surge as Basis Trade Nears 9%, Signaling Renewed Demand",
        "etf_institutional",
        &["etf", "inflows", "bitcoin"],
    ),
    (
        20189,
        "2025-07-07T20:44:57Z",
        "bitcoin.com",
        "Semler Scientific Acquires 187 BTC, Boosting Holdings to 4,636 Bitcoins",
        "etf_institutional",
        &["acquires", "btc", "semler"],
    ),
    (
        287,
        "2025-05-07T18:05:06Z",
        "CoinDesk",
        "Fed Holds Rates Steady, Says Risks of Higher Unemployment, Higher Inflation Have Risen",
        "macro_rates",
        &["fed", "inflation", "unemployment"],
    ),
    (
        340,
        "2025-05-08T13:19:48Z",
        "CoinDesk",
        "Much-Awaited Fed Rate Cut May Not Come Before Q4, ING Says",
        "macro_rates",
        &["rate cut", "fed"],
    ),
    (
        35,
        "2025-05-02T16:30:40Z",
        "Cointelegraph",
        "Bitcoin hits new 10-week high as Trump demands rate cut on US jobs beat",
        "macro_rates",
        &["rate cut", "bitcoin"],
    ),
    (
        608,
        "2025-05-13T21:33:32Z",
        "Cointelegraph",
        "CoinShares Q1 net profit falls to $24M",
        "earnings",
        &["profit", "coinshares"],
    ),
    (
        772,
        "2025-05-15T20:40:00Z",
        "Cointelegraph",
        "Bitdeer Q1 revenue falls more than 40% year-over-year",
        "earnings",
        &["revenue", "bitdeer"],
    ),
    (
        10398,
        "2025-06-11T07:15:27Z",
        "crypto_news",
        "eToro reports $60M in Q1 net income as trading activity and user base grows",
        "earnings",
        &["net income", "etoro"],
    ),
    (
        18065,
        "2025-07-02T07:47:08Z",
        "bitcoinsistemi",
        "Bitcoin Exchange Binance Delisted 4 Altcoin Trading Pairs Due to Low Trading Volume! Here Are the Details",
        "listing_delisting",
        &["delisted", "binance"],
    ),
    (
        18505,
        "2025-07-03T04:55:24Z",
        "coinotag",
        "Upbit Lists MOODENG on Solana, Potentially Boosting Meme Coin Market Interest and Trading Activity",
        "listing_delisting",
        &["upbit", "moodeng", "solana"],
    ),
    (
        15114,
        "2025-06-24T07:25:57Z",
        "coinotag",
        "UPBIT LISTING 거래 뉴턴프로토콜(NEWT) 신규 거래지원 안내 (KRW, BTC, USDT 마켓)",
        "listing_delisting",
        &["listing", "btc", "usdt", "newt", "뉴턴프로토콜"],
    ),
    (
        364,
        "2025-05-08T19:42:08Z",
        "CoinDesk",
        "Celsius Founder Alex Mashinsky Sentenced to 12 Years in Prison for Fraud",
        "legal",
        &["sentenced", "fraud", "mashinsky"],
    ),
    (
        1795,
        "2025-05-20T19:20:14Z",
        "Cointelegraph",
        "Bancor files patent infringement lawsuit against Uniswap over DEX tech",
        "legal",
        &["lawsuit", "uniswap", "bancor"],
    ),
    (
        2531,
        "2025-05-22T12:38:44Z",
        "Cointelegraph",
        "UK court partially dismisses Bitcoin SV investor’s lawsuit against Binance",
        "legal",
        &["lawsuit", "court"],
    ),
    (
        14177,
        "2025-06-21T11:30:20Z",
        "bitcoin.com",
        "Kraken Partners With Babylon to Launch BTC Staking With up to 1% APY",
        "adoption_partnership",
        &["staking", "kraken", "babylon"],
    ),
    (
        5420,
        "2025-05-29T16:28:28Z",
        "cryptonews",
        "Coinbase Partners with Irdeto to Fight Crypto-Fuelled Piracy",
        "adoption_partnership",
        &["irdeto", "piracy"],
    ),
    (
        551,
        "2025-05-13T04:49:47Z",
        "CoinDesk",
        "Bitcoin Drop Causes $500M Long Liquidations as Dogecoin, ADA Slide 7%",
        "market_move",
        &["liquidations", "dogecoin", "ada"],
    ),
    (
        444,
        "2025-05-10T09:47:33Z",
        "CoinDesk",
        "Dogecoin Surges 10%, Bitcoin Nears $104K Amid Renewed ‘Risk-on’ Sentiment",
        "market_move",
        &["surges", "dogecoin"],
    ),
    (
        2383,
        "2025-05-22T07:16:57Z",
        "coindesk",
        "Bitcoin Pizza Day Is Now a $1.1B Celebration",
        "other",
        &["pizza", "bitcoin"],
    ),
];

#[test]
fn real_headlines_get_their_tag() {
    let tax = Taxonomy::default();
    let mut wrong = Vec::new();
    for (line, _, source, headline, want, _) in CASES {
        let m = tax.tag(headline);
        if m.tag != *want {
            wrong.push(format!(
                "line {line} ({source}) {headline:?}: {} {:?}, want {want}",
                m.tag, m.matched
            ));
        }
        if *want != "other" {
            assert!(m.score > 0.0 && !m.matched.is_empty(), "{headline:?}: {m:?}");
        }
    }
    assert!(wrong.is_empty(), "wrong tags:\n{}", wrong.join("\n"));
    // Every tag of the default taxonomy is exercised.
    let tested: HashSet<&str> = CASES.iter().map(|c| c.4).collect();
    for name in tax.tag_names() {
        assert!(tested.contains(name), "no test headline for {name}");
    }
}

#[test]
fn real_headlines_get_their_keywords() {
    for (line, _, _, headline, _, want) in CASES {
        let k = keywords(headline, 8);
        for w in *want {
            assert!(
                k.iter().any(|t| t == w),
                "line {line} {headline:?}: {w:?} not in {k:?}"
            );
        }
        // Every keyword is made of the headline's own tokens, and none is repeated.
        let toks: HashSet<String> = tokenize(headline).into_iter().collect();
        for t in &k {
            assert!(
                t.split(' ').all(|w| toks.contains(w)),
                "{t:?} not from {headline:?}"
            );
        }
        let distinct: HashSet<&String> = k.iter().collect();
        assert_eq!(distinct.len(), k.len(), "{k:?}");
        // A phrase hides its words.
        for phrase in k.iter().filter(|t| t.contains(' ')) {
            for w in phrase.split(' ') {
                assert!(!k.iter().any(|t| t == w), "{w:?} beside {phrase:?} in {k:?}");
            }
        }
    }
}

#[test]
fn keyword_ranking_on_real_headlines() {
    // Lexicon finance terms first (rarest first), then assets, then the rest.
    assert_eq!(
        keywords(
            "Bitcoin ETF Inflows Surge as Basis Trade Nears 9%, Signaling Renewed Demand",
            3
        ),
        ["inflows", "surge", "etf"]
    );
    assert_eq!(
        keywords("VanEck files for BNB ETF, first in US", 10),
        ["etf", "bnb", "vaneck", "files"]
    );
    let k = keywords("Much-Awaited Fed Rate Cut May Not Come Before Q4, ING Says", 10);
    assert_eq!(&k[..2], ["rate cut", "fed"], "{k:?}");
    assert!(
        !k.iter()
            .any(|t| t == "rate" || t == "cut" || t == "may" || t == "says"),
        "{k:?}"
    );
}

#[test]
fn deterministic() {
    let a = KeywordExtractor::new();
    let b = KeywordExtractor::new(); // another hash seed
    let ta = Taxonomy::default();
    let tb = Taxonomy::default();
    for (_, _, _, headline, _, _) in CASES {
        let k = a.extract(headline, 10);
        assert_eq!(k, a.extract(headline, 10));
        assert_eq!(k, b.extract(headline, 10));
        assert_eq!(k, keywords(headline, 10));
        assert_eq!(a.extract_scored(headline, 10), b.extract_scored(headline, 10));
        assert_eq!(ta.tag(headline), tb.tag(headline));
        assert_eq!(ta.scores(headline), tb.scores(headline));
    }
    // Also over a slice of the whole file.
    for headline in headlines().iter().step_by(20) {
        assert_eq!(a.extract(headline, 10), b.extract(headline, 10), "{headline:?}");
        assert_eq!(ta.tag(headline), tb.tag(headline), "{headline:?}");
    }
}

#[test]
fn shared_across_threads() {
    let tax = std::sync::Arc::new(Taxonomy::default());
    let want: Vec<_> = CASES.iter().map(|c| (keywords(c.3, 5), tax.tag(c.3))).collect();
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let tax = tax.clone();
            std::thread::spawn(move || {
                CASES
                    .iter()
                    .map(|c| (keywords(c.3, 5), tax.tag(c.3)))
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().expect("thread"), want);
    }
}

#[test]
fn empty_and_odd_input() {
    let tax = Taxonomy::default();
    for text in [
        "",
        " ",
        "!!! ??? $$$",
        "2025 100 97k 10th",
        "the and of to",
        "\u{0}\u{1}\u{feff}",
    ] {
        assert!(
            keywords(text, 10).is_empty(),
            "{text:?}: {:?}",
            keywords(text, 10)
        );
        let m = tax.tag(text);
        assert_eq!(
            (m.tag.as_str(), m.score, m.matched.len()),
            ("other", 0.0, 0),
            "{text:?}"
        );
    }
    assert!(keywords("Bitcoin ETF", 0).is_empty());
    assert_eq!(keywords("Bitcoin ETF", 1), ["etf"]);
}

#[test]
fn non_ascii_text() {
    // Real headlines in Russian and Chinese (lines 18610 and 5554; bitcoinist, bitfinexblog).
    let ru = "Биткоин подает редкий сигнал, который может спровоцировать падение ниже $40 000";
    let k = keywords(ru, 5);
    assert_eq!(k.len(), 5, "{k:?}");
    assert!(k.iter().all(|t| ru.to_lowercase().contains(t.as_str())), "{k:?}");
    assert!(k.contains(&"биткоин".to_owned()), "{k:?}");
    let zh = "圖表解讀系列：RSI：判斷市場是否超買或超賣最簡單的方法";
    let k = keywords(zh, 5);
    assert!(k.contains(&"rsi".to_owned()), "{k:?}");
    assert_eq!(Taxonomy::default().tag(zh).tag, "other");
    // Case-folding beyond ASCII, and accents kept.
    assert_eq!(
        keywords("ÉTF RÉGULATION Ärger", 5),
        ["régulation", "ärger", "étf"]
    );
    // A tagged word next to non-Latin text.
    assert_eq!(
        Taxonomy::default().tag("比特币 hack 黑客").tag,
        "security_incident"
    );
}

#[test]
fn huge_input_is_fast() {
    let tax = Taxonomy::default();
    let x = KeywordExtractor::shared();
    let mb = 1 << 20;
    let mut headlines_mb = String::new();
    for h in headlines().iter().cycle() {
        if headlines_mb.len() >= mb {
            break;
        }
        headlines_mb.push_str(h);
        headlines_mb.push('\n');
    }
    let inputs = [
        headlines_mb,
        "a".repeat(mb),
        "$".repeat(mb),
        "hack ".repeat(mb / 5),
        "all time ".repeat(mb / 9),
        "ä😀б".repeat(mb / 10),
        "sec etf 2025 ".repeat(mb / 13),
    ];
    for text in &inputs {
        let start = Instant::now();
        let k = x.extract(text, 10);
        let m = tax.tag(text);
        let took = start.elapsed();
        assert!(k.len() <= 10);
        assert!(!m.tag.is_empty());
        // Linear-time work: a few hundred ms unoptimised; the bound leaves room for slow machines.
        assert!(
            took < Duration::from_secs(10),
            "{} bytes took {took:?}",
            text.len()
        );
        assert!(k.iter().all(|t| t.chars().count() <= 40), "{k:?}");
        let head: String = text.chars().take(8).collect();
        eprintln!(
            "{} bytes ({head:?}...): {took:?}, tag {}, keywords {k:?}",
            text.len(),
            m.tag
        );
    }
}

#[test]
fn taxonomy_from_toml() {
    #[derive(serde::Deserialize)]
    struct Config {
        api: Api,
    }
    #[derive(serde::Deserialize)]
    struct Api {
        scenarios: Taxonomy,
    }
    let text = r#"
        [api.scenarios]
        fallback = "misc"

        [[api.scenarios.tags]]
        name = "hack"
        priority = 10
        rules = ["hack*", { pattern = "exploit*", weight = 2.0 }]

        [[api.scenarios.tags]]
        name = "listing"
        rules = [{ pattern = "list*", requires = ["binance", "upbit"], unless = ["watch list"] }]
    "#;
    let tax = toml::from_str::<Config>(text).expect("config").api.scenarios;
    assert_eq!(tax.tag_names(), ["hack", "listing", "misc"]);
    let m = tax.tag("Mobius Token smart contracts on BNB Chain exploited, $2.1M drained");
    assert_eq!(
        (m.tag.as_str(), m.score, m.matched),
        ("hack", 2.0, vec!["exploited".to_owned()])
    );
    assert_eq!(tax.tag("Upbit Lists MOODENG on Solana").tag, "listing");
    assert_eq!(tax.tag("Top 5 list of coins").tag, "misc");

    // Mistakes are errors, not silently ignored.
    for bad in [
        "[api.scenarios]\n[[api.scenarios.tags]]\nname = \"a\"\nrules = [{ pattern = \"x\", require = [\"y\"] }]",
        "[api.scenarios]\n[[api.scenarios.tags]]\nname = \"a\"\nrules = [\"$$\"]",
        "[api.scenarios]\n[[api.scenarios.tags]]\nname = \"a\"\nrules = [{ pattern = \"x\", weight = -1.0 }]",
        "[api.scenarios]\nfallbak = \"x\"",
        "[api.scenarios]\n[[api.scenarios.tags]]\nname = \"other\"\nrules = [\"x\"]",
    ] {
        assert!(toml::from_str::<Config>(bad).is_err(), "{bad}");
    }

    // The default taxonomy survives a round trip through TOML.
    let default = Taxonomy::default();
    let written = toml::to_string(&default).expect("serialise");
    let back: Taxonomy = toml::from_str(&written).expect("deserialise");
    assert_eq!(back.config(), &TaxonomyConfig::default_config());
    for (_, _, _, headline, _, _) in CASES {
        assert_eq!(back.tag(headline), default.tag(headline));
    }
}

/// Every headline of the crypto news file, HTML character references decoded.
fn headlines() -> Vec<String> {
    let file = std::fs::File::open(CRYPTO_NEWS).expect("crypto news file");
    let mut reader = csv::Reader::from_reader(BufReader::new(flate2::read::GzDecoder::new(file)));
    let col = reader
        .headers()
        .expect("header")
        .iter()
        .position(|h| h == "headline")
        .expect("headline column");
    reader
        .records()
        .map(|r| auroraq_text::strip_html(&r.expect("csv record")[col]))
        .collect()
}

#[test]
fn coverage_over_the_crypto_news_file() {
    let tax = Taxonomy::default();
    let names: HashSet<&str> = tax.tag_names().into_iter().collect();
    let headlines = headlines();
    assert_eq!(headlines.len(), 29_778);
    let mut dist: BTreeMap<String, usize> = BTreeMap::new();
    let mut no_keyword = 0;
    for h in &headlines {
        let m = tax.tag(h);
        assert!(names.contains(m.tag.as_str()), "{h:?}: {m:?}");
        *dist.entry(m.tag).or_default() += 1;
        if keywords(h, 5).is_empty() {
            no_keyword += 1;
        }
    }
    let n = headlines.len() as f64;
    let mut rows: Vec<_> = dist.iter().collect();
    rows.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    eprintln!("scenario tags over {} headlines:", headlines.len());
    for (tag, count) in &rows {
        eprintln!("  {tag:<22} {count:>6}  {:>5.1}%", **count as f64 * 100.0 / n);
    }
    eprintln!("headlines without a keyword: {no_keyword}");
    let other = dist.get("other").copied().unwrap_or(0) as f64 / n;
    assert!(other < 0.6, "`other` is {:.1}% of the headlines", other * 100.0);
    // No tag is dead, and none swallows everything.
    for name in &names {
        let share = dist.get(*name).copied().unwrap_or(0) as f64 / n;
        assert!(share > 0.003, "{name}: {:.2}%", share * 100.0);
        assert!(share < 0.5, "{name}: {:.1}%", share * 100.0);
    }
    assert!(
        no_keyword < headlines.len() / 100,
        "{no_keyword} headlines without a keyword"
    );
}

/// The committed background table is what `scripts/model/build_keyword_background.py` computes,
/// recounted here with the Rust tokeniser: same document count, same terms, same frequencies. A
/// handful may differ: Python's `\w` and Rust's `char::is_alphanumeric` disagree on some combining
/// marks (Thai vowel signs) and on circled letters (`USDⓈ-M` is `usd`, `m` in Python, `usdⓢ`, `m`
/// in Rust).
#[test]
fn background_table_is_reproducible() {
    let x = KeywordExtractor::shared();
    let mut docs = headlines();
    let mut fpb = csv::Reader::from_path(FPB_TRAIN).expect("fpb train");
    let col = fpb
        .headers()
        .expect("header")
        .iter()
        .position(|h| h == "sentence")
        .expect("sentence column");
    docs.extend(fpb.records().map(|r| r.expect("csv record")[col].to_owned()));
    assert_eq!(docs.len() as u64, x.documents());

    let lexicon_phrases: Vec<Vec<String>> = auroraq_text::keywords::FINANCE_LEXICON
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.split('\t').next())
        .map(tokenize)
        .filter(|t| t.len() > 1)
        .collect();
    let mut df: BTreeMap<String, u64> = BTreeMap::new();
    for doc in &docs {
        let toks = tokenize(doc);
        let mut terms: HashSet<String> = toks.iter().filter(|t| x.is_candidate_word(t)).cloned().collect();
        for p in &lexicon_phrases {
            if toks.windows(p.len()).any(|w| w == p.as_slice()) {
                terms.insert(p.join(" "));
            }
        }
        for t in terms {
            *df.entry(t).or_default() += 1;
        }
    }
    df.retain(|_, n| *n >= 2);

    let table: BTreeMap<String, u64> = auroraq_text::keywords::BACKGROUND_DF
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once('\t'))
        .map(|(t, n)| (t.to_owned(), n.parse().expect("df")))
        .collect();
    let mut differ: Vec<String> = Vec::new();
    for t in df
        .keys()
        .chain(table.keys())
        .collect::<std::collections::BTreeSet<_>>()
    {
        if df.get(t) != table.get(t) {
            differ.push(format!("{t}: rust {:?}, table {:?}", df.get(t), table.get(t)));
        }
    }
    eprintln!("{} of {} terms differ: {differ:#?}", differ.len(), table.len());
    assert!(differ.len() <= 10, "{} terms differ: {differ:#?}", differ.len());
    assert!(table.len() > 5_000);
}
