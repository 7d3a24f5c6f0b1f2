-- How whoever runs a job reaches the member through the interaction that asked for it: the
-- interaction's token (a credential Discord honours for 15 minutes, encrypted with the keyring
-- like relay keys) and whether the bot's own token can post where the member asked (not in a
-- group DM or a server the bot is not in). Keyed by the interaction's response, the job's progress
-- message, which exists before the job row (so the job cannot start without it); a row lives only
-- while its job does (bot/jobs/replies.py).
CREATE TABLE job_replies (
    message_id      BIGINT           PRIMARY KEY,
    application_id  BIGINT           NOT NULL,
    token_cipher    BLOB             NOT NULL,
    expires_at      DOUBLE PRECISION NOT NULL,
    channel_post    INTEGER          NOT NULL
);
