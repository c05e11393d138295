-- Corral's schema. Org and user ids are TEXT: they come from JWT claims, and the identity
-- provider, not this database, is where they are defined. Rows in orgs/users/memberships are
-- optional metadata (a seeded admin, an org's retention), so conversations and usage events
-- do not require them to exist.

CREATE TABLE orgs (
    id             text PRIMARY KEY,
    name           text NOT NULL DEFAULT '',
    -- Days messages are kept; NULL means the backend's retention.days.
    retention_days integer CHECK (retention_days IS NULL OR retention_days > 0),
    created_at     timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE users (
    id           text PRIMARY KEY,
    display_name text NOT NULL DEFAULT '',
    created_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE memberships (
    org_id     text NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    user_id    text NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role       text NOT NULL DEFAULT 'member',
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (org_id, user_id)
);

CREATE TABLE conversations (
    id         uuid PRIMARY KEY,
    org_id     text NOT NULL,
    user_id    text NOT NULL,
    title      text NOT NULL,
    model      text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- A user's list, newest first (keyset on updated_at, id)...
CREATE INDEX conversations_user_recent
    ON conversations (org_id, user_id, updated_at DESC, id DESC);
-- ...and an org admin's list of the whole org.
CREATE INDEX conversations_org_recent
    ON conversations (org_id, updated_at DESC, id DESC);

CREATE TABLE messages (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    conversation_id   uuid NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    role              text NOT NULL CHECK (role IN ('system', 'user', 'assistant', 'tool')),
    content           text NOT NULL,
    prompt_tokens     bigint,
    completion_tokens bigint,
    -- False while a reply streams, and for a reply cut short (client gone, upstream failure).
    complete          boolean NOT NULL DEFAULT true,
    created_at        timestamptz NOT NULL DEFAULT now()
);

-- Pages of a conversation, in order.
CREATE INDEX messages_conversation ON messages (conversation_id, id);
-- The retention job finds old messages without scanning the table.
CREATE INDEX messages_created_at ON messages (created_at);

-- The usage ledger, written by the gateway at the end of each reply (its columns are the
-- gateway's contract: keep them as they are). request_id makes a retried write harmless.
CREATE TABLE usage_events (
    request_id        text PRIMARY KEY,
    org_id            text,
    user_id           text,
    model             text,
    instance          text,
    prompt_tokens     bigint,
    completion_tokens bigint,
    at                timestamptz DEFAULT now()
);

-- An org's usage for a period (the report, and the gateway's quota rebuild after a restart).
CREATE INDEX usage_events_org_at ON usage_events (org_id, at);
