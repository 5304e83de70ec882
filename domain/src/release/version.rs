use std::fmt;

use serde::{Deserialize, Serialize};

/// A release's version as the team names it (`1.4.2`, `2026.11.24-3`, a commit hash):
/// 1 to 128 printable characters, no whitespace.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Version(String);

/// Why a text is not a [`Version`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidVersion {
    #[error("must not be empty")]
    Empty,
    #[error("must be at most 128 characters, not {0}")]
    TooLong(usize),
    #[error("must hold printable characters only, without whitespace")]
    NotPrintable,
}

impl Version {
    pub const MAX_LEN: usize = 128;

    /// # Errors
    /// [`InvalidVersion`] naming the broken rule.
    pub fn parse(text: &str) -> Result<Self, InvalidVersion> {
        let length = text.chars().count();
        if length == 0 {
            return Err(InvalidVersion::Empty);
        }
        if length > Self::MAX_LEN {
            return Err(InvalidVersion::TooLong(length));
        }
        if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(InvalidVersion::NotPrintable);
        }
        Ok(Self(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Version {
    type Error = InvalidVersion;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<Version> for String {
    fn from(value: Version) -> Self {
        value.0
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printable_texts_without_whitespace_are_versions() {
        for text in [
            "1",
            "1.4.2",
            "v2026.11.24-3+build.7",
            "a1b2c3d",
            &"9".repeat(128),
        ] {
            assert!(Version::parse(text).is_ok(), "{text}");
        }
    }

    #[test]
    fn empty_long_or_blank_versions_are_refused() {
        assert_eq!(Version::parse(""), Err(InvalidVersion::Empty));
        assert_eq!(
            Version::parse(&"1".repeat(129)),
            Err(InvalidVersion::TooLong(129))
        );
        for text in ["1 2", "1\t", "\n1", "1\u{7}"] {
            assert_eq!(
                Version::parse(text),
                Err(InvalidVersion::NotPrintable),
                "{text:?}"
            );
        }
    }
}
