//! Durations as people write them on a command line: `90s`, `10m`, `1h30m`, `45`.

use std::time::Duration;

/// Parses a duration in humantime's notation (`90s`, `10m`, `1h30m`, `1h 30m`); a bare
/// number is seconds. Deploy timeouts are whole seconds, so at least one.
///
/// # Errors
/// When the text is not a duration or is shorter than a second.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let invalid = || format!("{text:?} is not a duration such as 90s, 10m or 1h30m");
    let text = text.trim();
    let duration = match text.parse::<u64>() {
        Ok(seconds) => Duration::from_secs(seconds),
        Err(_) => humantime::parse_duration(text).map_err(|_| invalid())?,
    };
    if duration.as_secs() == 0 {
        return Err(invalid());
    }
    Ok(Duration::from_secs(duration.as_secs()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_minutes_hours_and_their_sums_are_understood() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("2m5s"), Ok(Duration::from_secs(125)));
        assert_eq!(parse_duration("1h 30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("1.5h"), Ok(Duration::from_secs(5400)));
    }

    #[test]
    fn a_bare_number_is_seconds() {
        assert_eq!(parse_duration("45"), Ok(Duration::from_secs(45)));
    }

    #[test]
    fn nonsense_zero_and_dangling_numbers_are_refused() {
        for bad in [
            "",
            "m",
            "10x",
            "1h30",
            "0s",
            "0",
            "-5s",
            "500ms",
            "99999999999999999999h",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
