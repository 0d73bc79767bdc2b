//! UTC times for the command line and recorded files, to epoch microseconds. No time-zone
//! database: a time is UTC unless it carries an offset.

use std::time::{SystemTime, UNIX_EPOCH};

use auroraq_schemas::Micros;

/// Days since 1970-01-01 of a civil date (proleptic Gregorian).
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let m = m as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

fn digits(s: &str) -> Option<i64> {
    if s.is_empty() || s.len() > 9 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Parses `2024-01-01`, `2024-01-01T12:30[:00[.123456]][Z|+02:00]` (a space works for `T`),
/// or epoch milliseconds (13 digits) / seconds (10 digits), into epoch microseconds UTC.
pub fn parse_time(s: &str) -> Option<Micros> {
    let s = s.trim();
    if !s.is_empty() && s.len() <= 16 && s.bytes().all(|b| b.is_ascii_digit()) {
        let n: i64 = s.parse().ok()?;
        return if s.len() >= 12 {
            n.checked_mul(1000)
        } else {
            n.checked_mul(1_000_000)
        };
    }
    let (date, rest) = match s.find(['T', 't', ' ']) {
        Some(i) => (&s[..i], s[i + 1..].trim()),
        None => (s, ""),
    };
    let mut parts = date.splitn(3, '-');
    let (y, m, d) = (
        digits(parts.next()?)?,
        digits(parts.next()?)?,
        digits(parts.next()?)?,
    );
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || !(1..=9999).contains(&y) {
        return None;
    }
    let days = days_from_civil(y, m as u32, d as u32);
    let (clock, offset_s) = if rest.is_empty() {
        ("", 0)
    } else if let Some(c) = rest.strip_suffix(['Z', 'z']) {
        (c, 0)
    } else if let Some(i) = rest.rfind(['+', '-']) {
        let (c, off) = rest.split_at(i);
        let sign = if off.starts_with('-') { -1 } else { 1 };
        let (oh, om) = off[1..].split_once(':').unwrap_or((&off[1..], "0"));
        (c, sign * (digits(oh)? * 3600 + digits(om)? * 60))
    } else {
        (rest, 0)
    };
    let mut secs = 0i64;
    let mut micros = 0i64;
    if !clock.is_empty() {
        let mut hms = clock.splitn(3, ':');
        let h = digits(hms.next()?)?;
        let mi = digits(hms.next()?)?;
        let (sec, frac) = match hms.next() {
            Some(x) => match x.split_once('.') {
                Some((a, f)) => (digits(a)?, f),
                None => (digits(x)?, ""),
            },
            None => (0, ""),
        };
        if h > 23 || mi > 59 || sec > 60 {
            return None;
        }
        if !frac.is_empty() {
            if !frac.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let f: String = frac.chars().chain(std::iter::repeat('0')).take(6).collect();
            micros = f.parse().ok()?;
        }
        secs = h * 3600 + mi * 60 + sec;
    }
    (days * 86_400 + secs - offset_s)
        .checked_mul(1_000_000)?
        .checked_add(micros)
}

/// The wall clock in epoch milliseconds.
pub fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        assert_eq!(parse_time("1970-01-01"), Some(0));
        assert_eq!(parse_time("2017-07-03"), Some(1_499_040_000_000_000));
        assert_eq!(parse_time("1499040000000"), Some(1_499_040_000_000_000));
        assert_eq!(parse_time("1499040000"), Some(1_499_040_000_000_000));
        assert_eq!(
            parse_time("2025-03-25T23:07:00.773674205Z"),
            Some(1_742_944_020_773_674)
        );
        assert_eq!(parse_time("2025-03-25 23:07"), Some(1_742_944_020_000_000));
        assert_eq!(
            parse_time("2025-03-26T01:07:00+02:00"),
            Some(1_742_944_020_000_000)
        );
        assert_eq!(
            parse_time("2025-03-25T22:07:00-01:00"),
            Some(1_742_944_020_000_000)
        );
        assert_eq!(parse_time("2025-13-01"), None);
        assert_eq!(parse_time("yesterday"), None);
        assert_eq!(parse_time(""), None);
    }
}
