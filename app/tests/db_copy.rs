//! `kubernaut db copy --to postgres://...`, run as an operator runs it: a sandbox's
//! embedded database full of real history is copied into PostgreSQL, every record
//! compared, the tokens still working there; and refused, changing nothing, when the
//! target holds data or cannot be reached.

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use kubernaut::settings::{DatabaseUrl, Settings};
use kubernaut_domain::snapshot::SnapshotBatch;
use kubernaut_postgres::PoolOptions;
use kubernaut_testkit::database::TestDatabase;
use serde_json::{Value, json};

/// Runs `kubernaut dev --seed` on `data_dir`, makes more history through the API (a
/// release deleted, a token revoked), waits for every verdict, and stops it. Returns the
/// admin token it printed.
async fn make_history(data_dir: &Path) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kubernaut"))
        .args([
            "dev",
            "--seed",
            "--bind",
            "127.0.0.1:0",
            "--time-scale",
            "20",
        ])
        .arg("--data-dir")
        .arg(data_dir)
        .env_remove("KUBERNAUT_CONFIG")
        .env("KUBERNAUT__LOG__FILTER", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("kubernaut dev starts");
    let stdout = child.stdout.take().expect("stdout");
    let mut banner = String::new();
    for line in BufReader::new(stdout).lines().map_while(Result::ok) {
        banner.push_str(&line);
        banner.push('\n');
        if line.contains("Ctrl-C stops") {
            break;
        }
    }
    let word_after = |label: &str| {
        banner
            .lines()
            .find_map(|l| l.trim().strip_prefix(label))
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("no {label}: {banner}"))
            .to_owned()
    };
    let url = word_after("Web UI:").trim_end_matches('/').to_owned();
    let token = word_after("Token:");
    let client = reqwest::Client::new();
    let created: Value = client
        .post(format!("{url}/api/releases"))
        .bearer_auth(&token)
        .json(&json!({
            "service": "retired", "version": "1", "image": "registry.local/retired:1",
            "template": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ service }}\n",
            "attributes": {"team": "payments"}, "comment": "to be deleted",
        }))
        .send()
        .await
        .expect("release")
        .json()
        .await
        .expect("JSON");
    let id = created["id"].as_str().expect("id");
    let deleted = client
        .delete(format!("{url}/api/releases/{id}"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("delete");
    assert!(deleted.status().is_success());
    let issued: Value = client
        .post(format!("{url}/api/tokens"))
        .bearer_auth(&token)
        .json(&json!({"name": "revoked-one"}))
        .send()
        .await
        .expect("token")
        .json()
        .await
        .expect("JSON");
    let revoked = client
        .delete(format!(
            "{url}/api/tokens/{}",
            issued["token"]["id"].as_str().expect("token id")
        ))
        .bearer_auth(&token)
        .send()
        .await
        .expect("revoke");
    assert!(revoked.status().is_success());
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let page: Value = client
            .get(format!("{url}/api/deployments"))
            .bearer_auth(&token)
            .send()
            .await
            .expect("deployments")
            .json()
            .await
            .expect("JSON");
        let items = page["items"].as_array().cloned().unwrap_or_default();
        if items.len() == 2
            && items
                .iter()
                .all(|d| ["succeeded", "failed"].contains(&d["status"].as_str().unwrap_or("")))
        {
            break;
        }
        assert!(Instant::now() < deadline, "no verdicts: {page}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    token
}

fn db_copy(data_dir: &Path, to: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kubernaut"))
        .args(["db", "copy", "--to", to, "--data-dir"])
        .arg(data_dir)
        .env_remove("KUBERNAUT_CONFIG")
        .env_remove("KUBERNAUT__DATABASE__URL")
        .env("KUBERNAUT__LOG__FILTER", "warn")
        .output()
        .expect("kubernaut db copy runs")
}

/// Every record of the embedded database, in order.
fn embedded_records(data_dir: &Path) -> Vec<SnapshotBatch> {
    let database = kubernaut_sqlite::SqliteDatabase::open(&data_dir.join("kubernaut.db"))
        .expect("the embedded database opens");
    let mut records = Vec::new();
    database
        .export(1000, &mut |batch| {
            records.push(batch);
            Ok(())
        })
        .expect("export");
    records
}

/// Every record of a PostgreSQL database, in order.
fn postgres_records(url: &str) -> Vec<SnapshotBatch> {
    let database = kubernaut_postgres::Database::connect(url, PoolOptions::default())
        .expect("PostgreSQL answers");
    let mut records = Vec::new();
    database
        .export(1000, &mut |batch| {
            records.push(batch);
            Ok(())
        })
        .expect("export");
    records
}

#[tokio::test]
async fn db_copy_moves_everything_to_postgresql_and_refuses_what_it_cannot_do_cleanly() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let home = tempfile::tempdir().expect("a temporary directory");
    let data_dir = home.path().join("kubernaut");
    let token = make_history(&data_dir).await;
    let source = embedded_records(&data_dir);
    let kinds = |records: &[SnapshotBatch]| -> Vec<&'static str> {
        records
            .iter()
            .map(|batch| match batch {
                SnapshotBatch::Accounts(_) => "accounts",
                SnapshotBatch::Tokens(_) => "tokens",
                SnapshotBatch::Releases(_) => "releases",
                SnapshotBatch::Deployments(_) => "deployments",
                SnapshotBatch::Audit(_) => "audit",
            })
            .collect()
    };
    assert_eq!(
        kinds(&source),
        ["accounts", "tokens", "releases", "deployments", "audit"],
        "the sandbox made history of every kind"
    );

    // An unreachable target: refused, saying so.
    let unreachable = db_copy(&data_dir, "postgres://postgres@127.0.0.1:1/nowhere");
    assert!(!unreachable.status.success());
    let said = String::from_utf8_lossy(&unreachable.stderr);
    assert!(said.contains("could not"), "{said}");

    // The copy: every record, field for field.
    let target = TestDatabase::create().expect("an empty database");
    let copied = db_copy(&data_dir, target.url());
    assert!(
        copied.status.success(),
        "{}",
        String::from_utf8_lossy(&copied.stderr)
    );
    let said = String::from_utf8_lossy(&copied.stderr);
    assert!(
        said.contains("2 tokens") && said.contains("3 releases") && said.contains("2 deployments"),
        "{said}"
    );
    assert_eq!(postgres_records(target.url()), source);
    assert_eq!(
        embedded_records(&data_dir),
        source,
        "the source is unchanged"
    );

    // A target that holds data: refused, and left as it was.
    let again = db_copy(&data_dir, target.url());
    assert!(!again.status.success());
    let said = String::from_utf8_lossy(&again.stderr);
    assert!(said.contains("not empty"), "{said}");
    assert_eq!(postgres_records(target.url()), source);

    // Kubernaut on the copy: the old token works, the history is there.
    let mut settings = Settings::load(None).expect("settings");
    settings.database.url = DatabaseUrl::new(target.url());
    settings.deployments.use_current_kubeconfig_context = false;
    settings.server.bind = "127.0.0.1:0".to_owned();
    let application = kubernaut::Application::build(settings)
        .await
        .expect("Kubernaut serves the copy");
    let url = format!("http://127.0.0.1:{}", application.port());
    tokio::spawn(application.run_until_stopped());
    let deployments: Value = reqwest::Client::new()
        .get(format!("{url}/api/deployments"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("deployments")
        .json()
        .await
        .expect("JSON");
    assert_eq!(
        deployments["items"].as_array().map(Vec::len),
        Some(2),
        "{deployments}"
    );
}
