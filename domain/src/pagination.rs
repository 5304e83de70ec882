//! Keyset pagination: newest first, resumable from an opaque cursor.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

/// The position after which the next page starts: the `(created_at, id)` of the last
/// item of the previous page. Opaque to clients, who only pass it back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub created_at: DateTime<Utc>,
    pub id: Uuid,
}

/// A cursor string that is not one of ours.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("is not a cursor returned by this server")]
pub struct InvalidCursor;

impl Cursor {
    /// The earliest time a cursor may carry: 0001-01-01T00:00:00Z.
    pub const EARLIEST_MICROS: i64 = -62_135_596_800_000_000;
    /// The latest time a cursor may carry: 9999-12-31T23:59:59.999999Z.
    ///
    /// Every time this server writes lies far inside these years, which lie inside
    /// what PostgreSQL's `timestamptz` can hold (4713 BC to 294276 AD); a cursor
    /// outside them was not handed out here, and must not reach the database.
    pub const LATEST_MICROS: i64 = 253_402_300_799_999_999;

    pub fn encode(&self) -> String {
        let raw = format!(
            "{}.{}",
            self.created_at.timestamp_micros(),
            self.id.simple()
        );
        URL_SAFE_NO_PAD.encode(raw)
    }

    /// Only the exact text [`Cursor::encode`] writes is accepted: no other spelling of
    /// the same number or id, and no time outside [`Cursor::EARLIEST_MICROS`] ..=
    /// [`Cursor::LATEST_MICROS`], so a forged cursor cannot make an odd query.
    ///
    /// # Errors
    /// [`InvalidCursor`] when `text` was not made by [`Cursor::encode`].
    pub fn decode(text: &str) -> Result<Self, InvalidCursor> {
        let bytes = URL_SAFE_NO_PAD.decode(text).map_err(|_| InvalidCursor)?;
        let raw = String::from_utf8(bytes).map_err(|_| InvalidCursor)?;
        let (micros, id) = raw.split_once('.').ok_or(InvalidCursor)?;
        let micros: i64 = micros.parse().map_err(|_| InvalidCursor)?;
        if !(Self::EARLIEST_MICROS..=Self::LATEST_MICROS).contains(&micros) {
            return Err(InvalidCursor);
        }
        let created_at = DateTime::from_timestamp_micros(micros).ok_or(InvalidCursor)?;
        let id = Uuid::try_parse(id).map_err(|_| InvalidCursor)?;
        let cursor = Self { created_at, id };
        if cursor.encode() == text {
            Ok(cursor)
        } else {
            Err(InvalidCursor)
        }
    }
}

/// How many items a page holds: 1 to [`PageLimit::MAX`], [`PageLimit::DEFAULT`] unless asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageLimit(u16);

/// A page limit outside 1..=500.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("must be between 1 and {max}", max = PageLimit::MAX)]
pub struct InvalidPageLimit;

impl PageLimit {
    pub const DEFAULT: u16 = 50;
    pub const MAX: u16 = 500;

    /// # Errors
    /// [`InvalidPageLimit`] outside 1..=500.
    pub fn new(limit: i64) -> Result<Self, InvalidPageLimit> {
        match u16::try_from(limit) {
            Ok(limit) if (1..=Self::MAX).contains(&limit) => Ok(Self(limit)),
            _ => Err(InvalidPageLimit),
        }
    }

    pub fn get(self) -> u16 {
        self.0
    }
}

impl Default for PageLimit {
    fn default() -> Self {
        Self(Self::DEFAULT)
    }
}

impl fmt::Display for PageLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// One page of a newest-first listing.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Where the next page starts; `None` on the last page.
    #[serde(serialize_with = "serialize_cursor")]
    pub next_cursor: Option<Cursor>,
}

fn serialize_cursor<S: serde::Serializer>(
    cursor: &Option<Cursor>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match cursor {
        Some(cursor) => serializer.serialize_some(&cursor.encode()),
        None => serializer.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_survives_its_round_trip() {
        let cursor = Cursor {
            created_at: DateTime::from_timestamp_micros(1_700_000_000_123_456).expect("time"),
            id: Uuid::now_v7(),
        };
        assert_eq!(Cursor::decode(&cursor.encode()), Ok(cursor));
    }

    #[test]
    fn a_cursor_that_is_not_ours_is_refused() {
        for text in ["", "abc", "!!!", &URL_SAFE_NO_PAD.encode("12.not-a-uuid")] {
            assert_eq!(Cursor::decode(text), Err(InvalidCursor), "{text}");
        }
    }

    #[test]
    fn a_cursor_outside_years_1_to_9999_is_refused() {
        let id = Uuid::now_v7().simple();
        let forged = |micros: i64| URL_SAFE_NO_PAD.encode(format!("{micros}.{id}"));
        for micros in [
            Cursor::EARLIEST_MICROS - 1,
            Cursor::LATEST_MICROS + 1,
            // About 198,000 AD and 283,000 BC: chrono holds both; PostgreSQL not the second.
            6_249_223_104_000_000_000,
            -9_000_000_000_000_000_000,
            i64::MAX,
            i64::MIN,
        ] {
            assert_eq!(
                Cursor::decode(&forged(micros)),
                Err(InvalidCursor),
                "{micros}"
            );
        }
        for micros in [Cursor::EARLIEST_MICROS, 0, Cursor::LATEST_MICROS] {
            let cursor = Cursor::decode(&forged(micros)).expect("in range");
            assert_eq!(cursor.created_at.timestamp_micros(), micros);
        }
        let earliest = DateTime::from_timestamp_micros(Cursor::EARLIEST_MICROS).expect("a time");
        let latest = DateTime::from_timestamp_micros(Cursor::LATEST_MICROS).expect("a time");
        assert_eq!(earliest.to_rfc3339(), "0001-01-01T00:00:00+00:00");
        assert_eq!(latest.to_rfc3339(), "9999-12-31T23:59:59.999999+00:00");
    }

    #[test]
    fn only_the_spelling_this_server_writes_is_a_cursor() {
        let id = Uuid::now_v7();
        for raw in [
            format!("+17.{}", id.simple()),
            format!("017.{}", id.simple()),
            format!("17.{}", id.hyphenated()),
            format!("17.{}", id.simple().to_string().to_uppercase()),
            format!("17.{{{}}}", id.hyphenated()),
        ] {
            assert_eq!(
                Cursor::decode(&URL_SAFE_NO_PAD.encode(&raw)),
                Err(InvalidCursor),
                "{raw}"
            );
        }
    }

    #[test]
    fn page_limits_outside_one_to_five_hundred_are_refused() {
        assert!(PageLimit::new(0).is_err());
        assert!(PageLimit::new(501).is_err());
        assert!(PageLimit::new(-1).is_err());
        assert_eq!(PageLimit::new(500).map(PageLimit::get), Ok(500));
        assert_eq!(PageLimit::default().get(), 50);
    }
}
