//! Following a deployment to its verdict: the server-sent event stream, reconnected
//! with `Last-Event-ID` whenever it breaks (a restarted or replaced Kubernaut) until
//! the wait's deadline, and a long poll of the deployment when the stream cannot be
//! had at all (a proxy that buffers or refuses it).
//!
//! Every timeline entry is shown once: the stream's ids are entry positions, the
//! server resumes after the one the client names, and the long poll skips what the
//! stream showed.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use eventsource_stream::Eventsource as _;
use futures_util::StreamExt as _;
use http::Method;
use http::header::{CONTENT_TYPE, HeaderName, HeaderValue};
use http_body_util::BodyDataStream;
use serde_json::Value;
use tokio::time::Instant;

use crate::cli::CliError;
use crate::cli::api::{Api, REQUEST_TIMEOUT, decode, encode};
use crate::cli::output::Progress;
use crate::cli::wire::{Deployment, StatusEvent, TimelineEntry};

/// The server comments every 15 s; this much silence means the stream is dead.
const STREAM_IDLE_LIMIT: Duration = Duration::from_secs(45);
/// The longest single long poll.
const LONG_POLL: Duration = Duration::from_secs(60);
/// How many times in a row the stream may be refused with a server error before the
/// follower polls instead (a proxy that cannot stream answers 502 every time).
const REFUSALS_BEFORE_POLLING: u32 = 3;
/// How long to wait before reconnecting until the server says (`retry:`).
const DEFAULT_RECONNECT: Duration = Duration::from_secs(1);
/// The longest wait between reconnections, whatever the server asks.
const MAX_RECONNECT: Duration = Duration::from_secs(10);
const TICK: Duration = Duration::from_millis(120);

/// How a stream of events ended without the verdict.
#[derive(Debug)]
enum StreamEnd {
    /// The verdict event came.
    Verdict,
    /// Broken or unreachable (a restart, a replica replaced, a dropped connection):
    /// worth reconnecting to.
    Broken(CliError),
    /// Answered with a server error (5xx, 429) instead of a stream: worth a few more
    /// tries, then the long poll.
    Refused(CliError),
    /// The endpoint does not give an event stream here: poll instead.
    Unavailable,
}

/// What the follower has shown and how it reconnects.
#[derive(Debug)]
struct Cursor {
    /// The position of the last timeline entry shown (entries count from 1).
    shown: usize,
    /// The wait before reconnecting, as the server last asked.
    reconnect: Duration,
    /// Whether a stream was opened since the follower last said it lost the server.
    opened: bool,
}

/// Follows deployment `id` until its verdict or until `budget` runs out, showing its
/// timeline on `progress`; returns the deployment as the server last showed it, in
/// full (its status tells whether a verdict came).
///
/// # Errors
/// When the server answers with a problem (a 4xx), or cannot be reached when the
/// wait ends.
pub async fn follow(
    api: &Api,
    id: &str,
    budget: Duration,
    progress: &mut Progress,
) -> Result<Value, CliError> {
    let deadline = Instant::now() + budget;
    let path = format!("/api/deployments/{}", encode(id));
    let mut cursor = Cursor {
        shown: 0,
        reconnect: DEFAULT_RECONNECT,
        opened: false,
    };
    let mut streaming = true;
    let mut refusals = 0;
    let mut told_broken = false;
    loop {
        let attempt = if streaming {
            match stream_events(api, &path, deadline, progress, &mut cursor).await {
                StreamEnd::Verdict => Ok(true),
                StreamEnd::Unavailable => {
                    streaming = false;
                    continue;
                }
                StreamEnd::Broken(error) => {
                    refusals = 0;
                    Err(error)
                }
                StreamEnd::Refused(error) => {
                    refusals += 1;
                    if refusals >= REFUSALS_BEFORE_POLLING {
                        streaming = false;
                    }
                    Err(error)
                }
            }
        } else {
            long_poll(api, &path, deadline, progress, &mut cursor).await
        };
        if std::mem::take(&mut cursor.opened) {
            // Connected again: a later outage is told again.
            told_broken = false;
        }
        match attempt {
            Ok(true) => break,
            Ok(false) => {}
            Err(error @ CliError::Unreachable(_)) => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                if !told_broken {
                    progress.note(
                        chrono::Utc::now(),
                        &format!(
                            "lost the server ({}); reconnecting until the wait ends",
                            message(&error)
                        ),
                    );
                    told_broken = true;
                }
                with_ticks(progress, tokio::time::sleep(cursor.reconnect.min(left))).await;
                continue;
            }
            Err(error) => return Err(error),
        }
        told_broken = false;
        if Instant::now() >= deadline {
            break;
        }
    }
    // The verdict (or the end of the wait): the deployment in full, with its
    // diagnostics, read again through short outages until the deadline (and once more).
    loop {
        match with_ticks(
            progress,
            api.json(Method::GET, &path, &[], None, REQUEST_TIMEOUT),
        )
        .await
        {
            Ok((_, value)) => {
                let deployment: Deployment = decode(&value, "deployment")?;
                show_timeline(progress, &deployment, &mut cursor);
                progress.status(deployment.status);
                return Ok(value);
            }
            Err(error @ CliError::Unreachable(_)) if Instant::now() < deadline => {
                drop(error);
                with_ticks(progress, tokio::time::sleep(cursor.reconnect)).await;
            }
            Err(error) => return Err(error),
        }
    }
}

fn message(error: &CliError) -> String {
    match error {
        CliError::Usage(m)
        | CliError::Unreachable(m)
        | CliError::Conflict(m)
        | CliError::Server(m) => m.clone(),
        other => format!("{other:?}"),
    }
}

/// The entries of `deployment`'s timeline after those already shown.
fn show_timeline(progress: &mut Progress, deployment: &Deployment, cursor: &mut Cursor) {
    for entry in deployment.timeline.iter().flatten().skip(cursor.shown) {
        progress.timeline(entry);
        cursor.shown += 1;
    }
}

/// One long poll: `Ok(true)` once the deployment has its verdict.
async fn long_poll(
    api: &Api,
    path: &str,
    deadline: Instant,
    progress: &mut Progress,
    cursor: &mut Cursor,
) -> Result<bool, CliError> {
    let remaining = deadline.saturating_duration_since(Instant::now());
    let wait = remaining.min(LONG_POLL);
    let query = [("wait", wait.as_secs().to_string())];
    let (_, value) = with_ticks(
        progress,
        api.json(
            Method::GET,
            path,
            &query,
            None,
            wait + Duration::from_secs(30),
        ),
    )
    .await?;
    let deployment: Deployment = decode(&value, "deployment")?;
    show_timeline(progress, &deployment, cursor);
    progress.status(deployment.status);
    Ok(deployment.status.is_verdict())
}

/// Reads the event stream (resuming after the entries already shown) until the
/// verdict event, or until it breaks or stays silent too long.
async fn stream_events(
    api: &Api,
    path: &str,
    deadline: Instant,
    progress: &mut Progress,
    cursor: &mut Cursor,
) -> StreamEnd {
    let events = format!("{path}/events");
    let budget = deadline.saturating_duration_since(Instant::now());
    let mut headers = Vec::new();
    if cursor.shown > 0
        && let Ok(value) = HeaderValue::from_str(&cursor.shown.to_string())
    {
        headers.push((HeaderName::from_static("last-event-id"), value));
    }
    // One attempt, no retries: the follower decides what to do next.
    let opened = with_ticks(progress, api.open(&events, budget, &headers)).await;
    let response = match opened {
        Ok(Ok(response)) => response,
        Ok(Err(error @ CliError::Unreachable(_))) => return StreamEnd::Refused(error),
        Err(error) => return StreamEnd::Broken(error),
        // A refusal of the stream (a proxy's 404, an older server): the long poll
        // tells the real problem, if any.
        Ok(Err(_)) => return StreamEnd::Unavailable,
    };
    let is_stream = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    if !is_stream {
        return StreamEnd::Unavailable;
    }
    cursor.opened = true;
    let last_data = Arc::new(Mutex::new(Instant::now()));
    let touched = Arc::clone(&last_data);
    let mut events = BodyDataStream::new(response.into_body())
        .inspect(move |_| {
            if let Ok(mut at) = touched.lock() {
                *at = Instant::now();
            }
        })
        .eventsource();
    let mut ticker = tokio::time::interval(TICK);
    loop {
        tokio::select! {
            event = events.next() => {
                let event = match event {
                    None => return broken("the event stream ended before the verdict"),
                    Some(Err(error)) => return broken(&format!("the event stream broke: {error}")),
                    Some(Ok(event)) => event,
                };
                if let Some(retry) = event.retry {
                    cursor.reconnect = retry.min(MAX_RECONNECT);
                }
                match event.event.as_str() {
                    "timeline" => {
                        let Ok(entry) = serde_json::from_str::<TimelineEntry>(&event.data) else {
                            return broken("an unreadable timeline event");
                        };
                        // The id is the entry's position; without one (an older server)
                        // the next position is assumed.
                        let position = event.id.trim().parse::<usize>().unwrap_or(cursor.shown + 1);
                        if position > cursor.shown {
                            progress.timeline(&entry);
                            cursor.shown = position;
                        }
                    }
                    "status" => {
                        if let Ok(status) = serde_json::from_str::<StatusEvent>(&event.data) {
                            progress.status(status.status);
                        }
                    }
                    "verdict" => return StreamEnd::Verdict,
                    // The stream's credential stopped being valid, or the server could
                    // not read the deployment: the long poll says which.
                    "error" => return StreamEnd::Unavailable,
                    _ => {}
                }
            }
            _ = ticker.tick() => {
                progress.tick();
                let silent = last_data.lock().map_or(Duration::ZERO, |at| at.elapsed());
                if silent > STREAM_IDLE_LIMIT {
                    return broken("the event stream went silent");
                }
                if Instant::now() >= deadline {
                    return broken("no verdict in time");
                }
            }
        }
    }
}

fn broken(message: &str) -> StreamEnd {
    StreamEnd::Broken(CliError::Unreachable(message.to_owned()))
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

#[cfg(test)]
mod tests {
    use eventsource_stream::Eventsource as _;
    use futures_util::StreamExt as _;

    /// The parser the follower relies on reads what the spec allows: CRLF line ends,
    /// `retry:`, ids, comments, and data over several lines.
    #[tokio::test]
    async fn the_event_stream_is_parsed_as_the_spec_says() {
        let chunks: Vec<Result<&[u8], std::convert::Infallible>> = vec![
            Ok(b": keep-alive\r\n\r\nretry: 1500\r\nid: 3\r\nevent: time"),
            Ok(b"line\r\ndata: {\"a\":\r\ndata: 1}\r\n\r\nevent: status\ndata: x\n\n"),
        ];
        let events: Vec<_> = futures_util::stream::iter(chunks)
            .eventsource()
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .map(|e| e.expect("an event"))
            .collect();
        assert_eq!(events.len(), 2, "{events:?}");
        assert_eq!(events[0].event, "timeline");
        assert_eq!(events[0].id, "3");
        assert_eq!(events[0].data, "{\"a\":\n1}");
        assert_eq!(
            events[0].retry,
            Some(std::time::Duration::from_millis(1500))
        );
        assert_eq!(events[1].event, "status");
    }
}
