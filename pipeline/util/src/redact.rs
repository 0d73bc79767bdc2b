//! One redaction for every URL and connection string that can reach a log, an error or a report.
//!
//! [`redact`] hides the secrets of a URL or a libpq key/value string; [`scrub`] hides the secrets of
//! one such string wherever they appear in another text (an error message that quotes the URL, a
//! driver's message that quotes the password). Both find the secrets with the same parser
//! ([`secret_spans`]), so what one hides the other hides.

use std::ops::Range;

/// Names whose values are secrets, compared case-insensitively with the whole (percent-decoded)
/// name.
const SECRET_KEYS: &[&str] = &[
    "pass",
    "pwd",
    "key",
    "auth",
    "sig",
    "jwt",
    "bearer",
    "session",
    "credential",
    "credentials",
];

/// Name parts that make a value secret wherever they appear in the name (`db_password`,
/// `refresh_token`, `client_secret`, `X-Amz-Signature`, `apiKey`).
const SECRET_PARTS: &[&str] = &[
    "password",
    "passwd",
    "secret",
    "token",
    "signature",
    "apikey",
    "api_key",
    "api-key",
    "private_key",
    "access_key",
];

fn is_secret(key: &str) -> bool {
    let k = percent_decode(key.trim()).to_ascii_lowercase();
    SECRET_KEYS.iter().any(|s| k == *s) || SECRET_PARTS.iter().any(|s| k.contains(s))
}

/// `%XX` escapes decoded (invalid ones kept as they are); lossy on invalid UTF-8.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok();
            if let Some(v) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `s` with every secret replaced by `***`: the password of a URL's user info (the user name is
/// kept; a NATS URL's lone user info is a token and hidden too), secret query and fragment
/// parameters (`?password=`, `token`, `signature`, `apiKey`, ..., names percent-decoded), and in
/// a libpq key/value string (`host=h user=u password=p`) the secret values, quoted or not. A
/// password holding an unencoded `/`, `?`, `#` or `@` is still hidden (up to the `@` before the
/// host).
pub fn redact(s: &str) -> String {
    let spans = secret_spans(s);
    let mut out = String::with_capacity(s.len());
    let mut at = 0;
    for r in spans {
        out.push_str(&s[at..r.start]);
        out.push_str("***");
        at = r.end;
    }
    out.push_str(&s[at..]);
    out
}

/// The secret values of `s` (as [`redact`] finds them), each as written and percent-decoded.
pub fn secrets(s: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for r in secret_spans(s) {
        let raw = &s[r];
        let raw = raw
            .strip_prefix('\'')
            .and_then(|v| v.strip_suffix('\''))
            .unwrap_or(raw);
        for v in [
            raw.to_owned(),
            percent_decode(raw),
            raw.replace("\\'", "'").replace("\\\\", "\\"),
        ] {
            if !v.is_empty() && !out.contains(&v) {
                out.push(v);
            }
        }
    }
    // Longest first, so that a secret holding another is replaced whole.
    out.sort_by_key(|v| std::cmp::Reverse(v.len()));
    out
}

/// `text` with `source` (a URL or connection string) replaced by its redacted form and every
/// secret of `source` replaced by `***` wherever it appears: for error messages of drivers and
/// libraries that quote what they were given.
pub fn scrub(text: &str, source: &str) -> String {
    let mut out = if source.is_empty() {
        text.to_owned()
    } else {
        text.replace(source, &redact(source))
    };
    for secret in secrets(source) {
        out = out.replace(&secret, "***");
    }
    out
}

/// Byte ranges of the secret values in `s`, in order, not overlapping.
pub fn secret_spans(s: &str) -> Vec<Range<usize>> {
    match s.split_once("://") {
        Some((scheme, _)) if is_scheme(scheme) => url_spans(s, scheme),
        _ if s.contains('=') => key_value_spans(s),
        _ => Vec::new(),
    }
}

fn is_scheme(s: &str) -> bool {
    let mut c = s.chars();
    c.next().is_some_and(|f| f.is_ascii_alphabetic())
        && c.all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '+' | '-' | '.'))
}

/// Whether `a` reads as hosts with optional ports: `h`, `h:5432`, `[::1]:5432`, `h1:1,h2:2`.
fn is_host_list(a: &str) -> bool {
    a.split(',').all(|h| {
        let (host, port) = if let Some(rest) = h.strip_prefix('[') {
            match rest.split_once(']') {
                Some((_, after)) => ("v6", after.strip_prefix(':')),
                None => return false,
            }
        } else {
            match h.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (h, None),
            }
        };
        host.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '%' | '~'))
            && port.is_none_or(|p| p.chars().all(|c| c.is_ascii_digit()))
    })
}

fn url_spans(s: &str, scheme: &str) -> Vec<Range<usize>> {
    let base = scheme.len() + 3;
    let rest = &s[base..];
    let mut spans = Vec::new();
    let a_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..a_end];
    // Where the host part starts (after the user info), relative to `rest`.
    let mut after_userinfo = 0;
    let q = rest.find(['?', '#']).unwrap_or(rest.len()).max(a_end);
    let at_in_path = rest[a_end..q].contains('@');
    let colon = authority.find(':');
    // A `user:` before a password with an unencoded `/`, `?` or `#`: an `@` follows in the path,
    // or the authority (with no `@`) is no host list.
    let unencoded = colon.is_some() && (at_in_path || (!authority.contains('@') && !is_host_list(authority)));
    if let (true, Some(c)) = (unencoded, colon) {
        // The last `@` not inside a query's `key=value`.
        let at = rest.char_indices().rev().find(|&(i, ch)| {
            ch == '@' && i > c && {
                let before = &rest[..i];
                before.find('?').is_none_or(|qm| !before[qm..].contains('='))
            }
        });
        match at {
            Some((at, _)) => {
                spans.push(base + c + 1..base + at);
                after_userinfo = at + 1;
            }
            // Nothing tells where it ends: hide the rest.
            None => {
                spans.push(base + c + 1..s.len());
                return spans;
            }
        }
    } else if let Some(at) = authority.rfind('@') {
        let userinfo = &authority[..at];
        match userinfo.find(':') {
            Some(c) => spans.push(base + c + 1..base + at),
            // NATS takes a lone user info as its token.
            None if matches!(scheme.to_ascii_lowercase().as_str(), "nats" | "tls") && at > 0 => {
                spans.push(base..base + at)
            }
            None => {}
        }
        after_userinfo = at + 1;
    }
    // Query and fragment parameters after the host part.
    let tail_start = after_userinfo
        + rest[after_userinfo..]
            .find(['?', '#'])
            .unwrap_or(rest.len() - after_userinfo);
    let mut i = tail_start;
    let b = rest.as_bytes();
    while i < b.len() {
        // Skip the separator.
        i += 1;
        let end = rest[i..].find(['&', ';', '#', '?']).map_or(rest.len(), |e| i + e);
        let param = &rest[i..end];
        if let Some((k, _)) = param.split_once('=') {
            if is_secret(k) {
                spans.push(base + i + k.len() + 1..base + end);
            }
        }
        i = end;
    }
    spans
}

/// libpq's `key = value` form: values may be single-quoted with `\'` and `\\` escapes.
fn key_value_spans(s: &str) -> Vec<Range<usize>> {
    let b = s.as_bytes();
    let mut spans = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i].is_ascii_whitespace() {
            i += 1;
            continue;
        }
        // A key up to '=' (or a bare word).
        let start = i;
        while i < b.len() && b[i] != b'=' && !b[i].is_ascii_whitespace() {
            i += 1;
        }
        let key = &s[start..i];
        // Optional spaces around '='.
        let mut j = i;
        while j < b.len() && b[j].is_ascii_whitespace() {
            j += 1;
        }
        if j >= b.len() || b[j] != b'=' {
            continue;
        }
        i = j + 1;
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        // The value.
        let vstart = i;
        if i < b.len() && b[i] == b'\'' {
            i += 1;
            while i < b.len() && b[i] != b'\'' {
                if b[i] == b'\\' {
                    i += 1;
                }
                i += 1;
            }
            i = (i + 1).min(b.len());
        } else {
            while i < b.len() && !b[i].is_ascii_whitespace() {
                i += 1;
            }
        }
        if is_secret(key) {
            spans.push(vstart..i);
        }
    }
    spans
}

#[cfg(test)]
mod tests {
    use super::{redact, scrub, secrets};

    #[test]
    fn url_user_info() {
        assert_eq!(
            redact("postgres://u:s3cret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(
            redact("redis://:s3cret@127.0.0.1:6379/0"),
            "redis://:***@127.0.0.1:6379/0"
        );
        assert_eq!(
            redact("redis://user@h:4222"),
            "redis://user@h:4222",
            "no password: unchanged"
        );
        assert_eq!(
            redact("postgres://u:p@ss@h/db"),
            "postgres://u:***@h/db",
            "@ in the password"
        );
        assert_eq!(redact("redis://h:6379"), "redis://h:6379");
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact("inproc"), "inproc");
        assert_eq!(redact(""), "");
        assert_eq!(
            redact("postgres://u@h1:5432,h2:5433/db"),
            "postgres://u@h1:5432,h2:5433/db"
        );
        assert_eq!(redact("postgres://[::1]:5432/db"), "postgres://[::1]:5432/db");
    }

    #[test]
    fn nats_token_and_user_password() {
        assert_eq!(redact("nats://s3cret@h:4222"), "nats://***@h:4222");
        assert_eq!(redact("nats://u:s3cret@h:4222"), "nats://u:***@h:4222");
        assert_eq!(redact("nats://h:4222,h2:4222"), "nats://h:4222,h2:4222");
    }

    #[test]
    fn passwords_with_unencoded_delimiters() {
        assert_eq!(
            redact("postgres://u:ab/c+d=@h:5432/db?sslmode=disable"),
            "postgres://u:***@h:5432/db?sslmode=disable",
            "a base64 password with / and ="
        );
        assert_eq!(redact("postgres://u:pa?ss@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact("postgres://u:pa#ss@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact("postgres://u:1234/5@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact("postgres://u:p/a@ss@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact("postgres://u:p@s/s@h/db"), "postgres://u:***@h/db");
        assert_eq!(
            redact("postgres://h:5432/db?user=a@b"),
            "postgres://h:5432/db?user=a@b",
            "an @ in a query value is not user info"
        );
        assert_eq!(
            redact("postgres://u:pa/ss"),
            "postgres://u:***",
            "no end: all hidden"
        );
    }

    #[test]
    fn url_queries() {
        assert_eq!(
            redact("postgres://u@h/db?sslmode=require&password=s3cret"),
            "postgres://u@h/db?sslmode=require&password=***"
        );
        assert_eq!(
            redact("https://api.binance.com/api/v3/order?symbol=BTCUSDT&signature=abc&apiKey=k"),
            "https://api.binance.com/api/v3/order?symbol=BTCUSDT&signature=***&apiKey=***"
        );
        assert_eq!(
            redact("kafka://h:9092?token=t#frag"),
            "kafka://h:9092?token=***#frag"
        );
        assert_eq!(
            redact("postgres://h/db?PASSWORD=x"),
            "postgres://h/db?PASSWORD=***"
        );
        assert_eq!(
            redact("postgres://u@h/db?pass%77ord=x&db_password=y"),
            "postgres://u@h/db?pass%77ord=***&db_password=***",
            "percent-encoded and compound names"
        );
        assert_eq!(
            redact("https://h/cb#access_token=t&x=1"),
            "https://h/cb#access_token=***&x=1",
            "fragment parameters"
        );
        assert_eq!(
            redact("postgres://u:pw@h/db?password=q"),
            "postgres://u:***@h/db?password=***"
        );
        assert_eq!(redact("https://h/p?q=1"), "https://h/p?q=1");
        assert_eq!(redact("https://x/api/v3/depth"), "https://x/api/v3/depth");
    }

    #[test]
    fn libpq_key_values() {
        assert_eq!(
            redact("host=127.0.0.1 user=u password=s3cret dbname=d"),
            "host=127.0.0.1 user=u password=*** dbname=d"
        );
        assert_eq!(
            redact("host=h password = 'a b\\' c' dbname=d"),
            "host=h password = *** dbname=d"
        );
        assert_eq!(redact("host=h password=pw user=u"), "host=h password=*** user=u");
        assert_eq!(redact("host=h user=u"), "host=h user=u", "no password: unchanged");
        assert_eq!(redact("password="), "password=***");
        assert_eq!(redact("host=h sslpassword=x"), "host=h sslpassword=***");
        assert!(!redact("user=u password='unterminated").contains("unterminated"));
    }

    #[test]
    fn never_leaks_a_secret() {
        for s in [
            "postgres://alice:TOPSECRET@db/x",
            "postgresql://alice@db/x?password=TOPSECRET",
            "postgres://alice@db/x?sslmode=disable&password=TOPSECRET#f",
            "postgres://alice:TOP/SECRET@db/x",
            "postgres://alice:TOP?SECRET@db/x",
            "postgres://alice@db/x?pass%77ord=TOPSECRET",
            "host=db password=TOPSECRET",
            "host=db PassWord=TOPSECRET",
            "host=db password='TOP SECRET'",
            "redis://:TOPSECRET@r",
            "redis://r:6379/0?password=TOPSECRET",
            "nats://TOPSECRET@n:4222",
            "nats://u:TOPSECRET@n:4222",
            "wss://h/ws?token=TOPSECRET&x=1",
        ] {
            let r = redact(s);
            assert!(!r.contains("TOPSECRET") && !r.contains("SECRET"), "{s} -> {r}");
            assert!(r.contains("***"), "{s} -> {r}");
        }
    }

    #[test]
    fn scrub_hides_the_url_and_its_secrets_in_a_message() {
        let url = "nats://u:TOPSECRET@127.0.0.1:1";
        let msg = format!("cannot connect to {url}: password TOPSECRET refused");
        let s = scrub(&msg, url);
        assert_eq!(
            s,
            "cannot connect to nats://u:***@127.0.0.1:1: password *** refused"
        );
        let kv = "host=h user=u password='a\\'b'";
        assert_eq!(secrets(kv), vec!["a\\'b".to_owned(), "a'b".to_owned()]);
        assert_eq!(scrub("bad password a'b", kv), "bad password ***");
        let enc = "postgres://u:p%40ss@h/db";
        assert_eq!(scrub("auth p@ss and p%40ss", enc), "auth *** and ***");
        assert_eq!(scrub("nothing here", ""), "nothing here");
    }
}
