-- Server admin config, credit quotas and the job queue (PostgreSQL; see ../0002_admin_quota_jobs.sql).

-- Relays: model name mapping per relay (e.g. openai-images relays calling Pro "nano-banana-pro"),
-- and what admins need to see about a relay's health in /admin relay list.
ALTER TABLE relays ADD COLUMN model_aliases TEXT NOT NULL DEFAULT '{}';
ALTER TABLE relays ADD COLUMN last_error TEXT NOT NULL DEFAULT '';
ALTER TABLE relays ADD COLUMN last_failure_at DOUBLE PRECISION;
ALTER TABLE relays ADD COLUMN last_success_at DOUBLE PRECISION;

-- Quota checks sum a member's credits within a server since midnight: this index answers that
-- without scanning the server's whole history (quota_user alone spans every server).
CREATE INDEX quota_guild_user ON quota_ledger (guild_id, user_id, created_at);
-- Settling and audits look for what is still held.
CREATE INDEX quota_state ON quota_ledger (state);

-- Usage reports group a server's finished jobs by time.
CREATE INDEX jobs_guild_finished ON jobs (guild_id, finished_at);
