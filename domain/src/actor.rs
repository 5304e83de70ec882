//! Who asked for a change: recorded on every release and deployment.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::validation::{NulCharacter, storable_text};

/// The identity behind a request: a person or a robot (a CI job).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Actor(String);

impl Actor {
    /// The longest name an actor keeps.
    pub const MAX_CHARS: usize = 256;

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
            Self(name.chars().take(Self::MAX_CHARS).collect())
        }
    }

    /// An actor's name as a caller writes it, to look it up (the audit trail's `actor`
    /// filter): unlike [`Actor::named`] it refuses rather than mends.
    ///
    /// # Errors
    /// [`InvalidActor`] for a blank name, one over 256 characters, or one holding NUL.
    pub fn parse(text: &str) -> Result<Self, InvalidActor> {
        let name = text.trim();
        if name.is_empty() || name.chars().count() > Self::MAX_CHARS {
            return Err(InvalidActor::Length);
        }
        storable_text(name).map_err(InvalidActor::Nul)?;
        Ok(Self(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A name that cannot be an actor's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InvalidActor {
    #[error("must be 1 to 256 characters")]
    Length,
    #[error(transparent)]
    Nul(NulCharacter),
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_actor_filter_is_refused_rather_than_mended() {
        assert_eq!(
            Actor::parse(" ci-bot ").map(|a| a.0),
            Ok("ci-bot".to_owned())
        );
        assert_eq!(Actor::parse("  "), Err(InvalidActor::Length));
        assert_eq!(Actor::parse(&"a".repeat(257)), Err(InvalidActor::Length));
        assert_eq!(
            Actor::parse("ci\0bot"),
            Err(InvalidActor::Nul(NulCharacter))
        );
    }
}
