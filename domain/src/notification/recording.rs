//! [`NotifyingDeployments`]: the deployment repository that writes each move's
//! notifications into the move's own transaction.

use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::Notify;

use super::{NotificationEvent, NotificationRules};
use crate::audit::AuditEntry;
use crate::deployment::{
    Deployment, DeploymentId, DeploymentQuery, Diagnostics, Fence, Placement, Target,
    TimelineEntry, Transition,
};
use crate::ports::{DeploymentRepository, InsertDeploymentError, RepositoryError};
use crate::release::{ReleaseId, ServiceName};

/// A [`DeploymentRepository`] that adds, to every move a rule asks to be told of
/// (a start, a verdict), one outbox delivery per sink; the repository it wraps stores
/// them in the move's transaction, and only when the move happens. Every other call
/// passes through unchanged. Wakes the local dispatcher after a move with deliveries.
pub struct NotifyingDeployments {
    inner: Arc<dyn DeploymentRepository>,
    rules: Arc<NotificationRules>,
    wake: Arc<Notify>,
}

impl std::fmt::Debug for NotifyingDeployments {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NotifyingDeployments")
            .field("rules", &self.rules)
            .finish_non_exhaustive()
    }
}

impl NotifyingDeployments {
    pub fn new(
        inner: Arc<dyn DeploymentRepository>,
        rules: Arc<NotificationRules>,
        wake: Arc<Notify>,
    ) -> Self {
        Self { inner, rules, wake }
    }
}

/// A failure's reason in a line: the first diagnosed resource's.
fn reason(diagnostics: Option<&Diagnostics>) -> Option<String> {
    let first = diagnostics?.resources.first()?;
    Some(format!(
        "{} {}: {}",
        first.resource,
        first.reason.as_str(),
        first.message
    ))
}

#[async_trait]
impl DeploymentRepository for NotifyingDeployments {
    async fn insert(
        &self,
        deployment: &Deployment,
        audit: &AuditEntry,
    ) -> Result<(), InsertDeploymentError> {
        self.inner.insert(deployment, audit).await
    }

    async fn find(&self, id: DeploymentId) -> Result<Option<Deployment>, RepositoryError> {
        self.inner.find(id).await
    }

    async fn active_objects(
        &self,
        id: DeploymentId,
    ) -> Result<Option<Vec<serde_json::Value>>, RepositoryError> {
        self.inner.active_objects(id).await
    }

    async fn list(
        &self,
        query: &DeploymentQuery,
        limit: usize,
    ) -> Result<Vec<Deployment>, RepositoryError> {
        self.inner.list(query, limit).await
    }

    async fn placements(&self, query: &DeploymentQuery) -> Result<Vec<Placement>, RepositoryError> {
        self.inner.placements(query).await
    }

    async fn newest_per_target(
        &self,
        releases: &[ReleaseId],
    ) -> Result<Vec<Deployment>, RepositoryError> {
        self.inner.newest_per_target(releases).await
    }

    async fn list_active(&self) -> Result<Vec<Deployment>, RepositoryError> {
        self.inner.list_active().await
    }

    async fn transition(
        &self,
        id: DeploymentId,
        transition: &Transition,
    ) -> Result<bool, RepositoryError> {
        let wanted = NotificationEvent::of_status(transition.to)
            .is_some_and(|event| self.rules.wants(event));
        if !wanted {
            return self.inner.transition(id, transition).await;
        }
        // The target, service and release never change, so the deployment read before
        // the move describes it as well as one read after.
        let Some(deployment) = self.inner.find(id).await? else {
            return self.inner.transition(id, transition).await;
        };
        let deliveries = self.rules.deliveries(
            &deployment,
            transition.to,
            transition.at,
            reason(transition.diagnostics.as_ref()),
        );
        if deliveries.is_empty() {
            return self.inner.transition(id, transition).await;
        }
        let mut notifying = transition.clone();
        notifying.notifications.extend(deliveries);
        let moved = self.inner.transition(id, &notifying).await?;
        if moved {
            self.wake.notify_one();
        }
        Ok(moved)
    }

    async fn append_timeline(
        &self,
        id: DeploymentId,
        fence: Option<Fence>,
        entry: &TimelineEntry,
    ) -> Result<bool, RepositoryError> {
        self.inner.append_timeline(id, fence, entry).await
    }

    async fn last_succeeded(
        &self,
        service: &ServiceName,
        target: &Target,
        excluding: Option<ReleaseId>,
    ) -> Result<Option<Deployment>, RepositoryError> {
        self.inner.last_succeeded(service, target, excluding).await
    }
}
