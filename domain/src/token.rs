//! API tokens: 256 random bits shown once, stored only as their SHA-256 hash.
//!
//! A plain hash (not a password hash) is right here: the secret is 256 random bits, so
//! there is nothing to guess and a fast, exact lookup by hash is safe.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sha2::{Digest as _, Sha256};
use uuid::Uuid;

use crate::access::AccountName;
use crate::actor::Actor;

/// What every token starts with, so secret scanners and people can recognise one.
pub const TOKEN_PREFIX: &str = "knt_";
const SECRET_BYTES: usize = 32;
/// `knt_` and 43 base64url characters.
const TOKEN_LENGTH: usize = 4 + 43;

/// A token's secret. Its `Debug` never shows it, so it cannot reach a log by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenSecret(String);

/// Not a token Kubernaut issued: wrong prefix, length or alphabet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not a Kubernaut token")]
pub struct MalformedToken;

impl TokenSecret {
    /// A new secret from the operating system's random source.
    ///
    /// # Panics
    /// When the operating system has no random source, where no token could be safe.
    pub fn generate() -> Self {
        let mut bytes = [0_u8; SECRET_BYTES];
        getrandom::fill(&mut bytes).expect("the operating system's random source failed");
        Self(format!("{TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes)))
    }

    /// A secret as presented by a client.
    ///
    /// # Errors
    /// [`MalformedToken`] when `text` cannot be a token Kubernaut issued.
    pub fn parse(text: &str) -> Result<Self, MalformedToken> {
        let well_formed = text.len() == TOKEN_LENGTH
            && text.starts_with(TOKEN_PREFIX)
            && text[TOKEN_PREFIX.len()..]
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if well_formed {
            Ok(Self(text.to_owned()))
        } else {
            Err(MalformedToken)
        }
    }

    /// The secret itself: to show once, or to send.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn hash(&self) -> TokenHash {
        TokenHash(Sha256::digest(self.0.as_bytes()).into())
    }

    /// The first characters after the prefix, stored to tell tokens apart in listings.
    pub fn hint(&self) -> String {
        self.0.chars().take(TOKEN_PREFIX.len() + 6).collect()
    }
}

impl fmt::Debug for TokenSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenSecret(<redacted>)")
    }
}

/// The SHA-256 of a token's secret: what is stored and looked up.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenHash(pub [u8; 32]);

impl TokenHash {
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenHash({:02x}{:02x}..)", self.0[0], self.0[1])
    }
}

/// A token's id: public, used to list and revoke it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct TokenId(Uuid);

impl TokenId {
    pub fn generate() -> Self {
        Self(Uuid::now_v7())
    }

    pub fn from_uuid(id: Uuid) -> Self {
        Self(id)
    }

    pub fn as_uuid(&self) -> Uuid {
        self.0
    }

    pub fn parse(text: &str) -> Option<Self> {
        Uuid::try_parse(text).ok().map(Self)
    }
}

impl fmt::Display for TokenId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A token as stored: everything but its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApiToken {
    pub id: TokenId,
    pub account: AccountName,
    pub name: String,
    /// The first characters of the secret (`knt_AbC123`), to recognise it.
    pub hint: String,
    #[serde(skip)]
    pub hash: TokenHash,
    pub created_at: DateTime<Utc>,
    pub created_by: Actor,
    pub expires_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub revoked_by: Option<Actor>,
}

impl ApiToken {
    /// Whether the token can authenticate at `now`.
    pub fn is_usable(&self, now: DateTime<Utc>) -> bool {
        self.revoked_at.is_none() && now < self.expires_at
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_256_random_bits_and_hashes_are_stable() {
        let one = TokenSecret::generate();
        let two = TokenSecret::generate();
        assert_ne!(one, two);
        assert_eq!(one.expose().len(), TOKEN_LENGTH);
        assert!(one.expose().starts_with("knt_"));
        let decoded = URL_SAFE_NO_PAD
            .decode(&one.expose()[4..])
            .expect("base64url");
        assert_eq!(decoded.len(), 32);
        assert_eq!(
            TokenSecret::parse(one.expose()).expect("parses").hash(),
            one.hash()
        );
        assert_ne!(one.hash(), two.hash());
        assert_eq!(one.hint().len(), 10);
    }

    #[test]
    fn malformed_tokens_are_refused_and_secrets_never_debug_print() {
        let secret = TokenSecret::generate();
        for bad in [
            "",
            "knt_",
            "Bearer x",
            &secret.expose()[1..],
            &format!("{}x", secret.expose()),
            &secret.expose().replace("knt_", "kn7_"),
        ] {
            assert_eq!(TokenSecret::parse(bad), Err(MalformedToken), "{bad:?}");
        }
        assert!(!format!("{secret:?}").contains(&secret.expose()[4..]));
    }
}
