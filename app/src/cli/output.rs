//! Everything the client prints: tables and reports for people, the server's JSON for
//! scripts, and the live progress of a followed deployment.
#![expect(
    clippy::print_stdout,
    reason = "a command-line client prints its output"
)]

use std::fmt::Write as _;
use std::io::{IsTerminal as _, Write as _};
use std::time::Instant;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::Value;

use crate::cli::args::OutputFormat;
use crate::cli::wire::{ApiToken, Deployment, Release, Status, TimelineEntry};

/// Prints the server's JSON as it came, for scripts: pretty JSON, or the same data as
/// YAML with `--output yaml`.
pub fn data(format: OutputFormat, value: &Value) {
    if format == OutputFormat::Yaml {
        match serde_saphyr::to_string(value) {
            Ok(text) => print!("{text}"),
            Err(_) => println!("{value}"),
        }
        return;
    }
    match serde_json::to_string_pretty(value) {
        Ok(text) => println!("{text}"),
        Err(_) => println!("{value}"),
    }
}

/// Prints text as it is (a manifest), ending it with a newline when it has none.
pub fn raw(text: &str) {
    if text.ends_with('\n') {
        print!("{text}");
    } else {
        println!("{text}");
    }
}

/// Prints text (already ending without a newline) on standard output.
pub fn text(text: &str) {
    println!("{text}");
}

/// Prints a line on standard error: what a command did, next to output a script reads.
pub fn note(text: &str) {
    eprintln!("{text}");
}

/// What a newly issued token is, without its secret.
pub fn issued_token(token: &ApiToken) -> String {
    let expires = token.expires_at.map_or_else(|| "-".to_owned(), time);
    format!(
        "token {} ({}) for {} issued, expires {expires}; its secret follows and is shown only this once",
        token.id, token.name, token.account
    )
}

pub fn token_table(tokens: &[ApiToken]) -> String {
    let optional = |at: Option<DateTime<Utc>>| at.map_or_else(|| "-".to_owned(), time);
    let rows: Vec<Vec<String>> = tokens
        .iter()
        .map(|t| {
            vec![
                t.id.clone(),
                t.account.clone(),
                t.name.clone(),
                t.hint.clone().unwrap_or_default(),
                optional(t.expires_at),
                optional(t.last_used_at),
                t.revoked_at
                    .map_or_else(String::new, |at| format!("revoked {}", time(at))),
            ]
        })
        .collect();
    table(
        &[
            "ID",
            "ACCOUNT",
            "NAME",
            "HINT",
            "EXPIRES",
            "LAST USED",
            "STATE",
        ],
        &rows,
    )
}

pub fn time(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Left-aligned columns under a header, two spaces apart.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut text = String::new();
        for (cell, width) in cells.zip(&widths) {
            let _ = write!(text, "{cell:<width$}  ");
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(&mut header.iter().copied());
    for row in rows {
        line(&mut row.iter().map(String::as_str));
    }
    out.trim_end().to_owned()
}

pub fn release_table(releases: &[Release]) -> String {
    let rows: Vec<Vec<String>> = releases
        .iter()
        .map(|r| {
            vec![
                r.id.clone(),
                r.service.clone(),
                r.version.clone(),
                r.image.clone(),
                time(r.created_at),
            ]
        })
        .collect();
    table(&["ID", "SERVICE", "VERSION", "IMAGE", "CREATED"], &rows)
}

pub fn release_details(release: &Release) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "id:         {}", release.id);
    let _ = writeln!(out, "service:    {}", release.service);
    let _ = writeln!(out, "version:    {}", release.version);
    let _ = writeln!(out, "image:      {}", release.image);
    let _ = writeln!(
        out,
        "created:    {} by {}",
        time(release.created_at),
        release.created_by
    );
    if let Some(comment) = &release.comment {
        let _ = writeln!(out, "comment:    {comment}");
    }
    if !release.attributes.is_empty() {
        let _ = writeln!(out, "attributes:");
        for (name, value) in &release.attributes {
            let _ = writeln!(out, "  {name}={value}");
        }
    }
    if !release.required_variables.is_empty() {
        let _ = writeln!(
            out,
            "a deploy must supply: {}",
            release.required_variables.join(", ")
        );
    }
    if let Some(template) = &release.template {
        let _ = writeln!(out, "template:");
        for line in template.lines() {
            let _ = writeln!(out, "  {line}");
        }
    }
    out.trim_end().to_owned()
}

/// One line about a deployment: what, where, and how it stands.
pub fn deployment_line(deployment: &Deployment) -> String {
    let mut line = format!(
        "deployment {} of {} {} to {}/{}: {}",
        deployment.id,
        deployment.service,
        deployment.version,
        deployment.cluster,
        deployment.namespace,
        deployment.status.as_str()
    );
    if let Some(reason) = &deployment.reason {
        let _ = write!(line, " ({reason})");
    }
    if let Some(of) = &deployment.rollback_of {
        let _ = write!(line, ", rolling back {of}");
    }
    line
}

pub fn deployment_table(deployments: &[Deployment]) -> String {
    let rows: Vec<Vec<String>> = deployments
        .iter()
        .map(|d| {
            let mut status = d.status.as_str().to_owned();
            if let Some(reason) = &d.reason {
                let _ = write!(status, " ({reason})");
            }
            vec![
                d.id.clone(),
                d.service.clone(),
                d.version.clone(),
                d.cluster.clone(),
                d.namespace.clone(),
                status,
                time(d.created_at),
            ]
        })
        .collect();
    table(
        &[
            "ID",
            "SERVICE",
            "VERSION",
            "CLUSTER",
            "NAMESPACE",
            "STATUS",
            "CREATED",
        ],
        &rows,
    )
}

/// A deployment in full: what, where, who, when, its timeline and its diagnostics.
pub fn deployment_details(deployment: &Deployment) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "id:         {}", deployment.id);
    let _ = writeln!(
        out,
        "release:    {} {}",
        deployment.service, deployment.version
    );
    let _ = writeln!(
        out,
        "target:     {}/{}",
        deployment.cluster, deployment.namespace
    );
    let mut status = deployment.status.as_str().to_owned();
    if let Some(reason) = &deployment.reason {
        let _ = write!(status, " ({reason})");
    }
    let _ = writeln!(out, "status:     {status}");
    if let Some(of) = &deployment.rollback_of {
        let _ = writeln!(out, "rolls back: {of}");
    }
    let _ = write!(out, "created:    {}", time(deployment.created_at));
    if let Some(by) = &deployment.requested_by {
        let _ = write!(out, " by {by}");
    }
    out.push('\n');
    if let Some(at) = deployment.finished_at {
        let _ = writeln!(out, "finished:   {}", time(at));
    }
    let timeline = deployment.timeline.as_deref().unwrap_or_default();
    if !timeline.is_empty() {
        let _ = writeln!(out, "timeline:");
        for entry in timeline {
            let what = entry
                .resource
                .as_ref()
                .map_or_else(String::new, |r| format!("{r}: "));
            let _ = writeln!(
                out,
                "  {} [{}] {what}{}",
                time(entry.at),
                entry.phase.as_str(),
                entry.message
            );
        }
    }
    let diagnostics = diagnostics(deployment);
    if !diagnostics.is_empty() {
        let _ = writeln!(out, "diagnostics:");
        for line in diagnostics.lines() {
            let _ = writeln!(out, "  {line}");
        }
    }
    out.trim_end().to_owned()
}

/// Why a deployment failed: per resource the reason, its events and the last log lines
/// of each failing container.
pub fn diagnostics(deployment: &Deployment) -> String {
    let mut out = String::new();
    let Some(diagnostics) = &deployment.diagnostics else {
        return out;
    };
    for resource in &diagnostics.resources {
        let _ = writeln!(
            out,
            "{}/{}: {}: {}",
            resource.resource.kind, resource.resource.name, resource.reason, resource.message
        );
        if !resource.events.is_empty() {
            let _ = writeln!(out, "  events:");
            for event in &resource.events {
                let count = if event.count > 1 {
                    format!(" (x{})", event.count)
                } else {
                    String::new()
                };
                let _ = writeln!(
                    out,
                    "    {} {} {}{count}: {}",
                    event.event_type, event.reason, event.object, event.message
                );
            }
        }
        for logs in &resource.logs {
            let _ = writeln!(
                out,
                "  logs of {}/{} (last {} lines):",
                logs.pod,
                logs.container,
                logs.lines.len()
            );
            for line in &logs.lines {
                let _ = writeln!(out, "    | {line}");
            }
        }
    }
    out.trim_end().to_owned()
}

const SPINNER: [char; 10] = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];

/// The live view of a followed deployment: on a terminal, timeline entries above a
/// spinner line showing the status and elapsed time; elsewhere (CI logs), plain
/// timestamped lines. With JSON output it writes to standard error, keeping standard
/// output for the final JSON.
#[derive(Debug)]
pub struct Progress {
    to_stderr: bool,
    terminal: bool,
    status: Option<Status>,
    started: Instant,
    frame: usize,
    spinner_shown: bool,
}

impl Progress {
    pub fn new(to_stderr: bool) -> Self {
        let terminal = if to_stderr {
            std::io::stderr().is_terminal()
        } else {
            std::io::stdout().is_terminal()
        };
        Self {
            to_stderr,
            terminal,
            status: None,
            started: Instant::now(),
            frame: 0,
            spinner_shown: false,
        }
    }

    fn write(&mut self, text: &str) {
        let result = if self.to_stderr {
            let mut err = std::io::stderr().lock();
            err.write_all(text.as_bytes()).and_then(|()| err.flush())
        } else {
            let mut out = std::io::stdout().lock();
            out.write_all(text.as_bytes()).and_then(|()| out.flush())
        };
        // A closed pipe must not abort the deploy's verdict (the exit code).
        drop(result);
    }

    fn clear_spinner(&mut self) {
        if self.spinner_shown {
            self.write("\r\x1b[2K");
            self.spinner_shown = false;
        }
    }

    /// A line in the progress, timestamped when not on a terminal.
    pub fn note(&mut self, at: DateTime<Utc>, text: &str) {
        if self.terminal {
            self.clear_spinner();
            self.write(&format!("  {text}\n"));
            self.tick();
        } else {
            self.write(&format!("{} {text}\n", time(at)));
        }
    }

    pub fn timeline(&mut self, entry: &TimelineEntry) {
        let text = match &entry.resource {
            Some(resource) => format!("[{}] {resource}: {}", entry.phase.as_str(), entry.message),
            None => format!("[{}] {}", entry.phase.as_str(), entry.message),
        };
        self.note(entry.at, &text);
    }

    pub fn status(&mut self, status: Status) {
        if self.status == Some(status) {
            return;
        }
        self.status = Some(status);
        if self.terminal {
            self.tick();
        } else {
            self.write(&format!(
                "{} status: {}\n",
                time(Utc::now()),
                status.as_str()
            ));
        }
    }

    /// Redraws the spinner line (terminals only).
    pub fn tick(&mut self) {
        if !self.terminal {
            return;
        }
        self.frame = (self.frame + 1) % SPINNER.len();
        let status = self.status.map_or("waiting", Status::as_str);
        let elapsed = self.started.elapsed().as_secs();
        let line = format!(
            "\r\x1b[2K{} {status} ({}m{:02}s)",
            SPINNER[self.frame],
            elapsed / 60,
            elapsed % 60
        );
        self.write(&line);
        self.spinner_shown = true;
    }

    pub fn finish(&mut self) {
        self.clear_spinner();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_lines_up_its_columns() {
        let text = table(
            &["A", "LONGER"],
            &[
                vec!["wide cell".to_owned(), "x".to_owned()],
                vec!["y".to_owned(), "z".to_owned()],
            ],
        );
        assert_eq!(text, "A          LONGER\nwide cell  x\ny          z");
    }

    #[test]
    fn diagnostics_show_the_reason_events_and_log_lines() {
        let deployment: Deployment = serde_json::from_value(serde_json::json!({
            "id": "d1", "service": "web", "version": "1", "cluster": "c", "namespace": "n",
            "status": "failed", "reason": "crash_loop", "created_at": "2026-11-24T12:00:00Z",
            "diagnostics": {"resources": [{
                "resource": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                "reason": "crash_loop", "message": "web keeps crashing",
                "events": [{"type": "Warning", "reason": "BackOff", "message": "Back-off restarting",
                            "object": "Pod/web-1", "count": 4, "at": null}],
                "logs": [{"pod": "web-1", "container": "app", "lines": ["boom"]}]
            }]}
        }))
        .expect("deployment JSON");
        let text = diagnostics(&deployment);
        assert!(
            text.contains("Deployment/web: crash_loop: web keeps crashing"),
            "{text}"
        );
        assert!(
            text.contains("Warning BackOff Pod/web-1 (x4): Back-off restarting"),
            "{text}"
        );
        assert!(text.contains("logs of web-1/app"), "{text}");
        assert!(text.contains("| boom"), "{text}");
    }
}
