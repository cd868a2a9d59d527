//! How figures read on screen: rates, percentages, sizes, clock times.

/// A rate or count in at most 6 characters: `0.5`, `42`, `1.2k`, `3.4M`.
pub fn rate(v: f64) -> String {
    let v = if v.is_finite() { v.max(0.0) } else { 0.0 };
    if v == 0.0 {
        "0".into()
    } else if v < 10.0 {
        format!("{v:.1}")
    } else if v < 1000.0 {
        format!("{v:.0}")
    } else if v < 1e6 {
        format!("{:.1}k", v / 1e3)
    } else if v < 1e9 {
        format!("{:.1}M", v / 1e6)
    } else {
        format!("{:.1}G", v / 1e9)
    }
}

/// A percentage with one decimal.
pub fn percent(v: f64) -> String {
    // `+ 0.0` turns -0.0 into 0.0.
    let v = if v.is_finite() { v.max(0.0) + 0.0 } else { 0.0 };
    format!("{v:.1}")
}

/// KiB as a short size: `512K`, `7.5M`, `1.2G`.
pub fn kib(v: u64) -> String {
    let v = v as f64;
    if v < 1024.0 {
        format!("{v:.0}K")
    } else if v < 1024.0 * 1024.0 {
        format!("{:.1}M", v / 1024.0)
    } else {
        format!("{:.1}G", v / (1024.0 * 1024.0))
    }
}

/// A round trip in µs, or ms past 10 ms.
pub fn rtt(us: f64) -> String {
    if us >= 10_000.0 {
        format!("{:.1} ms", us / 1000.0)
    } else {
        format!("{us:.0} µs")
    }
}

/// Days since 1970-01-01 as (year, month, day), proleptic Gregorian.
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// `HH:MM:SS` (UTC) of a Unix time in ms.
pub fn clock(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    format!(
        "{:02}:{:02}:{:02}",
        (secs / 3600) % 24,
        (secs / 60) % 60,
        secs % 60
    )
}

/// `YYYY-MM-DD HH:MM:SS UTC` of a Unix time in ms.
pub fn date_time(unix_ms: u64) -> String {
    let (y, m, d) = civil((unix_ms / 86_400_000) as i64);
    format!("{y:04}-{m:02}-{d:02} {} UTC", clock(unix_ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_stay_short() {
        assert_eq!(rate(0.0), "0");
        assert_eq!(rate(0.26), "0.3");
        assert_eq!(rate(42.4), "42");
        assert_eq!(rate(1234.0), "1.2k");
        assert_eq!(rate(3.4e6), "3.4M");
        assert_eq!(rate(5e9), "5.0G");
        assert_eq!(rate(f64::NAN), "0");
        assert_eq!(rate(-1.0), "0");
        assert_eq!(percent(12.345), "12.3");
        assert_eq!(percent(f64::INFINITY), "0.0");
        assert_eq!(percent(-0.0), "0.0");
    }

    #[test]
    fn sizes_and_round_trips() {
        assert_eq!(kib(512), "512K");
        assert_eq!(kib(7680), "7.5M");
        assert_eq!(kib(6 << 20), "6.0G");
        assert_eq!(rtt(120.4), "120 µs");
        assert_eq!(rtt(25_000.0), "25.0 ms");
    }

    #[test]
    fn clock_and_date_are_utc() {
        assert_eq!(clock(0), "00:00:00");
        assert_eq!(date_time(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(date_time(1_700_000_000_000), "2023-11-14 22:13:20 UTC");
        assert_eq!(date_time(951_782_400_000), "2000-02-29 00:00:00 UTC");
    }
}
