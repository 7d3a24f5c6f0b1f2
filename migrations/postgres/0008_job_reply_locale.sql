-- The member's language with each stored interaction token, so a request whose process died
-- after the acknowledgement and before its job was queued ("Getting ready…" and nothing more) can
-- be answered in it by whichever process finds the row without a job (bot/jobs/replies.py).
ALTER TABLE job_replies ADD COLUMN locale TEXT NOT NULL DEFAULT 'en';
