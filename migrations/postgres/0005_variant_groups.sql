-- The variants of one /imagine, shown together in one message (cogs/imagine/groups.py). Each
-- variant is its own job and may run in any process, before or after a restart, so how each
-- slot ended lives here: whichever process records the last slot posts the message.
-- Written to run on PostgreSQL too (the twin under postgres/ is the same text).

-- group_id is the shared progress message. job_ids: JSON list in variant order. claimed: set
-- (0 -> 1) by the one process that posts the message; message_id: that message, once posted.
CREATE TABLE variant_groups (
    group_id   BIGINT           PRIMARY KEY,
    job_ids    TEXT             NOT NULL DEFAULT '[]',
    variants   INTEGER          NOT NULL,
    claimed    INTEGER          NOT NULL DEFAULT 0,
    message_id BIGINT,
    created_at DOUBLE PRECISION NOT NULL
);

-- How one variant ended: its picture (turn_id, and shown: what its result embed shows, JSON),
-- or its failure (error: {"key", "params"}, JSON). turn_id NULL with no error: a picture that
-- could not be stored, shown only by the process that holds it.
CREATE TABLE variant_slots (
    group_id   BIGINT           NOT NULL,
    slot       INTEGER          NOT NULL,
    job_id     BIGINT           NOT NULL,
    turn_id    BIGINT,
    shown      TEXT             NOT NULL DEFAULT '{}',
    error      TEXT,
    elapsed    DOUBLE PRECISION NOT NULL DEFAULT 0,
    relay_name TEXT             NOT NULL DEFAULT '',
    PRIMARY KEY (group_id, slot)
);
