-- fse-bridge journal: schema version 1 to 2 (retention), applied in place at start
-- inside one transaction. sha256() is a function the program registers.

ALTER TABLE messages ADD COLUMN raw_sha256 TEXT;
ALTER TABLE messages ADD COLUMN purged_at TEXT;
ALTER TABLE artifacts ADD COLUMN purged_at TEXT;
UPDATE messages SET raw_sha256 = sha256(raw);
CREATE INDEX messages_unpurged ON messages (updated_at) WHERE purged_at IS NULL;
CREATE INDEX artifacts_unpurged ON artifacts (at) WHERE purged_at IS NULL;
CREATE INDEX documents_message ON documents (message_id);
CREATE INDEX messages_outcome_type ON messages (outcome, message_type);
CREATE INDEX gateway_calls_operation_status ON gateway_calls (operation, http_status);
CREATE INDEX documents_state_type ON documents (state, doc_type);
UPDATE version SET version = 2;
