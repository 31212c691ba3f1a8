-- Experiments: the same benchmarks run on several targets (native hosts, VMs, VMs the portal makes
-- for the experiment), repeated, and compared. An experiment queues one repetition's jobs at a
-- time; `queued_repetitions` only grows by a conditional update, so a repetition is queued once
-- however many servers drive the experiment and however often they restart.

CREATE TABLE experiments (
    id                 INTEGER PRIMARY KEY AUTOINCREMENT,
    name               TEXT NOT NULL,
    owner_id           INTEGER NOT NULL REFERENCES users (id),
    state              TEXT NOT NULL DEFAULT 'preparing'
                       CHECK (state IN ('preparing', 'running', 'succeeded', 'failed', 'cancelled')),
    preset             TEXT,
    repetitions        INTEGER NOT NULL,
    queued_repetitions INTEGER NOT NULL DEFAULT 0,
    -- What it waits for, or why it ended.
    note               TEXT,
    created_at         INTEGER NOT NULL,
    started_at         INTEGER,
    finished_at        INTEGER,
    updated_at         INTEGER NOT NULL
);

CREATE INDEX experiments_by_owner ON experiments (owner_id, id);
CREATE INDEX experiments_by_state ON experiments (state);

CREATE TABLE experiment_benchmarks (
    experiment_id INTEGER NOT NULL REFERENCES experiments (id),
    position      INTEGER NOT NULL,
    label         TEXT NOT NULL,
    plugin_id     INTEGER NOT NULL REFERENCES plugins (id),
    params_json   TEXT NOT NULL,
    all_devices   INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (experiment_id, position)
);

-- A target is an agent the owner may use, or a VM made for the experiment through a request
-- (a variant); a variant's agent is set once its VM's agent has registered.
CREATE TABLE experiment_targets (
    experiment_id INTEGER NOT NULL REFERENCES experiments (id),
    position      INTEGER NOT NULL,
    label         TEXT NOT NULL,
    kind          TEXT NOT NULL CHECK (kind IN ('native', 'vm', 'variant')),
    agent_id      INTEGER REFERENCES agents (id),
    request_id    INTEGER REFERENCES gpu_requests (id),
    gpu_model     TEXT,
    vcpus         INTEGER,
    hypervisor    TEXT,
    -- A variant's VM was released (or its request closed) when the experiment ended.
    released_at   INTEGER,
    PRIMARY KEY (experiment_id, position)
);

ALTER TABLE jobs ADD COLUMN experiment_id INTEGER REFERENCES experiments (id);
ALTER TABLE jobs ADD COLUMN repetition INTEGER;
ALTER TABLE jobs ADD COLUMN target_position INTEGER;
ALTER TABLE jobs ADD COLUMN benchmark_position INTEGER;

-- One job per cell of the matrix: a repetition queued twice fails instead of running twice.
CREATE UNIQUE INDEX jobs_by_experiment
    ON jobs (experiment_id, repetition, target_position, benchmark_position);
