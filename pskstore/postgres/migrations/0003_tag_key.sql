-- 0003_tag_key: the secret that keys identity tags in logs and messages
-- (R9), kept with the store like the fingerprint secret, so every replica
-- and every `gateway psk` command prints the same tag for an identity
-- without a tag key file to distribute. Drawn from crypto/rand by the
-- first Open that finds it NULL. Tags are not secret; the key is: whoever
-- holds it can test guessed identities against logged tags.
ALTER TABLE psk_store ADD COLUMN tag_key bytea CHECK (tag_key IS NULL OR octet_length(tag_key) >= 32);
