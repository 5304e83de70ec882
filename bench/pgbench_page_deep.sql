-- pgbench: the SELECT behind GET /api/releases?limit=50&cursor=... (as diesel sends it),
-- the cursor's (created_at, id) given with -D cursor_at=... -D cursor_id=...
SELECT "releases"."id", "releases"."service", "releases"."version", "releases"."image",
       "releases"."attributes", "releases"."comment", "releases"."created_at",
       "releases"."created_by"
FROM "releases"
WHERE (("releases"."deleted_at" IS NULL)
       AND (("releases"."created_at", "releases"."id") < (:cursor_at::timestamptz, :cursor_id::uuid)))
ORDER BY "releases"."created_at" DESC, "releases"."id" DESC
LIMIT 51;
