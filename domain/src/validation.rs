//! Field-level validation errors, collected so a caller learns every problem at once.

use std::fmt;

use serde::Serialize;

/// One field that failed its rule, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    /// The input field's name as the caller sent it (`service`, `attributes.team`, ...).
    pub field: String,
    /// A sentence saying which rule the value broke.
    pub reason: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.reason)
    }
}

/// Every field error found in one input. Never empty when returned as an error.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
#[serde(transparent)]
pub struct ValidationErrors(Vec<FieldError>);

impl ValidationErrors {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn single(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self(vec![FieldError::new(field, reason)])
    }

    pub fn push(&mut self, error: FieldError) {
        self.0.push(error);
    }

    /// Records the error of `result` under `field`, returning the value when there was none.
    pub fn check<T, E: fmt::Display>(&mut self, field: &str, result: Result<T, E>) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(error) => {
                self.push(FieldError::new(field, error.to_string()));
                None
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn fields(&self) -> &[FieldError] {
        &self.0
    }

    /// `Ok(value)` when no error was recorded.
    ///
    /// # Errors
    /// Returns `self` when it holds at least one field error.
    pub fn into_result<T>(self, value: impl FnOnce() -> T) -> Result<T, Self> {
        if self.0.is_empty() {
            Ok(value())
        } else {
            Err(self)
        }
    }
}

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for error in &self.0 {
            if !first {
                f.write_str("; ")?;
            }
            first = false;
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ValidationErrors {}

/// A text holding U+0000 (NUL), which PostgreSQL's `text` and `jsonb` cannot store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("must not contain the character U+0000 (NUL)")]
pub struct NulCharacter;

/// Checks that `text` can be stored: every other Unicode scalar value can, and Rust
/// strings are UTF-8 already, so NUL is the one character to refuse. Free-form texts
/// (comments, attribute values, templates, filters) are checked with this at the
/// boundary, so that a request never reaches the database with one.
///
/// # Errors
/// [`NulCharacter`] when `text` holds U+0000.
pub fn storable_text(text: &str) -> Result<&str, NulCharacter> {
    if text.contains('\0') {
        Err(NulCharacter)
    } else {
        Ok(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_texts_without_nul_are_storable() {
        assert_eq!(
            storable_text("tab\there, ünïcode ✓"),
            Ok("tab\there, ünïcode ✓")
        );
        for text in ["\0", "a\0", "\0b", "a\u{0}b"] {
            assert_eq!(storable_text(text), Err(NulCharacter), "{text:?}");
        }
    }
}
