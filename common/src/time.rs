//! RFC 3339 timestamps from milliseconds since the Unix epoch, without a calendar library, and
//! [`now_ms`], the one wall-clock read both binaries share.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch by the system clock; 0 for a clock set before 1970.
pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// Formats `ms` (since the Unix epoch, UTC) as `2026-11-22T07:40:00.123Z`.
pub fn rfc3339(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// Parses an RFC 3339 timestamp (`Z` or `±hh:mm` offset, optional fraction of any length,
/// truncated to the millisecond) into milliseconds since the Unix epoch. tracing-subscriber's
/// log lines carry microseconds.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let n = |r: std::ops::Range<usize>| digits(s, r);
    let (y, mo, d, h, mi, se) = (n(0..4)?, n(5..7)?, n(8..10)?, n(11..13)?, n(14..16)?, n(17..19)?);
    if !(1..=12).contains(&mo) || d < 1 || d > days_in_month(y, mo) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    let mut rest = &s[19..];
    let mut millis = 0;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let padded: String = frac[..digits].chars().chain("000".chars()).take(3).collect();
        millis = padded.parse::<i64>().ok()?;
        rest = &frac[digits..];
    }
    let offset_min = match rest {
        "Z" | "z" => 0,
        // `get`, not indexing: the bytes may be any UTF-8, and a slice inside a character panics.
        _ if rest.len() == 6 && (rest.starts_with('+') || rest.starts_with('-')) && rest.get(3..4) == Some(":") => {
            let sign = if rest.starts_with('-') { -1 } else { 1 };
            sign * (digits(rest, 1..3)? * 60 + digits(rest, 4..6)?)
        }
        _ => return None,
    };
    let days = days_from_civil(y, mo, d);
    Some(((days * 86_400 + h * 3600 + mi * 60 + se) - offset_min * 60) * 1000 + millis)
}

/// The number written in `s[r]`, which must be ASCII digits only (no sign, no space).
fn digits(s: &str, r: std::ops::Range<usize>) -> Option<i64> {
    let field = s.get(r)?;
    if field.bytes().all(|b| b.is_ascii_digit()) {
        field.parse().ok()
    } else {
        None
    }
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if y % 4 == 0 && (y % 100 != 0 || y % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

// Howard Hinnant's algorithms for the proleptic Gregorian calendar.
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_offset_of_any_utf_8_is_refused_not_a_panic() {
        for bad in [
            "2026-11-22T07:40:00+\u{e9}\u{e9}0",
            "2026-11-22T07:40:00+0\u{e9}:0",
            "2026-11-22T07:40:00\u{20ac}\u{20ac}",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(rfc3339(1_795_332_000_000), "2026-11-22T07:20:00.000Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59.999Z");
    }

    #[test]
    fn fractions_longer_than_milliseconds_are_truncated() {
        // As tracing-subscriber writes its log lines' times.
        assert_eq!(parse_rfc3339("2026-11-22T07:20:00.123456Z"), Some(1_795_332_000_123));
        assert_eq!(parse_rfc3339("2026-11-22T07:20:00.999999999Z"), Some(1_795_332_000_999));
        assert_eq!(parse_rfc3339("2026-11-22T09:20:00.000999+02:00"), Some(1_795_332_000_000));
    }

    #[test]
    fn parse_round_trips_and_offsets() {
        for ms in [0, 951_782_400_123, 1_795_332_000_000, 4_102_444_800_000] {
            assert_eq!(parse_rfc3339(&rfc3339(ms)), Some(ms));
        }
        assert_eq!(parse_rfc3339("2026-11-22T09:20:00+02:00"), Some(1_795_332_000_000));
        assert_eq!(parse_rfc3339("2026-11-22T07:20:00.5Z"), Some(1_795_332_000_500));
        assert_eq!(parse_rfc3339("2026-13-22T07:20:00Z"), None);
        assert_eq!(parse_rfc3339("2026-11-22T07:20:00.Z"), None);
        assert_eq!(parse_rfc3339("yesterday"), None);
    }

    #[test]
    fn dates_that_do_not_exist_and_signs_in_fields_are_refused() {
        assert_eq!(parse_rfc3339("2026-02-29T00:00:00Z"), None);
        assert_eq!(parse_rfc3339("2026-04-31T00:00:00Z"), None);
        assert_eq!(parse_rfc3339("2028-02-29T00:00:00Z"), Some(1_835_395_200_000));
        assert_eq!(parse_rfc3339("2100-02-29T00:00:00Z"), None);
        assert_eq!(parse_rfc3339("2026-+1-22T07:20:00Z"), None);
        assert_eq!(parse_rfc3339("2026-11-22T07:20:00++1:00"), None);
    }
}
