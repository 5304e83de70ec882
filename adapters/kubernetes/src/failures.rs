//! Which API failures are worth another try, and how they reach the domain.

use std::future::Future;
use std::time::Duration;

use kubernaut_domain::ports::ClusterError;

use crate::Settings;

/// Whether trying the same request again may succeed: the connection failed, the
/// server was overloaded or failed (5xx, 429), or a request timed out.
pub(crate) fn is_transient(error: &kube::Error) -> bool {
    match error {
        kube::Error::Api(status) => status.code >= 500 || status.code == 429 || status.code == 408,
        kube::Error::HyperError(_) | kube::Error::Service(_) | kube::Error::ReadEvents(_) => true,
        _ => false,
    }
}

/// The HTTP status of an API error, if the server answered.
pub(crate) fn status_code(error: &kube::Error) -> Option<u16> {
    match error {
        kube::Error::Api(status) => Some(status.code),
        _ => None,
    }
}

/// The domain's view of a failed request about `resource` (`Kind/name`).
pub(crate) fn to_cluster_error(error: &kube::Error, resource: &str) -> ClusterError {
    if is_transient(error) {
        return ClusterError::Unavailable(format!("{resource}: {error}"));
    }
    let message = match error {
        kube::Error::Api(status) if !status.message.is_empty() => status.message.clone(),
        other => other.to_string(),
    };
    ClusterError::Rejected {
        resource: resource.to_owned(),
        message,
    }
}

/// Runs `call` until it succeeds, fails for good, or has failed transiently
/// `settings.attempts` times, pausing with exponential backoff in between.
pub(crate) async fn retrying<T, F, Fut>(settings: &Settings, mut call: F) -> Result<T, kube::Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, kube::Error>>,
{
    let mut delay = settings.retry_delay;
    let mut attempt = 1;
    loop {
        let outcome = {
            // Bounded per cluster: a burst of deploys must not open a connection per
            // request at once (HTTP/1.1 has one request in flight per connection).
            let _slot = settings.requests.acquire().await;
            call().await
        };
        match outcome {
            Ok(value) => return Ok(value),
            Err(error) if is_transient(&error) && attempt < settings.attempts => {
                tracing::debug!(%error, attempt, "transient Kubernetes API failure, retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
                attempt += 1;
            }
            Err(error) => return Err(error),
        }
    }
}

#[cfg(test)]
mod tests {
    use kube::core::Status;

    use super::*;

    fn api_error(code: u16, message: &str) -> kube::Error {
        let mut status = Status::failure(message, "Reason");
        status.code = code;
        kube::Error::Api(Box::new(status))
    }

    #[test]
    fn server_failures_and_throttling_are_transient_and_client_errors_are_not() {
        for code in [500, 503, 504, 429] {
            assert!(is_transient(&api_error(code, "x")), "{code}");
        }
        for code in [400, 403, 404, 409, 422] {
            assert!(!is_transient(&api_error(code, "x")), "{code}");
        }
    }

    #[test]
    fn a_refusal_names_the_resource_and_keeps_the_servers_message() {
        let error = to_cluster_error(
            &api_error(422, "spec.replicas: Invalid value"),
            "Deployment/web",
        );
        assert_eq!(
            error,
            ClusterError::Rejected {
                resource: "Deployment/web".into(),
                message: "spec.replicas: Invalid value".into()
            }
        );
        assert!(matches!(
            to_cluster_error(&api_error(503, "busy"), "Deployment/web"),
            ClusterError::Unavailable(_)
        ));
    }
}
