-- Accounts have a life: an admin disables (and enables again) or deletes one, and API tokens
-- may expire. A deleted account keeps its row, so that its past requests, VMs and jobs still
-- name it; it can no longer sign in and its name stays taken.

ALTER TABLE users ADD COLUMN disabled_at BIGINT;
ALTER TABLE users ADD COLUMN deleted_at BIGINT;
ALTER TABLE api_tokens ADD COLUMN expires_at BIGINT;
