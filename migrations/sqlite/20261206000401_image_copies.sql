-- An image is a name with a copy (a volume) on each host that holds it: the same name may now be
-- registered once per host, and placement considers every host with a copy.

CREATE TABLE images_by_host (
    name                TEXT NOT NULL,
    host                TEXT NOT NULL REFERENCES hosts (name),
    pool                TEXT NOT NULL,
    volume              TEXT NOT NULL,
    path                TEXT NOT NULL,
    capacity_bytes      INTEGER NOT NULL,
    created_at          INTEGER NOT NULL,
    gpu_driver_included INTEGER NOT NULL DEFAULT 0,
    kernel              TEXT,
    initrd              TEXT,
    cmdline             TEXT,
    PRIMARY KEY (name, host)
);
INSERT INTO images_by_host (name, host, pool, volume, path, capacity_bytes, created_at,
                            gpu_driver_included, kernel, initrd, cmdline)
    SELECT name, host, pool, volume, path, capacity_bytes, created_at, gpu_driver_included,
           kernel, initrd, cmdline
    FROM images;
DROP TABLE images;
ALTER TABLE images_by_host RENAME TO images;
