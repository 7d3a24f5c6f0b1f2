-- Each relay's last balance level (ok / low / empty / unknown), written by the one process that
-- runs the scheduled balance check and read by every process: failover anywhere skips a relay
-- the last check found empty, and a restart does not warn a second time about the same drop.
-- Rows of a removed relay are dropped with it (RelayStore.remove).
CREATE TABLE relay_balances (
    guild_id   BIGINT           NOT NULL,
    relay_id   BIGINT           NOT NULL,
    level      TEXT             NOT NULL,
    checked_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (guild_id, relay_id)
);
