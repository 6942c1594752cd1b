-- 0002_sealed_keys: keys encrypted at rest (seal.go, package sealed:
-- AES-256-GCM under a key-encryption key the gateway is given and the
-- database never holds, the identity as associated data).
--
-- kek_id is the id of the KEK a key is sealed under, a copy of bytes 1..8
-- of the sealed value (its header: version 1, then the KEK id), or NULL for
-- a plaintext key. It lets Open check, without decrypting and through the
-- index, that every key opens with the configured KEK, and lets Rekey and
-- audits count keys per KEK. Existing keys are plaintext (NULL) until
-- re-sealed (Rekey). The fingerprint (R4) is of the plaintext, so it does
-- not change when a key is re-sealed.
ALTER TABLE psk_keys ADD COLUMN kek_id bytea,
    ADD CONSTRAINT psk_keys_sealed CHECK (kek_id IS NULL OR (
        octet_length(kek_id) = 8
        AND octet_length(key) >= 38 -- version, KEK id, nonce, at least one byte, tag
        AND get_byte(key, 0) = 1
        AND substring(key FROM 2 FOR 8) = kek_id));
CREATE INDEX psk_keys_kek_id ON psk_keys (kek_id);
