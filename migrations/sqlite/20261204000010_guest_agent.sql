-- Images say whether they bring NVIDIA's driver (without it a VM's seed installs it), and agents
-- report where they run: the guest's addresses (the VM's SSH address), the account the agent
-- runs as, and why the CUDA driver could not be used, when it could not.

ALTER TABLE images ADD COLUMN gpu_driver_included INTEGER NOT NULL DEFAULT 0;
ALTER TABLE agents ADD COLUMN addresses_json TEXT;
ALTER TABLE agents ADD COLUMN run_as TEXT;
ALTER TABLE agents ADD COLUMN cuda_problem TEXT;
