#![doc = include_str!("../README.md")]

mod challenge;

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use http::header::{ACCEPT, AUTHORIZATION, USER_AGENT, WWW_AUTHENTICATE};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt as _, Empty};
use hyper::body::{Bytes, Incoming};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use kubernaut_domain::ImageRef;
use kubernaut_domain::ports::{ImageLookup, ImageRegistry, RegistryError};

use crate::challenge::Challenge;

/// The manifest media types Kubernaut accepts: whichever the image was pushed as, the
/// registry answers with its digest rather than a `404` for an unacceptable type.
pub const MANIFEST_MEDIA_TYPES: &str = "application/vnd.docker.distribution.manifest.v2+json, \
     application/vnd.docker.distribution.manifest.list.v2+json, \
     application/vnd.oci.image.manifest.v1+json, \
     application/vnd.oci.image.index.v1+json";

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// A password that never reaches a log: `Debug` shows `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    pub fn new(password: impl Into<String>) -> Self {
        Self(password.into())
    }

    /// The password itself, for the `Authorization` header only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"***\"")
    }
}

/// A user name and password for a registry (or its token service).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: Password,
}

impl Credentials {
    fn basic_header(&self) -> Option<HeaderValue> {
        let encoded = BASE64.encode(format!("{}:{}", self.username, self.password.expose()));
        let mut value = HeaderValue::from_str(&format!("Basic {encoded}")).ok()?;
        value.set_sensitive(true);
        Some(value)
    }
}

/// Why a registry's configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum InvalidRegistry {
    #[error("the registry URL {url:?} is not an http:// or https:// URL with a host: {reason}")]
    Url { url: String, reason: String },
    #[error("TLS cannot be set up: {0}")]
    Tls(#[from] rustls::Error),
}

type HttpClient = Client<HttpsConnector<HttpConnector>, Empty<Bytes>>;

/// One registry reached over the Docker Registry HTTP API v2.
#[derive(Clone)]
pub struct DockerRegistry {
    http: HttpClient,
    /// `scheme://authority` without a trailing slash.
    base: String,
    /// The registry part of the image references this registry answers for.
    host: String,
    credentials: Option<Credentials>,
}

impl fmt::Debug for DockerRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DockerRegistry")
            .field("base", &self.base)
            .field("host", &self.host)
            .field("credentials", &self.credentials)
            .finish_non_exhaustive()
    }
}

/// What one manifest request gave.
enum Answer {
    Lookup(ImageLookup),
    Challenged(Vec<Challenge>),
}

impl DockerRegistry {
    /// A registry at `url` (`http://127.0.0.1:5000`, `https://registry.example.com`),
    /// answering for images whose registry part is `host`, or the URL's `host[:port]`
    /// when `host` is `None`.
    ///
    /// # Errors
    /// [`InvalidRegistry`] for a URL that is not http(s) with a host, or when TLS
    /// cannot be set up.
    pub fn new(
        url: &str,
        host: Option<&str>,
        credentials: Option<Credentials>,
    ) -> Result<Self, InvalidRegistry> {
        let invalid = |reason: &str| InvalidRegistry::Url {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        let uri: Uri = url.parse().map_err(|_| invalid("it does not parse"))?;
        let scheme = uri.scheme_str().ok_or_else(|| invalid("no scheme"))?;
        if scheme != "http" && scheme != "https" {
            return Err(invalid("the scheme must be http or https"));
        }
        let authority = uri.authority().ok_or_else(|| invalid("no host"))?;
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err(invalid("the API lives at /v2/ of the host: give no path"));
        }
        let mut connector = HttpConnector::new();
        connector.enforce_http(false);
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(kubernaut_tls::client_config()?)
            .https_or_http()
            .enable_http1()
            .wrap_connector(connector);
        Ok(Self {
            http: Client::builder(TokioExecutor::new()).build(connector),
            base: format!("{scheme}://{authority}"),
            host: host.unwrap_or(authority.as_str()).to_owned(),
            credentials,
        })
    }

    /// The registry part of the image references this registry answers for.
    pub fn host(&self) -> &str {
        &self.host
    }

    fn error(&self, message: impl Into<String>) -> RegistryError {
        RegistryError::new(&self.host, message)
    }

    async fn send(
        &self,
        method: Method,
        url: &str,
        accept: &str,
        authorization: Option<&HeaderValue>,
    ) -> Result<Response<Incoming>, RegistryError> {
        let mut request = Request::builder()
            .method(method)
            .uri(url)
            .header(USER_AGENT, concat!("kubernaut/", env!("CARGO_PKG_VERSION")))
            .header(ACCEPT, accept);
        if let Some(authorization) = authorization {
            request = request.header(AUTHORIZATION, authorization.clone());
        }
        let request = request.body(Empty::new()).map_err(|e| {
            RegistryError::caused_by(&self.host, format!("cannot request {url}"), e)
        })?;
        tokio::time::timeout(REQUEST_TIMEOUT, self.http.request(request))
            .await
            .map_err(|_| {
                self.error(format!(
                    "{url} did not answer within {}s",
                    REQUEST_TIMEOUT.as_secs()
                ))
            })?
            .map_err(|e| RegistryError::caused_by(&self.host, format!("{url} is unreachable"), e))
    }

    async fn head_manifest(
        &self,
        url: &str,
        authorization: Option<&HeaderValue>,
    ) -> Result<Answer, RegistryError> {
        let response = self
            .send(Method::HEAD, url, MANIFEST_MEDIA_TYPES, authorization)
            .await?;
        match response.status() {
            StatusCode::OK => {
                let digest = content_digest(response.headers()).ok_or_else(|| {
                    self.error(format!(
                        "{url} answered without a valid Docker-Content-Digest header"
                    ))
                })?;
                Ok(Answer::Lookup(ImageLookup::Found { digest }))
            }
            StatusCode::NOT_FOUND => Ok(Answer::Lookup(ImageLookup::NotFound)),
            StatusCode::UNAUTHORIZED => Ok(Answer::Challenged(
                response
                    .headers()
                    .get_all(WWW_AUTHENTICATE)
                    .iter()
                    .filter_map(|value| value.to_str().ok())
                    .flat_map(challenge::parse)
                    .collect(),
            )),
            status => Err(self.error(format!("{url} answered {status}"))),
        }
    }

    /// The `Authorization` header that answers `challenges` for `repository`.
    async fn authorize(
        &self,
        challenges: &[Challenge],
        repository: &str,
    ) -> Result<HeaderValue, RegistryError> {
        if let Some(bearer) = challenges.iter().find(|c| c.scheme == "bearer") {
            return self.bearer_token(bearer, repository).await;
        }
        if challenges.iter().any(|c| c.scheme == "basic") {
            return self
                .credentials
                .as_ref()
                .and_then(Credentials::basic_header)
                .ok_or_else(|| {
                    self.error("the registry asks for credentials and none are configured")
                });
        }
        Err(self.error("the registry asks for an authentication scheme Kubernaut does not speak"))
    }

    /// A token from the challenge's realm (the Docker token authentication flow).
    async fn bearer_token(
        &self,
        bearer: &Challenge,
        repository: &str,
    ) -> Result<HeaderValue, RegistryError> {
        let realm = bearer
            .parameter("realm")
            .ok_or_else(|| self.error("the registry's Bearer challenge names no realm"))?;
        let default_scope = format!("repository:{repository}:pull");
        let mut query = Vec::new();
        if let Some(service) = bearer.parameter("service") {
            query.push(format!("service={}", encode(service)));
        }
        query.push(format!(
            "scope={}",
            encode(bearer.parameter("scope").unwrap_or(&default_scope))
        ));
        let separator = if realm.contains('?') { '&' } else { '?' };
        let url = format!("{realm}{separator}{}", query.join("&"));
        let basic = self
            .credentials
            .as_ref()
            .and_then(Credentials::basic_header);
        let response = self
            .send(Method::GET, &url, "application/json", basic.as_ref())
            .await?;
        let status = response.status();
        if !status.is_success() {
            return Err(self.error(format!("the token service {realm} answered {status}")));
        }
        let body = tokio::time::timeout(REQUEST_TIMEOUT, response.into_body().collect())
            .await
            .map_err(|_| self.error(format!("the token service {realm} stopped answering")))?
            .map_err(|e| {
                RegistryError::caused_by(&self.host, format!("reading the token from {realm}"), e)
            })?
            .to_bytes();
        let token = serde_json::from_slice::<TokenAnswer>(&body)
            .ok()
            .and_then(|answer| answer.token.or(answer.access_token))
            .filter(|token| !token.is_empty())
            .ok_or_else(|| self.error(format!("the token service {realm} gave no token")))?;
        let mut value = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
            self.error(format!(
                "the token from {realm} has characters a header cannot carry"
            ))
        })?;
        value.set_sensitive(true);
        Ok(value)
    }
}

/// The token service's answer: `token`, or `access_token` in the OAuth 2 form.
#[derive(serde::Deserialize)]
struct TokenAnswer {
    token: Option<String>,
    access_token: Option<String>,
}

/// The `Docker-Content-Digest` header when it is `algorithm:hex`.
fn content_digest(headers: &HeaderMap) -> Option<String> {
    let digest = headers.get("docker-content-digest")?.to_str().ok()?.trim();
    let (algorithm, hex) = digest.split_once(':')?;
    let valid = !algorithm.is_empty()
        && algorithm
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+._-".contains(&b))
        && hex.len() >= 32
        && hex.bytes().all(|b| b.is_ascii_hexdigit());
    valid.then(|| digest.to_owned())
}

/// Percent-encodes a query value.
fn encode(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

#[async_trait]
impl ImageRegistry for DockerRegistry {
    #[tracing::instrument(skip(self), fields(image = %image))]
    async fn resolve(&self, image: &ImageRef) -> Result<ImageLookup, RegistryError> {
        let reference = image.digest().or(image.tag()).unwrap_or("latest");
        let repository = image.repository();
        let url = format!("{}/v2/{repository}/manifests/{reference}", self.base);
        let challenges = match self.head_manifest(&url, None).await? {
            Answer::Lookup(lookup) => return Ok(lookup),
            Answer::Challenged(challenges) => challenges,
        };
        let authorization = self.authorize(&challenges, repository).await?;
        match self.head_manifest(&url, Some(&authorization)).await? {
            Answer::Lookup(lookup) => Ok(lookup),
            Answer::Challenged(_) => Err(self.error(format!(
                "the registry refused the credentials for {repository}"
            ))),
        }
    }

    fn covers(&self, host: &str) -> bool {
        self.host == host
    }
}

/// Every configured registry; each image is asked of the one that answers for its
/// registry host.
#[derive(Debug, Clone, Default)]
pub struct DockerRegistries {
    registries: Vec<DockerRegistry>,
}

impl DockerRegistries {
    pub fn new(registries: Vec<DockerRegistry>) -> Self {
        Self { registries }
    }

    pub fn is_empty(&self) -> bool {
        self.registries.is_empty()
    }

    fn for_host(&self, host: &str) -> Option<&DockerRegistry> {
        self.registries.iter().find(|r| r.covers(host))
    }
}

#[async_trait]
impl ImageRegistry for DockerRegistries {
    async fn resolve(&self, image: &ImageRef) -> Result<ImageLookup, RegistryError> {
        match self.for_host(image.registry()) {
            Some(registry) => registry.resolve(image).await,
            None => Err(RegistryError::new(
                image.registry(),
                "no registry is configured for this host",
            )),
        }
    }

    fn covers(&self, host: &str) -> bool {
        self.for_host(host).is_some()
    }
}

#[cfg(test)]
mod tests;
