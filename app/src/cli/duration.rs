//! Durations as people write them on a command line: `90s`, `10m`, `1h30m`, `45`.

use std::time::Duration;

/// Parses a sum of `<number><unit>` parts with the units `h`, `m` and `s`; a bare
/// number is seconds.
///
/// # Errors
/// When the text is empty, has an unknown unit, or adds up to zero.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let invalid = || format!("{text:?} is not a duration such as 90s, 10m or 1h30m");
    let text = text.trim();
    if text.is_empty() {
        return Err(invalid());
    }
    if let Ok(seconds) = text.parse::<u64>() {
        return positive(seconds).ok_or_else(invalid);
    }
    let mut total: u64 = 0;
    let mut number = String::new();
    for character in text.chars() {
        if character.is_ascii_digit() {
            number.push(character);
            continue;
        }
        let unit = match character {
            'h' => 3600,
            'm' => 60,
            's' => 1,
            _ => return Err(invalid()),
        };
        let value: u64 = number.parse().map_err(|_| invalid())?;
        total = value
            .checked_mul(unit)
            .and_then(|part| total.checked_add(part))
            .ok_or_else(invalid)?;
        number.clear();
    }
    if !number.is_empty() {
        return Err(invalid());
    }
    positive(total).ok_or_else(invalid)
}

fn positive(seconds: u64) -> Option<Duration> {
    (seconds > 0).then(|| Duration::from_secs(seconds))
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
            "1.5h",
            "99999999999999999999h",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
