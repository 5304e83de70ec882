//! Who asked for a change: recorded on every release and deployment.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The identity behind a request: a person or a robot (a CI job).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Actor(String);

impl Actor {
    /// The actor used when a request carries no identity.
    pub fn anonymous() -> Self {
        Self("anonymous".to_owned())
    }

    /// An actor with the given name; blank names become [`Actor::anonymous`] and
    /// names are cut to 256 characters so a header cannot bloat the audit trail.
    pub fn named(name: &str) -> Self {
        let name = name.trim();
        if name.is_empty() {
            Self::anonymous()
        } else {
            Self(name.chars().take(256).collect())
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
