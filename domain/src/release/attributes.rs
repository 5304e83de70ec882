use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::validation::{FieldError, ValidationErrors, storable_text};

/// The name of a release attribute: `[A-Za-z_][A-Za-z0-9_.-]*`, at most 128 characters,
/// and none of the variable names Kubernaut itself sets.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(try_from = "String")]
pub struct AttributeName(String);

/// Why a text is not an [`AttributeName`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidAttributeName {
    #[error("must match [A-Za-z_][A-Za-z0-9_.-]* and be at most 128 characters")]
    Pattern,
    #[error("is reserved: Kubernaut sets '{0}' itself")]
    Reserved(String),
}

impl AttributeName {
    pub const MAX_LEN: usize = 128;
    /// Template variables that Kubernaut supplies and attributes may not shadow.
    pub const RESERVED: [&'static str; 6] = [
        "service",
        "version",
        "image",
        "cluster",
        "namespace",
        "attributes",
    ];

    /// # Errors
    /// [`InvalidAttributeName`] naming the broken rule.
    pub fn parse(text: &str) -> Result<Self, InvalidAttributeName> {
        Self::check(text)?;
        Ok(Self(text.to_owned()))
    }

    fn check(text: &str) -> Result<(), InvalidAttributeName> {
        let mut bytes = text.bytes();
        let first_ok = bytes
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == b'_');
        let rest_ok =
            bytes.all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'.' || c == b'-');
        if !first_ok || !rest_ok || text.len() > Self::MAX_LEN {
            return Err(InvalidAttributeName::Pattern);
        }
        if Self::RESERVED.contains(&text) {
            return Err(InvalidAttributeName::Reserved(text.to_owned()));
        }
        Ok(())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for AttributeName {
    type Error = InvalidAttributeName;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        // Keeps the string read (attributes are read back with every listed release).
        Self::check(&value)?;
        Ok(Self(value))
    }
}

/// Written as the plain string, without the copy `#[serde(into = "String")]` would make
/// for every attribute of every release a listing serialises.
impl Serialize for AttributeName {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl From<AttributeName> for String {
    fn from(value: AttributeName) -> Self {
        value.0
    }
}

impl fmt::Display for AttributeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A release's free-form attributes (`replicas`, `team`, ...): validated names, string
/// values of at most 64 KiB, at most 256 of them. They become template variables.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Attributes(BTreeMap<AttributeName, String>);

impl Attributes {
    pub const MAX_COUNT: usize = 256;
    pub const MAX_VALUE_BYTES: usize = 64 * 1024;

    /// Validates every name and value, reporting each bad one under `field.name`.
    ///
    /// # Errors
    /// [`ValidationErrors`] listing every bad entry.
    pub fn parse(field: &str, raw: &BTreeMap<String, String>) -> Result<Self, ValidationErrors> {
        let mut errors = ValidationErrors::new();
        if raw.len() > Self::MAX_COUNT {
            errors.push(FieldError::new(
                field,
                format!(
                    "must hold at most {} attributes, not {}",
                    Self::MAX_COUNT,
                    raw.len()
                ),
            ));
        }
        let mut attributes = BTreeMap::new();
        for (name, value) in raw {
            let path = format!("{field}.{name}");
            let name = errors.check(&path, AttributeName::parse(name));
            let value_ok = if value.len() > Self::MAX_VALUE_BYTES {
                errors.push(FieldError::new(
                    &path,
                    format!("must be at most {} bytes", Self::MAX_VALUE_BYTES),
                ));
                false
            } else {
                errors.check(&path, storable_text(value)).is_some()
            };
            if let (true, Some(name)) = (value_ok, name) {
                attributes.insert(name, value.clone());
            }
        }
        errors.into_result(|| Self(attributes))
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(key, _)| key.as_str() == name)
            .map(|(_, value)| value.as_str())
    }

    pub fn iter(&self) -> impl Iterator<Item = (&AttributeName, &String)> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attribute_names_follow_the_identifier_pattern() {
        for name in ["replicas", "_x", "team.name", "a-b", "A9"] {
            assert!(AttributeName::parse(name).is_ok(), "{name}");
        }
        for name in ["", "9a", "-a", ".a", "a b", "a/b", "ä"] {
            assert_eq!(
                AttributeName::parse(name),
                Err(InvalidAttributeName::Pattern),
                "{name}"
            );
        }
        assert_eq!(
            AttributeName::parse("image"),
            Err(InvalidAttributeName::Reserved("image".into()))
        );
    }

    #[test]
    fn every_bad_attribute_is_reported_under_its_own_field() {
        let raw = BTreeMap::from([
            ("ok".to_owned(), "1".to_owned()),
            ("9bad".to_owned(), "1".to_owned()),
            (
                "big".to_owned(),
                "x".repeat(Attributes::MAX_VALUE_BYTES + 1),
            ),
        ]);
        let errors = Attributes::parse("attributes", &raw).expect_err("two bad entries");
        let fields: Vec<_> = errors.fields().iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["attributes.9bad", "attributes.big"]);
    }

    #[test]
    fn a_value_holding_nul_is_refused_under_its_name() {
        let raw = BTreeMap::from([
            ("ok".to_owned(), "1".to_owned()),
            ("team".to_owned(), "pay\0ments".to_owned()),
        ]);
        let errors = Attributes::parse("attributes", &raw).expect_err("a NUL");
        assert_eq!(
            errors.fields(),
            [FieldError::new(
                "attributes.team",
                "must not contain the character U+0000 (NUL)"
            )]
        );
    }
}
