//! [`LeaseRepository`] on SQLite: the lease columns of `deployments`.
//!
//! SQLite serialises writers (each claim is a `BEGIN IMMEDIATE` transaction), so two
//! claimers never acquire one deployment: the second sees the first's lease. Expiries
//! are on this process's clock, which is the storage's clock here: one process uses the
//! file.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{NaiveDate, TimeDelta, Utc};
use diesel::prelude::*;
use diesel::result::Error as DieselError;
use diesel::sql_types::{BigInt, Text};
use kubernaut_domain::deployment::{DeploymentId, Fence};
use kubernaut_domain::lease::{ClaimedDeployment, InstanceId};
use kubernaut_domain::ports::{LeaseRepository, RepositoryError};

use crate::blocking::{query_failed, with_connection};
use crate::database::SqliteDatabase;
use crate::deployment_repository::load_whole;
use crate::sql::{ACTIVE_STATUSES, Bind, json_list, parse_uuid, statement, time_text, uuid_text};

#[derive(Debug, QueryableByName)]
struct Leased {
    #[diesel(sql_type = Text)]
    id: String,
    #[diesel(sql_type = BigInt)]
    lease_fence: i64,
}

/// The leases of the deployments in the `deployments` table.
#[derive(Debug, Clone)]
pub struct SqliteLeaseRepository {
    database: SqliteDatabase,
}

/// Now and `ttl` from now, as the lease columns store times. An expiry past the year
/// 9999 is the end of that year: the text of a later year would not sort after it.
fn now_and_expiry(ttl: Duration) -> (String, String) {
    let now = Utc::now();
    let latest = NaiveDate::from_ymd_opt(9999, 12, 31)
        .and_then(|day| day.and_hms_opt(23, 59, 59))
        .map_or(now, |latest| latest.and_utc());
    let expiry = TimeDelta::from_std(ttl)
        .ok()
        .and_then(|ttl| now.checked_add_signed(ttl))
        .map_or(latest, |expiry| expiry.min(latest));
    (time_text(now), time_text(expiry))
}

impl SqliteLeaseRepository {
    pub(crate) fn new(database: SqliteDatabase) -> Self {
        Self { database }
    }

    async fn claim_some(
        &self,
        owner: &InstanceId,
        ttl: Duration,
        limit: usize,
        only: Option<DeploymentId>,
        except: &[DeploymentId],
    ) -> Result<Vec<ClaimedDeployment>, RepositoryError> {
        let owner = owner.as_str().to_owned();
        let except = json_list(except.iter().map(|id| uuid_text(id.as_uuid())));
        let only = only.map(|id| uuid_text(id.as_uuid()));
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        with_connection(&self.database, move |connection| {
            let (now, expiry) = now_and_expiry(ttl);
            let leased: Vec<Leased> = connection
                .immediate_transaction(|connection| {
                    statement(
                        format!(
                            "UPDATE deployments \
                                SET lease_owner = ?, lease_expires_at = ?, \
                                    lease_fence = lease_fence + 1 \
                              WHERE id IN ( \
                                    SELECT id FROM deployments \
                                     WHERE status IN {ACTIVE_STATUSES} \
                                       AND (lease_owner IS NULL OR lease_expires_at < ?) \
                                       AND (? IS NULL OR id = ?) \
                                       AND id NOT IN (SELECT value FROM json_each(?)) \
                                     ORDER BY created_at, id \
                                     LIMIT ?) \
                             RETURNING id, lease_fence"
                        ),
                        vec![
                            owner.into(),
                            expiry.into(),
                            now.into(),
                            only.clone().into(),
                            only.into(),
                            except.into(),
                            limit.into(),
                        ],
                    )
                    .load::<Leased>(connection)
                })
                .map_err(query_failed("claiming deployments"))?;
            if leased.is_empty() {
                return Ok(Vec::new());
            }
            let ids = json_list(leased.iter().map(|l| l.id.clone()));
            let deployments = load_whole(
                connection,
                "SELECT * FROM deployments WHERE id IN (SELECT value FROM json_each(?)) \
                 ORDER BY created_at, id",
                vec![ids.into()],
                "reading claimed deployments",
            )?;
            Ok(deployments
                .into_iter()
                .filter_map(|deployment| {
                    leased
                        .iter()
                        .find(|l| parse_uuid(&l.id).ok() == Some(deployment.id.as_uuid()))
                        .map(|l| ClaimedDeployment {
                            deployment,
                            fence: Fence::new(l.lease_fence),
                        })
                })
                .collect())
        })
        .await
    }
}

/// `held` as a JSON array of `[id, fence]` pairs, for one bind.
fn held_json(held: &[(DeploymentId, Fence)]) -> String {
    serde_json::Value::Array(
        held.iter()
            .map(|(id, fence)| serde_json::json!([uuid_text(id.as_uuid()), fence.get()]))
            .collect(),
    )
    .to_string()
}

/// `(id, lease_fence)` is one of the pairs of the JSON bound here.
const ONE_OF_HELD: &str = "(id, lease_fence) IN \
    (SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]') FROM json_each(?))";

#[async_trait]
impl LeaseRepository for SqliteLeaseRepository {
    #[tracing::instrument(skip(self))]
    async fn claim(
        &self,
        owner: &InstanceId,
        ttl: Duration,
        limit: usize,
        except: &[DeploymentId],
    ) -> Result<Vec<ClaimedDeployment>, RepositoryError> {
        self.claim_some(owner, ttl, limit, None, except).await
    }

    #[tracing::instrument(skip(self))]
    async fn claim_one(
        &self,
        id: DeploymentId,
        owner: &InstanceId,
        ttl: Duration,
    ) -> Result<Option<ClaimedDeployment>, RepositoryError> {
        Ok(self.claim_some(owner, ttl, 1, Some(id), &[]).await?.pop())
    }

    #[tracing::instrument(skip(self, held), fields(held = held.len()))]
    async fn renew(
        &self,
        owner: &InstanceId,
        held: &[(DeploymentId, Fence)],
        ttl: Duration,
    ) -> Result<Vec<DeploymentId>, RepositoryError> {
        if held.is_empty() {
            return Ok(Vec::new());
        }
        let owner = owner.as_str().to_owned();
        let held = held_json(held);
        with_connection(&self.database, move |connection| {
            let (_, expiry) = now_and_expiry(ttl);
            let kept: Vec<Leased> = connection
                .immediate_transaction(|connection| {
                    statement(
                        format!(
                            "UPDATE deployments SET lease_expires_at = ? \
                              WHERE lease_owner = ? AND status IN {ACTIVE_STATUSES} \
                                AND {ONE_OF_HELD} \
                             RETURNING id, lease_fence"
                        ),
                        vec![expiry.into(), owner.into(), held.into()],
                    )
                    .load::<Leased>(connection)
                })
                .map_err(query_failed("renewing leases"))?;
            kept.iter()
                .map(|l| parse_uuid(&l.id).map(DeploymentId::from_uuid))
                .collect()
        })
        .await
    }

    #[tracing::instrument(skip(self, held), fields(held = held.len()))]
    async fn release(
        &self,
        owner: &InstanceId,
        held: &[(DeploymentId, Fence)],
    ) -> Result<(), RepositoryError> {
        if held.is_empty() {
            return Ok(());
        }
        let binds: Vec<Bind> = vec![owner.as_str().into(), held_json(held).into()];
        with_connection(&self.database, move |connection| {
            connection
                .immediate_transaction::<_, DieselError, _>(|connection| {
                    statement(
                        format!(
                            "UPDATE deployments SET lease_owner = NULL, lease_expires_at = NULL \
                              WHERE lease_owner = ? AND {ONE_OF_HELD}"
                        ),
                        binds,
                    )
                    .execute(connection)
                })
                .map_err(query_failed("giving leases back"))?;
            Ok(())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_expiry_is_ttl_from_now_and_at_most_the_end_of_the_year_9999() {
        let (now, expiry) = now_and_expiry(Duration::from_secs(30));
        let now = crate::sql::parse_time(&now).expect("a time");
        let expiry = crate::sql::parse_time(&expiry).expect("a time");
        assert_eq!(expiry - now, TimeDelta::seconds(30));
        let (now, forever) = now_and_expiry(Duration::MAX);
        assert_eq!(forever, "9999-12-31T23:59:59.000000Z");
        assert!(now < forever, "later in text order too");
    }
}
