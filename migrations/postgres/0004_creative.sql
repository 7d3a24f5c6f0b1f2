-- Personal settings, server styles and personal styles, and the server's creative limits.
-- Written to run on PostgreSQL too: BIGINT ids, DOUBLE PRECISION unix-second timestamps set
-- by the application (no SQLite date functions), natural composite keys instead of rowids.

-- A member's own defaults in one server (guild_id 0: direct messages), as one JSON document
-- read leniently by bot/preferences.py, so a value that stops being valid falls back rather
-- than breaking the member's next /imagine.
CREATE TABLE member_preferences (
    guild_id   BIGINT           NOT NULL,
    user_id    BIGINT           NOT NULL,
    data       TEXT             NOT NULL DEFAULT '{}',
    updated_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (guild_id, user_id)
);

-- What a server allows of the creative features: variant count default and maximum, the
-- largest size a member's preference may ask for (JSON, read by bot/preferences.py).
CREATE TABLE guild_creative (
    guild_id   BIGINT           PRIMARY KEY,
    data       TEXT             NOT NULL DEFAULT '{}',
    updated_at DOUBLE PRECISION NOT NULL
);

-- Styles: owner_id 0 is a server style an admin made, otherwise a member's personal style.
-- name_key is the case-folded name, so "Ink" and "ink" are one style. images is a JSON list
-- of SHA-256 references into the images table (stored by bot/image_store.py).
CREATE TABLE styles (
    guild_id     BIGINT           NOT NULL,
    owner_id     BIGINT           NOT NULL,
    name_key     TEXT             NOT NULL,
    name         TEXT             NOT NULL,
    template     TEXT             NOT NULL,
    images       TEXT             NOT NULL DEFAULT '[]',
    aspect_ratio TEXT,
    size         TEXT,
    created_by   BIGINT           NOT NULL,
    created_at   DOUBLE PRECISION NOT NULL,
    updated_at   DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (guild_id, owner_id, name_key)
);

-- The gallery lists a member's finished pictures in a server, newest first.
CREATE INDEX jobs_guild_user_finished ON jobs (guild_id, user_id, finished_at);
