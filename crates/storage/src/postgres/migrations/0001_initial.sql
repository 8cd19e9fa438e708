-- 0001_initial: the whole schema of the SQLite backend's migrations
-- 0001-0007, in PostgreSQL's types. Applied once, inside the migrating
-- transaction of `migrate` in ../mod.rs, which records it in
-- `jackdaw_schema_version`.
--
-- Blobs are BYTEA, times BIGINT (Unix seconds, or microseconds where the
-- SQLite schema uses them), ids TEXT. Identity columns stand in for
-- SQLite's AUTOINCREMENT rowids: a sequence never hands out a value twice,
-- even after the newest rows were deleted.
-- Text ordering uses COLLATE "C" in the queries (bytewise, as SQLite's
-- BINARY), so both backends list in the same order whatever the
-- database's locale.

CREATE TABLE accounts (
    host       TEXT   NOT NULL,
    username   TEXT   NOT NULL,
    created_at BIGINT NOT NULL DEFAULT (floor(extract(epoch FROM now()))::BIGINT),
    PRIMARY KEY (host, username)
);

-- One row per hash mechanism (RFC 5802 §3).
CREATE TABLE scram_credentials (
    host       TEXT   NOT NULL,
    username   TEXT   NOT NULL,
    hash       TEXT   NOT NULL,
    salt       BYTEA  NOT NULL,
    iterations BIGINT NOT NULL CHECK (iterations > 0),
    stored_key BYTEA  NOT NULL,
    server_key BYTEA  NOT NULL,
    PRIMARY KEY (host, username, hash),
    FOREIGN KEY (host, username) REFERENCES accounts (host, username)
        ON DELETE CASCADE
);

-- Rosters also exist for users of other authentication backends (no row
-- in `accounts`), so `AccountStore::delete` removes them explicitly.
CREATE TABLE roster_items (
    id           BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    host         TEXT    NOT NULL,
    username     TEXT    NOT NULL,
    contact      TEXT    NOT NULL,
    name         TEXT,
    subscription TEXT    NOT NULL
        CHECK (subscription IN ('none', 'to', 'from', 'both')),
    ask          BOOLEAN NOT NULL,
    approved     BOOLEAN NOT NULL,
    UNIQUE (host, username, contact)
);

CREATE TABLE roster_groups (
    item_id  BIGINT  NOT NULL REFERENCES roster_items (id) ON DELETE CASCADE,
    name     TEXT    NOT NULL,
    position INTEGER NOT NULL,
    PRIMARY KEY (item_id, name)
);

-- Roster version counter (RFC 6121 §2.6). No row means version 0.
CREATE TABLE roster_versions (
    host     TEXT   NOT NULL,
    username TEXT   NOT NULL,
    version  BIGINT NOT NULL,
    PRIMARY KEY (host, username)
);

CREATE TABLE pending_subscriptions_in (
    host        TEXT   NOT NULL,
    username    TEXT   NOT NULL,
    contact     TEXT   NOT NULL,
    stanza      TEXT   NOT NULL,
    received_at BIGINT NOT NULL DEFAULT (floor(extract(epoch FROM now()))::BIGINT),
    PRIMARY KEY (host, username, contact)
);

CREATE TABLE offline_messages (
    id        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    host      TEXT   NOT NULL,
    username  TEXT   NOT NULL,
    stanza    TEXT   NOT NULL,
    stored_at BIGINT NOT NULL DEFAULT (floor(extract(epoch FROM now()))::BIGINT)
);
CREATE INDEX offline_messages_by_user ON offline_messages (host, username, id);

-- Persistent MUC rooms (XEP-0045), one JSON document per room.
CREATE TABLE muc_rooms (
    service    TEXT   NOT NULL,
    room       TEXT   NOT NULL,
    data       TEXT   NOT NULL,
    updated_at BIGINT NOT NULL DEFAULT (floor(extract(epoch FROM now()))::BIGINT),
    PRIMARY KEY (service, room)
);

-- Message archives (XEP-0313). `seq` orders by arrival; `id` is the
-- public archive id (XEP-0359 stanza-id); `ts` is in microseconds.
CREATE TABLE archive (
    seq       BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    owner     TEXT   NOT NULL,
    id        TEXT   NOT NULL,
    ts        BIGINT NOT NULL,
    with_bare TEXT   NOT NULL,
    with_full TEXT   NOT NULL,
    stanza    TEXT   NOT NULL
);
CREATE UNIQUE INDEX archive_owner_id ON archive (owner, id);
-- Paging walks an owner's messages by seq; SQLite gets this order from
-- its rowid, PostgreSQL needs the index.
CREATE INDEX archive_owner_seq ON archive (owner, seq);
CREATE INDEX archive_owner_with ON archive (owner, with_bare, seq);
-- For `expire`, which would otherwise read the whole table.
CREATE INDEX archive_ts ON archive (ts);

CREATE TABLE archive_prefs (
    owner TEXT PRIMARY KEY,
    prefs TEXT NOT NULL
);

-- XEP-0357 push registrations; `seq` orders them by age for
-- push_max_devices.
CREATE TABLE push_registrations (
    seq     BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    owner   TEXT    NOT NULL,
    service TEXT    NOT NULL,
    node    TEXT    NOT NULL,
    options TEXT    NOT NULL,
    errors  INTEGER NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX push_registrations_device ON push_registrations (owner, service, node);

-- XEP-0191 blocklists.
CREATE TABLE blocklist (
    owner TEXT NOT NULL,
    jid   TEXT NOT NULL,
    PRIMARY KEY (owner, jid)
);

-- OAuth 2.0 (module http_oauth2).
CREATE TABLE oauth2_grants (
    id           TEXT   PRIMARY KEY,
    host         TEXT   NOT NULL,
    username     TEXT   NOT NULL,
    client_hash  TEXT   NOT NULL,
    client_name  TEXT   NOT NULL,
    client_uri   TEXT   NOT NULL,
    scope        TEXT   NOT NULL,
    created_at   BIGINT NOT NULL,
    last_used_at BIGINT NOT NULL
);
CREATE INDEX oauth2_grants_by_account ON oauth2_grants (host, username);

CREATE TABLE oauth2_tokens (
    hash       TEXT    PRIMARY KEY,
    grant_id   TEXT    NOT NULL REFERENCES oauth2_grants (id) ON DELETE CASCADE,
    kind       TEXT    NOT NULL CHECK (kind IN ('access', 'refresh')),
    scope      TEXT    NOT NULL,
    created_at BIGINT  NOT NULL,
    expires_at BIGINT  NOT NULL,
    used       BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX oauth2_tokens_by_grant ON oauth2_tokens (grant_id);
CREATE INDEX oauth2_tokens_by_expiry ON oauth2_tokens (expires_at);

-- `seq` breaks ties between keys created in the same second, as SQLite's
-- rowid does: the newest key signs.
CREATE TABLE oauth2_signing_keys (
    seq         BIGINT GENERATED ALWAYS AS IDENTITY,
    kid         TEXT   PRIMARY KEY,
    algorithm   TEXT   NOT NULL,
    private_key BYTEA  NOT NULL,
    created_at  BIGINT NOT NULL
);

CREATE TABLE oauth2_secrets (
    name  TEXT  PRIMARY KEY,
    value BYTEA NOT NULL
);
