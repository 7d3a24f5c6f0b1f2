-- The member's language with each stored interaction token, so a request whose process died
-- after the acknowledgement and before its job was queued ("Getting ready…" and nothing more) can
-- be answered in it by whichever process finds the row without a job (bot/jobs/replies.py).
ALTER TABLE job_replies ADD COLUMN locale TEXT NOT NULL DEFAULT 'en';
-- The sweep asks, for each such row, whether any job refers to it: by index, not a scan of
-- every job ever made.
CREATE INDEX jobs_progress_message ON jobs (progress_message_id);
