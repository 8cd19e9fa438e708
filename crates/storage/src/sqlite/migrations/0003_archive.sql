-- Message archives (XEP-0313) of users and rooms. `seq` orders messages by
-- arrival; `id` is the public archive id (the XEP-0359 stanza-id).
CREATE TABLE archive (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    owner TEXT NOT NULL,
    id TEXT NOT NULL,
    ts INTEGER NOT NULL,
    with_bare TEXT NOT NULL,
    with_full TEXT NOT NULL,
    stanza TEXT NOT NULL
);
CREATE UNIQUE INDEX archive_owner_id ON archive (owner, id);
CREATE INDEX archive_owner_with ON archive (owner, with_bare, seq);
CREATE INDEX archive_owner_ts ON archive (owner, ts);
CREATE INDEX archive_ts ON archive (ts);

-- Archiving preferences (XEP-0313 §6), one document per owner.
CREATE TABLE archive_prefs (
    owner TEXT PRIMARY KEY,
    prefs TEXT NOT NULL
);
