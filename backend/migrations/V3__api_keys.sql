-- API keys (the credential clients such as Open WebUI or the OpenAI SDK carry). The backend
-- owns these tables and their admin API; the gateway reads them to check a key. A secret is
-- never stored: only its HMAC-SHA256 keyed with the server's pepper (API_KEY_PEPPER).

CREATE TABLE api_keys (
    -- The public part of `crl_<id>_<secret>`: stable for the key's life, shown in lists, logs
    -- and the ledger, and named in policy files.
    id           text PRIMARY KEY,
    org_id       text NOT NULL,
    name         text NOT NULL,
    -- The user the key acts as (`sub` for limits and the ledger); NULL means `key:<name>`.
    owner_user   text,
    -- A role the key carries (e.g. "admin" to manage keys or models); NULL: none.
    role         text,
    -- Glob patterns narrowing the org's models; NULL: the org's own.
    models       text[],
    created_by   text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz,
    revoked_at   timestamptz,
    last_used_at timestamptz,
    UNIQUE (org_id, name)
);

-- Every secret a key has had. `valid_until` is NULL for the current one; a rotation sets the
-- old one's to the end of its grace period, a revocation to the revocation time.
CREATE TABLE api_key_secrets (
    key_id      text NOT NULL REFERENCES api_keys (id) ON DELETE CASCADE,
    hash        bytea NOT NULL,
    -- Prefix-free hint shown in lists: the secret's last four characters.
    last_four   text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    valid_until timestamptz,
    PRIMARY KEY (key_id, hash)
);

-- Who changed what, from where: one row per key created, rotated or revoked.
CREATE TABLE audit_log (
    id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    org_id    text NOT NULL,
    actor     text NOT NULL,
    action    text NOT NULL,
    target    text NOT NULL,
    detail    jsonb NOT NULL DEFAULT '{}',
    ip        text,
    at        timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX audit_log_org_at ON audit_log (org_id, at DESC);

-- Idempotency-Key on create and rotate: the same key and body within 24 h replays the first
-- answer, secret included, so a client that lost a response can retry without minting a
-- second key. The answer's secret is stored sealed (an AEAD under a key derived from the
-- pepper), never in clear, and rows older than 24 h are deleted.
CREATE TABLE idempotency_keys (
    org_id      text NOT NULL,
    key         text NOT NULL,
    request_sha bytea NOT NULL,
    status      integer NOT NULL,
    response    jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (org_id, key)
);

-- The ledger records which key made each request (NULL for JWT callers).
ALTER TABLE usage_events ADD COLUMN key_id text;
