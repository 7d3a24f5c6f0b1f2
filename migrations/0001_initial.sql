-- Core schema. Timestamps are unix seconds (REAL) so SQL can compare them without parsing.

-- Per-server configuration as one JSON document (bot/guild_config.py gives it types):
-- defaults, allowed models, access, quota rules, thread switches, locale.
CREATE TABLE guild_settings (
    guild_id   INTEGER PRIMARY KEY,
    data       TEXT    NOT NULL DEFAULT '{}',
    updated_at REAL    NOT NULL DEFAULT ((julianday('now') - 2440587.5) * 86400.0)
);

-- A server's relays, tried in `position` order. Keys only as ciphertext (Fernet).
CREATE TABLE relays (
    id             INTEGER PRIMARY KEY,
    guild_id       INTEGER NOT NULL,
    name           TEXT    NOT NULL,
    position       INTEGER NOT NULL DEFAULT 0,
    base_url       TEXT    NOT NULL,
    dialect        TEXT    NOT NULL CHECK (dialect IN ('gemini', 'openai-images', 'openai-chat')),
    auth           TEXT    NOT NULL CHECK (auth IN ('query', 'bearer', 'x-goog-api-key')),
    key_ciphertext BLOB    NOT NULL,
    key_hint       TEXT    NOT NULL DEFAULT '',
    fail_count     INTEGER NOT NULL DEFAULT 0,
    skip_until     REAL    NOT NULL DEFAULT 0,
    created_at     REAL    NOT NULL DEFAULT ((julianday('now') - 2440587.5) * 86400.0),
    UNIQUE (guild_id, name)
);

-- Every generation is a row before it is a request.
-- status: queued -> running -> done | failed | cancelled | interrupted
CREATE TABLE jobs (
    id              INTEGER PRIMARY KEY,
    guild_id        INTEGER,
    channel_id      INTEGER,
    user_id         INTEGER NOT NULL,
    kind            TEXT    NOT NULL DEFAULT 'imagine',   -- imagine | edit | reroll | upscale | retry
    status          TEXT    NOT NULL DEFAULT 'queued',
    request         TEXT    NOT NULL,                      -- JSON: prompt, model, ratio, size, options, image hashes
    model           TEXT    NOT NULL,
    size            TEXT,
    cost            INTEGER NOT NULL DEFAULT 0,
    locale          TEXT    NOT NULL DEFAULT 'en-US',
    conversation_id INTEGER,
    parent_turn_id  INTEGER,
    result_turn_id  INTEGER,
    progress_message_id INTEGER,
    result_message_id   INTEGER,
    relay_name      TEXT,
    error_code      TEXT,
    error_detail    TEXT,
    latency_ms      INTEGER,
    created_at      REAL    NOT NULL DEFAULT ((julianday('now') - 2440587.5) * 86400.0),
    started_at      REAL,
    finished_at     REAL
);
CREATE INDEX jobs_status ON jobs (status, created_at);
CREATE INDEX jobs_user ON jobs (user_id, created_at);
CREATE INDEX jobs_guild ON jobs (guild_id, created_at);

-- Credits: reserved when a job starts, then committed (image delivered) or refunded.
CREATE TABLE quota_ledger (
    id         INTEGER PRIMARY KEY,
    job_id     INTEGER NOT NULL UNIQUE REFERENCES jobs (id),
    guild_id   INTEGER,
    user_id    INTEGER NOT NULL,
    credits    INTEGER NOT NULL,
    state      TEXT    NOT NULL CHECK (state IN ('reserved', 'committed', 'refunded')),
    created_at REAL    NOT NULL DEFAULT ((julianday('now') - 2440587.5) * 86400.0),
    updated_at REAL    NOT NULL DEFAULT ((julianday('now') - 2440587.5) * 86400.0)
);
CREATE INDEX quota_user ON quota_ledger (user_id, created_at);
CREATE INDEX quota_guild ON quota_ledger (guild_id, created_at);

-- Images, stored once under data/images/<sha256[:2]>/<sha256>; `pruned` once the file is gone.
CREATE TABLE images (
    sha256     TEXT    PRIMARY KEY,
    mime_type  TEXT    NOT NULL,
    byte_size  INTEGER NOT NULL,
    width      INTEGER,
    height     INTEGER,
    created_at REAL    NOT NULL DEFAULT ((julianday('now') - 2440587.5) * 86400.0),
    last_used  REAL    NOT NULL DEFAULT ((julianday('now') - 2440587.5) * 86400.0),
    pruned     INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX images_last_used ON images (last_used);

-- A conversation is bound to the thread opened on its first result.
CREATE TABLE conversations (
    id         INTEGER PRIMARY KEY,
    guild_id   INTEGER,
    channel_id INTEGER NOT NULL,
    thread_id  INTEGER UNIQUE,
    owner_id   INTEGER NOT NULL,
    model      TEXT    NOT NULL,
    created_at REAL    NOT NULL DEFAULT ((julianday('now') - 2440587.5) * 86400.0)
);

-- One exchange (user parts -> model parts). parent_id makes the tree; the path from the root
-- to a turn is the history sent when continuing from it. Parts are the exact JSON exchanged,
-- thoughtSignatures kept, with inline images replaced by {"sha256": ...} references.
CREATE TABLE turns (
    id              INTEGER PRIMARY KEY,
    conversation_id INTEGER NOT NULL REFERENCES conversations (id),
    parent_id       INTEGER REFERENCES turns (id),
    user_parts      TEXT    NOT NULL,
    model_parts     TEXT    NOT NULL,
    image_sha256    TEXT    REFERENCES images (sha256),
    message_id      INTEGER,
    job_id          INTEGER,
    prompt          TEXT    NOT NULL DEFAULT '',
    settings        TEXT    NOT NULL DEFAULT '{}',        -- JSON: model, ratio, size used
    created_at      REAL    NOT NULL DEFAULT ((julianday('now') - 2440587.5) * 86400.0)
);
CREATE INDEX turns_conversation ON turns (conversation_id, created_at);
CREATE INDEX turns_message ON turns (message_id);
