//! What each client command asks the server, and what it prints.

use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::Path;
use std::time::Duration;

use http::StatusCode;
use serde_json::{Value, json};

use crate::cli::CliError;
use crate::cli::api::{Api, decode, encode};
use crate::cli::args::{
    ClientCommand, DeployArgs, OutputFormat, ReleaseArgs, ReleaseCommand, RollbackArgs, ServerArgs,
    StatusArgs, TokenArgs, TokenCommand, WaitArgs,
};
use crate::cli::follow::follow;
use crate::cli::output::{self, Progress};
use crate::cli::wire::{ApiToken, Deployment, IssuedToken, Page, Release, Status};

/// The rollout timeout the server applies when a deploy does not name one.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);
/// How much longer than the rollout's own timeout the client waits for its verdict.
const VERDICT_GRACE: Duration = Duration::from_secs(120);
/// The most deployments `status` reads (newest first) to find what runs where.
const STATUS_SCAN_PAGES: usize = 10;

pub async fn execute(
    command: ClientCommand,
    cli: impl FnOnce() -> clap::Command,
) -> Result<(), CliError> {
    match command {
        ClientCommand::Completions(args) => {
            let mut command = cli();
            let name = command.get_name().to_owned();
            clap_complete::generate(args.shell, &mut command, name, &mut std::io::stdout());
            Ok(())
        }
        ClientCommand::Release(args) => release(*args).await,
        ClientCommand::Deploy(args) => deploy(*args).await,
        ClientCommand::Rollback(args) => rollback(*args).await,
        ClientCommand::Status(args) => status(*args).await,
        ClientCommand::Wait(args) => wait(*args).await,
        ClientCommand::Token(args) => token(*args).await,
    }
}

/// Whether the output is data for scripts (JSON or YAML) rather than text.
fn is_json(server: &ServerArgs) -> bool {
    server.output != OutputFormat::Text
}

async fn release(args: ReleaseArgs) -> Result<(), CliError> {
    let api = Api::new(&args.server)?;
    let format = args.server.output;
    let json_output = is_json(&args.server);
    match args.command {
        ReleaseCommand::Create {
            service,
            version,
            image,
            template,
            attributes,
            comment,
        } => {
            let template = read_template(&template)?;
            let attributes: BTreeMap<String, String> = attributes.into_iter().collect();
            let body = json!({
                "service": service,
                "version": version,
                "image": image,
                "template": template,
                "attributes": attributes,
                "comment": comment,
            });
            let (status, value) = api.post("/api/releases", Some(&body)).await?;
            if json_output {
                output::data(format, &value);
            } else {
                let release: Release = decode(&value, "release")?;
                let what = if status == StatusCode::CREATED {
                    "created"
                } else {
                    "already registered (identical)"
                };
                output::text(&format!(
                    "release {} {what}: {} {} ({})",
                    release.id, release.service, release.version, release.image
                ));
            }
        }
        ReleaseCommand::List { service, limit } => {
            let mut query = Vec::new();
            if let Some(service) = service {
                query.push(("service", service));
            }
            if let Some(limit) = limit {
                query.push(("limit", limit.to_string()));
            }
            let value = api.get("/api/releases", &query).await?;
            if json_output {
                output::data(format, &value);
            } else {
                let page: Page<Release> = decode(&value, "page of releases")?;
                if page.items.is_empty() {
                    output::text("no releases");
                } else {
                    output::text(&output::release_table(&page.items));
                    if page.next_cursor.is_some() {
                        output::text("(more releases exist: raise --limit)");
                    }
                }
            }
        }
        ReleaseCommand::Show { id } => {
            let value = api
                .get(&format!("/api/releases/{}", encode(&id)), &[])
                .await?;
            if json_output {
                output::data(format, &value);
            } else {
                let release: Release = decode(&value, "release")?;
                output::text(&output::release_details(&release));
            }
        }
        ReleaseCommand::Delete { id } => {
            api.delete(&format!("/api/releases/{}", encode(&id)))
                .await?;
            if json_output {
                output::data(format, &json!({ "id": id, "deleted": true }));
            } else {
                output::text(&format!("release {id} deleted"));
            }
        }
    }
    Ok(())
}

async fn token(args: TokenArgs) -> Result<(), CliError> {
    let api = Api::new(&args.server)?;
    let format = args.server.output;
    let json_output = is_json(&args.server);
    match args.command {
        TokenCommand::Create {
            name,
            account,
            expires_in,
        } => {
            let body = json!({
                "name": name,
                "account": account,
                "expires_in": expires_in.map(|d| d.as_secs()),
            });
            let (_, value) = api.post("/api/tokens", Some(&body)).await?;
            if json_output {
                output::data(format, &value);
            } else {
                let issued: IssuedToken = decode(&value, "token")?;
                // The secret alone on standard output, so `$(kubernaut token create ...)`
                // captures it; what it is goes to standard error.
                output::note(&output::issued_token(&issued.token));
                output::text(&issued.secret);
            }
        }
        TokenCommand::List { account } => {
            let query: Vec<(&str, String)> = account.into_iter().map(|a| ("account", a)).collect();
            let value = api.get("/api/tokens", &query).await?;
            if json_output {
                output::data(format, &value);
            } else {
                // A bare array, or a page of them.
                let items = value.get("items").unwrap_or(&value);
                let tokens: Vec<ApiToken> = decode(items, "list of tokens")?;
                if tokens.is_empty() {
                    output::text("no tokens");
                } else {
                    output::text(&output::token_table(&tokens));
                }
            }
        }
        TokenCommand::Revoke { id } => {
            api.delete(&format!("/api/tokens/{}", encode(&id))).await?;
            if json_output {
                output::data(format, &json!({ "id": id, "revoked": true }));
            } else {
                output::text(&format!("token {id} revoked"));
            }
        }
    }
    Ok(())
}

/// The template file, or standard input for `-`.
fn read_template(path: &Path) -> Result<String, CliError> {
    let unreadable =
        |e: std::io::Error| CliError::Usage(format!("cannot read the template {path:?}: {e}"));
    if path == Path::new("-") {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(unreadable)?;
        Ok(text)
    } else {
        std::fs::read_to_string(path).map_err(unreadable)
    }
}

async fn deploy(args: DeployArgs) -> Result<(), CliError> {
    let api = Api::new(&args.server)?;
    let attributes: BTreeMap<String, String> = args.attributes.into_iter().collect();
    let mut body = json!({
        "service": args.service,
        "version": args.version,
        "cluster": args.cluster,
        "namespace": args.namespace,
        "attributes": attributes,
        "prune": !args.options.no_prune,
        "rollback_on_failure": args.options.rollback_on_failure,
    });
    if let (Some(timeout), Some(body)) = (args.options.timeout, body.as_object_mut()) {
        body.insert("timeout_seconds".to_owned(), json!(timeout.as_secs()));
    }
    let (_, value) = api.post("/api/deployments", Some(&body)).await?;
    if !is_json(&args.server) && simulated_clusters(&api).await.contains(&args.cluster) {
        output::note(&format!(
            "note: {} is a simulated cluster (kubernaut dev): nothing runs anywhere real",
            args.cluster
        ));
    }
    conclude(&api, &args.server, value, args.options.wait).await
}

/// The clusters the server says are simulated (`kubernaut dev`'s sandbox); none when it
/// cannot say (an older server, a failure: this only decorates the output).
async fn simulated_clusters(api: &Api) -> std::collections::BTreeSet<String> {
    let Ok(value) = api.get("/api/clusters", &[]).await else {
        return std::collections::BTreeSet::new();
    };
    value["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|cluster| cluster["simulated"] == json!(true))
        .filter_map(|cluster| cluster["name"].as_str().map(str::to_owned))
        .collect()
}

async fn rollback(args: RollbackArgs) -> Result<(), CliError> {
    let api = Api::new(&args.server)?;
    let id = match (args.deployment, args.service, args.cluster, args.namespace) {
        (Some(id), _, _, _) => id,
        (None, Some(service), Some(cluster), Some(namespace)) => {
            let query = [
                ("service", service.clone()),
                ("cluster", cluster.clone()),
                ("namespace", namespace.clone()),
                ("limit", "1".to_owned()),
            ];
            let value = api.get("/api/deployments", &query).await?;
            let page: Page<Deployment> = decode(&value, "page of deployments")?;
            page.items.into_iter().next().map(|d| d.id).ok_or_else(|| {
                CliError::Usage(format!(
                    "{service} has never been deployed to {cluster}/{namespace}: nothing to roll back"
                ))
            })?
        }
        _ => {
            return Err(CliError::Usage(
                "name --deployment, or --service with --cluster and --namespace".to_owned(),
            ));
        }
    };
    let path = format!("/api/deployments/{}/rollback", encode(&id));
    let (_, value) = api.post(&path, None).await?;
    conclude(&api, &args.server, value, args.wait).await
}

async fn wait(args: WaitArgs) -> Result<(), CliError> {
    let api = Api::new(&args.server)?;
    let path = format!("/api/deployments/{}", encode(&args.deployment));
    let value = api.get(&path, &[]).await?;
    conclude(&api, &args.server, value, true).await
}

/// Reports a requested deployment and, with `wait`, follows it to its verdict and
/// turns the verdict into the outcome.
async fn conclude(
    api: &Api,
    server: &ServerArgs,
    requested: Value,
    wait: bool,
) -> Result<(), CliError> {
    let format = server.output;
    let json_output = is_json(server);
    let deployment: Deployment = decode(&requested, "deployment")?;
    if !wait {
        if json_output {
            output::data(format, &requested);
        } else {
            output::text(&output::deployment_line(&deployment));
        }
        return Ok(());
    }
    let mut progress = Progress::new(json_output);
    progress.note(chrono::Utc::now(), &output::deployment_line(&deployment));
    let budget = deployment
        .timeout_seconds
        .map_or(DEFAULT_TIMEOUT, Duration::from_secs)
        + VERDICT_GRACE;
    let followed = follow(api, &deployment.id, budget, &mut progress).await;
    progress.finish();
    let value = followed?;
    let finished: Deployment = decode(&value, "deployment")?;
    if json_output {
        output::data(format, &value);
    } else {
        output::text(&output::deployment_line(&finished));
        let diagnostics = output::diagnostics(&finished);
        if !diagnostics.is_empty() {
            output::text(&diagnostics);
        }
    }
    match finished.status {
        Status::Succeeded => Ok(()),
        Status::Failed | Status::Cancelled => Err(CliError::DeploymentFailed),
        Status::TimedOut => Err(CliError::TimedOut),
        Status::Queued | Status::Applying | Status::RollingOut => {
            eprintln!(
                "kubernaut: no verdict for deployment {} within {}s",
                finished.id,
                budget.as_secs()
            );
            Err(CliError::TimedOut)
        }
        Status::Unknown => Err(CliError::Server(format!(
            "deployment {} ended in a status this client does not know",
            finished.id
        ))),
    }
}

/// One target's state: the newest deployment and the newest successful one.
#[derive(Debug)]
struct TargetState {
    latest: (Deployment, Value),
    running: Option<(Deployment, Value)>,
}

async fn status(args: StatusArgs) -> Result<(), CliError> {
    let api = Api::new(&args.server)?;
    let mut targets: BTreeMap<(String, String), TargetState> = BTreeMap::new();
    let mut cursor: Option<String> = None;
    for _ in 0..STATUS_SCAN_PAGES {
        let mut query = vec![
            ("service", args.service.clone()),
            ("limit", "500".to_owned()),
        ];
        if let Some(cursor) = cursor.take() {
            query.push(("cursor", cursor));
        }
        let value = api.get("/api/deployments", &query).await?;
        let page: Page<Value> = decode(&value, "page of deployments")?;
        for raw in page.items {
            let deployment: Deployment = decode(&raw, "deployment")?;
            let key = (deployment.cluster.clone(), deployment.namespace.clone());
            let succeeded = deployment.status == Status::Succeeded;
            let state = targets.entry(key).or_insert_with(|| TargetState {
                latest: (deployment.clone(), raw.clone()),
                running: None,
            });
            if succeeded && state.running.is_none() {
                state.running = Some((deployment, raw));
            }
        }
        cursor = page.next_cursor;
        if cursor.is_none() {
            break;
        }
    }
    if is_json(&args.server) {
        let targets: Vec<Value> = targets
            .values()
            .map(|state| {
                json!({
                    "cluster": state.latest.0.cluster,
                    "namespace": state.latest.0.namespace,
                    "running": state.running.as_ref().map(|(_, raw)| raw),
                    "latest": state.latest.1,
                })
            })
            .collect();
        output::data(
            args.server.output,
            &json!({ "service": args.service, "targets": targets }),
        );
        return Ok(());
    }
    if targets.is_empty() {
        output::text(&format!("{} has no deployments", args.service));
        return Ok(());
    }
    let simulated = simulated_clusters(&api).await;
    let rows: Vec<Vec<String>> = targets
        .values()
        .map(|state| {
            let latest = &state.latest.0;
            let running = state.running.as_ref().map(|(d, _)| d);
            let last = match running {
                Some(running) if running.id == latest.id => String::new(),
                _ => {
                    let mut text = format!("{} {}", latest.version, latest.status.as_str());
                    if let Some(reason) = &latest.reason {
                        text.push_str(&format!(" ({reason})"));
                    }
                    text
                }
            };
            let cluster = if simulated.contains(&latest.cluster) {
                format!("{} (simulated)", latest.cluster)
            } else {
                latest.cluster.clone()
            };
            vec![
                cluster,
                latest.namespace.clone(),
                running.map_or_else(|| "-".to_owned(), |d| d.version.clone()),
                running.map_or_else(
                    || "-".to_owned(),
                    |d| output::time(d.finished_at.unwrap_or(d.created_at)),
                ),
                last,
            ]
        })
        .collect();
    output::text(&output::table(
        &["CLUSTER", "NAMESPACE", "VERSION", "SINCE", "LAST DEPLOY"],
        &rows,
    ));
    Ok(())
}
