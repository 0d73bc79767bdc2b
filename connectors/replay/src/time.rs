//! Timestamps as recorded files write them, to epoch microseconds (UTC). No time-zone database:
//! recorded data is UTC or says so.

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

fn num(s: &str) -> Option<u32> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn date(y: &str, m: &str, d: &str) -> Option<i64> {
    let (y, m, d) = (num(y)? as i64, num(m)?, num(d)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    Some(days_from_civil(y, m, d))
}

/// Parses the timestamp forms found in recorded bar files:
/// `2019-10-17`, `2019-10-17 09:00[:00]`, `2019-10-17T09:00:00[Z|+00:00]`, `2019-10-17 09-AM`
/// (Coinbase/CryptoDataDownload), `10/17/2019` (m/d/Y), and epoch seconds or milliseconds.
pub fn parse_timestamp(s: &str) -> Option<Micros> {
    let s = s.trim();
    if s.len() >= 9 && s.len() <= 16 && s.bytes().all(|b| b.is_ascii_digit()) {
        let n: i64 = s.parse().ok()?;
        // Seconds until the year 5138; beyond that it is milliseconds.
        return Some(if n > 100_000_000_000 {
            n * 1000
        } else {
            n * 1_000_000
        });
    }
    let (day_part, time_part) = match s.find([' ', 'T']) {
        Some(i) => (&s[..i], s[i + 1..].trim()),
        None => (s, ""),
    };
    let days = if let Some((y, rest)) = day_part.split_once('-') {
        let (m, d) = rest.split_once('-')?;
        date(y, m, d)?
    } else if let Some((m, rest)) = day_part.split_once('/') {
        let (d, y) = rest.split_once('/')?;
        date(y, m, d)?
    } else {
        return None;
    };
    let secs = if time_part.is_empty() {
        0
    } else if let Some((h, ampm)) = time_part.split_once('-') {
        let h = num(h)?;
        let h = match (ampm.to_ascii_uppercase().as_str(), h) {
            ("AM", 12) => 0,
            ("AM", h) if h < 12 => h,
            ("PM", 12) => 12,
            ("PM", h) if h < 12 => h + 12,
            _ => return None,
        };
        h as i64 * 3600
    } else {
        let t = time_part.trim_end_matches('Z');
        let t = t.split(['+']).next()?;
        let mut parts = t.split(':');
        let h = num(parts.next()?)?;
        let m = parts.next().map(num).unwrap_or(Some(0))?;
        let sec = parts
            .next()
            .map(|x| num(x.split('.').next().unwrap_or(x)))
            .unwrap_or(Some(0))?;
        if h > 23 || m > 59 || sec > 60 {
            return None;
        }
        h as i64 * 3600 + m as i64 * 60 + sec as i64
    };
    Some((days * 86_400 + secs) * 1_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(parse_timestamp("1970-01-01"), Some(0));
        assert_eq!(parse_timestamp("2019-10-17 09-AM"), Some(1_571_302_800_000_000));
        assert_eq!(parse_timestamp("2019-10-17 12-AM"), Some(1_571_270_400_000_000));
        assert_eq!(parse_timestamp("2019-10-17 01-PM"), Some(1_571_317_200_000_000));
        assert_eq!(
            parse_timestamp("2019-10-17 09:00:00"),
            Some(1_571_302_800_000_000)
        );
        assert_eq!(
            parse_timestamp("2019-10-17T09:00:00Z"),
            Some(1_571_302_800_000_000)
        );
        assert_eq!(parse_timestamp("10/17/2019"), Some(1_571_270_400_000_000));
        assert_eq!(parse_timestamp("1571302800"), Some(1_571_302_800_000_000));
        assert_eq!(parse_timestamp("1571302800000"), Some(1_571_302_800_000_000));
        for bad in [
            "",
            "yesterday",
            "2019-13-01",
            "2019-10-17 13-PM",
            "2019-10-17 25:00",
            "NaN",
        ] {
            assert_eq!(parse_timestamp(bad), None, "{bad}");
        }
    }
}
