-- How long a VM took to come up: when its request got its GPUs, and when its domain first ran.
-- With the request's filing time these give request-to-running and placement-to-running per
-- host, shown to admins.
ALTER TABLE gpu_requests ADD COLUMN placed_at BIGINT;
ALTER TABLE vms ADD COLUMN running_at BIGINT;
