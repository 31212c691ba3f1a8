-- An image is a name with a copy (a volume) on each host that holds it: the same name may now be
-- registered once per host, and placement considers every host with a copy.

ALTER TABLE images DROP CONSTRAINT images_pkey;
ALTER TABLE images ADD PRIMARY KEY (name, host);
