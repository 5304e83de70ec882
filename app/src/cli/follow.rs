//! Following a deployment to its verdict: the server-sent event stream first, and a
//! long poll of the deployment when the stream breaks.

use std::future::Future;
use std::time::Duration;

use http::Method;
use http_body_util::BodyExt as _;
use serde_json::Value;
use tokio::time::Instant;

use crate::cli::CliError;
use crate::cli::api::{Api, decode, encode};
use crate::cli::output::Progress;
use crate::cli::wire::{Deployment, StatusEvent, TimelineEntry};

/// The server comments every 15 s; this much silence means the stream is dead.
const STREAM_IDLE_LIMIT: Duration = Duration::from_secs(45);
/// The longest single long poll.
const LONG_POLL: Duration = Duration::from_secs(60);
const TICK: Duration = Duration::from_millis(120);

/// Follows deployment `id` until its verdict or until `budget` runs out, showing its
/// timeline on `progress`; returns the deployment as the server last showed it, in
/// full (its status tells whether a verdict came).
///
/// # Errors
/// When the server cannot be reached or answers with a problem.
pub async fn follow(
    api: &Api,
    id: &str,
    budget: Duration,
    progress: &mut Progress,
) -> Result<Value, CliError> {
    let deadline = Instant::now() + budget;
    let path = format!("/api/deployments/{}", encode(id));
    let mut shown = 0;
    // Any stream failure (a proxy that buffers, a dropped connection) falls back to the
    // long poll, which reports the transport errors that matter.
    let _stream_ended = stream_events(api, &path, deadline, progress, &mut shown).await;
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let wait = remaining.min(LONG_POLL);
        let query = [("wait", wait.as_secs().to_string())];
        let value = with_ticks(
            progress,
            api.json(
                Method::GET,
                &path,
                &query,
                None,
                wait + Duration::from_secs(30),
            ),
        )
        .await?
        .1;
        let deployment: Deployment = decode(&value, "deployment")?;
        for entry in deployment.timeline.iter().flatten().skip(shown) {
            progress.timeline(entry);
            shown += 1;
        }
        progress.status(deployment.status);
        if deployment.status.is_verdict() || remaining.is_zero() {
            return Ok(value);
        }
    }
}

/// Reads the event stream until the verdict event (`Ok(())`), or fails when the
/// stream cannot be opened, breaks, or stays silent too long.
async fn stream_events(
    api: &Api,
    path: &str,
    deadline: Instant,
    progress: &mut Progress,
    shown: &mut usize,
) -> Result<(), String> {
    let events = format!("{path}/events");
    let budget = deadline.saturating_duration_since(Instant::now());
    let response = with_ticks(progress, api.send(Method::GET, &events, &[], None, budget))
        .await
        .map_err(|e| format!("{e:?}"))?;
    let mut body = response.into_body();
    let mut buffer: Vec<u8> = Vec::new();
    let mut ticker = tokio::time::interval(TICK);
    let mut last_data = Instant::now();
    let mut timeline_seen = 0usize;
    loop {
        tokio::select! {
            frame = body.frame() => {
                let bytes = match frame {
                    None => return Err("the event stream ended before the verdict".to_owned()),
                    Some(Err(error)) => return Err(error.to_string()),
                    Some(Ok(frame)) => frame.into_data().unwrap_or_default(),
                };
                last_data = Instant::now();
                buffer.extend(bytes.iter().filter(|&&b| b != b'\r'));
                while let Some(event) = take_event(&mut buffer) {
                    match event.name.as_str() {
                        "timeline" => {
                            let entry: TimelineEntry = serde_json::from_str(&event.data)
                                .map_err(|e| format!("unreadable timeline event: {e}"))?;
                            timeline_seen += 1;
                            if timeline_seen > *shown {
                                progress.timeline(&entry);
                                *shown = timeline_seen;
                            }
                        }
                        "status" => {
                            let status: StatusEvent = serde_json::from_str(&event.data)
                                .map_err(|e| format!("unreadable status event: {e}"))?;
                            progress.status(status.status);
                        }
                        "verdict" => return Ok(()),
                        "error" => return Err(event.data),
                        _ => {}
                    }
                }
            }
            _ = ticker.tick() => {
                progress.tick();
                if last_data.elapsed() > STREAM_IDLE_LIMIT {
                    return Err("the event stream went silent".to_owned());
                }
                if Instant::now() >= deadline {
                    return Err("no verdict in time".to_owned());
                }
            }
        }
    }
}

/// Awaits `work` while redrawing the progress spinner.
async fn with_ticks<T>(progress: &mut Progress, work: impl Future<Output = T>) -> T {
    let mut ticker = tokio::time::interval(TICK);
    let mut work = std::pin::pin!(work);
    loop {
        tokio::select! {
            done = &mut work => return done,
            _ = ticker.tick() => progress.tick(),
        }
    }
}

/// One server-sent event.
#[derive(Debug, PartialEq, Eq)]
struct SseEvent {
    name: String,
    data: String,
}

/// Takes the first complete event (ended by a blank line) off the buffer; comments
/// and blocks without data are skipped.
fn take_event(buffer: &mut Vec<u8>) -> Option<SseEvent> {
    loop {
        let end = buffer.windows(2).position(|w| w == b"\n\n")?;
        let block: Vec<u8> = buffer.drain(..end + 2).collect();
        let block = String::from_utf8_lossy(&block);
        let mut name = String::from("message");
        let mut data: Vec<&str> = Vec::new();
        for line in block.lines() {
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "event" => value.clone_into(&mut name),
                "data" => data.push(value),
                _ => {}
            }
        }
        if !data.is_empty() {
            return Some(SseEvent {
                name,
                data: data.join("\n"),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_taken_whole_and_comments_skipped() {
        let mut buffer =
            b": keep-alive\n\nevent: status\ndata: {\"status\":\"applying\"}\n\nevent: verdict\ndata: {"
                .to_vec();
        assert_eq!(
            take_event(&mut buffer),
            Some(SseEvent {
                name: "status".to_owned(),
                data: "{\"status\":\"applying\"}".to_owned()
            })
        );
        assert_eq!(take_event(&mut buffer), None, "the verdict is incomplete");
        buffer.extend_from_slice(b"}\n\n");
        assert_eq!(
            take_event(&mut buffer).map(|e| (e.name, e.data)),
            Some(("verdict".to_owned(), "{}".to_owned()))
        );
        assert!(buffer.is_empty());
    }

    #[test]
    fn data_lines_of_one_event_are_joined() {
        let mut buffer = b"data: a\ndata: b\n\n".to_vec();
        assert_eq!(
            take_event(&mut buffer),
            Some(SseEvent {
                name: "message".to_owned(),
                data: "a\nb".to_owned()
            })
        );
    }
}
