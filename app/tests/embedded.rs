//! `kubernaut serve` with no database URL: the embedded SQLite database in the data
//! directory, made private, its first admin token printed once, kept across restarts,
//! and refused to a second process.

use std::io::{BufRead as _, BufReader};
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::json;

/// A `kubernaut serve` process; killed when dropped.
struct Server {
    child: Child,
    port: u16,
    /// What it printed on standard output.
    stdout: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve_command(data_dir: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_kubernaut"));
    command
        .args(["serve", "--data-dir"])
        .arg(data_dir)
        .env_remove("KUBERNAUT_CONFIG")
        .env_remove("KUBERNAUT__DATABASE__URL")
        .env("KUBECONFIG", "/nonexistent")
        .env("KUBERNAUT__SERVER__BIND", "127.0.0.1:0")
        .env("KUBERNAUT__LOG__FILTER", "info")
        .env("KUBERNAUT__LOG__FORMAT", "json")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// Starts `serve` and waits for the log line that gives its port.
fn serve(data_dir: &Path) -> Server {
    let mut child = serve_command(data_dir).spawn().expect("serve starts");
    let stderr = child.stderr.take().expect("stderr");
    let (ports, port) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("kubernaut is serving") {
                let value: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
                let found = value["fields"]["port"]
                    .as_u64()
                    .and_then(|p| u16::try_from(p).ok());
                let _ = ports.send(found);
            }
        }
    });
    let port = port
        .recv_timeout(Duration::from_secs(30))
        .expect("serve says where it listens")
        .expect("a port in the log line");
    // The first-start token, if any, is printed right after the server is up.
    let stdout = child.stdout.take().expect("stdout");
    let (lines, printed) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines.send(line);
        }
    });
    let mut stdout = String::new();
    while let Ok(line) = printed.recv_timeout(Duration::from_millis(700)) {
        stdout.push_str(&line);
        stdout.push('\n');
    }
    Server {
        child,
        port,
        stdout,
    }
}

fn token_in(printed: &str) -> Option<String> {
    printed
        .split_whitespace()
        .find(|word| word.starts_with("knt_"))
        .map(str::to_owned)
}

fn stop(mut server: Server) {
    let pid = server.child.id().to_string();
    let _ = Command::new("kill").args(["-TERM", &pid]).status();
    let _ = server.child.wait();
}

#[tokio::test]
async fn serve_without_postgresql_keeps_its_state_in_a_private_file_and_refuses_a_second_process() {
    let home = tempfile::tempdir().expect("a temporary directory");
    let data_dir = home.path().join("state");
    let server = serve(&data_dir);

    let mode = |path: &Path| {
        std::fs::metadata(path)
            .expect("exists")
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode(&data_dir), 0o700, "the data directory is private");
    assert_eq!(
        mode(&data_dir.join("kubernaut.db")),
        0o600,
        "so is the database"
    );

    // A second process on the same file is refused, saying why.
    let second = serve_command(&data_dir)
        .stdout(Stdio::null())
        .output()
        .expect("a second serve runs");
    assert!(!second.status.success());
    let said = String::from_utf8_lossy(&second.stderr);
    assert!(
        said.contains("another Kubernaut process uses the database") && said.contains("PostgreSQL"),
        "{said}"
    );

    // Note the stdout of the first: a first-start admin token, which works.
    let token = token_in(&server.stdout)
        .unwrap_or_else(|| panic!("the first start prints an admin token: {:?}", server.stdout));
    let client = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{}", server.port);
    let created = client
        .post(format!("{base}/api/releases"))
        .bearer_auth(&token)
        .json(&json!({
            "service": "web", "version": "1", "image": "registry.local/web:1",
            "template": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ service }}\n",
        }))
        .send()
        .await
        .expect("release request");
    assert_eq!(created.status(), 201);
    let id = created.json::<serde_json::Value>().await.expect("JSON")["id"]
        .as_str()
        .expect("an id")
        .to_owned();
    stop(server);

    // Restarted on the same directory: the release and the token are still there, and
    // no second first-start token is printed.
    let again = serve(&data_dir);
    assert!(token_in(&again.stdout).is_none(), "{:?}", again.stdout);
    let found = client
        .get(format!("http://127.0.0.1:{}/api/releases/{id}", again.port))
        .bearer_auth(&token)
        .send()
        .await
        .expect("release request");
    assert_eq!(found.status(), 200);
    stop(again);
}
