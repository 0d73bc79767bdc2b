//! One redaction for every URL and connection string that can reach a log, an error or a report.

/// Query-string and key/value names whose values are secrets (compared case-insensitively).
const SECRET_KEYS: &[&str] = &[
    "password",
    "passwd",
    "pass",
    "pwd",
    "sslpassword",
    "secret",
    "token",
    "access_token",
    "auth",
    "signature",
    "apikey",
    "api_key",
    "api-key",
    "key",
];

fn is_secret(key: &str) -> bool {
    SECRET_KEYS.iter().any(|s| s.eq_ignore_ascii_case(key.trim()))
}

/// `s` with every secret replaced by `***`: the password of a URL's user info (the user name is
/// kept), secret query parameters (`?password=`, `token`, `signature`, `apiKey`, ...), and in a
/// libpq key/value string (`host=h user=u password=p`) the `password` value, quoted or not.
pub fn redact(s: &str) -> String {
    match s.split_once("://") {
        Some((scheme, rest)) if !scheme.is_empty() && !scheme.contains([' ', '=']) => {
            format!("{scheme}://{}", redact_after_scheme(rest))
        }
        _ if s.contains('=') => redact_key_values(s),
        _ => s.to_owned(),
    }
}

fn redact_after_scheme(rest: &str) -> String {
    let (authority, tail) = match rest.find(['/', '?', '#']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{user}:***@{host}"),
            None => format!("{userinfo}@{host}"),
        },
        None => authority.to_owned(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let (query, fragment) = match query.split_once('#') {
                Some((q, f)) => (q, Some(f)),
                None => (query, None),
            };
            let q: Vec<String> = query
                .split('&')
                .map(|kv| match kv.split_once('=') {
                    Some((k, _)) if is_secret(k) => format!("{k}=***"),
                    _ => kv.to_owned(),
                })
                .collect();
            match fragment {
                Some(f) => format!("{path}?{}#{f}", q.join("&")),
                None => format!("{path}?{}", q.join("&")),
            }
        }
        None => tail.to_owned(),
    };
    format!("{authority}{tail}")
}

/// libpq's `key = value` form: values may be single-quoted with `\'` and `\\` escapes.
fn redact_key_values(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < b.len() {
        // Copy white space.
        if b[i].is_ascii_whitespace() {
            out.push(b[i] as char);
            i += 1;
            continue;
        }
        // A key up to '=' (or a bare word).
        let start = i;
        while i < b.len() && b[i] != b'=' && !b[i].is_ascii_whitespace() {
            i += 1;
        }
        let key = &s[start..i];
        out.push_str(key);
        // Optional spaces around '='.
        let mut j = i;
        while j < b.len() && b[j].is_ascii_whitespace() {
            j += 1;
        }
        if j >= b.len() || b[j] != b'=' {
            continue;
        }
        out.push_str(&s[i..=j]);
        i = j + 1;
        while i < b.len() && b[i].is_ascii_whitespace() {
            out.push(b[i] as char);
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
            out.push_str("***");
        } else {
            out.push_str(&s[vstart..i]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::redact;

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
            redact("nats://user@h:4222"),
            "nats://user@h:4222",
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
        assert!(!redact("user=u password='unterminated").contains("unterminated"));
    }

    #[test]
    fn never_leaks_a_secret() {
        for s in [
            "postgres://alice:TOPSECRET@db/x",
            "postgres://alice@db/x?password=TOPSECRET",
            "host=db password=TOPSECRET",
            "host=db PassWord=TOPSECRET",
            "redis://:TOPSECRET@r",
            "wss://h/ws?token=TOPSECRET&x=1",
        ] {
            assert!(!redact(s).contains("TOPSECRET"), "{s} -> {}", redact(s));
        }
    }
}
