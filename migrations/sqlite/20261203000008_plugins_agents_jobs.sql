-- The plugin registry, the agents that run plugins (one per VM, or a bare-metal host registered
-- by an admin as a native baseline) and the jobs queued for them.

CREATE TABLE plugins (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    name        TEXT NOT NULL,
    version     TEXT NOT NULL,
    summary     TEXT NOT NULL,
    -- The parameters from the plugin's own `describe`, as JSON.
    params_json TEXT NOT NULL,
    sha256      TEXT NOT NULL UNIQUE,
    size_bytes  INTEGER NOT NULL,
    component   BLOB NOT NULL,
    shipped     INTEGER NOT NULL DEFAULT 0,
    -- True when it imports `peers`: a job of it runs on every GPU of its machine.
    all_gpus    INTEGER NOT NULL DEFAULT 0,
    uploaded_by TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    UNIQUE (name, version)
);

CREATE TABLE agents (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    kind          TEXT NOT NULL CHECK (kind IN ('vm', 'host')),
    name          TEXT NOT NULL UNIQUE,
    vm_id         INTEGER UNIQUE REFERENCES vms (id),
    token_hash    TEXT NOT NULL UNIQUE,
    created_by    TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    revoked_at    INTEGER,
    registered_at INTEGER,
    last_seen_at  INTEGER,
    hostname      TEXT,
    agent_version TEXT,
    backend       TEXT,
    -- The GPUs the agent reported, as JSON.
    devices_json  TEXT,
    -- For VM agents: whether the GPUs the guest sees are the ones passed through.
    verification  TEXT
);

CREATE TABLE jobs (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    agent_id      INTEGER NOT NULL REFERENCES agents (id),
    plugin_id     INTEGER NOT NULL REFERENCES plugins (id),
    params_json   TEXT NOT NULL,
    -- The GPUs wanted: a device index, or NULL for any one.
    device_wanted INTEGER,
    -- Every GPU of the agent at once (a plugin that imports `peers`).
    all_devices   INTEGER NOT NULL DEFAULT 0,
    -- The device indexes it ran on, comma-separated, once claimed.
    devices       TEXT,
    label         TEXT,
    batch         TEXT,
    state         TEXT NOT NULL DEFAULT 'queued'
                  CHECK (state IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    requested_by  INTEGER NOT NULL REFERENCES users (id),
    progress      REAL NOT NULL DEFAULT 0,
    progress_note TEXT,
    error         TEXT,
    result_json   TEXT,
    created_at    INTEGER NOT NULL,
    started_at    INTEGER,
    finished_at   INTEGER,
    updated_at    INTEGER NOT NULL
);

CREATE INDEX jobs_queue ON jobs (agent_id, state, id);
CREATE INDEX jobs_by_user ON jobs (requested_by, id);
CREATE INDEX jobs_by_plugin ON jobs (plugin_id, state);
