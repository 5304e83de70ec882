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
    CancelArgs, ClientCommand, DeployArgs, DeploymentArgs, DeploymentCommand, OutputFormat,
    PageArgs, ReleaseArgs, ReleaseCommand, RenderArgs, RollbackArgs, ServerArgs, StatusArgs,
    TokenArgs, TokenCommand, WaitArgs,
};
use crate::cli::follow::follow;
use crate::cli::output::{self, Progress};
use crate::cli::wire::{ApiToken, Deployment, IssuedToken, Page, Placement, Release, Status};

/// The rollout timeout the server applies when a deploy does not name one.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);
/// How much longer than the rollout's own timeout the client waits for its verdict.
const VERDICT_GRACE: Duration = Duration::from_secs(120);
/// The page size `--all` asks for: the most the server gives.
const ALL_PAGE_SIZE: u32 = 500;

pub async fn execute(
    command: ClientCommand,
    server: &ServerArgs,
    cli: impl FnOnce() -> clap::Command,
) -> Result<(), CliError> {
    match command {
        ClientCommand::Completions(args) => {
            let mut command = cli();
            let name = command.get_name().to_owned();
            clap_complete::generate(args.shell, &mut command, name, &mut std::io::stdout());
            Ok(())
        }
        ClientCommand::Release(args) => release(*args, server).await,
        ClientCommand::Deploy(args) => deploy(*args, server).await,
        ClientCommand::Rollback(args) => rollback(*args, server).await,
        ClientCommand::Status(args) => status(*args, server).await,
        ClientCommand::Wait(args) => wait(*args, server).await,
        ClientCommand::Cancel(args) => cancel(*args, server).await,
        ClientCommand::Deployment(args) => deployment(*args, server).await,
        ClientCommand::Render(args) => render(*args, server).await,
        ClientCommand::Diff(args) => crate::cli::diff::diff(*args, server).await,
        ClientCommand::Token(args) => token(*args, server).await,
    }
}

/// Whether the output is data for scripts (JSON or YAML) rather than text.
pub fn is_json(server: &ServerArgs) -> bool {
    server.output != OutputFormat::Table
}

/// One page of a listing, or (with `--all`) every page, following `next_cursor`:
/// the items and the cursor of the page after those read (`None` at the end).
///
/// # Errors
/// As [`Api::get`], and [`CliError::Server`] for an answer that is not a page.
pub async fn list_pages(
    api: &Api,
    path: &str,
    mut query: Vec<(&'static str, String)>,
    pages: &PageArgs,
) -> Result<(Vec<Value>, Option<String>), CliError> {
    let limit = pages.limit.or(pages.all.then_some(ALL_PAGE_SIZE));
    if let Some(limit) = limit {
        query.push(("limit", limit.to_string()));
    }
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut asked = query.clone();
        if let Some(cursor) = cursor.take() {
            asked.push(("cursor", cursor));
        }
        let value = api.get(path, &asked).await?;
        let page: Page<Value> = decode(&value, "page")?;
        items.extend(page.items);
        cursor = page.next_cursor;
        if !pages.all || cursor.is_none() {
            return Ok((items, cursor));
        }
    }
}

/// A listing for scripts: the items, and the cursor when more exist.
fn page_value(items: Vec<Value>, next_cursor: Option<String>) -> Value {
    json!({ "items": items, "next_cursor": next_cursor })
}

async fn release(args: ReleaseArgs, server: &ServerArgs) -> Result<(), CliError> {
    let api = Api::new(server)?;
    let format = server.output;
    let json_output = is_json(server);
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
        ReleaseCommand::List { service, pages } => {
            let query: Vec<(&str, String)> = service.into_iter().map(|s| ("service", s)).collect();
            let (items, next) = list_pages(&api, "/api/releases", query, &pages).await?;
            if json_output {
                output::data(format, &page_value(items, next));
            } else {
                let releases: Vec<Release> = decode(&Value::Array(items), "releases")?;
                if releases.is_empty() {
                    output::text("no releases");
                } else {
                    output::text(&output::release_table(&releases));
                }
                if next.is_some() {
                    output::note("(more releases exist: --all lists every one)");
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

async fn token(args: TokenArgs, server: &ServerArgs) -> Result<(), CliError> {
    let api = Api::new(server)?;
    let format = server.output;
    let json_output = is_json(server);
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

async fn deploy(args: DeployArgs, server: &ServerArgs) -> Result<(), CliError> {
    let api = Api::new(server)?;
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
    if !is_json(server) && simulated_clusters(&api).await.contains(&args.cluster) {
        output::note(&format!(
            "note: {} is a simulated cluster (kubernaut dev): nothing runs anywhere real",
            args.cluster
        ));
    }
    conclude(&api, server, value, args.options.wait.waits()).await
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

async fn rollback(args: RollbackArgs, server: &ServerArgs) -> Result<(), CliError> {
    let api = Api::new(server)?;
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
    conclude(&api, server, value, args.wait.waits()).await
}

async fn wait(args: WaitArgs, server: &ServerArgs) -> Result<(), CliError> {
    let api = Api::new(server)?;
    let path = format!("/api/deployments/{}", encode(&args.deployment));
    let value = api.get(&path, &[]).await?;
    conclude(&api, server, value, true).await
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

async fn status(args: StatusArgs, server: &ServerArgs) -> Result<(), CliError> {
    let api = Api::new(server)?;
    let service = args.service().to_owned();
    let mut query = vec![("service", service.clone())];
    if let Some(cluster) = &args.cluster {
        query.push(("cluster", cluster.clone()));
    }
    if let Some(namespace) = &args.namespace {
        query.push(("namespace", namespace.clone()));
    }
    // The server's exact "what runs where": every target, not paged.
    let value = api.get("/api/placements", &query).await?;
    if is_json(server) {
        output::data(server.output, &value);
        return Ok(());
    }
    let placements: Page<Placement> = decode(&value, "list of placements")?;
    if placements.items.is_empty() {
        output::text(&format!("{service} has no deployments"));
        return Ok(());
    }
    let simulated = simulated_clusters(&api).await;
    let rows: Vec<Vec<String>> = placements
        .items
        .iter()
        .map(|placement| {
            let latest = &placement.last;
            let running = placement.running.as_ref();
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
            let cluster = if simulated.contains(&placement.cluster) {
                format!("{} (simulated)", placement.cluster)
            } else {
                placement.cluster.clone()
            };
            vec![
                cluster,
                placement.namespace.clone(),
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

async fn cancel(args: CancelArgs, server: &ServerArgs) -> Result<(), CliError> {
    let api = Api::new(server)?;
    let path = format!("/api/deployments/{}/cancel", encode(&args.deployment));
    let (_, value) = api.post(&path, None).await?;
    if is_json(server) {
        output::data(server.output, &value);
    } else {
        let deployment: Deployment = decode(&value, "deployment")?;
        output::text(&output::deployment_line(&deployment));
    }
    Ok(())
}

async fn deployment(args: DeploymentArgs, server: &ServerArgs) -> Result<(), CliError> {
    let api = Api::new(server)?;
    let format = server.output;
    match args.command {
        DeploymentCommand::List {
            service,
            cluster,
            namespace,
            status,
            pages,
        } => {
            let mut query = Vec::new();
            for (name, value) in [
                ("service", service),
                ("cluster", cluster),
                ("namespace", namespace),
                ("status", status),
            ] {
                if let Some(value) = value {
                    query.push((name, value));
                }
            }
            let (items, next) = list_pages(&api, "/api/deployments", query, &pages).await?;
            if is_json(server) {
                output::data(format, &page_value(items, next));
                return Ok(());
            }
            let deployments: Vec<Deployment> = decode(&Value::Array(items), "deployments")?;
            if deployments.is_empty() {
                output::text("no deployments");
            } else {
                output::text(&output::deployment_table(&deployments));
            }
            if next.is_some() {
                output::note("(more deployments exist: --all lists every one)");
            }
        }
        DeploymentCommand::Show { id } => {
            let value = api
                .get(&format!("/api/deployments/{}", encode(&id)), &[])
                .await?;
            if is_json(server) {
                output::data(format, &value);
            } else {
                let deployment: Deployment = decode(&value, "deployment")?;
                output::text(&output::deployment_details(&deployment));
            }
        }
    }
    Ok(())
}

/// The release a render or diff names: by id, or by service and version.
///
/// # Errors
/// [`CliError::Usage`] when no active release has that service and version.
pub async fn release_id(api: &Api, args: &RenderArgs) -> Result<String, CliError> {
    if let Some(id) = &args.release {
        return Ok(id.clone());
    }
    let service = args.service.clone().unwrap_or_default();
    let version = args.version.clone().unwrap_or_default();
    let query = [
        ("service", service.clone()),
        ("version", version.clone()),
        ("limit", "1".to_owned()),
    ];
    let value = api.get("/api/releases", &query).await?;
    let page: Page<Release> = decode(&value, "page of releases")?;
    page.items.into_iter().next().map(|r| r.id).ok_or_else(|| {
        CliError::Usage(format!(
            "no active release of {service} has the version {version}"
        ))
    })
}

/// The query of the server's preview: the target and the deploy-time attributes.
pub fn preview_query(args: &RenderArgs) -> Vec<(String, String)> {
    let mut query = vec![
        ("cluster".to_owned(), args.cluster.clone()),
        ("namespace".to_owned(), args.namespace.clone()),
    ];
    for (name, value) in &args.attributes {
        query.push((format!("attr.{name}"), value.clone()));
    }
    query
}

async fn render(args: RenderArgs, server: &ServerArgs) -> Result<(), CliError> {
    let api = Api::new(server)?;
    let id = release_id(&api, &args).await?;
    let query = preview_query(&args);
    let query: Vec<(&str, String)> = query.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
    let value = api
        .get(&format!("/api/releases/{}/manifest", encode(&id)), &query)
        .await?;
    match server.output {
        // The objects as the server would apply them.
        OutputFormat::Json => output::data(OutputFormat::Json, &value["objects"]),
        // The manifest as rendered, a multi-document YAML ready for kubectl.
        OutputFormat::Yaml | OutputFormat::Table => {
            let manifest = value["manifest"].as_str().unwrap_or_default();
            output::raw(manifest);
        }
    }
    Ok(())
}
