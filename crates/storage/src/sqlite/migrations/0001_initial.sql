-- 0001_initial: accounts, rosters, pending subscription requests and
-- offline messages. Applied once, inside a transaction, by `migrate` in
-- ../mod.rs, which then sets `PRAGMA user_version = 1`.
--
-- Only the SCRAM credentials reference `accounts`: rosters and offline
-- messages also exist for users of other authentication backends (which
-- have no row in `accounts`), so `AccountStore::delete` removes them
-- explicitly instead of relying on ON DELETE CASCADE.
-- Timestamps are Unix seconds (UTC).

CREATE TABLE accounts (
    host       TEXT    NOT NULL,
    username   TEXT    NOT NULL,
    created_at INTEGER NOT NULL DEFAULT (unixepoch()),
    PRIMARY KEY (host, username)
) WITHOUT ROWID;

-- One row per hash mechanism (SCRAM-SHA-1, SCRAM-SHA-256, ...): all the
-- server keeps of a password (RFC 5802 §3).
CREATE TABLE scram_credentials (
    host       TEXT    NOT NULL,
    username   TEXT    NOT NULL,
    hash       TEXT    NOT NULL,   -- ScramHash::name(): 'SHA-1', 'SHA-256'
    salt       BLOB    NOT NULL,
    iterations INTEGER NOT NULL CHECK (iterations > 0),
    stored_key BLOB    NOT NULL,
    server_key BLOB    NOT NULL,
    PRIMARY KEY (host, username, hash),
    FOREIGN KEY (host, username) REFERENCES accounts (host, username)
        ON DELETE CASCADE
) WITHOUT ROWID;

-- The surrogate `id` lets groups reference an item; the UNIQUE constraint's
-- index, led by (host, username), serves every per-user lookup.
CREATE TABLE roster_items (
    id           INTEGER PRIMARY KEY,
    host         TEXT    NOT NULL,
    username     TEXT    NOT NULL,
    contact      TEXT    NOT NULL,   -- bare JID
    name         TEXT,
    subscription TEXT    NOT NULL
        CHECK (subscription IN ('none', 'to', 'from', 'both')),
    ask          INTEGER NOT NULL CHECK (ask IN (0, 1)),
    approved     INTEGER NOT NULL CHECK (approved IN (0, 1)),
    UNIQUE (host, username, contact)
);

-- `position` keeps the groups in the order the client gave them.
CREATE TABLE roster_groups (
    item_id  INTEGER NOT NULL REFERENCES roster_items (id) ON DELETE CASCADE,
    name     TEXT    NOT NULL,
    position INTEGER NOT NULL,
    PRIMARY KEY (item_id, name)
) WITHOUT ROWID;

-- Roster version counter (RFC 6121 §2.6). No row means version 0.
CREATE TABLE roster_versions (
    host     TEXT    NOT NULL,
    username TEXT    NOT NULL,
    version  INTEGER NOT NULL,
    PRIMARY KEY (host, username)
) WITHOUT ROWID;

-- Inbound subscription requests awaiting an answer (RFC 6121 §3.1.3);
-- at most one per contact, a newer request replaces the older one.
CREATE TABLE pending_subscriptions_in (
    host        TEXT    NOT NULL,
    username    TEXT    NOT NULL,
    contact     TEXT    NOT NULL,
    stanza      TEXT    NOT NULL,
    received_at INTEGER NOT NULL DEFAULT (unixepoch()),
    PRIMARY KEY (host, username, contact)
) WITHOUT ROWID;

-- AUTOINCREMENT (not just INTEGER PRIMARY KEY) so an id is never reused,
-- even after the newest messages were deleted: a delivery that calls
-- `remove_up_to(id)` late must never delete a message stored after it.
CREATE TABLE offline_messages (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    host      TEXT    NOT NULL,
    username  TEXT    NOT NULL,
    stanza    TEXT    NOT NULL,
    stored_at INTEGER NOT NULL DEFAULT (unixepoch())
);

CREATE INDEX offline_messages_by_user ON offline_messages (host, username, id);
