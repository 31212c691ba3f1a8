-- Why a reachable host cannot pass any GPU through (no IOMMU, no VFIO in libvirt), as its last
-- inventory found; NULL when nothing on the host level stands in the way.

ALTER TABLE hosts ADD COLUMN passthrough_problem TEXT;
