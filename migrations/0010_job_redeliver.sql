-- A job whose picture was made and stored and whose post had begun when its process died is
-- queued again to post that stored picture (Discord's enforce_nonce returns the post if it had
-- landed), instead of being refunded with the picture perhaps up already (bot/jobs/records.py).
-- ``redeliver``: what the post needs, as JSON; ``redeliveries``: how often it was queued again.
ALTER TABLE jobs ADD COLUMN redeliver TEXT;
ALTER TABLE jobs ADD COLUMN redeliveries INTEGER NOT NULL DEFAULT 0;
