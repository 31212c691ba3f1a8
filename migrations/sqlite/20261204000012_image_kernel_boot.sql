-- Direct kernel boot for an image: the kernel, initramfs and command line on its host that start
-- the guest instead of a boot loader on its disk; NULL for images that boot from their disk.

ALTER TABLE images ADD COLUMN kernel TEXT;
ALTER TABLE images ADD COLUMN initrd TEXT;
ALTER TABLE images ADD COLUMN cmdline TEXT;
