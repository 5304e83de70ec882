//! `/api/releases`: register, list, read and retire releases.

use std::collections::BTreeMap;

use actix_web::http::header;
use actix_web::web::{self, Data, Payload};
use actix_web::{HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use kubernaut_domain::{
    Actor, CreateReleaseError, CreatedRelease, DeleteReleaseError, GetReleaseError,
    ListReleasesError, NewRelease, Release, ReleaseId, ReleaseQuery, ReleaseService,
    ReleaseSummary, ServiceName, ValidationErrors, Version,
};
use serde::{Deserialize, Serialize};

use crate::body::read_release;
use crate::params::Window;
use crate::problem::ApiError;

/// A release as the API shows it.
#[derive(Debug, Serialize)]
pub struct ReleaseBody {
    pub id: ReleaseId,
    pub service: String,
    pub version: String,
    pub image: String,
    pub template: String,
    /// Variables the template needs that a deploy must supply.
    pub required_variables: Vec<String>,
    pub attributes: BTreeMap<String, String>,
    pub comment: Option<String>,
    pub created_at: DateTime<Utc>,
    pub created_by: String,
    /// The manifest digest the image's registry reported at registration; `null` when
    /// its registry is not checked.
    pub image_digest: Option<String>,
}

impl From<&Release> for ReleaseBody {
    fn from(release: &Release) -> Self {
        Self {
            id: release.id,
            service: release.service.to_string(),
            version: release.version.to_string(),
            image: release.image().to_string(),
            template: release.template().source().to_owned(),
            required_variables: release
                .template()
                .required_variables()
                .iter()
                .cloned()
                .collect(),
            attributes: attributes_of(release.attributes()),
            comment: release.comment.clone(),
            created_at: release.created_at,
            created_by: release.created_by.to_string(),
            image_digest: release.image_digest.clone(),
        }
    }
}

/// A release in a listing: everything but the template.
#[derive(Debug, Serialize)]
pub struct ReleaseSummaryBody {
    pub id: ReleaseId,
    pub service: String,
    pub version: String,
    pub image: String,
    pub attributes: BTreeMap<String, String>,
    pub comment: Option<String>,
    pub created_at: DateTime<Utc>,
    pub created_by: String,
    /// The manifest digest the image's registry reported at registration; `null` when
    /// its registry is not checked.
    pub image_digest: Option<String>,
}

impl From<&ReleaseSummary> for ReleaseSummaryBody {
    fn from(release: &ReleaseSummary) -> Self {
        Self {
            id: release.id,
            service: release.service.to_string(),
            version: release.version.to_string(),
            image: release.image.to_string(),
            attributes: attributes_of(&release.attributes),
            comment: release.comment.clone(),
            created_at: release.created_at,
            created_by: release.created_by.to_string(),
            image_digest: release.image_digest.clone(),
        }
    }
}

fn attributes_of(attributes: &kubernaut_domain::Attributes) -> BTreeMap<String, String> {
    attributes
        .iter()
        .map(|(name, value)| (name.to_string(), value.clone()))
        .collect()
}

/// A page of releases.
#[derive(Debug, Serialize)]
pub struct ReleasePageBody {
    pub items: Vec<ReleaseSummaryBody>,
    /// Pass as `cursor` to get the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

pub fn location_of(id: ReleaseId) -> String {
    format!("/api/releases/{id}")
}

/// `POST /api/releases`
pub async fn create(
    service: Data<ReleaseService>,
    request: HttpRequest,
    payload: Payload,
) -> Result<HttpResponse, ApiError> {
    let raw = read_release(&request, payload).await?;
    let new = NewRelease::parse(&raw).map_err(ApiError::validation)?;
    let outcome = service
        .create(new, Actor::anonymous())
        .await
        .map_err(|error| create_failed(error, &raw.service, &raw.version))?;
    let mut response = match &outcome {
        CreatedRelease::Created(_) => HttpResponse::Created(),
        CreatedRelease::AlreadyExists(_) => HttpResponse::Ok(),
    };
    let release = outcome.release();
    Ok(response
        .insert_header((header::LOCATION, location_of(release.id)))
        .json(ReleaseBody::from(release)))
}

/// The problem a failed registration answers with.
fn create_failed(error: CreateReleaseError, service: &str, version: &str) -> ApiError {
    match error {
        CreateReleaseError::Conflict { existing } => ApiError::conflict(
            format!(
                "release {existing} already registers {service} {version} with another image, template or attributes; delete it first or choose a new version"
            ),
            existing,
        ),
        CreateReleaseError::ImageNotFound { image } => {
            ApiError::validation(ValidationErrors::single(
                "image",
                format!(
                    "is not in the registry {}: push {image} before registering the release",
                    image.registry()
                ),
            ))
        }
        CreateReleaseError::RegistryUnavailable(error) => ApiError::unavailable(
            format!(
                "the registry {} could not be asked whether the image exists; retry later",
                error.registry()
            ),
            error,
        ),
        CreateReleaseError::Repository(error) => ApiError::internal(error),
    }
}

/// The query string of `GET /api/releases`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListParameters {
    service: Option<String>,
    version: Option<String>,
    created_after: Option<String>,
    created_before: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

impl ListParameters {
    fn into_query(self) -> Result<ReleaseQuery, ValidationErrors> {
        let mut errors = ValidationErrors::new();
        let service = self
            .service
            .and_then(|s| errors.check("service", ServiceName::parse(&s)));
        let version = self
            .version
            .and_then(|v| errors.check("version", Version::parse(&v)));
        let window = Window::parse(
            &mut errors,
            self.created_after,
            self.created_before,
            self.limit,
            self.cursor,
        );
        errors.into_result(|| ReleaseQuery {
            service,
            version,
            created_after: window.created_after,
            created_before: window.created_before,
            after: window.after,
            limit: window.limit,
        })
    }
}

/// `GET /api/releases`
pub async fn list(
    service: Data<ReleaseService>,
    parameters: web::Query<ListParameters>,
) -> Result<HttpResponse, ApiError> {
    let query = parameters
        .into_inner()
        .into_query()
        .map_err(ApiError::malformed)?;
    let page = service.list(&query).await.map_err(|error| match error {
        ListReleasesError::Repository(error) => ApiError::internal(error),
    })?;
    Ok(HttpResponse::Ok().json(ReleasePageBody {
        items: page.items.iter().map(ReleaseSummaryBody::from).collect(),
        next_cursor: page.next_cursor.map(|c| c.encode()),
    }))
}

fn release_not_found(id: &str) -> ApiError {
    ApiError::not_found(format!("no active release has the id {id}"))
}

/// `GET /api/releases/{id}`: malformed, unknown and deleted ids are all 404.
pub async fn get(
    service: Data<ReleaseService>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let release_id = ReleaseId::parse(&id).ok_or_else(|| release_not_found(&id))?;
    let release = service.get(release_id).await.map_err(|error| match error {
        GetReleaseError::NotFound => release_not_found(&id),
        GetReleaseError::Repository(error) => ApiError::internal(error),
    })?;
    Ok(HttpResponse::Ok().json(ReleaseBody::from(&release)))
}

/// `DELETE /api/releases/{id}`: soft delete; deleting again is a success too.
pub async fn delete(
    service: Data<ReleaseService>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let not_found = || ApiError::not_found(format!("no release has the id {id}"));
    let release_id = ReleaseId::parse(&id).ok_or_else(not_found)?;
    service
        .delete(release_id, &Actor::anonymous())
        .await
        .map_err(|error| match error {
            DeleteReleaseError::NotFound => not_found(),
            DeleteReleaseError::Repository(error) => ApiError::internal(error),
        })?;
    Ok(HttpResponse::NoContent().finish())
}

#[cfg(test)]
mod tests {
    use kubernaut_domain::ImageRef;
    use kubernaut_domain::ports::RegistryError;

    use super::*;
    use crate::problem::ProblemType;

    #[test]
    fn an_image_missing_from_its_registry_is_a_validation_problem_naming_the_image() {
        let image = ImageRef::parse("127.0.0.1:5000/hello:9").expect("image");
        let problem =
            create_failed(CreateReleaseError::ImageNotFound { image }, "hello", "9").problem();
        assert_eq!(problem.status, 422);
        assert_eq!(problem.errors.len(), 1);
        assert_eq!(problem.errors[0].field, "image");
        assert!(
            problem.errors[0]
                .reason
                .contains("not in the registry 127.0.0.1:5000"),
            "{problem:?}"
        );
    }

    #[test]
    fn a_registry_that_cannot_be_asked_is_a_503_that_names_it_but_not_its_cause() {
        let error = create_failed(
            CreateReleaseError::RegistryUnavailable(RegistryError::new(
                "127.0.0.1:5000",
                "secret detail",
            )),
            "hello",
            "9",
        );
        assert_eq!(error.kind(), ProblemType::Unavailable);
        let problem = error.problem();
        assert_eq!(problem.status, 503);
        assert!(problem.detail.contains("127.0.0.1:5000"), "{problem:?}");
        assert!(!problem.detail.contains("secret detail"), "{problem:?}");
    }
}
