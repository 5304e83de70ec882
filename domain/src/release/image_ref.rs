use std::fmt;
use std::str::FromStr as _;
use std::sync::OnceLock;

use oci_spec::distribution::Reference;
use serde::{Deserialize, Serialize};

/// A container image reference in the Docker grammar
/// `[registry[:port]/]path[:tag][@sha256:digest]`, kept as written.
///
/// References read back from storage were checked when they were stored; they are
/// taken apart only when a part is asked for, so listings do not pay for the grammar.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ImageRef {
    written: String,
    #[serde(skip)]
    parsed: OnceLock<Reference>,
}

impl PartialEq for ImageRef {
    fn eq(&self, other: &Self) -> bool {
        self.written == other.written
    }
}

impl Eq for ImageRef {}

/// Why a text is not an [`ImageRef`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("is not an image reference ([registry[:port]/]path[:tag][@sha256:digest]): {0}")]
pub struct InvalidImageRef(String);

impl ImageRef {
    /// # Errors
    /// [`InvalidImageRef`] with the grammar rule that failed.
    pub fn parse(text: &str) -> Result<Self, InvalidImageRef> {
        if text.trim() != text || text.is_empty() {
            return Err(InvalidImageRef(
                "must not be empty or padded with spaces".into(),
            ));
        }
        let parsed = Reference::from_str(text).map_err(|e| InvalidImageRef(e.to_string()))?;
        Ok(Self {
            written: text.to_owned(),
            parsed: OnceLock::from(parsed),
        })
    }

    /// A reference that passed [`ImageRef::parse`] before (read back from storage): kept
    /// as written and taken apart only when a part is asked for.
    pub fn from_trusted(written: String) -> Self {
        Self {
            written,
            parsed: OnceLock::new(),
        }
    }

    fn parsed(&self) -> &Reference {
        self.parsed.get_or_init(|| {
            Reference::from_str(&self.written).unwrap_or_else(|_| {
                // Not reachable for references that were parsed when stored; keep the
                // text whole as a repository rather than fail a read.
                Reference::with_tag(
                    "docker.io".to_owned(),
                    self.written.clone(),
                    "latest".to_owned(),
                )
            })
        })
    }

    pub fn as_str(&self) -> &str {
        &self.written
    }

    /// The registry host (and port), `docker.io` when the reference names none.
    pub fn registry(&self) -> &str {
        self.parsed().registry()
    }

    /// The repository path within the registry (`library/nginx` for `nginx`).
    pub fn repository(&self) -> &str {
        self.parsed().repository()
    }

    /// The tag, `latest` when the reference names neither tag nor digest.
    pub fn tag(&self) -> Option<&str> {
        self.parsed().tag()
    }

    /// The digest (`sha256:...`) when the reference pins one.
    pub fn digest(&self) -> Option<&str> {
        self.parsed().digest()
    }
}

impl TryFrom<String> for ImageRef {
    type Error = InvalidImageRef;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<ImageRef> for String {
    fn from(value: ImageRef) -> Self {
        value.written
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.written)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_in_the_docker_grammar_are_accepted_and_taken_apart() {
        let image = ImageRef::parse("registry.example.com:5000/team/hello-world:1.2.3")
            .expect("valid reference");
        assert_eq!(image.registry(), "registry.example.com:5000");
        assert_eq!(image.repository(), "team/hello-world");
        assert_eq!(image.tag(), Some("1.2.3"));
        assert_eq!(image.digest(), None);
        assert_eq!(
            image.as_str(),
            "registry.example.com:5000/team/hello-world:1.2.3"
        );

        let digest = format!("sha256:{}", "a".repeat(64));
        let pinned = ImageRef::parse(&format!("nginx@{digest}")).expect("digest reference");
        assert_eq!(pinned.digest(), Some(digest.as_str()));
        assert_eq!(pinned.registry(), "docker.io");

        for text in [
            "nginx",
            "localhost:5000/x",
            "127.0.0.1:5000/a/b:c",
            "a/b/c:1.0_rc-1",
        ] {
            assert!(ImageRef::parse(text).is_ok(), "{text}");
        }
    }

    #[test]
    fn a_trusted_reference_is_taken_apart_only_when_asked_and_equals_the_parsed_one() {
        let text = "registry.example.com:5000/team/hello-world:1.2.3";
        let trusted = ImageRef::from_trusted(text.to_owned());
        assert_eq!(trusted, ImageRef::parse(text).expect("valid"));
        assert_eq!(trusted.registry(), "registry.example.com:5000");
        assert_eq!(trusted.repository(), "team/hello-world");
        assert_eq!(trusted.tag(), Some("1.2.3"));
    }

    #[test]
    fn texts_outside_the_grammar_are_refused() {
        for text in [
            "",
            " nginx",
            "Nginx",
            "nginx:",
            "nginx:tag with space",
            "nginx@sha256:abc",
            "-nginx",
            "nginx::1",
            "http://registry/nginx",
        ] {
            assert!(ImageRef::parse(text).is_err(), "{text:?}");
        }
    }
}
