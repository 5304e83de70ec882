//! `/api/releases`: register, list, read and retire releases.

use std::collections::BTreeSet;

use actix_web::http::header::{self, ContentType};
use actix_web::web::{self, Data, Payload};
use actix_web::{HttpRequest, HttpResponse, HttpResponseBuilder};
use chrono::{DateTime, Utc};
use kubernaut_domain::{
    Attributes, CreateReleaseError, CreatedRelease, DeleteReleaseError, GetReleaseError,
    ListReleasesError, NewRelease, Permission, Release, ReleaseId, ReleaseQuery, ReleaseService,
    ReleaseSummary, ServiceName, ValidationErrors, Version,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::Authenticated;
use crate::body::read_release;
use crate::params::Window;
use crate::problem::ApiError;

/// A release as the API shows it, borrowed from the release it shows (no copies).
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Release)]
pub struct ReleaseBody<'a> {
    #[schema(value_type = uuid::Uuid)]
    pub id: ReleaseId,
    pub service: &'a str,
    pub version: &'a str,
    pub image: &'a str,
    pub template: &'a str,
    /// Variables the template needs that a deploy must supply.
    #[schema(value_type = BTreeSet<String>)]
    pub required_variables: &'a BTreeSet<String>,
    /// Name → value.
    #[schema(value_type = std::collections::BTreeMap<String, String>)]
    pub attributes: &'a Attributes,
    #[schema(required = true)]
    pub comment: Option<&'a str>,
    #[serde(serialize_with = "timestamp::serialize")]
    pub created_at: DateTime<Utc>,
    pub created_by: &'a str,
    /// The manifest digest the image's registry reported at registration; `null` when
    /// its registry is not checked.
    #[schema(required = true)]
    pub image_digest: Option<&'a str>,
}

impl<'a> From<&'a Release> for ReleaseBody<'a> {
    fn from(release: &'a Release) -> Self {
        Self {
            id: release.id,
            service: release.service.as_str(),
            version: release.version.as_str(),
            image: release.image().as_str(),
            template: release.template().source(),
            required_variables: release.template().required_variables(),
            attributes: release.attributes(),
            comment: release.comment.as_deref(),
            created_at: release.created_at,
            created_by: release.created_by.as_str(),
            image_digest: release.image_digest.as_deref(),
        }
    }
}

/// A release in a listing: everything but the template, borrowed like [`ReleaseBody`].
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = ReleaseSummary)]
pub struct ReleaseSummaryBody<'a> {
    #[schema(value_type = uuid::Uuid)]
    pub id: ReleaseId,
    pub service: &'a str,
    pub version: &'a str,
    pub image: &'a str,
    /// Name → value.
    #[schema(value_type = std::collections::BTreeMap<String, String>)]
    pub attributes: &'a Attributes,
    #[schema(required = true)]
    pub comment: Option<&'a str>,
    #[serde(serialize_with = "timestamp::serialize")]
    pub created_at: DateTime<Utc>,
    pub created_by: &'a str,
    /// The manifest digest the image's registry reported at registration; `null` when
    /// its registry is not checked.
    #[schema(required = true)]
    pub image_digest: Option<&'a str>,
}

impl<'a> From<&'a ReleaseSummary> for ReleaseSummaryBody<'a> {
    fn from(release: &'a ReleaseSummary) -> Self {
        Self {
            id: release.id,
            service: release.service.as_str(),
            version: release.version.as_str(),
            image: release.image.as_str(),
            attributes: &release.attributes,
            comment: release.comment.as_deref(),
            created_at: release.created_at,
            created_by: release.created_by.as_str(),
            image_digest: release.image_digest.as_deref(),
        }
    }
}

/// A JSON response written into a buffer sized for it up front: growing a page's
/// buffer from empty copied it about ten times.
fn json_response(
    mut response: HttpResponseBuilder,
    body: &impl Serialize,
    expected_bytes: usize,
) -> Result<HttpResponse, ApiError> {
    let mut json = Vec::with_capacity(expected_bytes);
    serde_json::to_writer(&mut json, body).map_err(ApiError::internal)?;
    Ok(response.content_type(ContentType::json()).body(json))
}

/// About what one release of a listing takes as JSON.
const SUMMARY_JSON_BYTES: usize = 512;

/// Release times as chrono's serde writes them (RFC 3339, `Z`, 0, 3, 6 or 9 fractional
/// digits as needed), formatted without `core::fmt`: chrono's `Display` took a tenth of
/// a listing's CPU. Leap seconds and years outside 0..=9999 are left to chrono.
mod timestamp {
    use chrono::{DateTime, Datelike as _, Timelike as _, Utc};
    use serde::ser::Error as _;
    use serde::{Serialize as _, Serializer};

    pub(super) fn serialize<S: Serializer>(
        at: &DateTime<Utc>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        let (Ok(year), nanos) = (u32::try_from(at.year()), at.nanosecond()) else {
            return at.serialize(serializer);
        };
        if year > 9999 || nanos >= 1_000_000_000 {
            return at.serialize(serializer);
        }
        let mut text = *b"0000-00-00T00:00:00.000000000Z";
        put_digits(&mut text[0..4], year);
        put_digits(&mut text[5..7], at.month());
        put_digits(&mut text[8..10], at.day());
        put_digits(&mut text[11..13], at.hour());
        put_digits(&mut text[14..16], at.minute());
        put_digits(&mut text[17..19], at.second());
        put_digits(&mut text[20..29], nanos);
        let end = match nanos {
            0 => 19,
            _ if nanos % 1_000_000 == 0 => 23,
            _ if nanos % 1_000 == 0 => 26,
            _ => 29,
        };
        text[end] = b'Z';
        let text = std::str::from_utf8(&text[..=end]).map_err(S::Error::custom)?;
        serializer.serialize_str(text)
    }

    /// Writes `value` in decimal, zero-padded to the slot's width.
    fn put_digits(slot: &mut [u8], mut value: u32) {
        for digit in slot.iter_mut().rev() {
            *digit = b"0123456789"[(value % 10) as usize];
            value /= 10;
        }
    }
}

/// A page of releases.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = ReleasePage)]
pub struct ReleasePageBody<'a> {
    pub items: Vec<ReleaseSummaryBody<'a>>,
    /// Pass as `cursor` to get the next page; `null` on the last page.
    #[schema(required = true)]
    pub next_cursor: Option<String>,
}

pub fn location_of(id: ReleaseId) -> String {
    format!("/api/releases/{id}")
}

/// `POST /api/releases`
#[utoipa::path(
    post,
    path = "/api/releases",
    operation_id = "createRelease",
    summary = "Register a release",
    tag = "releases",
    request_body(
        description = "The release as JSON, or as `multipart/form-data` (the template a file or a field; every other part an attribute)",
        content(
            (crate::openapi::NewRelease = "application/json"),
            (crate::openapi::NewReleaseForm = "multipart/form-data"),
        ),
    ),
    responses(
        (status = 201, description = "Registered (`Location: /api/releases/{id}`)", body = ReleaseBody,
            headers(("Location" = String, description = "The release's URL"))),
        (status = 200, description = "The same service and version is already active with the same content (a CI retry)", body = ReleaseBody),
        (status = 400, description = "Unreadable body, or a field of the wrong type, missing or unknown"),
        (status = 409, description = "The service and version are taken with other content (`existing_id`)"),
        (status = 413, description = "A body over 3 MiB"),
        (status = 415, description = "Neither JSON nor multipart"),
        (status = 422, description = "A field breaks a rule; `errors` lists every one"),
        (status = 503, description = "The database, or the image's configured registry, cannot be asked"),
    ),
)]
pub async fn create(
    Authenticated(caller): Authenticated,
    service: Data<ReleaseService>,
    request: HttpRequest,
    payload: Payload,
) -> Result<HttpResponse, ApiError> {
    // Cheap refusals first: a caller who may not register releases is refused before
    // the body is read or the template rendered. The use case checks again.
    caller.require(Permission::ManageReleases)?;
    let raw = read_release(&request, payload).await?;
    let new = NewRelease::parse(&raw).map_err(ApiError::validation)?;
    let outcome = service
        .create(new, &caller)
        .await
        .map_err(|error| create_failed(error, &raw.service, &raw.version))?;
    let mut response = match &outcome {
        CreatedRelease::Created(_) => HttpResponse::Created(),
        CreatedRelease::AlreadyExists(_) => HttpResponse::Ok(),
    };
    let release = outcome.release();
    response.insert_header((header::LOCATION, location_of(release.id)));
    json_response(
        response,
        &ReleaseBody::from(release),
        release.template().source().len() + SUMMARY_JSON_BYTES,
    )
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
        CreateReleaseError::Forbidden(denied) => ApiError::forbidden(&denied),
        CreateReleaseError::Repository(error) => ApiError::repository(error),
    }
}

/// The query string of `GET /api/releases`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListParameters {
    /// Only this service's releases.
    #[param(pattern = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length = 63)]
    service: Option<String>,
    /// Only this version.
    version: Option<String>,
    /// Only releases created after this time (strict).
    #[param(value_type = Option<chrono::DateTime<Utc>>)]
    created_after: Option<String>,
    /// Only releases created before this time (strict).
    #[param(value_type = Option<chrono::DateTime<Utc>>)]
    created_before: Option<String>,
    /// The page's size: 1 to 500 (50 when left out).
    #[param(value_type = Option<u16>, minimum = 1, maximum = 500)]
    limit: Option<String>,
    /// The `next_cursor` of the previous page.
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
#[utoipa::path(
    get,
    path = "/api/releases",
    operation_id = "listReleases",
    summary = "List active releases",
    tag = "releases",
    params(ListParameters),
    responses(
        (status = 200, description = "A page of active releases, newest first (without their templates)", body = ReleasePageBody),
        (status = 400, description = "A bad query parameter (`errors` names it)"),
    ),
)]
pub async fn list(
    Authenticated(caller): Authenticated,
    service: Data<ReleaseService>,
    parameters: web::Query<ListParameters>,
) -> Result<HttpResponse, ApiError> {
    let query = parameters
        .into_inner()
        .into_query()
        .map_err(ApiError::malformed)?;
    let page = service
        .list(&query, &caller)
        .await
        .map_err(|error| match error {
            ListReleasesError::Forbidden(denied) => ApiError::forbidden(&denied),
            ListReleasesError::Repository(error) => ApiError::repository(error),
        })?;
    json_response(
        HttpResponse::Ok(),
        &ReleasePageBody {
            items: page.items.iter().map(ReleaseSummaryBody::from).collect(),
            next_cursor: page.next_cursor.map(|c| c.encode()),
        },
        (page.items.len() + 1) * SUMMARY_JSON_BYTES,
    )
}

fn release_not_found(id: &str) -> ApiError {
    ApiError::not_found(format!("no active release has the id {id}"))
}

/// `GET /api/releases/{id}`: malformed, unknown and deleted ids are all 404.
#[utoipa::path(
    get,
    path = "/api/releases/{id}",
    operation_id = "getRelease",
    summary = "Read a release with its template",
    tag = "releases",
    params(("id" = uuid::Uuid, Path, description = "The release's id")),
    responses(
        (status = 200, description = "The release with its template", body = ReleaseBody),
        (status = 404, description = "An unknown, malformed or deleted id"),
    ),
)]
pub async fn get(
    Authenticated(caller): Authenticated,
    service: Data<ReleaseService>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let release_id = ReleaseId::parse(&id).ok_or_else(|| release_not_found(&id))?;
    let release = service
        .get(release_id, &caller)
        .await
        .map_err(|error| match error {
            GetReleaseError::NotFound => release_not_found(&id),
            GetReleaseError::Forbidden(denied) => ApiError::forbidden(&denied),
            GetReleaseError::Repository(error) => ApiError::repository(error),
        })?;
    json_response(
        HttpResponse::Ok(),
        &ReleaseBody::from(&release),
        release.template().source().len() + SUMMARY_JSON_BYTES,
    )
}

/// `DELETE /api/releases/{id}`: soft delete; deleting again is a success too.
#[utoipa::path(
    delete,
    path = "/api/releases/{id}",
    operation_id = "deleteRelease",
    summary = "Delete a release (soft)",
    tag = "releases",
    params(("id" = uuid::Uuid, Path, description = "The release's id")),
    responses(
        (status = 204, description = "Deleted (also when it already was)"),
        (status = 404, description = "An unknown or malformed id"),
    ),
)]
pub async fn delete(
    Authenticated(caller): Authenticated,
    service: Data<ReleaseService>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let not_found = || ApiError::not_found(format!("no release has the id {id}"));
    let release_id = ReleaseId::parse(&id).ok_or_else(not_found)?;
    service
        .delete(release_id, &caller)
        .await
        .map_err(|error| match error {
            DeleteReleaseError::NotFound => not_found(),
            DeleteReleaseError::Forbidden(denied) => ApiError::forbidden(&denied),
            DeleteReleaseError::Repository(error) => ApiError::repository(error),
        })?;
    Ok(HttpResponse::NoContent().finish())
}

#[cfg(test)]
mod tests {
    use kubernaut_domain::ImageRef;
    use kubernaut_domain::ports::RegistryError;

    use super::*;
    use crate::problem::ProblemType;

    #[derive(Serialize)]
    struct Stamped(#[serde(serialize_with = "timestamp::serialize")] DateTime<Utc>);

    #[test]
    fn release_times_are_written_exactly_as_chrono_writes_them() {
        use chrono::TimeZone as _;
        let base = Utc
            .with_ymd_and_hms(2026, 11, 24, 7, 5, 9)
            .single()
            .expect("a time");
        let leap = chrono::NaiveDate::from_ymd_opt(2016, 12, 31)
            .and_then(|day| day.and_hms_nano_opt(23, 59, 59, 1_500_000_000))
            .expect("a leap second")
            .and_utc();
        let mut times = vec![leap, DateTime::<Utc>::MIN_UTC, DateTime::<Utc>::MAX_UTC];
        for nanos in [
            0,
            120_000_000,
            123_456_000,
            123_456_789,
            5_000,
            1,
            999_999_999,
        ] {
            times.push(base + chrono::Duration::nanoseconds(nanos));
            times.push(DateTime::<Utc>::UNIX_EPOCH + chrono::Duration::nanoseconds(nanos));
        }
        for at in times {
            let ours = serde_json::to_string(&Stamped(at)).expect("serialises");
            let chronos = serde_json::to_string(&at).expect("serialises");
            assert_eq!(ours, chronos, "{at:?}");
        }
    }

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
