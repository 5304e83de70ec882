-- Seeds the releases table of the benchmark database: one million active releases
-- (500 services, 2,000 versions each, created over about a year, one every ~31 s) and
-- 20,000 soft-deleted ones interleaved with them, all with the ~1.2 KiB template of
-- bench/template.yaml and a few attributes, as POST /api/releases would store them.
--
-- Release i (1..1,000,000) has the id md5('kubernaut-bench-' || i)::uuid, so the
-- benchmark can pick random existing ids without reading the table (pgbench computes
-- the same id from a random i).
--
-- psql -v template="$(cat bench/template.yaml)" -f bench/seed.sql
\set ON_ERROR_STOP on
\timing on

SET maintenance_work_mem = '256MB';

-- The secondary indexes are dropped and rebuilt after the load (much faster than
-- maintaining them row by row); their definitions are read from the catalog, so they
-- come back exactly as the migrations made them.
CREATE TEMP TABLE bench_saved_indexes AS
    SELECT indexname, indexdef FROM pg_indexes
    WHERE schemaname = 'public' AND tablename = 'releases'
      AND indexname NOT IN (SELECT conname FROM pg_constraint
                            WHERE conrelid = 'public.releases'::regclass);
SELECT format('DROP INDEX %I', indexname) FROM bench_saved_indexes \gexec

INSERT INTO releases (id, service, version, image, template, required_variables,
                      attributes, comment, created_at, created_by, deleted_at, deleted_by)
SELECT md5('kubernaut-bench-' || i)::uuid,
       'service-' || (i % 500),
       format('2.%s.%s', (i / 500) / 100, (i / 500) % 100),
       format('registry.example.com/team-%s/service-%s:2.%s.%s',
              i % 17, i % 500, (i / 500) / 100, (i / 500) % 100),
       :'template',
       '{namespace}',
       jsonb_build_object('team', 'team-' || (i % 17),
                          'git_sha', substr(md5('sha' || i), 1, 12),
                          'pipeline', 'build-' || i,
                          'replicas', (1 + i % 4)::text),
       CASE WHEN i % 3 = 0 THEN NULL ELSE 'Jenkins build #' || i END,
       now() - interval '1 hour' - (1000000 - i) * interval '31.536037 seconds',
       'anonymous', NULL, NULL
FROM generate_series(1, 1000000) AS i;

INSERT INTO releases (id, service, version, image, template, required_variables,
                      attributes, comment, created_at, created_by, deleted_at, deleted_by)
SELECT md5('kubernaut-bench-deleted-' || i)::uuid,
       'service-' || (i % 500),
       format('1.%s.%s', (i / 500) / 100, (i / 500) % 100),
       format('registry.example.com/team-%s/service-%s:1.%s.%s',
              i % 17, i % 500, (i / 500) / 100, (i / 500) % 100),
       :'template',
       '{namespace}',
       jsonb_build_object('team', 'team-' || (i % 17), 'pipeline', 'build-' || i),
       'withdrawn',
       created_at, 'anonymous', least(created_at + interval '2 hours', now()), 'cleanup-bot'
FROM generate_series(1, 20000) AS i,
     LATERAL (SELECT now() - interval '1 hour'
                     - (20000 - i) * interval '1576.8 seconds' - interval '7 seconds'
                     AS created_at) AS t;

SELECT indexdef FROM bench_saved_indexes \gexec

VACUUM (ANALYZE) releases;
