//! One HTTP client for every sink: hyper with rustls on ring, a timeout per request.

use std::time::Duration;

use http::header::{CONTENT_TYPE, HeaderName, USER_AGENT};
use http::{Method, Request, Uri};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use kubernaut_domain::notification::SinkError;

/// A sink that cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum InvalidSink {
    #[error("{url:?} is not a usable URL: {reason}")]
    Url { url: String, reason: String },
    #[error("{field}: {reason}")]
    Setting { field: String, reason: String },
    #[error("TLS could not be set up")]
    Tls(#[from] rustls::Error),
}

/// What a receiver answered.
pub(crate) struct Answer {
    pub status: u16,
    pub body: Bytes,
}

#[derive(Clone)]
pub(crate) struct Http {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    timeout: Duration,
}

/// `url` if it is an http(s) URL with a host.
pub(crate) fn checked_url(url: &str) -> Result<String, InvalidSink> {
    let invalid = |reason: &str| InvalidSink::Url {
        url: url.to_owned(),
        reason: reason.to_owned(),
    };
    let uri: Uri = url.parse().map_err(|_| invalid("it does not parse"))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err(invalid("the scheme must be http or https")),
    }
    if uri.authority().is_none() {
        return Err(invalid("no host"));
    }
    Ok(url.to_owned())
}

impl Http {
    pub(crate) fn new(timeout: Duration) -> Result<Self, InvalidSink> {
        let mut connector = HttpConnector::new();
        connector.enforce_http(false);
        connector.set_connect_timeout(Some(timeout));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(kubernaut_tls::client_config()?)
            .https_or_http()
            .enable_http1()
            .wrap_connector(connector);
        Ok(Self {
            client: Client::builder(TokioExecutor::new()).build(connector),
            timeout,
        })
    }

    /// Sends one request; the answer whatever its status, or an error when none came
    /// within the timeout.
    pub(crate) async fn send(
        &self,
        method: Method,
        url: &str,
        content_type: &str,
        headers: &[(HeaderName, String)],
        body: Vec<u8>,
    ) -> Result<Answer, SinkError> {
        let mut request = Request::builder()
            .method(method)
            .uri(url)
            .header(USER_AGENT, concat!("kubernaut/", env!("CARGO_PKG_VERSION")))
            .header(CONTENT_TYPE, content_type);
        for (name, value) in headers {
            request = request.header(name, value);
        }
        let request = request
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| SinkError::new(None, format!("cannot build the request: {e}")))?;
        let work = async {
            let response = self.client.request(request).await.map_err(|e| {
                SinkError::new(None, format!("{url} could not be reached: {}", cause(&e)))
            })?;
            let status = response.status().as_u16();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| {
                    SinkError::new(Some(status), format!("reading the answer failed: {e}"))
                })?
                .to_bytes();
            Ok(Answer { status, body })
        };
        tokio::time::timeout(self.timeout, work)
            .await
            .unwrap_or_else(|_| {
                Err(SinkError::new(
                    None,
                    format!(
                        "{url} did not answer within {} ms",
                        self.timeout.as_millis()
                    ),
                ))
            })
    }
}

/// The innermost cause of an error, which says what happened (refused, reset).
fn cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut current = error;
    while let Some(source) = current.source() {
        current = source;
    }
    current.to_string()
}

/// The answer as the sink's result: its status when it is 2xx, else an error with
/// the start of its body.
pub(crate) fn accepted(answer: Answer, receiver: &str) -> Result<u16, SinkError> {
    if (200..300).contains(&answer.status) {
        return Ok(answer.status);
    }
    let text = String::from_utf8_lossy(&answer.body);
    let start: String = text.chars().take(200).collect();
    Err(SinkError::new(
        Some(answer.status),
        format!("{receiver} answered {}: {}", answer.status, start.trim()),
    ))
}
