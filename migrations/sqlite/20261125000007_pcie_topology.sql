-- Where each GPU sits in the PCIe tree: its root port. GPUs that share one are behind the same
-- switch, and the scheduler keeps multi-GPU requests together on one.

ALTER TABLE gpus ADD COLUMN pcie_root TEXT;
