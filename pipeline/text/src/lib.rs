//! Text clean-up shared by AuroraQ's news connectors and sentiment workers.
//!
//! - [`strip_html`] turns an HTML fragment (a feed item's content or summary) into plain text:
//!   tags removed, scripts and styles dropped, character references decoded, whitespace
//!   normalised;
//! - [`normalise_whitespace`] collapses runs of whitespace and control characters into one space;
//! - [`truncate_chars`] cuts a text at a number of characters, on a character boundary.
//!
//! Every function here runs in time linear in its input, whatever the input (a feed item is
//! external input: a megabyte of `<` or `&` must not take quadratic time).
//!
//! Two modules describe a text for the sentiment API (`keywords` and `scenario_tag` of
//! `POST /api/v1/sentiment/analyze`):
//!
//! - [`keywords`]: the salient financial terms of a text (a finance lexicon plus tf-idf against a
//!   background table of 33,068 news headlines and PhraseBank sentences);
//! - [`scenario`]: a configurable taxonomy of event tags (`regulation`, `security_incident`,
//!   `etf_institutional`, ..., `other`) chosen by weighted pattern rules.
//!
//! Both are deterministic, `Send + Sync` once built, and linear (or `n log n`) in the text.

pub mod keywords;
pub mod scenario;
mod token;

/// The longest character reference looked at, `&` and `;` excluded (`&thetasym;` has 8).
const MAX_ENTITY_LEN: usize = 10;

/// Removes HTML tags, scripts and styles, decodes character references (numeric ones and the
/// common named ones) and normalises whitespace.
///
/// A `<` that does not open a tag (`a < b`) and an unknown reference (`&foo;`) are kept as text.
pub fn strip_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let bytes = s.as_bytes();
    // Once a search for '>' from some position failed, it fails from every later position.
    let mut no_gt_after: Option<usize> = None;
    let mut i = 0;
    while i < s.len() {
        let tag_start = bytes[i] == b'<'
            && bytes
                .get(i + 1)
                .is_some_and(|b| b.is_ascii_alphabetic() || matches!(b, b'/' | b'!' | b'?'));
        if tag_start {
            // Skip the contents of script and style elements entirely.
            if let Some(tag) = ["script", "style"]
                .into_iter()
                .find(|tag| starts_with_ignore_case(&bytes[i + 1..], tag.as_bytes()))
            {
                let close = format!("</{tag}>");
                i = find_ignore_case(&bytes[i..], close.as_bytes())
                    .map(|j| i + j + close.len())
                    .unwrap_or(s.len());
                out.push(' ');
                continue;
            }
            let gt = match no_gt_after {
                Some(p) if p <= i => None,
                _ => {
                    let found = s[i..].find('>');
                    if found.is_none() {
                        no_gt_after = Some(i);
                    }
                    found
                }
            };
            match gt {
                Some(j) => {
                    // Inline elements join text (`<b>Apple</b>'s`); others separate it.
                    if !is_inline_tag(&bytes[i + 1..i + j]) {
                        out.push(' ');
                    }
                    i += j + 1;
                }
                None => {
                    // A lone '<' is text.
                    out.push('<');
                    i += 1;
                }
            }
            continue;
        }
        if bytes[i] == b'&' {
            let window = &bytes[i + 1..(i + 2 + MAX_ENTITY_LEN).min(s.len())];
            if let Some(j) = window.iter().position(|b| *b == b';') {
                // `window` is ASCII up to the ';' only if the reference is well-formed; a
                // multi-byte character before it makes the slice below invalid, so check.
                if let Some(ent) = s.get(i + 1..i + 1 + j) {
                    if let Some(decoded) = decode_entity(ent) {
                        out.extend(decoded);
                        i += j + 2;
                        continue;
                    }
                }
            }
        }
        let c = s[i..].chars().next().unwrap_or(' ');
        out.push(c);
        i += c.len_utf8();
    }
    normalise_whitespace(&out)
}

/// Collapses runs of whitespace (including control characters) into single spaces, and trims.
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

/// Cuts `s` after `max_chars` characters (on a character boundary). Returns whether it was cut.
pub fn truncate_chars(s: &mut String, max_chars: usize) -> bool {
    match s.char_indices().nth(max_chars) {
        Some((cut, _)) => {
            s.truncate(cut);
            true
        }
        None => false,
    }
}

/// What a reference (`amp`, `#8217`, `#x2019`) stands for, if known: one character, or none
/// for the invisible ones (soft hyphen, zero-width joiners), which are dropped.
fn decode_entity(ent: &str) -> Option<Option<char>> {
    if let Some(num) = ent.strip_prefix('#') {
        let code = match num.strip_prefix(['x', 'X']) {
            Some(hex) => u32::from_str_radix(hex, 16).ok()?,
            None => num.parse().ok()?,
        };
        return match code {
            0xad | 0x200b..=0x200d | 0xfeff => Some(None),
            _ => char::from_u32(code).map(Some),
        };
    }
    if matches!(ent, "shy" | "zwnj" | "zwj") {
        return Some(None);
    }
    let c = match ent {
        "amp" => '&',
        "lt" => '<',
        "gt" => '>',
        "quot" => '"',
        "apos" => '\'',
        "nbsp" | "ensp" | "emsp" | "thinsp" => ' ',
        "ndash" => '–',
        "mdash" => '—',
        "lsquo" => '‘',
        "rsquo" => '’',
        "sbquo" => '‚',
        "ldquo" => '“',
        "rdquo" => '”',
        "bdquo" => '„',
        "laquo" => '«',
        "raquo" => '»',
        "lsaquo" => '‹',
        "rsaquo" => '›',
        "hellip" => '…',
        "bull" => '•',
        "middot" => '·',
        "prime" => '′',
        "Prime" => '″',
        "copy" => '©',
        "reg" => '®',
        "trade" => '™',
        "deg" => '°',
        "plusmn" => '±',
        "times" => '×',
        "divide" => '÷',
        "minus" => '−',
        "frac12" => '½',
        "frac14" => '¼',
        "frac34" => '¾',
        "sect" => '§',
        "para" => '¶',
        "dagger" => '†',
        "Dagger" => '‡',
        "permil" => '‰',
        "cent" => '¢',
        "pound" => '£',
        "yen" => '¥',
        "euro" => '€',
        "curren" => '¤',
        "iexcl" => '¡',
        "iquest" => '¿',
        "larr" => '←',
        "rarr" => '→',
        "uarr" => '↑',
        "darr" => '↓',
        "eacute" => 'é',
        "Eacute" => 'É',
        "egrave" => 'è',
        "aacute" => 'á',
        "agrave" => 'à',
        "acirc" => 'â',
        "ecirc" => 'ê',
        "iacute" => 'í',
        "oacute" => 'ó',
        "uacute" => 'ú',
        "ntilde" => 'ñ',
        "ccedil" => 'ç',
        "auml" => 'ä',
        "ouml" => 'ö',
        "uuml" => 'ü',
        "Auml" => 'Ä',
        "Ouml" => 'Ö',
        "Uuml" => 'Ü',
        "szlig" => 'ß',
        _ => return None,
    };
    Some(Some(c))
}

/// Whether a tag (the text between `<` and `>`) opens or closes an inline element, whose
/// removal must not split a word.
fn is_inline_tag(tag: &[u8]) -> bool {
    const INLINE: &[&[u8]] = &[
        b"a", b"abbr", b"b", b"bdi", b"bdo", b"cite", b"code", b"data", b"dfn", b"em", b"font", b"i", b"kbd",
        b"mark", b"q", b"s", b"samp", b"small", b"span", b"strike", b"strong", b"sub", b"sup", b"time",
        b"tt", b"u", b"var",
    ];
    let tag = tag.strip_prefix(b"/").unwrap_or(tag);
    let end = tag
        .iter()
        .position(|b| !b.is_ascii_alphanumeric())
        .unwrap_or(tag.len());
    let name = &tag[..end];
    INLINE.iter().any(|t| t.eq_ignore_ascii_case(name))
}

fn starts_with_ignore_case(hay: &[u8], needle: &[u8]) -> bool {
    hay.len() >= needle.len() && hay[..needle.len()].eq_ignore_ascii_case(needle)
}

/// Where `needle` (ASCII) first occurs in `hay`, ignoring ASCII case.
fn find_ignore_case(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    hay.windows(needle.len())
        .position(|w| w.eq_ignore_ascii_case(needle))
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
    fn inline_tags_do_not_split_words() {
        assert_eq!(
            strip_html("<p><a href=\"x\">Apple</a>'s <B>big</B>, <span class=k>day</span>.</p><p>Next</p>"),
            "Apple's big, day. Next"
        );
        assert_eq!(
            strip_html("line<br>break<div>block</div>end"),
            "line break block end"
        );
        // A tag whose name merely starts like an inline one is not inline.
        assert_eq!(strip_html("a<section>b</section>c<article>d"), "a b c d");
    }

    #[test]
    fn decodes_references() {
        assert_eq!(
            strip_html("It&#8217;s &ldquo;big&rdquo; &mdash; &hellip; caf&eacute; 10&euro;"),
            "It’s “big” — … café 10€"
        );
        assert_eq!(strip_html("&#x2019;&#X41;&#65;"), "’AA");
        assert_eq!(strip_html("Bit&shy;coin&#173; ok"), "Bitcoin ok");
        assert_eq!(strip_html("&quot;Q&quot; &lt;b&gt; &apos;"), "\"Q\" <b> '");
        // Not references: kept as text.
        assert_eq!(
            strip_html("AT&T and R&D; fish & chips"),
            "AT&T and R&D; fish & chips"
        );
        assert_eq!(strip_html("&#xZZ; &#; &;"), "&#xZZ; &#; &;");
        assert_eq!(strip_html("&#1114112;"), "&#1114112;");
        // A reference cut by the end of the text.
        assert_eq!(strip_html("fin &amp"), "fin &amp");
        // Multi-byte text right after an '&' does not split a character.
        assert_eq!(strip_html("&é;ü"), "&é;ü");
    }

    #[test]
    fn case_of_script_and_style_does_not_matter() {
        assert_eq!(strip_html("a<SCRIPT>x()</Script>b<Style>p{}</STYLE>c"), "a b c");
        // An unclosed script swallows the rest, as a browser would.
        assert_eq!(strip_html("a<script>never closed"), "a");
    }

    #[test]
    fn normalises_whitespace() {
        assert_eq!(
            normalise_whitespace("  a\t\tb\r\n c\u{0}d \u{a0}e  "),
            "a b c d e"
        );
        assert_eq!(normalise_whitespace(" \n\t "), "");
    }

    #[test]
    fn truncates_on_char_boundaries() {
        let mut s = "héllo".to_owned();
        assert!(truncate_chars(&mut s, 2));
        assert_eq!(s, "hé");
        let mut s = "abc".to_owned();
        assert!(!truncate_chars(&mut s, 3));
        assert_eq!(s, "abc");
    }

    #[test]
    fn pathological_inputs_take_linear_time() {
        // Quadratic scanning would take minutes on these; linear takes milliseconds.
        let n = 2_000_000;
        let t0 = std::time::Instant::now();
        let lt = "<a".repeat(n / 2);
        assert_eq!(strip_html(&lt).len(), lt.len());
        let amp = "&".repeat(n);
        assert_eq!(strip_html(&amp), amp);
        let scripts = "<script>".repeat(n / 8);
        assert_eq!(strip_html(&scripts), "");
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(20),
            "took {:?}",
            t0.elapsed()
        );
    }
}
