use std::fmt;

use serde::{Deserialize, Serialize};

/// The name of a configured cluster (`production-eu`, or a kubeconfig context name such
/// as `arn:aws:eks:eu-west-1:1234:cluster/prod`): 1 to 253 printable characters
/// without whitespace.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ClusterName(String);

/// Why a text is not a [`ClusterName`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("must be 1 to 253 printable characters without whitespace")]
pub struct InvalidClusterName;

impl ClusterName {
    /// # Errors
    /// [`InvalidClusterName`] when empty, too long or holding whitespace.
    pub fn parse(text: &str) -> Result<Self, InvalidClusterName> {
        let ok = !text.is_empty()
            && text.chars().count() <= 253
            && !text.chars().any(|c| c.is_whitespace() || c.is_control());
        if ok {
            Ok(Self(text.to_owned()))
        } else {
            Err(InvalidClusterName)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ClusterName {
    type Error = InvalidClusterName;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<ClusterName> for String {
    fn from(value: ClusterName) -> Self {
        value.0
    }
}

impl fmt::Display for ClusterName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A Kubernetes namespace name: a DNS-1123 label of at most 63 characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Namespace(String);

/// Why a text is not a [`Namespace`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "must be a DNS-1123 label: at most 63 lower-case letters, digits and '-', starting and ending with a letter or digit"
)]
pub struct InvalidNamespace;

impl Namespace {
    /// # Errors
    /// [`InvalidNamespace`] unless `text` is a DNS-1123 label.
    pub fn parse(text: &str) -> Result<Self, InvalidNamespace> {
        crate::release::ServiceName::parse(text)
            .map(|_| Self(text.to_owned()))
            .map_err(|_| InvalidNamespace)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Namespace {
    type Error = InvalidNamespace;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<Namespace> for String {
    fn from(value: Namespace) -> Self {
        value.0
    }
}

impl fmt::Display for Namespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where a deployment goes: a namespace of a cluster.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Target {
    pub cluster: ClusterName,
    pub namespace: Namespace,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.cluster, self.namespace)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_names_may_be_kubeconfig_context_names() {
        assert!(ClusterName::parse("arn:aws:eks:eu-west-1:1:cluster/prod").is_ok());
        assert!(ClusterName::parse("kind-kind").is_ok());
        assert!(ClusterName::parse("").is_err());
        assert!(ClusterName::parse("has space").is_err());
    }

    #[test]
    fn namespaces_are_dns_labels() {
        assert!(Namespace::parse("shop-staging").is_ok());
        for bad in ["", "Shop", "a_b", "-a", &"a".repeat(64)] {
            assert_eq!(Namespace::parse(bad), Err(InvalidNamespace), "{bad}");
        }
    }
}
