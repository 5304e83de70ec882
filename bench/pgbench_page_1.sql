-- pgbench: the SELECT behind GET /api/releases?limit=50 (first page; as diesel sends it,
-- 51 rows to tell whether a next page exists).
SELECT "releases"."id", "releases"."service", "releases"."version", "releases"."image",
       "releases"."attributes", "releases"."comment", "releases"."created_at",
       "releases"."created_by"
FROM "releases"
WHERE ("releases"."deleted_at" IS NULL)
ORDER BY "releases"."created_at" DESC, "releases"."id" DESC
LIMIT 51;
