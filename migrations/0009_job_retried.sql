-- A job's Retry is taken once, whichever process answers the click and across restarts: a stale
-- copy of a used Retry notice must not make a second (charged) job (bot/jobs/records.py).
ALTER TABLE jobs ADD COLUMN retried INTEGER NOT NULL DEFAULT 0;
