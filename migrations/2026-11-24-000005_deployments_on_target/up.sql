-- Where each service stands on each target (the overview pages): the newest deployment
-- per service, cluster and namespace, read with DISTINCT ON in this order.
CREATE INDEX deployments_on_target_newest_first_idx
    ON deployments (service, cluster, namespace, created_at DESC, id DESC);

-- The deployments of one release, newest first (`GET /api/deployments?release_id=`).
CREATE INDEX deployments_release_newest_first_idx
    ON deployments (release_id, created_at DESC, id DESC);
