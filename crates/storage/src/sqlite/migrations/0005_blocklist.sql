-- XEP-0191 blocklists: the JIDs (full, bare or domain) each account blocks.
CREATE TABLE blocklist (
    owner TEXT NOT NULL,
    jid TEXT NOT NULL,
    PRIMARY KEY (owner, jid)
);
