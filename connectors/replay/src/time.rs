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
/// Fractions of a second are kept to the microsecond (`2025-03-25T23:07:00.773674205Z`), and a
/// `+HH:MM` / `-HH:MM` offset is applied.
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
    let mut micros: i64 = 0;
    let mut offset: i64 = 0;
    let secs = if time_part.is_empty() {
        0
    } else if let Some((h, ampm)) = time_part
        .split_once('-')
        .filter(|(_, x)| x.eq_ignore_ascii_case("AM") || x.eq_ignore_ascii_case("PM"))
    {
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
        let t = time_part.trim_end_matches(['Z', 'z']);
        let (t, zone) = match t.find(['+', '-']) {
            Some(i) => (&t[..i], Some((t.as_bytes()[i], &t[i + 1..]))),
            None => (t, None),
        };
        if let Some((sign, z)) = zone {
            let (zh, zm) = z.split_once(':').unwrap_or((z, "0"));
            let (zh, zm) = (num(zh)?, num(zm)?);
            if zh > 23 || zm > 59 {
                return None;
            }
            let o = zh as i64 * 3600 + zm as i64 * 60;
            offset = if sign == b'-' { -o } else { o };
        }
        let mut parts = t.split(':');
        let h = num(parts.next()?)?;
        let m = parts.next().map(num).unwrap_or(Some(0))?;
        let sec = match parts.next() {
            Some(x) => {
                let (whole, frac) = x.split_once('.').unwrap_or((x, ""));
                if !frac.is_empty() {
                    if !frac.bytes().all(|b| b.is_ascii_digit()) {
                        return None;
                    }
                    let digits: String = frac.chars().chain(std::iter::repeat('0')).take(6).collect();
                    micros = digits.parse().ok()?;
                }
                num(whole)?
            }
            None => 0,
        };
        if h > 23 || m > 59 || sec > 60 {
            return None;
        }
        h as i64 * 3600 + m as i64 * 60 + sec as i64
    };
    Some((days * 86_400 + secs - offset) * 1_000_000 + micros)
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
        assert_eq!(
            parse_timestamp("2025-03-25T23:07:00.773674205Z"),
            Some(1_742_944_020_773_674)
        );
        assert_eq!(
            parse_timestamp("1987-02-26T15:01:01+00:00"),
            parse_timestamp("1987-02-26T10:01:01-05:00")
        );
        assert_eq!(
            parse_timestamp("2024-12-20T19:05:18.175Z"),
            Some(1_734_721_518_175_000)
        );
        assert_eq!(parse_timestamp("2017-07-03"), Some(1_499_040_000_000_000));
        assert_eq!(parse_timestamp("1499040000"), Some(1_499_040_000_000_000));
        assert_eq!(parse_timestamp("2025-03-25 23:07"), Some(1_742_944_020_000_000));
        assert_eq!(
            parse_timestamp("2025-03-26T01:07:00+02:00"),
            Some(1_742_944_020_000_000)
        );
        for bad in [
            "",
            "yesterday",
            "2019-13-01",
            "2019-10-17 13-PM",
            "2019-10-17 25:00",
            "NaN",
            "2019-10-17T09:00:00.5x",
            "2019-10-17T09:00:00+25:00",
        ] {
            assert_eq!(parse_timestamp(bad), None, "{bad}");
        }
    }
}
