//! The release use cases: register, read, list and retire releases.

use std::sync::Arc;

use chrono::{SubsecRound as _, Utc};

use crate::access::{AccessDenied, Caller, Permission};
use crate::audit::AuditAction;
use crate::pagination::Page;
use crate::ports::{
    ImageLookup, ImageRegistry, InsertReleaseError, RegistryError, ReleaseRepository,
    RepositoryError, SoftDeleteOutcome,
};
use crate::release::{ImageRef, NewRelease, Release, ReleaseId, ReleaseQuery, ReleaseSummary};

/// The outcome of a successful [`ReleaseService::create`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CreatedRelease {
    /// A new release was stored.
    Created(Release),
    /// The same service and version with identical content was registered before (a
    /// CI retry): nothing changed and this is the existing release.
    AlreadyExists(Release),
}

impl CreatedRelease {
    pub fn release(&self) -> &Release {
        match self {
            Self::Created(release) | Self::AlreadyExists(release) => release,
        }
    }

    pub fn into_release(self) -> Release {
        match self {
            Self::Created(release) | Self::AlreadyExists(release) => release,
        }
    }
}

/// Why [`ReleaseService::create`] stored nothing.
#[derive(Debug, thiserror::Error)]
pub enum CreateReleaseError {
    /// An active release of this service and version has other content.
    #[error("release {existing} already registers this service and version with other content")]
    Conflict { existing: ReleaseId },
    /// The image's registry is one Kubernaut checks, and it does not hold the image.
    #[error("the image {image} is not in its registry")]
    ImageNotFound { image: ImageRef },
    /// The image's registry is one Kubernaut checks, and it could not be asked.
    #[error(transparent)]
    RegistryUnavailable(RegistryError),
    #[error(transparent)]
    Forbidden(#[from] AccessDenied),
    #[error(transparent)]
    Repository(#[from] RepositoryError),
}

/// Why [`ReleaseService::get`] returned no release.
#[derive(Debug, thiserror::Error)]
pub enum GetReleaseError {
    #[error("no active release has this id")]
    NotFound,
    #[error(transparent)]
    Forbidden(#[from] AccessDenied),
    #[error(transparent)]
    Repository(#[from] RepositoryError),
}

/// Why [`ReleaseService::delete`] did not delete.
#[derive(Debug, thiserror::Error)]
pub enum DeleteReleaseError {
    #[error("no release has this id")]
    NotFound,
    #[error(transparent)]
    Forbidden(#[from] AccessDenied),
    #[error(transparent)]
    Repository(#[from] RepositoryError),
}

/// Why [`ReleaseService::list`] returned no page.
#[derive(Debug, thiserror::Error)]
pub enum ListReleasesError {
    #[error(transparent)]
    Forbidden(#[from] AccessDenied),
    #[error(transparent)]
    Repository(#[from] RepositoryError),
}

/// The release registry's use cases over a [`ReleaseRepository`], checking images
/// against an [`ImageRegistry`] when one is set.
#[derive(Clone)]
pub struct ReleaseService {
    repository: Arc<dyn ReleaseRepository>,
    registry: Option<Arc<dyn ImageRegistry>>,
}

impl std::fmt::Debug for ReleaseService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReleaseService").finish_non_exhaustive()
    }
}

impl ReleaseService {
    pub fn new(repository: Arc<dyn ReleaseRepository>) -> Self {
        Self {
            repository,
            registry: None,
        }
    }

    /// Checks the image of every new release whose registry host `registry` covers,
    /// and records its digest.
    #[must_use]
    pub fn with_registry(mut self, registry: Arc<dyn ImageRegistry>) -> Self {
        self.registry = Some(registry);
        self
    }

    /// The digest of `image` when its registry is checked, `Ok(None)` when it is not.
    async fn image_digest(&self, image: &ImageRef) -> Result<Option<String>, CreateReleaseError> {
        let Some(registry) = self
            .registry
            .as_ref()
            .filter(|registry| registry.covers(image.registry()))
        else {
            return Ok(None);
        };
        match registry.resolve(image).await {
            Ok(ImageLookup::Found { digest }) => Ok(Some(digest)),
            Ok(ImageLookup::NotFound) => Err(CreateReleaseError::ImageNotFound {
                image: image.clone(),
            }),
            Err(error) => Err(CreateReleaseError::RegistryUnavailable(error)),
        }
    }

    /// Registers `new` on behalf of `caller`, who needs [`Permission::ManageReleases`].
    /// Idempotent for retries: registering the
    /// same service and version again with identical content (image, template,
    /// attributes) returns the existing release and changes nothing.
    ///
    /// When the image's registry is checked, the image must be in it and its digest is
    /// recorded. A retry is still answered with the existing release when the registry
    /// has since lost the image or cannot be asked.
    ///
    /// # Errors
    /// [`CreateReleaseError::Conflict`] naming the existing release when the same
    /// service and version is active with other content;
    /// [`CreateReleaseError::ImageNotFound`] when the registry does not hold the image;
    /// [`CreateReleaseError::RegistryUnavailable`] when it cannot be asked;
    /// [`CreateReleaseError::Forbidden`] when the caller may not manage releases.
    pub async fn create(
        &self,
        new: NewRelease,
        caller: &Caller,
    ) -> Result<CreatedRelease, CreateReleaseError> {
        caller.require(Permission::ManageReleases)?;
        let image_digest = match self.image_digest(&new.content.image).await {
            Ok(digest) => digest,
            Err(error) => {
                let existing = self
                    .repository
                    .find_active_by_version(&new.service, &new.version)
                    .await?;
                return match existing {
                    Some(existing) if existing.content == new.content => {
                        Ok(CreatedRelease::AlreadyExists(existing))
                    }
                    _ => Err(error),
                };
            }
        };
        let mut release = Release::register(new, caller.actor().clone());
        release.image_digest = image_digest;
        let audit = caller.audit(
            AuditAction::ReleaseCreated,
            format!("release/{}", release.id),
            serde_json::json!({
                "service": release.service.as_str(),
                "version": release.version.as_str(),
                "image": release.image().as_str(),
            }),
        );
        match self.repository.insert(&release, &audit).await {
            Ok(()) => Ok(CreatedRelease::Created(release)),
            Err(InsertReleaseError::Repository(error)) => Err(error.into()),
            Err(InsertReleaseError::Duplicate) => {
                let existing = self
                    .repository
                    .find_active_by_version(&release.service, &release.version)
                    .await?
                    .ok_or_else(|| {
                        // Deleted between our insert and this read: a retry will succeed.
                        RepositoryError::new(
                            "the conflicting release was deleted while it was being read",
                        )
                    })?;
                if existing.content == release.content {
                    Ok(CreatedRelease::AlreadyExists(existing))
                } else {
                    Err(CreateReleaseError::Conflict {
                        existing: existing.id,
                    })
                }
            }
        }
    }

    /// The active release with this id.
    ///
    /// # Errors
    /// [`GetReleaseError::NotFound`] for unknown and deleted ids.
    pub async fn get(&self, id: ReleaseId, caller: &Caller) -> Result<Release, GetReleaseError> {
        caller.require(Permission::Read)?;
        self.repository
            .find_active(id)
            .await?
            .ok_or(GetReleaseError::NotFound)
    }

    /// A page of active releases matching `query`, newest first, with the cursor of the
    /// next page when there is one.
    ///
    /// # Errors
    /// [`ListReleasesError::Repository`] when the storage fails.
    pub async fn list(
        &self,
        query: &ReleaseQuery,
        caller: &Caller,
    ) -> Result<Page<ReleaseSummary>, ListReleasesError> {
        caller.require(Permission::Read)?;
        let limit = usize::from(query.limit.get());
        // One more than asked tells whether another page follows without a count.
        let mut items = self.repository.list_active(query, limit + 1).await?;
        let next_cursor = if items.len() > limit {
            items.truncate(limit);
            items.last().map(ReleaseSummary::cursor)
        } else {
            None
        };
        Ok(Page { items, next_cursor })
    }

    /// Soft-deletes the release: it disappears from reads and listings, its service
    /// and version can be registered again, and its row stays for history.
    /// Deleting a deleted release succeeds and changes nothing.
    ///
    /// # Errors
    /// [`DeleteReleaseError::NotFound`] when no release ever had this id;
    /// [`DeleteReleaseError::Forbidden`] when the caller may not manage releases.
    pub async fn delete(&self, id: ReleaseId, caller: &Caller) -> Result<(), DeleteReleaseError> {
        caller.require(Permission::ManageReleases)?;
        let now = Utc::now().trunc_subsecs(6);
        let audit = caller.audit(
            AuditAction::ReleaseDeleted,
            format!("release/{id}"),
            serde_json::Value::Null,
        );
        match self
            .repository
            .soft_delete(id, caller.actor(), now, &audit)
            .await?
        {
            SoftDeleteOutcome::Deleted | SoftDeleteOutcome::AlreadyDeleted => Ok(()),
            SoftDeleteOutcome::NotFound => Err(DeleteReleaseError::NotFound),
        }
    }

    /// Whether the release storage answers.
    ///
    /// # Errors
    /// [`RepositoryError`] when it does not.
    pub async fn ready(&self) -> Result<(), RepositoryError> {
        self.repository.ping().await
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use chrono::Duration;
    use mockall::predicate::eq;

    use super::*;
    use crate::access::{Grant, Principal, Role};
    use crate::actor::Actor;
    use crate::pagination::PageLimit;
    use crate::ports::{MockImageRegistry, MockReleaseRepository};
    use crate::release::UnvalidatedRelease;

    const TEMPLATE: &str = "apiVersion: v1\nkind: Service\nmetadata:\n  name: {{ service }}\n";

    fn new_release(image: &str) -> NewRelease {
        NewRelease::parse(&UnvalidatedRelease {
            service: "hello-world".into(),
            version: "1.0.0".into(),
            image: image.into(),
            template: TEMPLATE.into(),
            attributes: BTreeMap::from([("replicas".into(), "2".into())]),
            comment: Some("first".into()),
        })
        .expect("valid release")
    }

    fn caller(name: &str, role: Role) -> Caller {
        Caller::new(Principal {
            actor: Actor::named(name),
            grants: vec![Grant::global(role)],
        })
        .with_request(Some("req-1".into()), Some("192.0.2.7".into()))
    }

    fn releaser(name: &str) -> Caller {
        caller(name, Role::Releaser)
    }

    fn viewer() -> Caller {
        caller("reader", Role::Viewer)
    }

    fn service(repository: MockReleaseRepository) -> ReleaseService {
        ReleaseService::new(Arc::new(repository))
    }

    #[tokio::test]
    async fn creating_a_release_stores_it_once() {
        let mut repository = MockReleaseRepository::new();
        repository
            .expect_insert()
            .withf(|release, _| release.service.as_str() == "hello-world" && !release.is_deleted())
            .times(1)
            .returning(|_, _| Ok(()));
        let outcome = service(repository)
            .create(new_release("hello:1"), &releaser("jenkins"))
            .await
            .expect("created");
        let CreatedRelease::Created(release) = outcome else {
            panic!("expected a new release, got {outcome:?}");
        };
        assert_eq!(release.created_by, Actor::named("jenkins"));
        assert_eq!(release.image().as_str(), "hello:1");
    }

    #[tokio::test]
    async fn creating_a_release_again_with_the_same_content_returns_the_existing_one() {
        let existing = Release::register(new_release("hello:1"), Actor::named("first-run"));
        let stored = existing.clone();
        let mut repository = MockReleaseRepository::new();
        repository
            .expect_insert()
            .returning(|_, _| Err(InsertReleaseError::Duplicate));
        repository
            .expect_find_active_by_version()
            .times(1)
            .returning(move |_, _| Ok(Some(stored.clone())));
        let outcome = service(repository)
            .create(new_release("hello:1"), &releaser("retry"))
            .await
            .expect("idempotent");
        assert_eq!(outcome, CreatedRelease::AlreadyExists(existing));
    }

    #[tokio::test]
    async fn creating_a_release_twice_with_other_content_is_a_conflict() {
        let existing = Release::register(new_release("hello:1"), Actor::anonymous());
        let existing_id = existing.id;
        let mut repository = MockReleaseRepository::new();
        repository
            .expect_insert()
            .returning(|_, _| Err(InsertReleaseError::Duplicate));
        repository
            .expect_find_active_by_version()
            .returning(move |_, _| Ok(Some(existing.clone())));
        let error = service(repository)
            .create(new_release("hello:2"), &releaser("ci"))
            .await
            .expect_err("conflict");
        assert!(
            matches!(error, CreateReleaseError::Conflict { existing } if existing == existing_id),
            "{error:?}"
        );
    }

    #[tokio::test]
    async fn a_storage_failure_on_create_is_reported_as_such() {
        let mut repository = MockReleaseRepository::new();
        repository
            .expect_insert()
            .returning(|_, _| Err(RepositoryError::new("down").into()));
        let error = service(repository)
            .create(new_release("hello:1"), &releaser("ci"))
            .await
            .expect_err("failure");
        assert!(matches!(error, CreateReleaseError::Repository(_)));
    }

    const CHECKED_IMAGE: &str = "registry.local:5000/team/hello:1";
    const DIGEST: &str = "sha256:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae";

    fn registry_answering(
        answer: fn() -> Result<ImageLookup, RegistryError>,
    ) -> Arc<MockImageRegistry> {
        let mut registry = MockImageRegistry::new();
        registry
            .expect_covers()
            .returning(|host| host == "registry.local:5000");
        registry.expect_resolve().returning(move |_| answer());
        Arc::new(registry)
    }

    #[tokio::test]
    async fn an_image_its_registry_holds_is_registered_with_its_digest() {
        let mut repository = MockReleaseRepository::new();
        repository
            .expect_insert()
            .withf(|release, _| release.image_digest.as_deref() == Some(DIGEST))
            .times(1)
            .returning(|_, _| Ok(()));
        let outcome = service(repository)
            .with_registry(registry_answering(|| {
                Ok(ImageLookup::Found {
                    digest: DIGEST.into(),
                })
            }))
            .create(new_release(CHECKED_IMAGE), &releaser("ci"))
            .await
            .expect("created");
        let release = outcome.into_release();
        assert_eq!(release.image_digest.as_deref(), Some(DIGEST));
        assert_eq!(
            release.pinned_image(),
            Some(format!("registry.local:5000/team/hello@{DIGEST}"))
        );
    }

    #[tokio::test]
    async fn an_image_missing_from_its_registry_is_refused_and_nothing_is_stored() {
        let mut repository = MockReleaseRepository::new();
        repository.expect_insert().never();
        repository
            .expect_find_active_by_version()
            .returning(|_, _| Ok(None));
        let error = service(repository)
            .with_registry(registry_answering(|| Ok(ImageLookup::NotFound)))
            .create(new_release(CHECKED_IMAGE), &releaser("ci"))
            .await
            .expect_err("missing image");
        assert!(
            matches!(&error, CreateReleaseError::ImageNotFound { image } if image.as_str() == CHECKED_IMAGE),
            "{error:?}"
        );
    }

    #[tokio::test]
    async fn a_registry_that_cannot_be_asked_is_unavailable_rather_than_a_missing_image() {
        let mut repository = MockReleaseRepository::new();
        repository.expect_insert().never();
        repository
            .expect_find_active_by_version()
            .returning(|_, _| Ok(None));
        let error = service(repository)
            .with_registry(registry_answering(|| {
                Err(RegistryError::new(
                    "registry.local:5000",
                    "connection refused",
                ))
            }))
            .create(new_release(CHECKED_IMAGE), &releaser("ci"))
            .await
            .expect_err("unavailable");
        assert!(
            matches!(&error, CreateReleaseError::RegistryUnavailable(e) if e.registry() == "registry.local:5000"),
            "{error:?}"
        );
    }

    #[tokio::test]
    async fn images_of_registries_that_are_not_configured_are_not_checked() {
        let mut registry = MockImageRegistry::new();
        registry.expect_covers().returning(|_| false);
        registry.expect_resolve().never();
        let mut repository = MockReleaseRepository::new();
        repository
            .expect_insert()
            .withf(|release, _| release.image_digest.is_none())
            .times(1)
            .returning(|_, _| Ok(()));
        let outcome = service(repository)
            .with_registry(Arc::new(registry))
            .create(new_release("docker.io/library/hello:1"), &releaser("ci"))
            .await
            .expect("created");
        assert!(matches!(outcome, CreatedRelease::Created(_)));
    }

    #[tokio::test]
    async fn a_retry_is_answered_with_the_existing_release_even_when_the_registry_is_down() {
        let mut existing = Release::register(new_release(CHECKED_IMAGE), Actor::anonymous());
        existing.image_digest = Some(DIGEST.into());
        let stored = existing.clone();
        let mut repository = MockReleaseRepository::new();
        repository.expect_insert().never();
        repository
            .expect_find_active_by_version()
            .returning(move |_, _| Ok(Some(stored.clone())));
        let outcome = service(repository)
            .with_registry(registry_answering(|| {
                Err(RegistryError::new("registry.local:5000", "503"))
            }))
            .create(new_release(CHECKED_IMAGE), &releaser("ci"))
            .await
            .expect("idempotent");
        assert_eq!(outcome, CreatedRelease::AlreadyExists(existing));
    }

    #[tokio::test]
    async fn a_missing_image_under_a_version_registered_with_another_image_is_still_refused() {
        let other = Release::register(new_release("hello:1"), Actor::anonymous());
        let mut repository = MockReleaseRepository::new();
        repository.expect_insert().never();
        repository
            .expect_find_active_by_version()
            .returning(move |_, _| Ok(Some(other.clone())));
        let error = service(repository)
            .with_registry(registry_answering(|| Ok(ImageLookup::NotFound)))
            .create(new_release(CHECKED_IMAGE), &releaser("ci"))
            .await
            .expect_err("missing image");
        assert!(matches!(error, CreateReleaseError::ImageNotFound { .. }));
    }

    #[tokio::test]
    async fn an_unknown_or_deleted_release_is_not_found() {
        let id = ReleaseId::generate();
        let mut repository = MockReleaseRepository::new();
        repository
            .expect_find_active()
            .with(eq(id))
            .returning(|_| Ok(None));
        let error = service(repository)
            .get(id, &viewer())
            .await
            .expect_err("not found");
        assert!(matches!(error, GetReleaseError::NotFound));
    }

    fn summaries(count: usize) -> Vec<ReleaseSummary> {
        let base = Release::register(new_release("hello:1"), Actor::anonymous());
        (0..count)
            .map(|i| {
                let mut release = base.clone();
                release.id = ReleaseId::generate();
                release.created_at -= Duration::seconds(i64::try_from(i).unwrap_or(0));
                ReleaseSummary::from(release)
            })
            .collect()
    }

    #[tokio::test]
    async fn a_full_page_points_at_the_next_one_from_its_last_item() {
        let rows = summaries(3);
        let last_on_page = rows[1].cursor();
        let mut repository = MockReleaseRepository::new();
        repository
            .expect_list_active()
            .withf(|_, limit| *limit == 3)
            .returning(move |_, _| Ok(rows.clone()));
        let query = ReleaseQuery {
            limit: PageLimit::new(2).expect("limit"),
            ..ReleaseQuery::default()
        };
        let page = service(repository)
            .list(&query, &viewer())
            .await
            .expect("page");
        assert_eq!(page.items.len(), 2);
        assert_eq!(page.next_cursor, Some(last_on_page));
    }

    #[tokio::test]
    async fn the_last_page_has_no_next_cursor() {
        let rows = summaries(2);
        let mut repository = MockReleaseRepository::new();
        repository
            .expect_list_active()
            .returning(move |_, _| Ok(rows.clone()));
        let page = service(repository)
            .list(&ReleaseQuery::default(), &viewer())
            .await
            .expect("page");
        assert_eq!(page.items.len(), 2);
        assert_eq!(page.next_cursor, None);
    }

    #[tokio::test]
    async fn deleting_is_idempotent_but_unknown_ids_are_not_found() {
        let mut repository = MockReleaseRepository::new();
        let mut outcomes = vec![
            SoftDeleteOutcome::NotFound,
            SoftDeleteOutcome::AlreadyDeleted,
            SoftDeleteOutcome::Deleted,
        ];
        repository
            .expect_soft_delete()
            .times(3)
            .returning(move |_, _, _, _| Ok(outcomes.pop().unwrap_or(SoftDeleteOutcome::NotFound)));
        let service = service(repository);
        let id = ReleaseId::generate();
        let caller = releaser("ci");
        assert!(service.delete(id, &caller).await.is_ok());
        assert!(service.delete(id, &caller).await.is_ok());
        assert!(matches!(
            service.delete(id, &caller).await,
            Err(DeleteReleaseError::NotFound)
        ));
    }

    #[tokio::test]
    async fn a_created_release_is_audited_with_the_caller_and_the_request() {
        let mut repository = MockReleaseRepository::new();
        repository
            .expect_insert()
            .withf(|release, audit| {
                audit.action == AuditAction::ReleaseCreated
                    && audit.target == format!("release/{}", release.id)
                    && audit.actor == Actor::named("jenkins")
                    && audit.request_id.as_deref() == Some("req-1")
                    && audit.source.as_deref() == Some("192.0.2.7")
                    && audit.details["version"] == "1.0.0"
            })
            .times(1)
            .returning(|_, _| Ok(()));
        service(repository)
            .create(new_release("hello:1"), &releaser("jenkins"))
            .await
            .expect("created");
    }

    #[tokio::test]
    async fn callers_without_the_permission_change_nothing() {
        for role in [Role::Viewer, Role::Deployer] {
            let mut repository = MockReleaseRepository::new();
            repository.expect_insert().never();
            repository.expect_soft_delete().never();
            let service = service(repository);
            let error = service
                .create(new_release("hello:1"), &caller("someone", role))
                .await
                .expect_err("forbidden");
            assert!(matches!(error, CreateReleaseError::Forbidden(_)), "{role}");
            let error = service
                .delete(ReleaseId::generate(), &caller("someone", role))
                .await
                .expect_err("forbidden");
            assert!(matches!(error, DeleteReleaseError::Forbidden(_)), "{role}");
        }
    }

    #[tokio::test]
    async fn a_caller_without_any_grant_cannot_read() {
        let mut repository = MockReleaseRepository::new();
        repository.expect_find_active().never();
        repository.expect_list_active().never();
        let nobody = Caller::new(Principal {
            actor: Actor::named("nobody"),
            grants: Vec::new(),
        });
        let service = service(repository);
        assert!(matches!(
            service.get(ReleaseId::generate(), &nobody).await,
            Err(GetReleaseError::Forbidden(_))
        ));
        assert!(matches!(
            service.list(&ReleaseQuery::default(), &nobody).await,
            Err(ListReleasesError::Forbidden(_))
        ));
    }
}
