-- Persistent MUC rooms (XEP-0045): configuration, affiliations and subject
-- kept as one JSON document per room, written whenever they change.
CREATE TABLE muc_rooms (
    service TEXT NOT NULL,
    room TEXT NOT NULL,
    data TEXT NOT NULL,
    updated_at INTEGER NOT NULL DEFAULT (unixepoch()),
    PRIMARY KEY (service, room)
);
