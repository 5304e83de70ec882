ALTER TABLE releases DROP COLUMN image_digest;
