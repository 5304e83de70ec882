-- pgbench: the SELECT behind GET /api/releases/{id} (as diesel sends it), for a random
-- release among the million seeded ones (ids are md5('kubernaut-bench-' || i)).
\set i random(1, 1000000)
SELECT "releases"."id", "releases"."service", "releases"."version", "releases"."image",
       "releases"."template", "releases"."required_variables", "releases"."attributes",
       "releases"."comment", "releases"."created_at", "releases"."created_by",
       "releases"."deleted_at", "releases"."deleted_by"
FROM "releases"
WHERE (("releases"."id" = md5('kubernaut-bench-' || :i)::uuid)
       AND ("releases"."deleted_at" IS NULL))
LIMIT 1;
