-- VMs made for placed requests, per-user quota overrides, SSH keys, and the audit log.

CREATE TABLE vms (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    request_id       INTEGER NOT NULL UNIQUE REFERENCES gpu_requests (id),
    user_id          INTEGER NOT NULL REFERENCES users (id),
    host             TEXT NOT NULL,
    domain           TEXT,
    domain_type      TEXT,
    state            TEXT NOT NULL DEFAULT 'provisioning'
                     CHECK (state IN ('provisioning', 'running', 'stopped', 'failed', 'released')),
    state_reason     TEXT,
    pool             TEXT,
    volume           TEXT,
    seed_key_hash    TEXT,
    lease_expires_at INTEGER NOT NULL,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL
);

CREATE INDEX vms_by_state ON vms (state, host);
CREATE INDEX vms_by_user ON vms (user_id);

CREATE TABLE user_quotas (
    user_id     INTEGER PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    gpus        INTEGER CHECK (gpus >= 0),
    requests    INTEGER CHECK (requests >= 0),
    lease_hours INTEGER CHECK (lease_hours >= 1),
    updated_at  INTEGER NOT NULL
);

ALTER TABLE users ADD COLUMN ssh_public_key TEXT;

CREATE TABLE audit_log (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    at      INTEGER NOT NULL,
    actor   TEXT NOT NULL,
    action  TEXT NOT NULL,
    subject TEXT NOT NULL,
    before  TEXT,
    after   TEXT,
    detail  TEXT
);

CREATE INDEX audit_log_by_subject ON audit_log (subject, id);
CREATE INDEX audit_log_by_actor ON audit_log (actor, id);
