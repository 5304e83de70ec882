//! Releases: a version of a service, its image and its manifest template, registered
//! by CI before any deploy.

mod attributes;
mod image_ref;
mod service_name;
mod version;

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, SubsecRound as _, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub use attributes::{AttributeName, Attributes, InvalidAttributeName};
pub use image_ref::{ImageRef, InvalidImageRef};
pub use service_name::{InvalidServiceName, ServiceName};
pub use version::{InvalidVersion, Version};

use crate::actor::Actor;
use crate::pagination::{Cursor, PageLimit};
use crate::template::{CHANGES_STRUCTURE, InvalidTemplate, ManifestTemplate};
use crate::validation::{FieldError, ValidationErrors, storable_text};

/// A release's identity: a UUID (version 7, so ids sort roughly by creation time).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ReleaseId(Uuid);

impl ReleaseId {
    pub fn generate() -> Self {
        Self(Uuid::now_v7())
    }

    pub fn from_uuid(uuid: Uuid) -> Self {
        Self(uuid)
    }

    /// Parses the hyphenated (or simple) text form of a UUID.
    pub fn parse(text: &str) -> Option<Self> {
        Uuid::try_parse(text).ok().map(Self)
    }

    pub fn as_uuid(&self) -> Uuid {
        self.0
    }
}

impl fmt::Display for ReleaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A release as the caller sends it, before any rule is checked.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnvalidatedRelease {
    pub service: String,
    pub version: String,
    pub image: String,
    pub template: String,
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    #[serde(default)]
    pub comment: Option<String>,
}

/// What makes two registrations of the same service and version "the same release":
/// the image, the template and the attributes. A CI retry sends identical content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseContent {
    pub image: ImageRef,
    pub template: ManifestTemplate,
    pub attributes: Attributes,
}

/// A release whose every field has passed its rules, ready to be stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRelease {
    pub service: ServiceName,
    pub version: Version,
    pub content: ReleaseContent,
    pub comment: Option<String>,
}

impl NewRelease {
    pub const MAX_COMMENT_CHARS: usize = 4096;

    /// Checks every field, reporting all the broken rules at once. The template must
    /// compile and render, with this release's variables and placeholders for the
    /// deploy-time ones, into Kubernetes objects.
    ///
    /// # Errors
    /// [`ValidationErrors`] listing every field that broke a rule.
    pub fn parse(raw: &UnvalidatedRelease) -> Result<Self, ValidationErrors> {
        let mut errors = ValidationErrors::new();
        let service = errors.check("service", ServiceName::parse(&raw.service));
        let version = errors.check("version", Version::parse(&raw.version));
        let image = errors.check("image", ImageRef::parse(&raw.image));
        let attributes = match Attributes::parse("attributes", &raw.attributes) {
            Ok(attributes) => Some(attributes),
            Err(attribute_errors) => {
                for error in attribute_errors.fields() {
                    errors.push(error.clone());
                }
                None
            }
        };
        let comment = match &raw.comment {
            Some(comment) if comment.chars().count() > Self::MAX_COMMENT_CHARS => {
                errors.push(FieldError::new(
                    "comment",
                    format!("must be at most {} characters", Self::MAX_COMMENT_CHARS),
                ));
                None
            }
            Some(comment) if errors.check("comment", storable_text(comment)).is_none() => None,
            Some(comment) if comment.trim().is_empty() => None,
            other => other.clone(),
        };
        let template = if let (Some(service), Some(version), Some(image), Some(attributes)) =
            (&service, &version, &image, &attributes)
        {
            match ManifestTemplate::parse(&raw.template, service, version, image, attributes) {
                Err(InvalidTemplate::ValueChangesStructure(names)) => {
                    for name in names {
                        errors.push(FieldError::new(
                            format!("attributes.{name}"),
                            CHANGES_STRUCTURE,
                        ));
                    }
                    None
                }
                parsed => errors.check("template", parsed),
            }
        } else {
            // Without valid variables the template cannot be rendered; check what can be.
            errors.check("template", ManifestTemplate::check_source(&raw.template));
            None
        };
        match (service, version, image, template, attributes) {
            (Some(service), Some(version), Some(image), Some(template), Some(attributes))
                if errors.is_empty() =>
            {
                Ok(Self {
                    service,
                    version,
                    content: ReleaseContent {
                        image,
                        template,
                        attributes,
                    },
                    comment,
                })
            }
            _ => Err(errors),
        }
    }
}

/// A registered release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Release {
    pub id: ReleaseId,
    pub service: ServiceName,
    pub version: Version,
    pub content: ReleaseContent,
    pub comment: Option<String>,
    pub created_at: DateTime<Utc>,
    pub created_by: Actor,
    pub deleted_at: Option<DateTime<Utc>>,
    pub deleted_by: Option<Actor>,
    /// The manifest digest (`sha256:...`) the image's registry reported when the
    /// release was registered; `None` when its registry is not one Kubernaut checks.
    /// Not part of the content: a retry is the same release even if the tag moved.
    pub image_digest: Option<String>,
}

impl Release {
    /// A new release, created now by `actor`. Times are kept to the microsecond, the
    /// precision they are stored with.
    pub fn register(new: NewRelease, actor: Actor) -> Self {
        Self {
            id: ReleaseId::generate(),
            service: new.service,
            version: new.version,
            content: new.content,
            comment: new.comment,
            created_at: Utc::now().trunc_subsecs(6),
            created_by: actor,
            deleted_at: None,
            deleted_by: None,
            image_digest: None,
        }
    }

    pub fn image(&self) -> &ImageRef {
        &self.content.image
    }

    /// The image pinned to its recorded digest, `registry/repository@digest`, so that
    /// a deploy runs exactly what was checked at release time even if the tag moves;
    /// `None` when no digest was recorded.
    pub fn pinned_image(&self) -> Option<String> {
        self.image_digest.as_ref().map(|digest| {
            format!(
                "{}/{}@{digest}",
                self.content.image.registry(),
                self.content.image.repository()
            )
        })
    }

    pub fn template(&self) -> &ManifestTemplate {
        &self.content.template
    }

    pub fn attributes(&self) -> &Attributes {
        &self.content.attributes
    }

    pub fn is_deleted(&self) -> bool {
        self.deleted_at.is_some()
    }

    pub fn cursor(&self) -> Cursor {
        Cursor {
            created_at: self.created_at,
            id: self.id.as_uuid(),
        }
    }
}

/// A release as listings show it: everything but the template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseSummary {
    pub id: ReleaseId,
    pub service: ServiceName,
    pub version: Version,
    pub image: ImageRef,
    pub attributes: Attributes,
    pub comment: Option<String>,
    pub created_at: DateTime<Utc>,
    pub created_by: Actor,
    /// See [`Release::image_digest`].
    pub image_digest: Option<String>,
}

impl ReleaseSummary {
    pub fn cursor(&self) -> Cursor {
        Cursor {
            created_at: self.created_at,
            id: self.id.as_uuid(),
        }
    }
}

impl From<Release> for ReleaseSummary {
    fn from(release: Release) -> Self {
        Self {
            id: release.id,
            service: release.service,
            version: release.version,
            image: release.content.image,
            attributes: release.content.attributes,
            comment: release.comment,
            created_at: release.created_at,
            created_by: release.created_by,
            image_digest: release.image_digest,
        }
    }
}

/// Which active releases to list, newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReleaseQuery {
    pub service: Option<ServiceName>,
    pub version: Option<Version>,
    /// Only releases created strictly after this time.
    pub created_after: Option<DateTime<Utc>>,
    /// Only releases created strictly before this time.
    pub created_before: Option<DateTime<Utc>>,
    /// Resume after this position (exclusive).
    pub after: Option<Cursor>,
    pub limit: PageLimit,
}
