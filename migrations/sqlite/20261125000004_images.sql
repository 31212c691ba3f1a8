-- Base images: a name users pick in requests, and the libvirt volume it stands for.

CREATE TABLE images (
    name           TEXT PRIMARY KEY,
    host           TEXT NOT NULL REFERENCES hosts (name),
    pool           TEXT NOT NULL,
    volume         TEXT NOT NULL,
    path           TEXT NOT NULL,
    capacity_bytes INTEGER NOT NULL,
    created_at     INTEGER NOT NULL
);
