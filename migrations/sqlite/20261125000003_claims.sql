-- GPU requests and the claims that hold GPUs for them.
-- A claim holds one PCI function of a host; the primary key is what guarantees that no function,
-- and so no GPU, is ever held twice, whatever the number of concurrent approvals or servers.

CREATE TABLE gpu_requests (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id      INTEGER NOT NULL REFERENCES users (id),
    gpu_model    TEXT NOT NULL,
    gpu_count    INTEGER NOT NULL CHECK (gpu_count BETWEEN 1 AND 16),
    vcpus        INTEGER NOT NULL CHECK (vcpus >= 1),
    memory_mib   INTEGER NOT NULL CHECK (memory_mib >= 256),
    disk_gib     INTEGER NOT NULL CHECK (disk_gib >= 1),
    image        TEXT NOT NULL,
    hypervisor   TEXT NOT NULL CHECK (hypervisor IN ('kvm', 'xen')),
    lease_hours  INTEGER NOT NULL CHECK (lease_hours >= 1),
    reason       TEXT NOT NULL,
    state        TEXT NOT NULL DEFAULT 'pending'
                 CHECK (state IN ('pending', 'waiting', 'placed', 'denied', 'released')),
    state_reason TEXT,
    host         TEXT,
    numa_node    INTEGER,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL
);

CREATE INDEX gpu_requests_by_state ON gpu_requests (state, id);

CREATE TABLE gpu_claims (
    host       TEXT NOT NULL,
    address    TEXT NOT NULL,
    gpu_id     INTEGER NOT NULL REFERENCES gpus (id),
    request_id INTEGER NOT NULL REFERENCES gpu_requests (id) ON DELETE CASCADE,
    claimed_at INTEGER NOT NULL,
    PRIMARY KEY (host, address)
);

CREATE INDEX gpu_claims_by_request ON gpu_claims (request_id);
