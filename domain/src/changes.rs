//! Changes that every replica hears of: a deployment moved or got a timeline line,
//! credentials changed. Long polls (`?wait=`), event streams, the engine's supervisors
//! and the token cache wake on them instead of polling.
//!
//! The [`ChangeFeed`] port carries them. On PostgreSQL the storage announces every
//! change itself (triggers and `LISTEN/NOTIFY`), so a change made through any replica
//! reaches all; [`LocalChanges`] is the in-process feed for a single process (an
//! embedded database, tests).

use tokio::sync::broadcast;

use crate::deployment::{DeploymentId, DeploymentStatus};

/// Something changed that readers may be waiting for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// A deployment changed: its status (given when known) or its timeline.
    Deployment {
        id: DeploymentId,
        status: Option<DeploymentStatus>,
    },
    /// A token was revoked or an account's grants changed.
    Credentials,
    /// Changes may have been missed (the feed lost its connection and is back):
    /// whoever waits should read again.
    Resync,
}

impl Change {
    /// Whether a reader of deployment `id` should read it again.
    pub fn concerns(&self, id: DeploymentId) -> bool {
        match self {
            Self::Deployment { id: changed, .. } => *changed == id,
            Self::Credentials => false,
            Self::Resync => true,
        }
    }
}

/// How changes are announced to every process that serves the same storage.
pub trait ChangeFeed: Send + Sync + 'static {
    /// Every change from now on. A receiver that lags behind gets
    /// [`broadcast::error::RecvError::Lagged`] and should read again, as on
    /// [`Change::Resync`].
    fn subscribe(&self) -> broadcast::Receiver<Change>;

    /// Announces a change this process made. A feed whose storage announces changes
    /// itself (PostgreSQL's triggers) does nothing here.
    fn publish(&self, change: Change);
}

/// The feed of a single process: what is published is what subscribers hear.
#[derive(Debug, Clone)]
pub struct LocalChanges {
    sender: broadcast::Sender<Change>,
}

impl LocalChanges {
    pub fn new() -> Self {
        let (sender, _) = broadcast::channel(4096);
        Self { sender }
    }
}

impl Default for LocalChanges {
    fn default() -> Self {
        Self::new()
    }
}

impl ChangeFeed for LocalChanges {
    fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.sender.subscribe()
    }

    fn publish(&self, change: Change) {
        // Nobody listening is not an error.
        let _ = self.sender.send(change);
    }
}

/// Waits for the next change that concerns deployment `id`, or for a sign that changes
/// were missed (a resync, a lag). A closed feed tells nothing any more: then it waits
/// for ever (callers bound the wait).
pub async fn next_change_of(changes: &mut broadcast::Receiver<Change>, id: DeploymentId) {
    loop {
        match changes.recv().await {
            Ok(change) if change.concerns(id) => return,
            Ok(_) => {}
            Err(broadcast::error::RecvError::Lagged(_)) => return,
            Err(broadcast::error::RecvError::Closed) => std::future::pending::<()>().await,
        }
    }
}

/// Waits for the next change after which deployment `id` may have a verdict: a verdict
/// of its own, or a sign that changes were missed ([`Change::Resync`], a lagging
/// receiver). Timeline lines and steps short of a verdict pass by: a `?wait=` request
/// reads the deployment once at the end instead of after every line (under a burst of
/// a thousand rollouts, each read of a deployment with its timeline and objects was
/// most of the memory the waiting requests held).
pub async fn next_possible_verdict_of(changes: &mut broadcast::Receiver<Change>, id: DeploymentId) {
    loop {
        match changes.recv().await {
            Ok(Change::Deployment {
                id: changed,
                status: Some(status),
            }) if changed == id && status.is_verdict() => return,
            Ok(Change::Resync) | Err(broadcast::error::RecvError::Lagged(_)) => return,
            Ok(_) => {}
            Err(broadcast::error::RecvError::Closed) => std::future::pending::<()>().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_local_feed_tells_subscribers_what_is_published() {
        let feed = LocalChanges::new();
        let mut changes = feed.subscribe();
        let id = DeploymentId::generate();
        feed.publish(Change::Credentials);
        feed.publish(Change::Deployment {
            id,
            status: Some(DeploymentStatus::Cancelled),
        });
        assert_eq!(changes.recv().await.ok(), Some(Change::Credentials));
        assert_eq!(
            changes.recv().await.ok(),
            Some(Change::Deployment {
                id,
                status: Some(DeploymentStatus::Cancelled)
            })
        );
    }

    #[tokio::test]
    async fn waiting_for_one_deployment_skips_changes_of_others() {
        let feed = LocalChanges::new();
        let mut changes = feed.subscribe();
        let id = DeploymentId::generate();
        feed.publish(Change::Deployment {
            id: DeploymentId::generate(),
            status: None,
        });
        feed.publish(Change::Credentials);
        let waiting = tokio::spawn(async move {
            next_change_of(&mut changes, id).await;
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        feed.publish(Change::Deployment { id, status: None });
        tokio::time::timeout(std::time::Duration::from_secs(5), waiting)
            .await
            .expect("woken by the change of its deployment")
            .expect("the waiter ends");
        assert!(Change::Resync.concerns(id));
    }
    #[tokio::test]
    async fn waiting_for_a_verdict_lets_lines_and_steps_pass_but_not_a_resync() {
        let feed = LocalChanges::new();
        let id = DeploymentId::generate();
        let mut changes = feed.subscribe();
        let waiting = tokio::spawn(async move {
            next_possible_verdict_of(&mut changes, id).await;
        });
        feed.publish(Change::Deployment { id, status: None });
        feed.publish(Change::Deployment {
            id,
            status: Some(DeploymentStatus::RollingOut),
        });
        feed.publish(Change::Deployment {
            id: DeploymentId::generate(),
            status: Some(DeploymentStatus::Failed),
        });
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert!(!waiting.is_finished(), "no verdict of its own yet");
        feed.publish(Change::Deployment {
            id,
            status: Some(DeploymentStatus::Succeeded),
        });
        tokio::time::timeout(std::time::Duration::from_secs(5), waiting)
            .await
            .expect("woken by its verdict")
            .expect("the waiter ends");

        let mut changes = feed.subscribe();
        let resynced = tokio::spawn(async move {
            next_possible_verdict_of(&mut changes, id).await;
        });
        tokio::task::yield_now().await;
        feed.publish(Change::Resync);
        tokio::time::timeout(std::time::Duration::from_secs(5), resynced)
            .await
            .expect("woken by a resync: changes may have been missed")
            .expect("the waiter ends");
    }
}
