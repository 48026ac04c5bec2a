-- fse-bridge journal, schema version 2 (SQLite).
-- Every received message, its state changes, what later stages produced,
-- every gateway call and the registry of published documents.
-- Version 2: retention. A purge empties old raw messages and artifact contents and
-- stamps purged_at; raw_sha256 still recognises a resend of a purged message.

CREATE TABLE version (version INTEGER NOT NULL);

CREATE TABLE messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    received_at TEXT NOT NULL,            -- ISO 8601 UTC
    peer TEXT NOT NULL DEFAULT '',
    raw BLOB NOT NULL,                    -- empty once purged
    msh4 TEXT NOT NULL DEFAULT '',        -- sending facility
    msh10 TEXT NOT NULL DEFAULT '',       -- control id ('' = none: never a resend)
    message_type TEXT NOT NULL DEFAULT '',-- e.g. ORU^R01
    charset TEXT NOT NULL DEFAULT '',
    state TEXT NOT NULL,
    resend_of INTEGER REFERENCES messages(id),
    ack BLOB,                             -- the ACK sent (or to be sent) to the sender; never purged
    ack_code TEXT,                        -- its MSA-1
    outcome TEXT,                         -- the processing outcome code (AA/AE/AR); NULL while unfinished
    document_id TEXT,
    operation TEXT,
    x_cart_id TEXT,
    trace_id TEXT,
    workflow_instance_id TEXT,
    error TEXT,
    updated_at TEXT NOT NULL,
    raw_sha256 TEXT,                      -- hex SHA-256 of raw, kept after a purge (resend rules)
    purged_at TEXT                        -- when raw was emptied (retention); NULL = raw held
);
CREATE INDEX messages_control ON messages (msh4, msh10);
CREATE INDEX messages_unfinished ON messages (outcome) WHERE outcome IS NULL;
CREATE INDEX messages_document ON messages (document_id);
CREATE INDEX messages_x_cart ON messages (x_cart_id);
CREATE INDEX messages_unpurged ON messages (updated_at) WHERE purged_at IS NULL;
-- /metrics counts from these alone (without them the counts read every raw message).
CREATE INDEX messages_outcome_type ON messages (outcome, message_type);

CREATE TABLE transitions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id INTEGER NOT NULL REFERENCES messages(id),
    state TEXT NOT NULL,
    at TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT ''
);
CREATE INDEX transitions_message ON transitions (message_id);

CREATE TABLE artifacts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id INTEGER NOT NULL REFERENCES messages(id),
    stage TEXT NOT NULL,
    name TEXT NOT NULL,
    content BLOB NOT NULL,                -- empty once purged
    at TEXT NOT NULL,
    purged_at TEXT                        -- when content was emptied (retention)
);
CREATE INDEX artifacts_message ON artifacts (message_id);
CREATE INDEX artifacts_unpurged ON artifacts (at) WHERE purged_at IS NULL;

CREATE TABLE gateway_calls (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id INTEGER REFERENCES messages(id),
    operation TEXT NOT NULL,
    document_id TEXT,
    state TEXT NOT NULL,                  -- 'sent' before the request leaves, then 'answered'
    http_status INTEGER,
    x_cart_id TEXT,
    trace_id TEXT,
    span_id TEXT,
    workflow_instance_id TEXT,
    warning TEXT,
    problem TEXT,                         -- JSON problem body
    at TEXT NOT NULL
);
CREATE INDEX gateway_calls_message ON gateway_calls (message_id);
CREATE INDEX gateway_calls_x_cart ON gateway_calls (x_cart_id);
CREATE INDEX gateway_calls_operation_status ON gateway_calls (operation, http_status);

CREATE TABLE documents (
    structure TEXT NOT NULL,
    doc_type TEXT NOT NULL,
    accession TEXT NOT NULL,
    seq INTEGER NOT NULL DEFAULT 0,
    document_id TEXT NOT NULL,
    set_id TEXT NOT NULL,
    version INTEGER NOT NULL DEFAULT 1,
    state TEXT NOT NULL CHECK (state IN ('pending', 'published', 'replaced', 'deleted')),
    content_hash TEXT,
    message_id INTEGER REFERENCES messages(id),
    updated_at TEXT NOT NULL,
    UNIQUE (structure, doc_type, accession, seq)
);
CREATE INDEX documents_document_id ON documents (document_id);
CREATE INDEX documents_message ON documents (message_id);
CREATE INDEX documents_state_type ON documents (state, doc_type);

-- Unused since identificativoSottomissione is random per call (gateway.md section 5);
-- kept so that journals of this schema version need no migration.
CREATE TABLE counters (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
