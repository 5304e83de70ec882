//! `kubernaut release create | list | show | delete`.

use crate::helpers::spawn_server;

#[tokio::test]
async fn a_release_is_created_listed_shown_and_deleted_in_text() {
    let server = spawn_server().await;
    let template = server.template_file();
    let template = template.to_str().expect("a UTF-8 path");
    let created = server
        .run(&[
            "release",
            "create",
            "--service",
            "web",
            "--version",
            "1.0.0",
            "--image",
            "registry.local/web:1.0.0",
            "--template",
            template,
            "--attr",
            "replicas=2",
            "--attr",
            "team=payments",
            "--comment",
            "built by Jenkins #7",
        ])
        .await;
    created.assert_code(0);
    assert!(created.stdout.contains("created"), "{created:?}");
    let id = created
        .stdout
        .split_whitespace()
        .nth(1)
        .expect("the id follows `release`")
        .to_owned();

    let listed = server.run(&["release", "list", "--service", "web"]).await;
    listed.assert_code(0);
    assert!(listed.stdout.starts_with("ID"), "{listed:?}");
    assert!(
        listed.stdout.contains(&id) && listed.stdout.contains("1.0.0"),
        "{listed:?}"
    );

    let shown = server.run(&["release", "show", &id]).await;
    shown.assert_code(0);
    assert!(shown.stdout.contains("team=payments"), "{shown:?}");
    assert!(shown.stdout.contains("built by Jenkins #7"), "{shown:?}");
    assert!(
        shown.stdout.contains("kind: Deployment"),
        "the template is shown: {shown:?}"
    );

    let deleted = server.run(&["release", "delete", &id]).await;
    deleted.assert_code(0);
    assert!(deleted.stdout.contains("deleted"), "{deleted:?}");
    let gone = server.run(&["release", "show", &id]).await;
    gone.assert_code(2);
    assert!(gone.stderr.contains("404"), "{gone:?}");
    let empty = server.run(&["release", "list"]).await;
    assert_eq!(empty.stdout.trim(), "no releases");
}

#[tokio::test]
async fn release_commands_print_the_servers_json_for_scripts() {
    let server = spawn_server().await;
    let created = server
        .release("api", "2.1.0", "registry.local/api:2.1.0")
        .await;
    let id = created["id"].as_str().expect("an id").to_owned();
    assert_eq!(created["attributes"]["replicas"], "2");

    let listed = server
        .run(&["release", "list", "--limit", "1", "--output", "json"])
        .await;
    listed.assert_code(0);
    let page = listed.json();
    assert_eq!(page["items"][0]["id"], id.as_str());
    assert!(page.get("next_cursor").is_some(), "{page}");

    let shown = server
        .run(&["release", "show", &id, "--output", "json"])
        .await;
    shown.assert_code(0);
    assert!(
        shown.json()["template"]
            .as_str()
            .is_some_and(|t| t.contains("{{ image }}"))
    );

    let deleted = server
        .run(&["release", "delete", &id, "--output", "json"])
        .await;
    deleted.assert_code(0);
    assert_eq!(deleted.json()["deleted"], true);
}

#[tokio::test]
async fn creating_the_same_release_again_is_accepted_as_a_retry() {
    let server = spawn_server().await;
    let first = server.release("web", "1", "registry.local/web:1").await;
    let template = server.template_file();
    let again = server
        .run(&[
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
            "replicas=2",
        ])
        .await;
    again.assert_code(0);
    assert!(again.stdout.contains("already registered"), "{again:?}");
    assert!(
        again.stdout.contains(first["id"].as_str().expect("id")),
        "{again:?}"
    );

    let conflict = server
        .run(&[
            "release",
            "create",
            "--service",
            "web",
            "--version",
            "1",
            "--image",
            "registry.local/web:other",
            "--template",
            template.to_str().expect("UTF-8"),
            "--attr",
            "replicas=2",
        ])
        .await;
    // The version is taken with other content: a conflict (exit 4), not bad usage.
    conflict.assert_code(4);
    assert!(conflict.stderr.contains("409"), "{conflict:?}");
}

#[tokio::test]
async fn an_invalid_release_exits_2_naming_each_field_at_fault() {
    let server = spawn_server().await;
    let template = server.template_file();
    let run = server
        .run(&[
            "release",
            "create",
            "--service",
            "Not_A_Label",
            "--version",
            "1",
            "--image",
            "UPPER CASE:??",
            "--template",
            template.to_str().expect("UTF-8"),
        ])
        .await;
    run.assert_code(2);
    assert!(run.stderr.contains("422"), "{run:?}");
    assert!(run.stderr.contains("\n  service: "), "{run:?}");
    assert!(run.stderr.contains("\n  image: "), "{run:?}");
}

#[tokio::test]
async fn a_template_file_that_cannot_be_read_is_bad_usage() {
    let server = spawn_server().await;
    let run = server
        .run(&[
            "release",
            "create",
            "--service",
            "web",
            "--version",
            "1",
            "--image",
            "web:1",
            "--template",
            "/nonexistent/manifest.yaml",
        ])
        .await;
    run.assert_code(2);
    assert!(run.stderr.contains("cannot read the template"), "{run:?}");
}
