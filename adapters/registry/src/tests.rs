//! The HTTP conversation against a fake registry with a Bearer token service (the real
//! `docker-registry` is driven by the app's `registry` test), and the pieces around it.

use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;

use super::*;

const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
const TOKEN: &str = "t0k3n";

/// A registry that wants a Bearer token from its own `/token` realm, which wants the
/// basic credentials `jenkins:s3cret`. Records each request's head.
struct FakeRegistry {
    port: u16,
    requests: Arc<Mutex<Vec<String>>>,
}

impl FakeRegistry {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("address").port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = requests.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let seen = seen.clone();
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buffer = [0_u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut buffer).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buffer[..n]),
                        }
                    }
                    let head = String::from_utf8_lossy(&head).into_owned();
                    let answer = answer(&head, port);
                    seen.lock().expect("lock").push(head);
                    let _ = stream.write_all(answer.as_bytes()).await;
                    let _ = stream.shutdown().await;
                });
            }
        });
        Self { port, requests }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().expect("lock").clone()
    }
}

fn answer(head: &str, port: u16) -> String {
    let request_line = head.lines().next().unwrap_or_default();
    let has = |header: &str| head.lines().any(|line| line.eq_ignore_ascii_case(header));
    let basic = format!("authorization: Basic {}", BASE64.encode("jenkins:s3cret"));
    let bearer = format!("authorization: Bearer {TOKEN}");
    let respond = |status: &str, headers: &str, body: &str| {
        format!(
            "HTTP/1.1 {status}\r\n{headers}content-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
    };
    let path = request_line.split(' ').nth(1).unwrap_or_default();
    if path.starts_with("/token?") {
        let expected_query = "/token?service=fake&scope=repository%3Ateam%2Fhello%3Apull";
        return if path == expected_query && has(&basic) {
            respond(
                "200 OK",
                "content-type: application/json\r\n",
                &format!(r#"{{"token":"{TOKEN}"}}"#),
            )
        } else {
            respond("401 Unauthorized", "", "")
        };
    }
    if path.starts_with("/v2/broken/") {
        return respond("500 Internal Server Error", "", "");
    }
    if !has(&bearer) {
        let challenge = format!(
            "www-authenticate: Bearer realm=\"http://127.0.0.1:{port}/token\",service=\"fake\",scope=\"repository:team/hello:pull\"\r\n"
        );
        return respond("401 Unauthorized", &challenge, "");
    }
    match path {
        "/v2/team/hello/manifests/1.0" => respond(
            "200 OK",
            &format!(
                "docker-content-digest: {DIGEST}\r\ncontent-type: application/vnd.oci.image.manifest.v1+json\r\n"
            ),
            "",
        ),
        _ => respond("404 Not Found", "", ""),
    }
}

fn credentials(password: &str) -> Option<Credentials> {
    Some(Credentials {
        username: "jenkins".into(),
        password: Password::new(password),
    })
}

fn image(text: &str) -> ImageRef {
    ImageRef::parse(text).expect("image reference")
}

#[tokio::test]
async fn the_bearer_challenge_is_answered_with_a_token_from_its_realm() {
    let fake = FakeRegistry::start().await;
    let registry = DockerRegistry::new(&fake.url(), None, credentials("s3cret")).expect("registry");
    let host = format!("127.0.0.1:{}", fake.port);
    assert!(registry.covers(&host));

    let found = registry
        .resolve(&image(&format!("{host}/team/hello:1.0")))
        .await
        .expect("an answer");
    assert_eq!(
        found,
        ImageLookup::Found {
            digest: DIGEST.into()
        }
    );
    let missing = registry
        .resolve(&image(&format!("{host}/team/hello:2.0")))
        .await
        .expect("an answer");
    assert_eq!(missing, ImageLookup::NotFound);

    let requests = fake.requests();
    let manifest_heads: Vec<_> = requests
        .iter()
        .filter(|r| r.starts_with("HEAD /v2/team/hello/manifests/"))
        .collect();
    assert_eq!(manifest_heads.len(), 4, "{requests:#?}");
    for media_type in MANIFEST_MEDIA_TYPES.split(", ") {
        assert!(
            manifest_heads[0].contains(media_type),
            "{media_type} not accepted: {}",
            manifest_heads[0]
        );
    }
}

#[tokio::test]
async fn refused_credentials_make_the_registry_unavailable_not_the_image_missing() {
    let fake = FakeRegistry::start().await;
    let host = format!("127.0.0.1:{}", fake.port);
    for credentials in [credentials("wrong"), None] {
        let registry = DockerRegistry::new(&fake.url(), None, credentials).expect("registry");
        let error = registry
            .resolve(&image(&format!("{host}/team/hello:1.0")))
            .await
            .expect_err("refused");
        assert_eq!(error.registry(), host);
        assert!(error.to_string().contains("token service"), "{error}");
    }
}

#[tokio::test]
async fn server_errors_and_silent_ports_are_registry_errors() {
    let fake = FakeRegistry::start().await;
    let host = format!("127.0.0.1:{}", fake.port);
    let registry = DockerRegistry::new(&fake.url(), None, None).expect("registry");
    let error = registry
        .resolve(&image(&format!("{host}/broken/app:1")))
        .await
        .expect_err("500");
    assert!(error.to_string().contains("500"), "{error}");

    let closed = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = closed.local_addr().expect("address").port();
    drop(closed);
    let registry =
        DockerRegistry::new(&format!("http://127.0.0.1:{port}"), None, None).expect("registry");
    let error = registry
        .resolve(&image(&format!("127.0.0.1:{port}/team/hello:1")))
        .await
        .expect_err("unreachable");
    assert!(error.to_string().contains("unreachable"), "{error}");
}

#[tokio::test]
async fn each_image_is_asked_of_the_registry_of_its_host_and_others_are_not_covered() {
    let a = DockerRegistry::new("https://registry.example.com", None, None).expect("a");
    let b =
        DockerRegistry::new("http://10.0.0.1:5000/", Some("registry.internal"), None).expect("b");
    assert_eq!(a.host(), "registry.example.com");
    assert_eq!(b.host(), "registry.internal");
    let registries = DockerRegistries::new(vec![a, b]);
    assert!(registries.covers("registry.example.com"));
    assert!(registries.covers("registry.internal"));
    assert!(!registries.covers("10.0.0.1:5000"));
    assert!(!registries.covers("docker.io"));
    let error = registries
        .resolve(&image("nginx:1"))
        .await
        .expect_err("not configured");
    assert_eq!(error.registry(), "docker.io");
}

#[test]
fn registry_urls_must_be_http_or_https_with_a_host_and_no_path() {
    for url in [
        "ftp://registry",
        "registry.example.com",
        "https://registry.example.com/v2/",
        "http://",
        "",
    ] {
        assert!(DockerRegistry::new(url, None, None).is_err(), "{url}");
    }
}

#[test]
fn passwords_never_show_in_debug_output() {
    let registry =
        DockerRegistry::new("https://registry.example.com", None, credentials("hunter2"))
            .expect("registry");
    let shown = format!("{registry:?}");
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(shown.contains("jenkins"), "{shown}");
}

#[test]
fn only_well_formed_content_digests_are_taken() {
    let mut headers = HeaderMap::new();
    assert_eq!(content_digest(&headers), None);
    headers.insert("docker-content-digest", HeaderValue::from_static(DIGEST));
    assert_eq!(content_digest(&headers).as_deref(), Some(DIGEST));
    for bad in ["sha256:", "sha256:xyz", "nocolon", ":abcd"] {
        headers.insert("docker-content-digest", HeaderValue::from_static(bad));
        assert_eq!(content_digest(&headers), None, "{bad}");
    }
}

#[test]
fn query_values_are_percent_encoded() {
    assert_eq!(
        encode("repository:team/hello:pull,push"),
        "repository%3Ateam%2Fhello%3Apull%2Cpush"
    );
    assert_eq!(encode("registry.docker.io"), "registry.docker.io");
}
