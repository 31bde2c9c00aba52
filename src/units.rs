//! Human sizes: parsing `512KiB`, `4MiB`, `16M`, `1.5G` from the command line, printing byte
//! counts and rates for people.

use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum SizeError {
    #[error("empty size")]
    Empty,
    #[error(
        "invalid size '{0}': expected a number with an optional unit such as 512KiB, 4MiB, 16M or 1G"
    )]
    Invalid(String),
    #[error("size '{0}' is too large")]
    Overflow(String),
}

/// Parses a duration: a number with `ms`, `s` (the default), `m` or `h`, e.g. `500ms`, `2.5s`,
/// `1m`, `1h`.
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let scale = match unit.trim() {
        "ms" => 0.001,
        "" | "s" => 1.0,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        "d" => 86_400.0,
        _ => {
            return Err(format!(
                "'{text}' is not a duration (use e.g. 500ms, 5s, 1m, 1h, 7d)"
            ));
        }
    };
    match num.parse::<f64>() {
        Ok(n) if n > 0.0 && (n * scale).is_finite() && n * scale <= MAX_DURATION_SECS => {
            Ok(std::time::Duration::from_secs_f64(n * scale))
        }
        _ => Err(format!(
            "'{text}' is not a duration between 1ms and a year (use e.g. 500ms, 5s, 1m, 1h, 7d)"
        )),
    }
}

/// The longest duration taken: a year.
const MAX_DURATION_SECS: f64 = 366.0 * 86_400.0;

/// An age, as `parse_duration`, or `0` (no minimum).
pub fn parse_age(text: &str) -> Result<std::time::Duration, String> {
    if text
        .trim()
        .trim_end_matches(|c: char| c.is_ascii_alphabetic())
        == "0"
    {
        return Ok(std::time::Duration::ZERO);
    }
    parse_duration(text)
}

/// Parses a byte count. `K`, `M`, `G`, `T` and `KiB`, `MiB`, `GiB`, `TiB` are powers of 1024;
/// `KB`, `MB`, `GB`, `TB` are powers of 1000; a bare number (or `B`) is bytes. Case does not
/// matter and a fractional number is allowed when the result is a whole count of bytes after
/// rounding down (`1.5MiB`).
pub fn parse_size(text: &str) -> Result<u64, SizeError> {
    let t = text.trim();
    if t.is_empty() {
        return Err(SizeError::Empty);
    }
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let unit = unit.trim();
    let multiplier: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "t" | "tib" => 1 << 40,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        _ => return Err(SizeError::Invalid(text.to_string())),
    };
    if num.is_empty() || num.matches('.').count() > 1 || num.starts_with('.') || num.ends_with('.')
    {
        return Err(SizeError::Invalid(text.to_string()));
    }
    if let Some((whole, frac)) = num.split_once('.') {
        let whole: u64 = whole
            .parse()
            .map_err(|_| SizeError::Overflow(text.to_string()))?;
        let frac_digits = frac.len().min(9) as u32;
        let frac: u64 = frac[..frac_digits as usize]
            .parse()
            .map_err(|_| SizeError::Invalid(text.to_string()))?;
        let scale = 10u64.pow(frac_digits);
        let whole_bytes = whole
            .checked_mul(multiplier)
            .ok_or_else(|| SizeError::Overflow(text.to_string()))?;
        let frac_bytes = (u128::from(frac) * u128::from(multiplier) / u128::from(scale)) as u64;
        whole_bytes
            .checked_add(frac_bytes)
            .ok_or_else(|| SizeError::Overflow(text.to_string()))
    } else {
        let n: u64 = num
            .parse()
            .map_err(|_| SizeError::Overflow(text.to_string()))?;
        n.checked_mul(multiplier)
            .ok_or_else(|| SizeError::Overflow(text.to_string()))
    }
}

/// Formats a byte count with a binary unit, e.g. `1.50 GiB`.
pub fn format_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.2} {}", UNITS[unit])
    }
}

/// `n` and a noun, singular for one: `1 file`, `3 files`, `2 copies`.
pub fn count(n: u64, singular: &str) -> String {
    if n == 1 {
        format!("1 {singular}")
    } else if let Some(stem) = singular.strip_suffix("py") {
        format!("{n} {stem}pies")
    } else if singular.ends_with("ss") {
        format!("{n} {singular}es")
    } else {
        format!("{n} {singular}s")
    }
}

/// Formats a duration as the flags take it: `10m`, `90s`, `1.5s`, `2h`, `3d`.
pub fn format_duration(d: std::time::Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        return "0".into();
    }
    for (unit, len) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1000),
    ] {
        if ms >= len && ms.is_multiple_of(len) {
            return format!("{}{unit}", ms / len);
        }
    }
    if ms >= 1000 {
        format!("{:.1}s", d.as_secs_f64())
    } else {
        format!("{ms}ms")
    }
}

/// Formats a rate in bytes per second as MB/s (decimal, as disks and networks are quoted).
pub fn format_rate(bytes: u64, seconds: f64) -> String {
    if seconds <= 0.0 {
        return "- MB/s".to_string();
    }
    format!("{:.1} MB/s", bytes as f64 / seconds / 1e6)
}

/// `logical / stored`, or 1.0 when nothing is stored.
pub fn ratio(logical: u64, stored: u64) -> f64 {
    if stored == 0 {
        1.0
    } else {
        logical as f64 / stored as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_singular_for_one() {
        assert_eq!(count(1, "file"), "1 file");
        assert_eq!(count(0, "file"), "0 files");
        assert_eq!(count(2, "chunk file"), "2 chunk files");
        assert_eq!(count(2, "copy"), "2 copies");
        assert_eq!(count(0, "miss"), "0 misses");
    }

    #[test]
    fn durations_print_as_the_flags_take_them() {
        let f = |ms| format_duration(std::time::Duration::from_millis(ms));
        assert_eq!(f(600_000), "10m");
        assert_eq!(f(90_000), "90s");
        assert_eq!(f(1_500), "1.5s");
        assert_eq!(f(7_200_000), "2h");
        assert_eq!(f(3 * 86_400_000), "3d");
        assert_eq!(f(250), "250ms");
        assert_eq!(f(0), "0");
    }

    #[test]
    fn durations_take_days_and_ages_take_zero() {
        use std::time::Duration;
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert!(parse_duration("0").is_err(), "a timeout of 0 is no timeout");
        assert!(parse_duration("400d").is_err());
        assert!(parse_duration("5x").is_err());
        assert_eq!(parse_age("0"), Ok(Duration::ZERO));
        assert_eq!(parse_age("0s"), Ok(Duration::ZERO));
        assert_eq!(parse_age("1d"), Ok(Duration::from_secs(86_400)));
    }

    #[test]
    fn parses_units() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("512KiB"), Ok(512 * 1024));
        assert_eq!(parse_size("4MiB"), Ok(4 << 20));
        assert_eq!(parse_size("16M"), Ok(16 << 20));
        assert_eq!(parse_size("16m"), Ok(16 << 20));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("2 GiB"), Ok(2 << 30));
        assert_eq!(parse_size("1.5MiB"), Ok(3 << 19));
        assert_eq!(parse_size("10KB"), Ok(10_000));
        assert_eq!(parse_size("3MB"), Ok(3_000_000));
        assert_eq!(parse_size("7B"), Ok(7));
        assert_eq!(parse_size("0"), Ok(0));
    }

    #[test]
    fn rejects_garbage() {
        assert_eq!(parse_size(""), Err(SizeError::Empty));
        for bad in ["abc", "MiB", "4XB", "-1", "1..5M", ".5M", "5.M", "4 M B"] {
            assert!(parse_size(bad).is_err(), "{bad} should be rejected");
        }
        assert!(matches!(
            parse_size("99999999999999999999T"),
            Err(SizeError::Overflow(_))
        ));
        assert!(matches!(
            parse_size("20000000T"),
            Err(SizeError::Overflow(_))
        ));
    }

    #[test]
    fn formats() {
        assert_eq!(format_bytes(0), "0 B");
        assert_eq!(format_bytes(1023), "1023 B");
        assert_eq!(format_bytes(1536), "1.50 KiB");
        assert_eq!(format_bytes(3 << 30), "3.00 GiB");
        assert_eq!(format_rate(2_000_000, 2.0), "1.0 MB/s");
        assert!((ratio(300, 100) - 3.0).abs() < 1e-9);
        assert!((ratio(5, 0) - 1.0).abs() < 1e-9);
    }
}
