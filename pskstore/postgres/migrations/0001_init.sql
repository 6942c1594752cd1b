-- 0001_init: the key table, the store's fingerprint secret, the change log
-- and the triggers that publish every change on channel psk_changes (R10).
-- Applied once, in a transaction, by migrate.go.

-- psk_store holds one row: the secret that keys the fingerprints of
-- psk_keys.fingerprint (R4), shared by every replica. fingerprint_key is
-- NULL when the operator supplies the secret (Config.FingerprintKey);
-- key_check = HMAC-SHA-256(secret, 'pskstore/postgres key check v1') lets a
-- replica started with another secret refuse to run.
CREATE TABLE psk_store (
    id              boolean PRIMARY KEY DEFAULT true CHECK (id),
    fingerprint_key bytea CHECK (octet_length(fingerprint_key) >= 32),
    key_check       bytea NOT NULL CHECK (octet_length(key_check) = 32),
    created_at      timestamptz NOT NULL DEFAULT now()
);

-- psk_keys: one row per external PSK identity (R7: identities compared byte
-- by byte). The key column is opaque bytes written by seal() and read by
-- open() (seal.go): plaintext today. Encryption at rest will add a
-- migration with key_nonce bytea (the AES-GCM nonce) and a sealed flag or
-- key version, so rows can be re-sealed in place; nothing else reads key.
-- Identities are limited to 2048 bytes so they fit a btree index entry.
CREATE TABLE psk_keys (
    identity          bytea NOT NULL CHECK (octet_length(identity) BETWEEN 1 AND 2048),
    key               bytea NOT NULL CHECK (octet_length(key) >= 16),
    fingerprint       bytea NOT NULL CHECK (octet_length(fingerprint) = 32),
    hash              text NOT NULL CHECK (hash IN ('sha256', 'sha384')),
    endpoint          text NOT NULL DEFAULT '',
    server_name       text NOT NULL DEFAULT '',
    backend           text NOT NULL DEFAULT '',
    versions          smallint NOT NULL CHECK (versions BETWEEN 1 AND 3), -- bit 0 DTLS 1.2, bit 1 DTLS 1.3
    modes             smallint NOT NULL CHECK (modes BETWEEN 1 AND 3),    -- bit 0 psk_dhe_ke, bit 1 psk_ke
    legacy            boolean NOT NULL DEFAULT false,
    allow_low_entropy boolean NOT NULL DEFAULT false,
    grp               boolean NOT NULL DEFAULT false,
    import_context    bytea,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT psk_keys_pkey PRIMARY KEY (identity),
    -- R4: one key material, one identity (keyed fingerprints, never keys).
    CONSTRAINT psk_keys_fingerprint_unique UNIQUE (fingerprint),
    -- R2: a key that may have low entropy never uses psk_ke nor plain PSK.
    CONSTRAINT psk_keys_low_entropy CHECK (NOT allow_low_entropy OR (modes & 2 = 0 AND NOT legacy)),
    -- R4: a group key needs an importer context.
    CONSTRAINT psk_keys_group_context CHECK (NOT grp OR octet_length(import_context) > 0)
);

-- psk_change_log: what the triggers below record, read back by every
-- replica's listener: by transaction (the notification payload is the
-- writing transaction's id) and, after the listener reconnects, from the
-- last change it saw. Rows older than one day are pruned.
CREATE TABLE psk_change_log (
    id       bigserial PRIMARY KEY,
    xid      xid8 NOT NULL DEFAULT pg_current_xact_id(),
    kind     text NOT NULL CHECK (kind IN ('added', 'rotated', 'revoked')),
    identity bytea NOT NULL,
    at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX psk_change_log_xid ON psk_change_log (xid);
CREATE INDEX psk_change_log_at ON psk_change_log (at);

-- psk_publish records changed identities and notifies psk_changes once per
-- transaction (PostgreSQL folds equal payloads of one transaction). A
-- transaction that sets pskstore.publish to 'off' (bulk import) publishes
-- nothing. Hand-made changes (psql) are published too.
CREATE FUNCTION psk_publish() RETURNS void
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    DELETE FROM psk_change_log WHERE at < now() - interval '1 day';
    PERFORM pg_notify('psk_changes', pg_current_xact_id()::text);
END
$$;

CREATE FUNCTION psk_keys_inserted() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    IF current_setting('pskstore.publish', true) IS DISTINCT FROM 'off' THEN
        INSERT INTO psk_change_log (kind, identity) SELECT 'added', identity FROM new_rows ORDER BY identity;
        IF FOUND THEN PERFORM psk_publish(); END IF;
    END IF;
    RETURN NULL;
END
$$;

CREATE FUNCTION psk_keys_deleted() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    IF current_setting('pskstore.publish', true) IS DISTINCT FROM 'off' THEN
        INSERT INTO psk_change_log (kind, identity) SELECT 'revoked', identity FROM old_rows ORDER BY identity;
        IF FOUND THEN PERFORM psk_publish(); END IF;
    END IF;
    RETURN NULL;
END
$$;

-- An update of the key or of any binding is a rotation: sessions
-- established under the old row must close (R10). A changed identity is a
-- revocation of the old one and an addition of the new one.
CREATE FUNCTION psk_keys_updated() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    IF current_setting('pskstore.publish', true) IS DISTINCT FROM 'off' THEN
        INSERT INTO psk_change_log (kind, identity)
        SELECT CASE WHEN n.identity IS NULL THEN 'revoked'
                    WHEN o.identity IS NULL THEN 'added'
                    ELSE 'rotated' END,
               coalesce(n.identity, o.identity)
        FROM old_rows o FULL JOIN new_rows n ON o.identity = n.identity
        WHERE o.identity IS NULL OR n.identity IS NULL
           OR (o.key, o.hash, o.endpoint, o.server_name, o.backend, o.versions, o.modes,
               o.legacy, o.allow_low_entropy, o.grp, o.import_context)
              IS DISTINCT FROM
              (n.key, n.hash, n.endpoint, n.server_name, n.backend, n.versions, n.modes,
               n.legacy, n.allow_low_entropy, n.grp, n.import_context)
        ORDER BY 2;
        IF FOUND THEN PERFORM psk_publish(); END IF;
    END IF;
    RETURN NULL;
END
$$;

-- TRUNCATE fires no row or transition triggers, so it could revoke keys
-- without telling any replica: refuse it.
CREATE FUNCTION psk_keys_truncated() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'psk_keys: use DELETE, not TRUNCATE, so revocations reach every gateway';
END
$$;

CREATE TRIGGER psk_keys_inserted AFTER INSERT ON psk_keys
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION psk_keys_inserted();
CREATE TRIGGER psk_keys_deleted AFTER DELETE ON psk_keys
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION psk_keys_deleted();
CREATE TRIGGER psk_keys_updated AFTER UPDATE ON psk_keys
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION psk_keys_updated();
CREATE TRIGGER psk_keys_truncated BEFORE TRUNCATE ON psk_keys
    FOR EACH STATEMENT EXECUTE FUNCTION psk_keys_truncated();
