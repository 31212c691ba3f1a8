-- Change counters: every change to the inventory (hosts, their GPUs, IOMMU groups and claims) or
-- to what authenticates a request (users, sessions, revocation and expiry of API tokens) bumps a
-- counter in the same transaction. A server keeps the GPU list and the token -> user lookups in
-- memory and reads them again only when the counter moved, also when another process (a second
-- server, `passage token create`) made the change. A token's last use does not count: it is not
-- part of who the token is.

CREATE TABLE change_counters (
    name    TEXT PRIMARY KEY,
    version INTEGER NOT NULL
);
INSERT INTO change_counters (name, version) VALUES ('inventory', 0), ('accounts', 0);

CREATE TRIGGER hosts_insert_counted AFTER INSERT ON hosts BEGIN
    UPDATE change_counters SET version = version + 1 WHERE name = 'inventory';
END;

CREATE TRIGGER hosts_update_counted AFTER UPDATE ON hosts BEGIN
    UPDATE change_counters SET version = version + 1 WHERE name = 'inventory';
END;

CREATE TRIGGER hosts_delete_counted AFTER DELETE ON hosts BEGIN
    UPDATE change_counters SET version = version + 1 WHERE name = 'inventory';
END;

CREATE TRIGGER gpus_insert_counted AFTER INSERT ON gpus BEGIN
    UPDATE change_counters SET version = version + 1 WHERE name = 'inventory';
END;

CREATE TRIGGER gpus_update_counted AFTER UPDATE ON gpus BEGIN
    UPDATE change_counters SET version = version + 1 WHERE name = 'inventory';
END;

CREATE TRIGGER gpus_delete_counted AFTER DELETE ON gpus BEGIN
    UPDATE change_counters SET version = version + 1 WHERE name = 'inventory';
END;

CREATE TRIGGER iommu_members_insert_counted AFTER INSERT ON iommu_members BEGIN
    UPDATE change_counters SET version = version + 1 WHERE name = 'inventory';
END;

CREATE TRIGGER iommu_members_update_counted AFTER UPDATE ON iommu_members BEGIN
    UPDATE change_counters SET version = version + 1 WHERE name = 'inventory';
END;

CREATE TRIGGER iommu_members_delete_counted AFTER DELETE ON iommu_members BEGIN
    UPDATE change_counters SET version = version + 1 WHERE name = 'inventory';
END;

CREATE TRIGGER gpu_claims_insert_counted AFTER INSERT ON gpu_claims BEGIN
    UPDATE change_counters SET version = version + 1 WHERE name = 'inventory';
END;

CREATE TRIGGER gpu_claims_update_counted AFTER UPDATE ON gpu_claims BEGIN
    UPDATE change_counters SET version = version + 1 WHERE name = 'inventory';
END;

CREATE TRIGGER gpu_claims_delete_counted AFTER DELETE ON gpu_claims BEGIN
    UPDATE change_counters SET version = version + 1 WHERE name = 'inventory';
END;

CREATE TRIGGER users_update_counted AFTER UPDATE ON users BEGIN
    UPDATE change_counters SET version = version + 1 WHERE name = 'accounts';
END;

CREATE TRIGGER users_delete_counted AFTER DELETE ON users BEGIN
    UPDATE change_counters SET version = version + 1 WHERE name = 'accounts';
END;

CREATE TRIGGER sessions_update_counted AFTER UPDATE ON sessions BEGIN
    UPDATE change_counters SET version = version + 1 WHERE name = 'accounts';
END;

CREATE TRIGGER sessions_delete_counted AFTER DELETE ON sessions BEGIN
    UPDATE change_counters SET version = version + 1 WHERE name = 'accounts';
END;

CREATE TRIGGER api_tokens_update_counted AFTER UPDATE OF user_id, token_hash, revoked_at, expires_at ON api_tokens BEGIN
    UPDATE change_counters SET version = version + 1 WHERE name = 'accounts';
END;

CREATE TRIGGER api_tokens_delete_counted AFTER DELETE ON api_tokens BEGIN
    UPDATE change_counters SET version = version + 1 WHERE name = 'accounts';
END;
