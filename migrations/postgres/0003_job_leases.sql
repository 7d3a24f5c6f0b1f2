-- Jobs claimed by worker processes (PostgreSQL runs them; SQLite carries the same columns so both
-- schemas stay one): who runs a job, until when its lease holds (database clock, unix seconds),
-- and a cancel asked for by another process. fair_turns: when each member was last served, the
-- round-robin order shared by every worker.
ALTER TABLE jobs ADD COLUMN worker_id TEXT;
ALTER TABLE jobs ADD COLUMN lease_until DOUBLE PRECISION;
ALTER TABLE jobs ADD COLUMN cancel_requested INTEGER NOT NULL DEFAULT 0;
CREATE INDEX jobs_worker ON jobs (worker_id, status);
CREATE TABLE fair_turns (
    user_id BIGINT PRIMARY KEY,
    served  BIGINT  NOT NULL
);
