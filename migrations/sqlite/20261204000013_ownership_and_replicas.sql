-- Which installation of Passage this database belongs to. Every domain it defines carries the id
-- in its metadata, so that a second installation (or a reset database) sharing a host never
-- mistakes another's domains for its own.
CREATE TABLE installation (
    singleton  INTEGER PRIMARY KEY CHECK (singleton = 1),
    id         TEXT NOT NULL,
    created_at INTEGER NOT NULL
);

-- Short leases that several server processes on one database take before acting: one per VM
-- ('vm:<id>') while an action runs on it, one per background loop ('loop:<name>') for the
-- process that runs it. A lease whose holder died ends by itself at expires_at.
CREATE TABLE leases (
    name       TEXT PRIMARY KEY,
    holder     TEXT NOT NULL,
    expires_at INTEGER NOT NULL
);

-- The libvirt UUID Passage gave the VM's domain: only a domain with this UUID is the VM's.
ALTER TABLE vms ADD COLUMN domain_uuid TEXT;
-- What could not be removed from the host when the VM ended (NULL when nothing is left). Its
-- GPUs stay claimed until reconciliation has removed it.
ALTER TABLE vms ADD COLUMN leftover TEXT;

-- Domains with Passage's name on a host that this installation cannot prove are its own: another
-- installation's, made before the database was restored, or without Passage's metadata. They
-- are never touched by reconciliation; an admin decides.
CREATE TABLE unknown_domains (
    host         TEXT NOT NULL,
    uuid         TEXT NOT NULL,
    name         TEXT NOT NULL,
    installation TEXT,
    state        TEXT NOT NULL,
    devices      TEXT NOT NULL,
    first_seen   INTEGER NOT NULL,
    last_seen    INTEGER NOT NULL,
    decision     TEXT CHECK (decision IN ('keep', 'remove')),
    decided_by   TEXT,
    PRIMARY KEY (host, uuid)
);
