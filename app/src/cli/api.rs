//! The HTTP conversation with a Kubernaut server: requests, and answers turned into
//! JSON or a [`CliError`] with the right exit code.
//!
//! Built on hyper with rustls and the ring provider given explicitly, so the client
//! changes nothing process-wide (no default crypto provider is installed).

use std::error::Error as _;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::header::{
    ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderName, HeaderValue, RETRY_AFTER, USER_AGENT,
};
use http::{Method, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt as _, Full};
use hyper::body::{Bytes, Incoming};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::cli::CliError;
use crate::cli::args::ServerArgs;
use crate::cli::wire::Problem;

/// How long an ordinary request may take; long polls add their wait to it.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Without `Retry-After`, the first wait before asking again after a 429 or 503,
/// doubled each time up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// A server's base URL with the client that talks to it.
#[derive(Clone)]
pub struct Api {
    http: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    /// `scheme://authority/prefix` without a trailing slash.
    base: String,
    token: Option<HeaderValue>,
    /// What is left of the time this command may spend waiting to retry answers of
    /// 429 and 503 (`--retry-budget`), shared by every request of the command.
    retry_budget: Arc<Mutex<Duration>>,
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Api")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

impl Api {
    /// # Errors
    /// [`CliError::Usage`] for a URL that does not parse or a token that cannot be a
    /// header, [`CliError::Server`] when TLS cannot be set up.
    pub fn new(server: &ServerArgs) -> Result<Self, CliError> {
        let base = parse_base(server.url())?;
        let token = match server.token.as_ref().map(|t| t.expose().trim()) {
            None | Some("") => None,
            Some(token) => {
                let mut value =
                    HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
                        CliError::Usage("the token has characters a header cannot carry".to_owned())
                    })?;
                value.set_sensitive(true);
                Some(value)
            }
        };
        let tls = kubernaut_tls::client_config()
            .map_err(|e| CliError::Server(format!("cannot set up TLS: {e}")))?;
        let mut connector = HttpConnector::new();
        connector.enforce_http(false);
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(connector);
        let http = Client::builder(TokioExecutor::new()).build(connector);
        Ok(Self {
            http,
            base,
            token,
            retry_budget: Arc::new(Mutex::new(server.retry_budget)),
        })
    }

    /// `path` with the server's base (which may itself have a path prefix).
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Sends a request, mapping transport failures and problem answers to errors. An
    /// answer of 429 (too many requests) or 503 (unavailable) is retried after the
    /// server's `Retry-After` (seconds or an HTTP date; without one, 1 s doubling up to
    /// 30 s) while the command's retry budget lasts, saying so on standard error.
    ///
    /// # Errors
    /// [`CliError::Unreachable`] when the server cannot be reached, does not answer
    /// within `timeout`, or answers 5xx (or 429 beyond the budget);
    /// [`CliError::Conflict`] for 409; [`CliError::Usage`] for other 4xx answers.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
        timeout: Duration,
    ) -> Result<Response<Incoming>, CliError> {
        self.send_with_headers(method, path, query, body, timeout, &[])
            .await
    }

    /// As [`Api::send`], with more request headers.
    ///
    /// # Errors
    /// As [`Api::send`].
    pub async fn send_with_headers(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
        timeout: Duration,
        headers: &[(HeaderName, HeaderValue)],
    ) -> Result<Response<Incoming>, CliError> {
        let mut backoff = FIRST_BACKOFF;
        loop {
            let response = self
                .send_once(method.clone(), path, query, body, timeout, headers)
                .await?;
            let status = response.status();
            if status.is_success() {
                return Ok(response);
            }
            if !retried(&method, status) {
                return Err(problem_error(response).await);
            }
            let delay = retry_after(response.headers(), chrono::Utc::now()).unwrap_or(backoff);
            backoff = (backoff * 2).min(MAX_BACKOFF);
            let left = self.take_from_budget(delay);
            let Some(left) = left else {
                let error = problem_error(response).await;
                crate::cli::output::note(&format!(
                    "kubernaut: the server answered {status} and asked to wait {}s, more than is left of the retry budget (--retry-budget, KUBERNAUT_RETRY_BUDGET): giving up",
                    delay.as_secs_f64().ceil()
                ));
                return Err(error);
            };
            crate::cli::output::note(&format!(
                "kubernaut: the server answered {status} to {method} {path}; waiting {}s before retrying ({}s of the retry budget left)",
                delay.as_secs_f64().ceil(),
                left.as_secs()
            ));
            drop(response);
            tokio::time::sleep(delay).await;
        }
    }

    /// One `GET path` with `headers`, without retries: `Err` when the server cannot
    /// be reached, `Ok(Err)` with the problem when it answers something other than a
    /// success.
    ///
    /// # Errors
    /// [`CliError::Unreachable`] when the server cannot be reached in `timeout`.
    pub async fn open(
        &self,
        path: &str,
        timeout: Duration,
        headers: &[(HeaderName, HeaderValue)],
    ) -> Result<Result<Response<Incoming>, CliError>, CliError> {
        let response = self
            .send_once(Method::GET, path, &[], None, timeout, headers)
            .await?;
        if response.status().is_success() {
            Ok(Ok(response))
        } else {
            Ok(Err(problem_error(response).await))
        }
    }

    /// Takes `delay` out of the retry budget: what is left after it, or `None` (and
    /// nothing taken) when the budget does not cover it.
    fn take_from_budget(&self, delay: Duration) -> Option<Duration> {
        let mut budget = self.retry_budget.lock().ok()?;
        let left = budget.checked_sub(delay)?;
        *budget = left;
        Some(left)
    }

    /// One attempt of [`Self::send`]: any answer the server gives is returned.
    async fn send_once(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
        timeout: Duration,
        headers: &[(HeaderName, HeaderValue)],
    ) -> Result<Response<Incoming>, CliError> {
        let mut url = self.url(path);
        for (index, (name, value)) in query.iter().enumerate() {
            let separator = if index == 0 { '?' } else { '&' };
            let _ = write!(url, "{separator}{name}={}", encode(value));
        }
        let mut request = Request::builder()
            .method(method)
            .uri(&url)
            .header(
                USER_AGENT,
                concat!("kubernaut-cli/", env!("CARGO_PKG_VERSION")),
            )
            .header(ACCEPT, "application/json, text/event-stream");
        if let Some(token) = &self.token {
            request = request.header(AUTHORIZATION, token.clone());
        }
        for (name, value) in headers {
            request = request.header(name, value);
        }
        let payload = match body {
            Some(body) => {
                request = request.header(CONTENT_TYPE, "application/json");
                Bytes::from(
                    serde_json::to_vec(body)
                        .map_err(|e| CliError::Server(format!("cannot encode the request: {e}")))?,
                )
            }
            None => Bytes::new(),
        };
        let request = request
            .body(Full::new(payload))
            .map_err(|e| CliError::Usage(format!("cannot request {url}: {e}")))?;
        let response = tokio::time::timeout(timeout, self.http.request(request))
            .await
            .map_err(|_| {
                CliError::Unreachable(format!(
                    "the server at {} did not answer within {}s",
                    self.base,
                    timeout.as_secs()
                ))
            })?
            .map_err(|e| self.unreachable(&e))?;
        Ok(response)
    }

    /// Sends a request and reads its JSON answer.
    ///
    /// # Errors
    /// As [`Api::send`], and [`CliError::Server`] when the answer is not JSON.
    pub async fn json(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
        timeout: Duration,
    ) -> Result<(StatusCode, Value), CliError> {
        let response = self.send(method, path, query, body, timeout).await?;
        let status = response.status();
        let bytes = tokio::time::timeout(timeout, response.into_body().collect())
            .await
            .map_err(|_| {
                CliError::Unreachable("the server's answer did not end in time".to_owned())
            })?
            .map_err(|e| CliError::Unreachable(format!("the server's answer broke off: {e}")))?
            .to_bytes();
        let value = serde_json::from_slice(&bytes)
            .map_err(|e| CliError::Server(format!("the server's answer is not JSON: {e}")))?;
        Ok((status, value))
    }

    /// `GET path` as JSON.
    ///
    /// # Errors
    /// As [`Api::json`].
    pub async fn get(&self, path: &str, query: &[(&str, String)]) -> Result<Value, CliError> {
        self.json(Method::GET, path, query, None, REQUEST_TIMEOUT)
            .await
            .map(|(_, value)| value)
    }

    /// `POST path` with a JSON body (or none), answered with JSON.
    ///
    /// # Errors
    /// As [`Api::json`].
    pub async fn post(
        &self,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(StatusCode, Value), CliError> {
        self.json(Method::POST, path, &[], body, REQUEST_TIMEOUT)
            .await
    }

    /// `DELETE path`, expecting no body.
    ///
    /// # Errors
    /// As [`Api::send`].
    pub async fn delete(&self, path: &str) -> Result<(), CliError> {
        self.send(Method::DELETE, path, &[], None, REQUEST_TIMEOUT)
            .await
            .map(drop)
    }

    fn unreachable(&self, error: &hyper_util::client::legacy::Error) -> CliError {
        let mut message = format!("cannot reach the server at {}", self.base);
        let mut cause: Option<&(dyn std::error::Error + 'static)> = error.source();
        if cause.is_none() {
            let _ = write!(message, ": {error}");
        }
        while let Some(next) = cause {
            let _ = write!(message, ": {next}");
            cause = next.source();
        }
        CliError::Unreachable(message)
    }
}

/// The base URL: http or https with a host, any path kept as a prefix.
fn parse_base(text: &str) -> Result<String, CliError> {
    let bad = || CliError::Usage(format!("--url {text:?} is not an http:// or https:// URL"));
    let uri: Uri = text.trim().parse().map_err(|_| bad())?;
    let scheme = uri.scheme_str().filter(|s| matches!(*s, "http" | "https"));
    let (Some(scheme), Some(authority)) = (scheme, uri.authority()) else {
        return Err(bad());
    };
    if uri.query().is_some() {
        return Err(bad());
    }
    Ok(format!(
        "{scheme}://{authority}{}",
        uri.path().trim_end_matches('/')
    ))
}

/// Percent-encodes everything but the unreserved characters: safe in a path segment
/// and in a query value.
pub fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(byte));
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

/// Whether an answer is worth asking again: 429 and 503 (the server refused before
/// doing anything) always; 502 and 504 (a proxy between) only for requests that
/// change nothing, as a POST may have been carried out.
fn retried(method: &Method, status: StatusCode) -> bool {
    match status {
        StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE => true,
        StatusCode::BAD_GATEWAY | StatusCode::GATEWAY_TIMEOUT => {
            matches!(*method, Method::GET | Method::HEAD)
        }
        _ => false,
    }
}

/// How long `Retry-After` asks to wait: delay-seconds, or an HTTP date (RFC 9110:
/// `Sun, 06 Nov 1994 08:49:37 GMT`) counted from `now` (a date past is no wait).
fn retry_after(headers: &http::HeaderMap, now: chrono::DateTime<chrono::Utc>) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    Some(
        (at.with_timezone(&chrono::Utc) - now)
            .to_std()
            .unwrap_or_default(),
    )
}

/// Decodes typed data out of a JSON answer.
///
/// # Errors
/// [`CliError::Server`] when the JSON does not have the expected shape.
pub fn decode<T: DeserializeOwned>(value: &Value, what: &str) -> Result<T, CliError> {
    T::deserialize(value)
        .map_err(|e| CliError::Server(format!("the server sent an unexpected {what}: {e}")))
}

/// A non-success answer as an error naming the problem's detail and every field error.
async fn problem_error(response: Response<Incoming>) -> CliError {
    let status = response.status();
    let is_json = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("json"));
    let bytes = tokio::time::timeout(REQUEST_TIMEOUT, response.into_body().collect())
        .await
        .ok()
        .and_then(Result::ok)
        .map(http_body_util::Collected::to_bytes)
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&bytes);
    let problem: Option<Problem> = if is_json {
        serde_json::from_str(&text).ok()
    } else {
        None
    };
    let message = if status == StatusCode::UNAUTHORIZED {
        not_signed_in(problem.as_ref())
    } else {
        describe(status, problem.as_ref(), &text)
    };
    match status {
        StatusCode::CONFLICT => CliError::Conflict(message),
        // Too many requests even after the retries: Kubernaut is not available to us.
        StatusCode::TOO_MANY_REQUESTS => CliError::Unreachable(message),
        status if status.is_client_error() => CliError::Usage(message),
        _ => CliError::Unreachable(message),
    }
}

/// A 401: no token was sent, or the one sent is unknown, expired or revoked.
fn not_signed_in(problem: Option<&Problem>) -> String {
    let mut message =
        "not signed in: set KUBERNAUT_TOKEN (or --token) to a valid API token".to_owned();
    if let Some(detail) = problem.and_then(|p| p.detail.as_deref()) {
        let _ = write!(message, " (the server said: {detail})");
    }
    message
}

fn describe(status: StatusCode, problem: Option<&Problem>, text: &str) -> String {
    let mut message = format!("the server answered {status}");
    match problem {
        Some(problem) => {
            let lines: Vec<String> = problem
                .errors
                .iter()
                .map(|error| format!("{}: {}", error.field, error.reason))
                .collect();
            // A validation problem's detail repeats its fields on one line: they are
            // shown one per line under the title instead, not twice.
            let detail = problem
                .detail
                .as_deref()
                .filter(|detail| !lines.iter().any(|line| detail.contains(line.as_str())));
            if let Some(headline) = detail.or(problem.title.as_deref()) {
                let _ = write!(message, ": {headline}");
            }
            for line in &lines {
                let _ = write!(message, "\n  {line}");
            }
            if let Some(existing) = &problem.existing_id {
                let _ = write!(message, "\n  existing: {existing}");
            }
        }
        None if !text.trim().is_empty() => {
            let shown: String = text.trim().chars().take(500).collect();
            let _ = write!(message, ": {shown}");
        }
        None => {}
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::args::{OutputFormat, Token};

    fn server(url: &str, token: &str) -> ServerArgs {
        ServerArgs {
            url: Some(url.to_owned()),
            token: Some(Token::from(token.to_owned())),
            context: None,
            output: OutputFormat::Table,
            retry_budget: Duration::from_secs(10),
        }
    }

    #[test]
    fn retry_after_is_read_as_seconds_or_as_an_http_date() {
        let now = chrono::DateTime::parse_from_rfc3339("2026-12-04T10:00:00Z")
            .expect("a time")
            .with_timezone(&chrono::Utc);
        let with = |value: &str| {
            let mut headers = http::HeaderMap::new();
            headers.insert(RETRY_AFTER, HeaderValue::from_str(value).expect("a header"));
            retry_after(&headers, now)
        };
        assert_eq!(with("7"), Some(Duration::from_secs(7)));
        assert_eq!(
            with("Fri, 04 Dec 2026 10:00:42 GMT"),
            Some(Duration::from_secs(42))
        );
        assert_eq!(with("Fri, 04 Dec 2026 09:00:00 GMT"), Some(Duration::ZERO));
        assert_eq!(with("soon"), None);
        assert_eq!(retry_after(&http::HeaderMap::new(), now), None);
    }

    #[test]
    fn the_retry_budget_is_spent_across_requests_and_never_overdrawn() {
        let api = Api::new(&server("http://127.0.0.1:9", "t")).expect("a client");
        let other = api.clone();
        assert_eq!(
            api.take_from_budget(Duration::from_secs(6)),
            Some(Duration::from_secs(4))
        );
        assert_eq!(other.take_from_budget(Duration::from_secs(5)), None);
        assert_eq!(
            other.take_from_budget(Duration::from_secs(4)),
            Some(Duration::ZERO)
        );
    }

    #[test]
    fn each_answer_maps_to_its_exit_code_class() {
        assert!(retried(&Method::POST, StatusCode::SERVICE_UNAVAILABLE));
        assert!(retried(&Method::GET, StatusCode::BAD_GATEWAY));
        assert!(!retried(&Method::POST, StatusCode::BAD_GATEWAY));
        assert!(!retried(&Method::GET, StatusCode::INTERNAL_SERVER_ERROR));
        assert!(!retried(&Method::GET, StatusCode::CONFLICT));
    }

    #[test]
    fn a_problem_is_described_with_its_detail_and_each_field() {
        let problem: Problem = serde_json::from_str(
            r#"{"type":"x","title":"t","status":422,"detail":"bad input","errors":[{"field":"service","reason":"must be a DNS label"}]}"#,
        )
        .expect("problem JSON");
        let text = describe(StatusCode::UNPROCESSABLE_ENTITY, Some(&problem), "");
        assert!(text.contains("422"), "{text}");
        assert!(text.contains("bad input"), "{text}");
        assert!(text.contains("service: must be a DNS label"), "{text}");
    }

    #[test]
    fn a_field_the_detail_already_names_is_not_repeated() {
        let problem: Problem = serde_json::from_str(
            r#"{"type":"x","title":"Invalid input","status":422,"detail":"release_id: no active release matches","errors":[{"field":"release_id","reason":"no active release matches"}]}"#,
        )
        .expect("problem JSON");
        let text = describe(StatusCode::UNPROCESSABLE_ENTITY, Some(&problem), "");
        assert_eq!(
            text.matches("release_id: no active release matches")
                .count(),
            1,
            "{text}"
        );
        assert!(
            text.contains(": Invalid input\n  release_id: no active release matches"),
            "{text}"
        );
    }

    #[test]
    fn a_401_says_how_to_sign_in() {
        let text = not_signed_in(None);
        assert!(
            text.starts_with("not signed in: set KUBERNAUT_TOKEN"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn urls_keep_a_path_prefix_and_lose_a_trailing_slash() {
        let api = Api::new(&server("https://example.test/kubernaut/", "  ")).expect("api");
        assert_eq!(
            api.url("/api/releases"),
            "https://example.test/kubernaut/api/releases"
        );
        assert!(api.token.is_none(), "a blank token is not sent");
        let api = Api::new(&server("http://127.0.0.1:8080", "s3cret")).expect("api");
        assert_eq!(api.url("/healthz"), "http://127.0.0.1:8080/healthz");
        assert!(!format!("{api:?}").contains("s3cret"));
    }

    #[test]
    fn a_url_without_http_is_bad_usage() {
        for bad in [
            "127.0.0.1:8080",
            "ftp://x",
            "not a url",
            "http://x/?a=b",
            "",
        ] {
            let error = parse_base(bad).expect_err(bad);
            assert_eq!(error.exit_code(), 2, "{bad}");
        }
    }

    #[test]
    fn values_cannot_escape_their_path_segment_or_query_value() {
        assert_eq!(encode("0193-ab_c.d~"), "0193-ab_c.d~");
        assert_eq!(encode("../x?y&z=1 é"), "..%2Fx%3Fy%26z%3D1%20%C3%A9");
    }
}
