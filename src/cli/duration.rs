//! The command line's one duration grammar, for `serve` (`--max-hold-ttl`,
//! `--sweep-interval`, `--idempotency-retention`), `token --ttl`, `bench --duration` and the
//! client's `reserve --ttl`: humantime's (`90s`, `15m`, `1h30m`, `1.5h`, `7d`, `2w`, `1h 5m`).
//! A bare number is refused: `serve` used to read one as hours while the client refused it,
//! so a unit is always written.

use std::time::Duration;

/// At most a century: every duration here becomes a time offset, which must not overflow.
const MAX: Duration = Duration::from_secs(100 * 366 * 86_400);

/// Parses a duration with units, at most 100 years.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let trimmed = text.trim();
    if !trimmed.is_empty() && trimmed.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "`{text}` has no unit: write s, m, h, d or w after the number (e.g. 90s, 15m, 1h30m, 7d)"
        ));
    }
    let duration = humantime::parse_duration(trimmed).map_err(|err| match err {
        humantime::DurationError::NumberOverflow => format!("`{text}` is longer than 100 years"),
        err => format!("`{text}` is not a duration like 90s, 15m, 1h30m or 7d: {err}"),
    })?;
    if duration > MAX {
        return Err(format!("`{text}` is longer than 100 years"));
    }
    Ok(duration)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_have_units() {
        let seconds = |text| parse_duration(text).map(|d| d.as_secs());
        assert_eq!(seconds("90s"), Ok(90));
        assert_eq!(seconds("15m"), Ok(900));
        assert_eq!(seconds("1h30m"), Ok(5_400));
        assert_eq!(seconds("1d"), Ok(86_400));
        // humantime's grammar: fractions, weeks and spaces between the parts.
        assert_eq!(seconds("1.5h"), Ok(5_400));
        assert_eq!(seconds("3w"), Ok(3 * 7 * 86_400));
        assert_eq!(seconds("1h 5m"), Ok(3_900));
        for bad in ["", "15", " 24 ", "m", "-5m", "3x", "1h 5", "1h-5m"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert!(parse_duration("24").unwrap_err().contains("no unit"));
    }

    #[test]
    fn durations_are_bounded_not_wrapped() {
        assert_eq!(
            parse_duration("36600d"),
            Ok(Duration::from_secs(36_600 * 86_400))
        );
        assert!(parse_duration("36601d").unwrap_err().contains("100 years"));
        // Would overflow a u64 of seconds.
        assert!(parse_duration("300000000000000d").is_err());
        assert!(parse_duration("18446744073709551615h").is_err());
    }
}
