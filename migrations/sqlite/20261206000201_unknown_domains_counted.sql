-- A domain this installation did not make holds its devices: they are not free for placement.
-- Its appearance, its going and a change of what it holds move the inventory counter, so that a
-- server's in-memory list of free GPUs is read again. The last time it was seen does not.

CREATE TRIGGER unknown_domains_insert_counted AFTER INSERT ON unknown_domains BEGIN
    UPDATE change_counters SET version = version + 1 WHERE name = 'inventory';
END;

CREATE TRIGGER unknown_domains_update_counted AFTER UPDATE ON unknown_domains
WHEN OLD.devices IS NOT NEW.devices OR OLD.host IS NOT NEW.host BEGIN
    UPDATE change_counters SET version = version + 1 WHERE name = 'inventory';
END;

CREATE TRIGGER unknown_domains_delete_counted AFTER DELETE ON unknown_domains BEGIN
    UPDATE change_counters SET version = version + 1 WHERE name = 'inventory';
END;
