//! [`LeaseRepository`] on PostgreSQL: the lease columns of `deployments`, claimed with
//! `FOR UPDATE SKIP LOCKED` so that concurrent supervisors never take one deployment
//! twice and never wait on each other, with expiries on the database's clock.

use std::time::Duration;

use async_trait::async_trait;
use diesel::prelude::*;
use diesel::sql_query;
use diesel::sql_types::{Array, BigInt, Double, Nullable, Text, Uuid as SqlUuid};
use kubernaut_domain::deployment::{DeploymentId, Fence};
use kubernaut_domain::lease::{ClaimedDeployment, InstanceId};
use kubernaut_domain::ports::{LeaseRepository, RepositoryError};
use uuid::Uuid;

use crate::blocking::{query_failed, with_connection};
use crate::database::PgPool;
use crate::deployment_repository::with_timelines;
use crate::deployment_row::DeploymentRow;
use crate::schema::deployments;

/// Takes the leases of up to `$3` active deployments whose lease is free or expired (of
/// `$4` alone when it is not NULL, never of those in `$5`), oldest first, skipping rows
/// another claimer holds.
const CLAIM: &str = "\
UPDATE deployments
   SET lease_owner = $1,
       lease_expires_at = now() + make_interval(secs => $2),
       lease_fence = lease_fence + 1
 WHERE id IN (
       SELECT id FROM deployments
        WHERE status IN ('queued', 'applying', 'rolling_out')
          AND (lease_owner IS NULL OR lease_expires_at < now())
          AND ($4::uuid IS NULL OR id = $4)
          AND id <> ALL($5::uuid[])
        ORDER BY created_at, id
        LIMIT $3
        FOR UPDATE SKIP LOCKED)
RETURNING id, lease_fence";

/// Extends the leases `$1` holds with the fences given, on active deployments.
const RENEW: &str = "\
UPDATE deployments
   SET lease_expires_at = now() + make_interval(secs => $2)
 WHERE lease_owner = $1
   AND status IN ('queued', 'applying', 'rolling_out')
   AND (id, lease_fence) IN (SELECT * FROM unnest($3::uuid[], $4::bigint[]))
RETURNING id, lease_fence";

/// Frees the leases `$1` holds with the fences given.
const RELEASE: &str = "\
UPDATE deployments
   SET lease_owner = NULL, lease_expires_at = NULL
 WHERE lease_owner = $1
   AND (id, lease_fence) IN (SELECT * FROM unnest($2::uuid[], $3::bigint[]))";

#[derive(Debug, QueryableByName)]
struct Leased {
    #[diesel(sql_type = SqlUuid)]
    id: Uuid,
    #[diesel(sql_type = BigInt)]
    lease_fence: i64,
}

/// The leases of the deployments in the `deployments` table.
#[derive(Debug, Clone)]
pub struct PostgresLeaseRepository {
    pool: PgPool,
}

impl PostgresLeaseRepository {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
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
        let except: Vec<Uuid> = except.iter().map(DeploymentId::as_uuid).collect();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        with_connection(&self.pool, move |connection| {
            let leased: Vec<Leased> = sql_query(CLAIM)
                .bind::<Text, _>(&owner)
                .bind::<Double, _>(ttl.as_secs_f64())
                .bind::<BigInt, _>(limit)
                .bind::<Nullable<SqlUuid>, _>(only.map(|id| id.as_uuid()))
                .bind::<Array<SqlUuid>, _>(&except)
                .load(connection)
                .map_err(query_failed("claiming deployments"))?;
            if leased.is_empty() {
                return Ok(Vec::new());
            }
            let ids: Vec<Uuid> = leased.iter().map(|l| l.id).collect();
            let rows = deployments::table
                .filter(deployments::id.eq_any(&ids))
                .order((deployments::created_at.asc(), deployments::id.asc()))
                .select(DeploymentRow::as_select())
                .load(connection)
                .map_err(query_failed("reading claimed deployments"))?;
            let claimed = with_timelines(connection, rows)?
                .into_iter()
                .filter_map(|deployment| {
                    leased
                        .iter()
                        .find(|l| l.id == deployment.id.as_uuid())
                        .map(|l| ClaimedDeployment {
                            deployment,
                            fence: Fence::new(l.lease_fence),
                        })
                })
                .collect();
            Ok(claimed)
        })
        .await
    }
}

fn split(held: &[(DeploymentId, Fence)]) -> (Vec<Uuid>, Vec<i64>) {
    held.iter()
        .map(|(id, fence)| (id.as_uuid(), fence.get()))
        .unzip()
}

#[async_trait]
impl LeaseRepository for PostgresLeaseRepository {
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
        let (ids, fences) = split(held);
        with_connection(&self.pool, move |connection| {
            let kept: Vec<Leased> = sql_query(RENEW)
                .bind::<Text, _>(&owner)
                .bind::<Double, _>(ttl.as_secs_f64())
                .bind::<Array<SqlUuid>, _>(&ids)
                .bind::<Array<BigInt>, _>(&fences)
                .load(connection)
                .map_err(query_failed("renewing leases"))?;
            Ok(kept
                .into_iter()
                .map(|l| DeploymentId::from_uuid(l.id))
                .collect())
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
        let owner = owner.as_str().to_owned();
        let (ids, fences) = split(held);
        with_connection(&self.pool, move |connection| {
            sql_query(RELEASE)
                .bind::<Text, _>(&owner)
                .bind::<Array<SqlUuid>, _>(&ids)
                .bind::<Array<BigInt>, _>(&fences)
                .execute(connection)
                .map_err(query_failed("giving leases back"))?;
            Ok(())
        })
        .await
    }
}
