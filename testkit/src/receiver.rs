//! A local HTTP receiver for notification tests: it records every request it reads
//! (method, path, headers, body, when) and answers each from a script of behaviours
//! (a status, or no answer at all, as a receiver that hangs), then the default.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// How the receiver answers one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Behaviour {
    /// This status with this body.
    Answer(u16, String),
    /// Read the request and never answer (until the client gives up).
    Hang,
}

/// One request as read.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    pub path: String,
    /// Header names in lowercase.
    pub headers: BTreeMap<String, String>,
    pub body: Vec<u8>,
    pub at: Instant,
    /// How it was answered.
    pub behaviour: Behaviour,
}

impl Received {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }

    pub fn accepted(&self) -> bool {
        matches!(self.behaviour, Behaviour::Answer(status, _) if (200..300).contains(&status))
    }
}

#[derive(Debug, Default)]
struct State {
    script: VecDeque<Behaviour>,
    /// Answers for paths (`POST /x`), before the script.
    routes: Vec<(String, Behaviour)>,
    default: Option<Behaviour>,
    received: Vec<Received>,
}

/// The receiver; stops listening when dropped.
#[derive(Debug)]
pub struct Receiver {
    url: String,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Receiver {
    /// Listens on a free local port; answers `script` in order, then `200 ok`.
    pub async fn start(script: Vec<Behaviour>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a local port");
        let url = format!(
            "http://{}",
            listener.local_addr().expect("a listening address")
        );
        let state = Arc::new(Mutex::new(State {
            script: script.into(),
            ..State::default()
        }));
        let shared = Arc::clone(&state);
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let state = Arc::clone(&shared);
                tokio::spawn(async move {
                    let _ = serve(stream, state).await;
                });
            }
        });
        Self { url, state, task }
    }

    /// Its address, `http://127.0.0.1:PORT`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Answers requests of `method` to paths starting with `path` with `behaviour`,
    /// whatever the script says.
    pub fn route(&self, method: &str, path: &str, behaviour: Behaviour) {
        self.lock()
            .routes
            .push((format!("{method} {path}"), behaviour));
    }

    /// What it answers once the script is done (`200 ok` unless set).
    pub fn set_default(&self, behaviour: Behaviour) {
        self.lock().default = Some(behaviour);
    }

    /// Every request read so far, in order.
    pub fn received(&self) -> Vec<Received> {
        self.lock().received.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

async fn serve(stream: TcpStream, state: Arc<Mutex<State>>) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let mut parts = line.split_whitespace();
        let method = parts.next().unwrap_or_default().to_owned();
        let path = parts.next().unwrap_or_default().to_owned();
        let mut headers = BTreeMap::new();
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).await? == 0 {
                return Ok(());
            }
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_owned());
            }
        }
        let length: usize = headers
            .get("content-length")
            .and_then(|l| l.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0; length];
        reader.read_exact(&mut body).await?;
        let behaviour = {
            let mut state = state
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let key = format!("{method} {path}");
            let routed = state
                .routes
                .iter()
                .find(|(route, _)| key.starts_with(route.as_str()))
                .map(|(_, behaviour)| behaviour.clone());
            let behaviour = routed
                .or_else(|| state.script.pop_front())
                .or_else(|| state.default.clone())
                .unwrap_or_else(|| Behaviour::Answer(200, "ok".to_owned()));
            state.received.push(Received {
                method,
                path,
                headers,
                body,
                at: Instant::now(),
                behaviour: behaviour.clone(),
            });
            behaviour
        };
        match behaviour {
            Behaviour::Hang => {
                // Hold the connection until the client closes it.
                let mut rest = Vec::new();
                let _ = reader.read_to_end(&mut rest).await;
                return Ok(());
            }
            Behaviour::Answer(status, text) => {
                let response = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{text}",
                    text.len()
                );
                reader.get_mut().write_all(response.as_bytes()).await?;
            }
        }
    }
}
