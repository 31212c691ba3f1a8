-- When a user last queued jobs. Queuing writes it first, so the row lock it takes lets one user's
-- submissions be counted against the native hosts' limit one after the other, never side by side.

ALTER TABLE users ADD COLUMN jobs_queued_at INTEGER;
