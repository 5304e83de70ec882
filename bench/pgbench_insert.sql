-- pgbench: the SQL behind POST /api/releases (as diesel sends it), a new version each
-- time; the template and attributes are bound parameters (pgbench -D), as the server
-- sends them. Since issue 7 the server writes the release and its audit record in one
-- transaction, so this does too.
\set n random(1, 2000000000)
BEGIN;
INSERT INTO "releases" ("id", "service", "version", "image", "template",
                        "required_variables", "attributes", "comment", "created_at",
                        "created_by", "deleted_at", "deleted_by")
VALUES (gen_random_uuid(), 'pgbench', 'pgbench-' || :client_id || '-' || :n,
        'registry.example.com/team-3/wrk-bench:2.0.0', :template, '{namespace}',
        :attributes, 'Jenkins build #1', now(), 'bench', NULL, NULL)
ON CONFLICT ("service", "version") WHERE "releases"."deleted_at" IS NULL DO NOTHING;
INSERT INTO "audit_log" ("id", "at", "actor", "action", "target", "request_id", "source",
                         "details")
VALUES (gen_random_uuid(), now(), 'bench', 'release.created',
        'release/' || gen_random_uuid(), 'c0ffee00-0000-4000-8000-000000000000',
        '127.0.0.1',
        jsonb_build_object('service', 'pgbench', 'version', 'pgbench-' || :client_id || '-' || :n,
                           'image', 'registry.example.com/team-3/wrk-bench:2.0.0'));
COMMIT;
