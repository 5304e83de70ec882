//! `kubernaut diff`: a release rendered for a target against the live objects, as
//! the server compares them (`GET /api/releases/{id}/diff`), shown as a unified diff
//! of YAML per object (`live` before, `desired` after), like `kubectl diff`.

use std::fmt::Write as _;

use serde::Deserialize;
use serde_json::Value;

use crate::cli::CliError;
use crate::cli::api::{Api, decode, encode};
use crate::cli::args::{DiffArgs, OutputFormat, ServerArgs};
use crate::cli::commands::{preview_query, release_id};
use crate::cli::output;

#[derive(Debug, Deserialize)]
struct Diff {
    items: Vec<ObjectDiff>,
    changed: bool,
}

#[derive(Debug, Deserialize)]
struct ObjectDiff {
    resource: Resource,
    action: String,
    desired: Value,
    #[serde(default)]
    live: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct Resource {
    kind: String,
    name: String,
    #[serde(default)]
    namespace: Option<String>,
}

pub async fn diff(args: DiffArgs, server: &ServerArgs) -> Result<(), CliError> {
    let render = &args.render;
    let api = Api::new(server)?;
    let id = release_id(&api, render).await?;
    let query = preview_query(render);
    let query: Vec<(&str, String)> = query.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
    let value = api
        .get(&format!("/api/releases/{}/diff", encode(&id)), &query)
        .await?;
    let diff: Diff = decode(&value, "diff")?;
    if server.output == OutputFormat::Table {
        output::raw(&unified(&diff));
    } else {
        output::data(server.output, &value);
    }
    if args.exit_code && diff.changed {
        return Err(CliError::Differs);
    }
    Ok(())
}

fn yaml(value: Option<&Value>) -> String {
    value.map_or_else(String::new, |value| {
        serde_saphyr::to_string(value).unwrap_or_else(|_| value.to_string())
    })
}

/// Each object that would change as a unified diff (live, then desired), and a
/// summary line per object.
fn unified(diff: &Diff) -> String {
    let mut out = String::new();
    for object in &diff.items {
        let name = match &object.resource.namespace {
            Some(namespace) => format!(
                "{}/{} in {namespace}",
                object.resource.kind, object.resource.name
            ),
            None => format!("{}/{}", object.resource.kind, object.resource.name),
        };
        if object.action == "unchanged" {
            continue;
        }
        let live = yaml(object.live.as_ref());
        let desired = yaml(Some(&object.desired));
        let label = format!("{}/{}", object.resource.kind, object.resource.name);
        let text = similar::TextDiff::from_lines(&live, &desired);
        let _ = write!(
            out,
            "{}",
            text.unified_diff()
                .context_radius(3)
                .header(&format!("live/{label}"), &format!("desired/{label}"))
        );
        let _ = writeln!(out, "# {name}: {}", object.action);
    }
    let changes = diff
        .items
        .iter()
        .filter(|o| o.action != "unchanged")
        .count();
    let _ = write!(
        out,
        "{} object(s): {changes} to create or update, {} unchanged",
        diff.items.len(),
        diff.items.len() - changes
    );
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_changed_field_shows_as_a_removed_and_an_added_line() {
        let diff: Diff = serde_json::from_value(json!({
            "changed": true,
            "items": [
                {"resource": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "namespace": "shop"},
                 "action": "update",
                 "desired": {"spec": {"replicas": 3}}, "live": {"spec": {"replicas": 2}}},
                {"resource": {"apiVersion": "v1", "kind": "Service", "name": "web", "namespace": "shop"},
                 "action": "unchanged", "desired": {"a": 1}, "live": {"a": 1}}
            ]
        }))
        .expect("a diff");
        let text = unified(&diff);
        assert!(text.contains("--- live/Deployment/web"), "{text}");
        assert!(text.contains("-  replicas: 2\n+  replicas: 3"), "{text}");
        assert!(!text.contains("Service/web"), "{text}");
        assert!(
            text.ends_with("2 object(s): 1 to create or update, 1 unchanged"),
            "{text}"
        );
    }
}
