//! The client configuration: named contexts (server, token file or command) chosen by
//! `--context` or `KUBERNAUT_CONTEXT`, and client commands that never read the server's
//! settings.

use crate::helpers::{kubernaut_with_env, spawn_server};

#[tokio::test]
async fn a_context_names_the_server_and_where_its_token_comes_from() {
    let server = spawn_server().await;
    let dir = server.scratch.path();
    let token_file = dir.join("token");
    std::fs::write(&token_file, format!("{}\n", server.token)).expect("token written");
    let config = dir.join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "current-context: broken\ncontexts:\n  from-file:\n    server: {url}\n    token-file: {file}\n  from-command:\n    server: {url}\n    token-command: cat {file}\n  broken:\n    server: http://127.0.0.1:9\n",
            url = server.url,
            file = token_file.display()
        ),
    )
    .expect("config written");
    let config = config.to_str().expect("UTF-8");
    let env = |extra: &[(&'static str, &'static str)]| {
        let mut env = vec![("KUBERNAUT_CONFIG", config)];
        env.extend_from_slice(extra);
        env
    };

    // The current context: a server that is not there.
    let run = kubernaut_with_env(&env(&[]), &["release", "list"]).await;
    run.assert_code(3);
    assert!(run.stderr.contains("127.0.0.1:9"), "{run:?}");

    let run = kubernaut_with_env(&env(&[]), &["--context", "from-file", "release", "list"]).await;
    run.assert_code(0);
    assert_eq!(run.stdout.trim(), "no releases", "{run:?}");
    let run = kubernaut_with_env(
        &env(&[("KUBERNAUT_CONTEXT", "from-command")]),
        &["token", "list", "-o", "json"],
    )
    .await;
    run.assert_code(0);

    // A context that does not exist is a usage error naming those that do.
    let run = kubernaut_with_env(&env(&[]), &["--context", "nope", "release", "list"]).await;
    run.assert_code(2);
    assert!(
        run.stderr.contains("broken, from-command, from-file"),
        "{run:?}"
    );

    // The flags win over the context; without a token nothing is allowed.
    let run = kubernaut_with_env(
        &env(&[]),
        &[
            "--context",
            "broken",
            "--url",
            &server.url,
            "release",
            "list",
        ],
    )
    .await;
    run.assert_code(2);
    assert!(run.stderr.contains("not signed in"), "{run:?}");
}

#[tokio::test]
async fn the_default_configuration_lives_under_xdg_config_home() {
    let server = spawn_server().await;
    let home = server.scratch.path().join("xdg");
    std::fs::create_dir_all(home.join("kubernaut")).expect("folder");
    std::fs::write(
        home.join("kubernaut/config.yaml"),
        format!(
            "current-context: here\ncontexts:\n  here:\n    server: {}\n    token-command: echo {}\n",
            server.url, server.token
        ),
    )
    .expect("config written");
    let home = home.to_str().expect("UTF-8");
    let run = kubernaut_with_env(&[("XDG_CONFIG_HOME", home)], &["release", "list"]).await;
    run.assert_code(0);
    assert_eq!(run.stdout.trim(), "no releases", "{run:?}");

    // A configuration that does not parse is refused, naming its field.
    std::fs::write(
        std::path::Path::new(home).join("kubernaut/config.yaml"),
        "contexts:\n  here:\n    sever: x\n",
    )
    .expect("config written");
    let run = kubernaut_with_env(&[("XDG_CONFIG_HOME", home)], &["release", "list"]).await;
    run.assert_code(2);
    assert!(run.stderr.contains("sever"), "{run:?}");
}

#[tokio::test]
async fn client_commands_never_read_the_servers_settings() {
    let server = spawn_server().await;
    let run = kubernaut_with_env(
        &[
            ("KUBERNAUT_URL", &server.url),
            ("KUBERNAUT_TOKEN", &server.token),
            ("KUBERNAUT__SERVER__WORKERS", "many"),
            ("KUBERNAUT__DATABASE__URL", "not a url"),
            ("KUBERNAUT__NO_SUCH__SETTING", "x"),
        ],
        &["release", "list"],
    )
    .await;
    run.assert_code(0);
    assert_eq!(run.stdout.trim(), "no releases", "{run:?}");
    // The same variables do break the server's own commands.
    let run = kubernaut_with_env(&[("KUBERNAUT__SERVER__WORKERS", "many")], &["migrate"]).await;
    run.assert_code(2);
    assert!(run.stderr.contains("invalid settings"), "{run:?}");
}
