//! `kubernaut db copy --to postgres://...`, run as an operator runs it: a sandbox's
//! embedded database full of real history is copied into PostgreSQL, every record
//! compared, the tokens still working there; and refused, changing nothing, when the
//! target holds data or cannot be reached.

mod dev_support;

use std::path::Path;
use std::process::{Command, Output};

use dev_support::Dev;

use kubernaut::settings::{DatabaseUrl, Settings};
use kubernaut_domain::snapshot::SnapshotBatch;
use kubernaut_postgres::PoolOptions;
use kubernaut_testkit::database::TestDatabase;
use serde_json::{Value, json};

/// Runs `kubernaut dev --seed` on `data_dir`, makes more history through the API (a
/// release deleted, a token revoked), waits for every verdict, and stops it. Returns the
/// admin token it printed.
async fn make_history(data_dir: &Path) -> String {
    let mut dev = Dev::start(&[std::ffi::OsStr::new("--data-dir"), data_dir.as_os_str()]);
    assert_eq!(
        Path::new(&dev.data_dir),
        data_dir,
        "dev keeps its data where --data-dir says: {}",
        dev.banner
    );
    let client = dev.client();
    let url = dev.url.clone();
    let created: Value = client
        .post(format!("{url}/api/releases"))
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
        .send()
        .await
        .expect("delete");
    assert!(deleted.status().is_success());
    let issued: Value = client
        .post(format!("{url}/api/tokens"))
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
        .send()
        .await
        .expect("revoke");
    assert!(revoked.status().is_success());
    let deployments = dev.verdicts("", 2).await;
    assert_eq!(deployments.len(), 2);
    dev.stop();
    dev.token.clone()
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
