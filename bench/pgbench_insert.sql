-- pgbench: the INSERT behind POST /api/releases (as diesel sends it), a new version
-- each time; the template and attributes are bound parameters (pgbench -D), as the
-- server sends them.
\set n random(1, 2000000000)
INSERT INTO "releases" ("id", "service", "version", "image", "template",
                        "required_variables", "attributes", "comment", "created_at",
                        "created_by", "deleted_at", "deleted_by")
VALUES (gen_random_uuid(), 'pgbench', 'pgbench-' || :client_id || '-' || :n,
        'registry.example.com/team-3/wrk-bench:2.0.0', :template, '{namespace}',
        :attributes, 'Jenkins build #1', now(), 'anonymous', NULL, NULL)
ON CONFLICT ("service", "version") WHERE "releases"."deleted_at" IS NULL DO NOTHING;
