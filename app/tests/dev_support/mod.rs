//! `kubernaut dev` as a child process, for the tests that use the real binary as a
//! newcomer does: start it, read its banner, wait for verdicts, stop it.

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A running `kubernaut dev --seed`, killed when dropped so that a failing test leaves
/// nothing behind.
pub struct Dev {
    pub child: Child,
    /// The UI's (and the API's) address, as printed.
    pub url: String,
    /// The admin token, as printed.
    pub token: String,
    /// The data directory, as printed.
    pub data_dir: String,
    /// Everything it printed up to its last banner line.
    pub banner: String,
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Dev {
    /// Starts `kubernaut dev --seed` on a free port at time scale 20, with `extra`
    /// arguments, nothing of this machine's (no settings file, no kubeconfig), and reads
    /// its banner.
    pub fn start(extra: &[&std::ffi::OsStr]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_kubernaut"))
            .args([
                "dev",
                "--seed",
                "--bind",
                "127.0.0.1:0",
                "--time-scale",
                "20",
            ])
            .args(extra)
            .env_remove("KUBERNAUT_CONFIG")
            .env_remove("KUBERNAUT_DATA_DIR")
            .env("KUBECONFIG", "/nonexistent")
            .env("KUBERNAUT__LOG__FILTER", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("kubernaut dev starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let (lines, banner_lines) = std::sync::mpsc::channel();
        // Read to the end on a thread of its own: the pipe stays open for as long as
        // the process runs, as a terminal would.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = lines.send(line);
            }
        });
        let mut banner = String::new();
        while let Ok(line) = banner_lines.recv_timeout(Duration::from_secs(60)) {
            banner.push_str(&line);
            banner.push('\n');
            if line.contains("Ctrl-C stops the sandbox") {
                break;
            }
        }
        let field = |label: &str| -> String {
            banner
                .lines()
                .find_map(|l| l.trim().strip_prefix(label))
                .and_then(|rest| rest.split_whitespace().next())
                .unwrap_or_else(|| panic!("no {label} in the banner:\n{banner}"))
                .to_owned()
        };
        let url = field("Web UI:").trim_end_matches('/').to_owned();
        let token = field("Token:");
        let data_dir = field("Data:");
        Self {
            child,
            url,
            token,
            data_dir,
            banner,
        }
    }

    /// Stops it as an operator does (SIGTERM) and waits for it to exit.
    pub fn stop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }

    /// A client that sends the printed token.
    pub fn client(&self) -> reqwest::Client {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            reqwest::header::AUTHORIZATION,
            format!("Bearer {}", self.token).parse().expect("a header"),
        );
        reqwest::Client::builder()
            .default_headers(headers)
            .build()
            .expect("a client")
    }

    /// The deployments `query` lists (`service=hello`, or empty for all), once there are
    /// at least `count` and every one has a verdict.
    pub async fn verdicts(&self, query: &str, count: usize) -> Vec<Value> {
        let client = self.client();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let page: Value = client
                .get(format!("{}/api/deployments?{query}", self.url))
                .send()
                .await
                .expect("deployments")
                .json()
                .await
                .expect("JSON");
            let items = page["items"].as_array().cloned().unwrap_or_default();
            let done = items
                .iter()
                .filter(|d| {
                    ["succeeded", "failed", "timed_out"]
                        .contains(&d["status"].as_str().unwrap_or(""))
                })
                .count();
            if items.len() >= count && done == items.len() {
                return items;
            }
            assert!(Instant::now() < deadline, "no verdicts in time: {page}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}
