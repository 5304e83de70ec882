use std::fmt;

use serde::{Deserialize, Serialize};

/// A service's name: a DNS-1123 label (lower-case letters, digits and `-`, starting and
/// ending with a letter or digit, at most 63 characters), so it can name Kubernetes
/// objects and label values as it is.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ServiceName(String);

/// Why a text is not a [`ServiceName`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidServiceName {
    #[error("must not be empty")]
    Empty,
    #[error("must be at most 63 characters, not {0}")]
    TooLong(usize),
    #[error(
        "must be a DNS-1123 label: lower-case letters, digits and '-', starting and ending with a letter or digit"
    )]
    NotALabel,
}

impl ServiceName {
    pub const MAX_LEN: usize = 63;

    /// # Errors
    /// [`InvalidServiceName`] naming the broken rule.
    pub fn parse(text: &str) -> Result<Self, InvalidServiceName> {
        if text.is_empty() {
            return Err(InvalidServiceName::Empty);
        }
        if text.len() > Self::MAX_LEN {
            return Err(InvalidServiceName::TooLong(text.chars().count()));
        }
        let allowed = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-';
        let bytes = text.as_bytes();
        let ends_ok = |c: Option<&u8>| c.is_some_and(|c| *c != b'-');
        if !bytes.iter().all(|c| allowed(*c)) || !ends_ok(bytes.first()) || !ends_ok(bytes.last()) {
            return Err(InvalidServiceName::NotALabel);
        }
        Ok(Self(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ServiceName {
    type Error = InvalidServiceName;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<ServiceName> for String {
    fn from(value: ServiceName) -> Self {
        value.0
    }
}

impl fmt::Display for ServiceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_labels_are_service_names() {
        for name in ["a", "hello-world", "svc1", "1svc", &"a".repeat(63)] {
            assert_eq!(
                ServiceName::parse(name).map(|n| n.to_string()),
                Ok(name.to_owned())
            );
        }
    }

    #[test]
    fn anything_else_is_refused_with_the_rule_it_broke() {
        assert_eq!(ServiceName::parse(""), Err(InvalidServiceName::Empty));
        assert_eq!(
            ServiceName::parse(&"a".repeat(64)),
            Err(InvalidServiceName::TooLong(64))
        );
        for name in ["-a", "a-", "Hello", "a_b", "a.b", "a b", "é"] {
            assert_eq!(
                ServiceName::parse(name),
                Err(InvalidServiceName::NotALabel),
                "{name}"
            );
        }
    }
}
