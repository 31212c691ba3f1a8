-- Hypervisor hosts and the GPUs found on them.
-- Times are Unix milliseconds (UTC). Flags are 0/1 integers (BOOLEAN in the PostgreSQL dialect).

CREATE TABLE hosts (
    name            TEXT PRIMARY KEY,
    uri             TEXT NOT NULL,
    configured      INTEGER NOT NULL DEFAULT 1,
    state           TEXT NOT NULL DEFAULT 'pending'
                    CHECK (state IN ('pending', 'reachable', 'unreachable')),
    hostname        TEXT,
    driver          TEXT,
    libvirt_version TEXT,
    last_refresh_at INTEGER,
    last_attempt_at INTEGER,
    last_error      TEXT,
    created_at      INTEGER NOT NULL
);

CREATE TABLE gpus (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    host             TEXT NOT NULL REFERENCES hosts (name) ON DELETE CASCADE,
    address          TEXT NOT NULL,
    node_device      TEXT NOT NULL,
    vendor_id        INTEGER NOT NULL,
    vendor_name      TEXT NOT NULL,
    product_id       INTEGER NOT NULL,
    product_name     TEXT NOT NULL,
    model            TEXT NOT NULL,
    class_code       INTEGER NOT NULL,
    numa_node        INTEGER,
    link_speed_gts   REAL,
    link_width       INTEGER,
    link_max_speed_gts REAL,
    link_max_width   INTEGER,
    driver           TEXT,
    iommu_group      INTEGER,
    present          INTEGER NOT NULL DEFAULT 1,
    unassignable_reason TEXT,
    first_seen_at    INTEGER NOT NULL,
    last_seen_at     INTEGER NOT NULL,
    UNIQUE (host, address)
);

CREATE INDEX gpus_by_model ON gpus (model);

CREATE TABLE iommu_members (
    gpu_id       INTEGER NOT NULL REFERENCES gpus (id) ON DELETE CASCADE,
    address      TEXT NOT NULL,
    description  TEXT NOT NULL,
    class_label  TEXT NOT NULL,
    is_bridge    INTEGER NOT NULL,
    same_device  INTEGER NOT NULL,
    PRIMARY KEY (gpu_id, address)
);
