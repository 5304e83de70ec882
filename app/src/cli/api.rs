//! The HTTP conversation with a Kubernaut server: requests, and answers turned into
//! JSON or a [`CliError`] with the right exit code.

use std::error::Error as _;
use std::fmt::Write as _;
use std::time::Duration;

use reqwest::{Method, RequestBuilder, Response, StatusCode, Url, header};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::cli::CliError;
use crate::cli::args::ServerArgs;
use crate::cli::wire::Problem;

/// How long an ordinary request may take; long polls add their wait to it.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// A server's base URL with the client that talks to it.
#[derive(Debug, Clone)]
pub struct Api {
    http: reqwest::Client,
    base: Url,
    token: Option<String>,
}

impl Api {
    /// # Errors
    /// [`CliError::Usage`] for a URL that does not parse, [`CliError::Server`] when no
    /// HTTP client can be built (no TLS provider).
    pub fn new(server: &ServerArgs) -> Result<Self, CliError> {
        let base = Url::parse(server.url.trim_end_matches('/'))
            .ok()
            .filter(|url| matches!(url.scheme(), "http" | "https") && url.has_host())
            .ok_or_else(|| {
                CliError::Usage(format!(
                    "--url {:?} is not an http:// or https:// URL",
                    server.url
                ))
            })?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("kubernaut-cli/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| CliError::Server(format!("cannot build the HTTP client: {e}")))?;
        let token = server
            .token
            .as_ref()
            .map(|t| t.expose().trim().to_owned())
            .filter(|t| !t.is_empty());
        Ok(Self { http, base, token })
    }

    /// `path` with the server's base (which may itself have a path prefix).
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base.as_str().trim_end_matches('/'))
    }

    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let builder = self.http.request(method, self.url(path));
        match &self.token {
            Some(token) => builder.bearer_auth(token),
            None => builder,
        }
    }

    /// Sends a request, mapping transport failures and problem answers to errors.
    ///
    /// # Errors
    /// [`CliError::Unreachable`] when the server cannot be reached, [`CliError::Usage`]
    /// for 4xx answers, [`CliError::Server`] for anything else that is not a success.
    pub async fn send(
        &self,
        request: RequestBuilder,
        timeout: Duration,
    ) -> Result<Response, CliError> {
        let response = request
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| self.transport_error(&e))?;
        if response.status().is_success() {
            return Ok(response);
        }
        Err(problem_error(response).await)
    }

    /// Sends a request and reads its JSON answer.
    ///
    /// # Errors
    /// As [`Api::send`], and [`CliError::Server`] when the answer is not JSON.
    pub async fn json(&self, request: RequestBuilder) -> Result<(StatusCode, Value), CliError> {
        self.json_within(request, REQUEST_TIMEOUT).await
    }

    /// As [`Api::json`] with a longer time limit (long polls).
    ///
    /// # Errors
    /// As [`Api::json`].
    pub async fn json_within(
        &self,
        request: RequestBuilder,
        timeout: Duration,
    ) -> Result<(StatusCode, Value), CliError> {
        let response = self.send(request, timeout).await?;
        let status = response.status();
        let value = response
            .json::<Value>()
            .await
            .map_err(|e| self.transport_error(&e))?;
        Ok((status, value))
    }

    /// `GET path` as JSON.
    ///
    /// # Errors
    /// As [`Api::json`].
    pub async fn get(&self, path: &str, query: &[(&str, String)]) -> Result<Value, CliError> {
        let request = self.request(Method::GET, path).query(query);
        self.json(request).await.map(|(_, value)| value)
    }

    /// `DELETE path`, expecting no body.
    ///
    /// # Errors
    /// As [`Api::send`].
    pub async fn delete(&self, path: &str) -> Result<(), CliError> {
        self.send(self.request(Method::DELETE, path), REQUEST_TIMEOUT)
            .await
            .map(drop)
    }

    /// A transport failure: unreachable (3) unless the body broke mid-way.
    pub fn transport_error(&self, error: &reqwest::Error) -> CliError {
        let mut message = format!("cannot reach the server at {}: {error}", self.base);
        let mut source = error.source();
        while let Some(cause) = source {
            let _ = write!(message, ": {cause}");
            source = cause.source();
        }
        if error.is_decode() || error.is_body() {
            CliError::Server(format!("the server's answer could not be read: {error}"))
        } else {
            CliError::Unreachable(message)
        }
    }
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
async fn problem_error(response: Response) -> CliError {
    let status = response.status();
    let is_problem = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("json"));
    let text = response.text().await.unwrap_or_default();
    let problem: Option<Problem> = if is_problem {
        serde_json::from_str(&text).ok()
    } else {
        None
    };
    let message = describe(status, problem.as_ref(), &text);
    if status.is_client_error() {
        CliError::Usage(message)
    } else {
        CliError::Server(message)
    }
}

fn describe(status: StatusCode, problem: Option<&Problem>, text: &str) -> String {
    let mut message = format!("the server answered {status}");
    match problem {
        Some(problem) => {
            if let Some(detail) = problem.detail.as_deref().or(problem.title.as_deref()) {
                let _ = write!(message, ": {detail}");
            }
            for error in &problem.errors {
                let _ = write!(message, "\n  {}: {}", error.field, error.reason);
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

    fn server(url: &str) -> ServerArgs {
        ServerArgs {
            url: url.to_owned(),
            token: Some(Token::from("  ".to_owned())),
            output: OutputFormat::Text,
        }
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
    fn urls_keep_a_path_prefix_and_lose_a_trailing_slash() {
        let _provider = rustls::crypto::ring::default_provider().install_default();
        let api = Api::new(&server("https://example.test/kubernaut/")).expect("api");
        assert_eq!(
            api.url("/api/releases"),
            "https://example.test/kubernaut/api/releases"
        );
        assert!(api.token.is_none(), "a blank token is not sent");
    }

    #[test]
    fn a_url_without_http_is_bad_usage() {
        for bad in ["127.0.0.1:8080", "ftp://x", "not a url"] {
            let error = Api::new(&server(bad)).expect_err(bad);
            assert_eq!(error.exit_code(), 2, "{bad}");
        }
    }
}
