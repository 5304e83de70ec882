-- The manifest digest the image's registry reported when the release was registered;
-- NULL when the image's registry is not one Kubernaut checks.
ALTER TABLE releases ADD COLUMN image_digest text NULL;
