//! `kubernaut admin create-token` and `kubernaut token create | list | revoke`, and
//! what the client says when it is not signed in or not allowed.

use crate::helpers::{Run, spawn_server};

/// Runs `kubernaut ARGS` against the server's database (no server URL, no token).
async fn admin(database_url: &str, args: &[&str]) -> Run {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_kubernaut"))
        .args(args)
        .env("KUBERNAUT__DATABASE__URL", database_url)
        .env_remove("KUBERNAUT_TOKEN")
        .env("RUST_LOG", "warn")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .expect("the kubernaut binary runs");
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Standard output is the secret alone.
fn secret_of(run: &Run) -> String {
    run.assert_code(0);
    let secret = run.stdout.trim_end_matches('\n');
    assert!(
        secret.starts_with("knt_") && !secret.contains(char::is_whitespace),
        "only the secret on stdout: {run:?}"
    );
    secret.to_owned()
}

#[tokio::test]
async fn admin_create_token_prints_only_the_secret_and_the_token_works() {
    let server = spawn_server().await;
    let run = admin(
        server.database_url(),
        &[
            "admin",
            "create-token",
            "--name",
            "ci-deployer",
            "--role",
            "deployer",
            "--scope",
            "staging/*",
            "--expires-in",
            "30d",
        ],
    )
    .await;
    let secret = secret_of(&run);
    assert!(run.stderr.contains("ci-deployer"), "{run:?}");
    assert!(run.stderr.contains("staging/*"), "{run:?}");
    assert!(!run.stderr.contains(&secret), "{run:?}");

    // A deployer may read but not register releases: 403 is exit code 2 with the reason.
    server
        .run_as(Some(&secret), &["release", "list"])
        .await
        .assert_code(0);
    let template = server.template_file();
    let refused = server
        .run_as(
            Some(&secret),
            &[
                "release",
                "create",
                "--service",
                "web",
                "--version",
                "1",
                "--image",
                "registry.local/web:1",
                "--template",
                template.to_str().expect("UTF-8"),
                "--attr",
                "replicas=1",
            ],
        )
        .await;
    refused.assert_code(2);
    assert!(refused.stderr.contains("403"), "{refused:?}");
    assert!(refused.stderr.contains("releaser"), "{refused:?}");

    let bad = admin(
        server.database_url(),
        &[
            "admin",
            "create-token",
            "--name",
            "x",
            "--role",
            "viewer",
            "--scope",
            "staging/*",
        ],
    )
    .await;
    assert_ne!(bad.code, 0, "only deployer is scopable: {bad:?}");
    assert!(bad.stdout.is_empty(), "{bad:?}");
}

#[tokio::test]
async fn without_a_token_the_client_says_how_to_sign_in() {
    let server = spawn_server().await;
    let run = server.run_as(None, &["release", "list"]).await;
    run.assert_code(2);
    assert!(
        run.stderr.contains("not signed in: set KUBERNAUT_TOKEN"),
        "{run:?}"
    );
}

#[tokio::test]
async fn tokens_are_created_listed_and_revoked() {
    let server = spawn_server().await;
    let created = server
        .run(&["token", "create", "--name", "laptop", "--expires-in", "7d"])
        .await;
    let secret = secret_of(&created);
    assert!(created.stderr.contains("laptop"), "{created:?}");
    server
        .run_as(Some(&secret), &["release", "list"])
        .await
        .assert_code(0);

    let listed = server.run(&["token", "list"]).await;
    listed.assert_code(0);
    assert!(listed.stdout.contains("laptop"), "{listed:?}");
    assert!(listed.stdout.contains("cli-admin"), "{listed:?}");
    assert!(!listed.stdout.contains(&secret), "{listed:?}");

    let json = server.run(&["token", "list", "--output", "json"]).await;
    json.assert_code(0);
    let value = json.json();
    let items = value.get("items").unwrap_or(&value);
    let id = items
        .as_array()
        .expect("a list of tokens")
        .iter()
        .find(|t| t["name"] == "laptop")
        .and_then(|t| t["id"].as_str())
        .expect("the laptop token's id")
        .to_owned();

    let revoked = server.run(&["token", "revoke", &id]).await;
    revoked.assert_code(0);
    assert!(revoked.stdout.contains("revoked"), "{revoked:?}");
    let refused = server.run_as(Some(&secret), &["release", "list"]).await;
    refused.assert_code(2);
    assert!(refused.stderr.contains("not signed in"), "{refused:?}");
    // Admins issue tokens for other accounts too.
    let other = admin(
        server.database_url(),
        &[
            "admin",
            "create-token",
            "--name",
            "jenkins",
            "--role",
            "releaser",
        ],
    )
    .await;
    secret_of(&other);
    let for_jenkins = server
        .run(&[
            "token",
            "create",
            "--name",
            "second",
            "--account",
            "jenkins",
        ])
        .await;
    secret_of(&for_jenkins);
}
