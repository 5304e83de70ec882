-- Releases: a version of a service, its image and manifest template, registered by CI.
-- Deleting is soft (deleted_at/deleted_by) so the audit trail stays.
CREATE TABLE releases (
    id                 uuid        PRIMARY KEY,
    service            text        NOT NULL,
    version            text        NOT NULL,
    image              text        NOT NULL,
    template           text        NOT NULL,
    required_variables text[]      NOT NULL DEFAULT '{}',
    attributes         jsonb       NOT NULL DEFAULT '{}',
    comment            text        NULL,
    created_at         timestamptz NOT NULL,
    created_by         text        NOT NULL,
    deleted_at         timestamptz NULL,
    deleted_by         text        NULL,
    CONSTRAINT releases_attributes_is_an_object CHECK (jsonb_typeof(attributes) = 'object'),
    CONSTRAINT releases_deleted_at_and_by_together
        CHECK ((deleted_at IS NULL) = (deleted_by IS NULL))
);

-- One active release per service and version; deleted ones free the pair again.
-- Inserts target this index with ON CONFLICT ... DO NOTHING.
CREATE UNIQUE INDEX releases_active_service_version_key
    ON releases (service, version)
    WHERE deleted_at IS NULL;

-- The newest-first listing and its keyset pagination, (created_at, id) < (..), seek
-- these indexes instead of scanning, however deep the page.
CREATE INDEX releases_active_newest_first_idx
    ON releases (created_at DESC, id DESC)
    WHERE deleted_at IS NULL;

CREATE INDEX releases_active_service_newest_first_idx
    ON releases (service, created_at DESC, id DESC)
    WHERE deleted_at IS NULL;
