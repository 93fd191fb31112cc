-- Vicugna registry schema. Written in the SQL subset SQLite and PostgreSQL share: the same file runs on both.
-- Times are Unix milliseconds; JSON is stored as TEXT.

CREATE TABLE models (
    id           TEXT PRIMARY KEY,
    fingerprint  TEXT NOT NULL,
    format       TEXT NOT NULL,          -- 'gguf' | 'safetensors'
    architecture TEXT NOT NULL,          -- human-readable summary, part of the fingerprint
    config       TEXT NOT NULL,          -- vicugna_core::Config as JSON (used to check adapters fit)
    tokenizer    TEXT NOT NULL,          -- tokenizer identity (SHA-256 of the vocabulary) or 'none'
    description  TEXT NOT NULL,
    license      TEXT NOT NULL,
    created_at   BIGINT NOT NULL
);
CREATE INDEX models_fingerprint ON models (fingerprint);

CREATE TABLE model_files (
    model_id TEXT NOT NULL REFERENCES models (id),
    file     TEXT NOT NULL,
    sha256   TEXT NOT NULL,
    size     BIGINT NOT NULL,
    PRIMARY KEY (model_id, file)
);

-- One row per published version; a deleted version keeps its row (deleted_at) so the name and version are
-- never reused with other bytes.
CREATE TABLE adapter_versions (
    name             TEXT NOT NULL,
    version          TEXT NOT NULL,
    base_model       TEXT NOT NULL REFERENCES models (id),
    base_fingerprint TEXT NOT NULL,
    r                BIGINT NOT NULL,
    alpha            DOUBLE PRECISION NOT NULL,
    target_modules   TEXT NOT NULL,      -- JSON array
    template         TEXT NOT NULL,
    description      TEXT NOT NULL,
    metrics          TEXT NOT NULL,      -- JSON object
    published_by     TEXT NOT NULL,      -- token name
    created_at       BIGINT NOT NULL,
    deleted_at       BIGINT,
    PRIMARY KEY (name, version)
);
CREATE INDEX adapter_versions_base ON adapter_versions (base_fingerprint);

CREATE TABLE adapter_files (
    name    TEXT NOT NULL,
    version TEXT NOT NULL,
    file    TEXT NOT NULL,
    sha256  TEXT NOT NULL,
    size    BIGINT NOT NULL,
    PRIMARY KEY (name, version, file)
);
CREATE INDEX adapter_files_sha ON adapter_files (sha256);

CREATE TABLE tokens (
    name       TEXT PRIMARY KEY,
    hash       TEXT NOT NULL UNIQUE,     -- SHA-256 of the token; the token itself is never stored
    scope      TEXT NOT NULL,            -- 'publish' | 'admin'
    created_at BIGINT NOT NULL,
    revoked_at BIGINT
);
